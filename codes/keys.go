package codes

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// The keys of an address that live beside its code carry the code key as
// their hash tag, so every script that uses them together runs on one Redis
// Cluster slot, and only these keys hold the address.

// AttemptsKey counts wrong codes for the live code of email.
func (r *Reader) AttemptsKey(email string) string { return "{" + r.Key(email) + "}:attempts" }

// StatusKey holds the delivery status of email's code (see Status).
func (r *Reader) StatusKey(email string) string { return "{" + r.Key(email) + "}:status" }

// MailboxID names a mailbox in keys of verifyq's own: a hash, so that no
// limit or suppression key holds an address.
func MailboxID(mailbox string) string {
	sum := sha256.Sum256([]byte(mailbox))
	return hex.EncodeToString(sum[:16])
}

// Limit and suppression keys. The mailbox identity (mail.Identity) keys the
// per-address limits and the suppression list, so every spelling of one
// mailbox shares them; the code key keeps the address as sent.

// CooldownKey holds a mailbox's resend cooldown.
func CooldownKey(mailboxID string) string { return "verifyq:limit:cooldown:" + mailboxID }

// AddressKey holds a mailbox's rolling hour of sends.
func AddressKey(mailboxID string) string { return "verifyq:limit:address:" + mailboxID }

func clientKey(client string) string { return "verifyq:limit:client:" + client }
func verifyKey(client string) string { return "verifyq:limit:verify:" + client }

// SuppressKey holds the suppression of a mailbox (see Suppression).
func SuppressKey(mailboxID string) string { return SuppressPrefix + mailboxID }

// SuppressPrefix starts every suppression key.
const SuppressPrefix = "verifyq:suppress:"

// domainKey and globalKey count one minute of the clock, named by the
// minute's Unix time.
func domainKey(domain string, minute time.Time) string {
	return "verifyq:limit:domain:" + domain + ":" + strconv.FormatInt(minute.Unix(), 10)
}
func globalKey(minute time.Time) string {
	return "verifyq:limit:global:" + strconv.FormatInt(minute.Unix(), 10)
}
