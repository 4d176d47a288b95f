package limits_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
)

// google is the identity verifyq runs with by default: +tags and the
// providers' rules of mail.DefaultMailboxRules.
func google(t *testing.T) mail.Identity {
	t.Helper()
	rules, err := mail.ParseMailboxRules(mail.DefaultMailboxRules)
	require.NoError(t, err)
	return mail.Identity{TagSeparators: mail.DefaultTagSeparators, Rules: rules}
}

// dotted returns n spellings of local with dots between its letters, each
// a different choice of gaps.
func dotted(local string, n int) []string {
	var out []string
	for mask := 0; len(out) < n; mask++ {
		var b strings.Builder
		for i, r := range local {
			if i > 0 && mask&(1<<(i-1)) != 0 {
				b.WriteByte('.')
			}
			b.WriteRune(r)
		}
		out = append(out, b.String())
	}
	return out
}

// 41 dot spellings of one Gmail mailbox, on gmail.com and googlemail.com,
// get the mailbox's cap of mails and no more; under the default limits
// (the cooldown and the gap on), one.
func TestGmailSpellingsShareTheMailboxLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	spell := func(i int, local string) string {
		if i%2 == 1 {
			return local + "@googlemail.com"
		}
		return local + "@gmail.com"
	}
	s, _ := newStack(t, codes.Config{}, limits.Config{Identity: google(t), AddressPerHour: 5})
	admitted := 0
	for i, local := range dotted("mailboxes", 41) {
		_, err := s.GetOrCreate(ctx, limits.Request{Email: spell(i, local)})
		if err == nil {
			admitted++
			continue
		}
		assert.Equal(t, limits.Address, limitErr(t, err).Limit, local)
	}
	assert.Equal(t, 5, admitted, "ADDRESS_SENDS_PER_HOUR mails to the one inbox")

	lc := limits.Default()
	lc.Identity = google(t)
	s2, _ := newStack(t, codes.Config{}, lc)
	admitted = 0
	for i, local := range dotted("mailboxes", 41) {
		if _, err := s2.GetOrCreate(ctx, limits.Request{Email: spell(i, "x"+local)}); err == nil {
			admitted++
		}
	}
	assert.Equal(t, 1, admitted, "the default limits: one mail")

	_, err := s2.GetOrCreate(ctx, limits.Request{Email: "mail.boxes@example.com"})
	require.NoError(t, err, "dots count elsewhere")
	_, err = s2.GetOrCreate(ctx, limits.Request{Email: "mailboxes@example.com"})
	require.NoError(t, err, "another mailbox on a domain without a rule")
}

// The suppression list keys on the exact address: one spelling's entry
// refuses that spelling only, though the limits count the mailbox.
func TestSuppressionKeepsToTheExactGmailAddress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	id := google(t)
	s, rdb := newStack(t, codes.Config{}, limits.Config{Identity: id})
	require.NoError(t, delivery.NewSuppressions(rdb, id).Add(ctx, delivery.Entry{
		Email: "j.doe@gmail.com", Reason: delivery.ReasonRecipientRefused, Reply: 550, Added: time.Now(), For: time.Hour}))

	_, err := s.GetOrCreate(ctx, limits.Request{Email: "j.doe@gmail.com"})
	require.ErrorIs(t, err, delivery.ErrSuppressed)
	for _, other := range []string{"jdoe@gmail.com", "j.doe@googlemail.com", "J.Doe@gmail.com"} {
		_, err = s.GetOrCreate(ctx, limits.Request{Email: other})
		assert.NoError(t, err, other)
	}
}
