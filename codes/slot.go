package codes

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
)

// slotCount is the number of Redis Cluster hash slots.
const slotCount = 16384

// slotOf returns the Redis Cluster slot of key: CRC16 (XMODEM) of its hash
// tag, the part between the first "{" and the first "}" after it when that
// part is not empty, else of the whole key.
func slotOf(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % slotCount)
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
	slotTagsOnce sync.Once
	slotTags     []string // slotTags[slot] is a short tag that hashes to slot
)

// tagForSlot returns a short hash tag content ("vq" and a number) whose slot
// is slot. The table is built once, by counting until every slot has one.
func tagForSlot(slot int) string {
	slotTagsOnce.Do(func() {
		slotTags = make([]string, slotCount)
		for n, left := 0, slotCount; left > 0; n++ {
			tag := "vq" + strconv.Itoa(n)
			if s := crc16(tag) % slotCount; slotTags[s] == "" {
				slotTags[s] = tag
				left--
			}
		}
	})
	return slotTags[slot]
}

// besideKey names a key of verifyq's own that lives in the slot of codeKey,
// so that one script may use both: "{code_<email>}:suffix" for an address
// without braces (readable, and what gateways expect), else a tag of the
// same slot and a hash of the code key, since braces in the address would
// move "{code_<email>}" to another slot.
func besideKey(codeKey, suffix string) string {
	if !strings.ContainsAny(codeKey, "{}") {
		return "{" + codeKey + "}:" + suffix
	}
	sum := sha256.Sum256([]byte(codeKey))
	return "{" + tagForSlot(slotOf(codeKey)) + "}:" + hex.EncodeToString(sum[:12]) + ":" + suffix
}
