// Package slot computes Redis Cluster hash slots: the slot of a key, and a
// short hash tag that lands in a given slot, for keys of verifyq's own
// that must share a slot with another key (beside a code, or beside any
// key a send wrote, to wait for its replicas there).
package slot

import (
	"strconv"
	"strings"
	"sync"
)

// Count is the number of Redis Cluster hash slots.
const Count = 16384

// Of returns the Redis Cluster slot of key: CRC16 (XMODEM) of its hash
// tag, the part between the first "{" and the first "}" after it when that
// part is not empty, else of the whole key.
func Of(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % Count)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis
// Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

var (
	tagsOnce sync.Once
	tags     []string // tags[slot] is a short tag that hashes to slot
)

// Tag returns a short hash tag content ("vq" and a number) whose slot is
// slot (0 to Count-1). The table is built once, by counting until every
// slot has one.
func Tag(slot int) string {
	tagsOnce.Do(func() {
		tags = make([]string, Count)
		for n, left := 0, Count; left > 0; n++ {
			tag := "vq" + strconv.Itoa(n)
			if s := crc16(tag) % Count; tags[s] == "" {
				tags[s] = tag
				left--
			}
		}
	})
	return tags[slot]
}
