package codes

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Every script touches the keys of one Redis Cluster slot, which each key
// names by its hash tag (the part in braces):
//
//   - the code's slot: code_<email>, {code_<email>}:attempts and
//     {code_<email>}:status (for a named purpose code_<purpose>:<email>,
//     {code_<purpose>:<email>}:attempts and so on; see ID), the only keys
//     besides the code's that hold the
//     address (for an address with braces, which would move that tag to
//     another slot, a tag of the code key's slot and a hash: see besideKey);
//   - a mailbox's slot, tag m:<mailbox id>: its cooldown per purpose, its
//     hour of sends and its suppression;
//   - a client's slot, tag c:<client>: its hours of sends and of verifies;
//   - the rate slot, tag rate: the minute counters of each domain and of
//     all sends.
//
// A mailbox is named by a hash (MailboxID), never by its address. On one
// Redis the tags change nothing.

// AttemptsKey counts wrong codes for the live code of id.
func (r *Reader) AttemptsKey(id ID) string { return besideKey(r.Key(id), "attempts") }

// StatusKey holds the delivery status of id's code (see Status).
func (r *Reader) StatusKey(id ID) string { return besideKey(r.Key(id), "status") }

// MailboxID names a mailbox in keys of verifyq's own: a hash, so that no
// limit or suppression key holds an address.
func MailboxID(mailbox string) string {
	sum := sha256.Sum256([]byte(mailbox))
	return hex.EncodeToString(sum[:16])
}

// CooldownKey holds a mailbox's resend cooldown for purpose: each purpose
// has its own (the default purpose's key has no suffix), while the hour of
// sends (AddressKey) is shared by every purpose of the mailbox.
func CooldownKey(mailboxID, purpose string) string {
	if purpose == "" {
		return "verifyq:{m:" + mailboxID + "}:cooldown"
	}
	return "verifyq:{m:" + mailboxID + "}:cooldown:" + purpose
}

// AddressKey holds a mailbox's rolling hour of sends.
func AddressKey(mailboxID string) string { return "verifyq:{m:" + mailboxID + "}:sends" }

// SuppressKey holds the suppression of a mailbox (see Suppression).
func SuppressKey(mailboxID string) string { return SuppressPrefix + "{m:" + mailboxID + "}" }

// SuppressPrefix starts every suppression key.
const SuppressPrefix = "verifyq:suppress:"

// suppressID is the mailbox ID of a suppression key.
func suppressID(key string) string {
	id := key[len(SuppressPrefix):]
	if len(id) > 4 && id[:3] == "{m:" && id[len(id)-1] == '}' {
		return id[3 : len(id)-1]
	}
	return id
}

// ClientKey holds a client's rolling hour of sends.
func ClientKey(client string) string { return "verifyq:{c:" + client + "}:sends" }

// ClientVerifyKey holds a client's rolling hour of verifies.
func ClientVerifyKey(client string) string { return "verifyq:{c:" + client + "}:verifies" }

// domainKey and globalKey count one minute of the clock, named by the
// minute's Unix time.
func domainKey(domain string, minute time.Time) string {
	return "verifyq:{rate}:domain:" + domain + ":" + strconv.FormatInt(minute.Unix(), 10)
}

func globalKey(minute time.Time) string {
	return "verifyq:{rate}:global:" + strconv.FormatInt(minute.Unix(), 10)
}
