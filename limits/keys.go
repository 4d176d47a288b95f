package limits

import (
	"strconv"
	"time"
)

// Each part of a send touches the keys of one Redis Cluster slot, which
// each key names by its hash tag (the part in braces):
//
//   - a mailbox's slot, tag m:<mailbox id>: its hour of sends (which
//     holds each purpose's cooldown and the gap too) and the suppressions
//     of its exact addresses (delivery.SuppressKey);
//   - a client's slot, tag c:<client>: its hours of sends and of verifies;
//   - the rate slot, tag rate: the minute counters of each domain and of
//     all sends.
//
// A mailbox is named by a hash (delivery.MailboxID), an exact address too
// (delivery.AddressID), never by the address.
// The code's slot is package codes'.

// AddressKey holds a mailbox's rolling hour of sends, each member named by
// its purpose and nonce and scored by its time: the cap of the hour, the
// gap since the last send and each purpose's resend cooldown all read it.
func AddressKey(mailboxID string) string { return "verifyq:{m:" + mailboxID + "}:sends" }

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
