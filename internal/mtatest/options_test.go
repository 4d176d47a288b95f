package mtatest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, Options{}.withDefaults().validate())
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"a mailbox with an @", Options{Mailboxes: []string{"a@b"}}, `mailbox "a@b"`},
		{"a domain with a space", Options{Domain: "a b"}, `domain "a b"`},
		{"auth required without users", Options{AuthRequired: true}, "need Users"},
		{"an empty password", Options{Users: map[string]string{"alice": ""}}, `password of SASL user "alice"`},
		{"a negative cap", Options{MaxConnections: -1}, "MaxConnections -1"},
		{"a tiny size limit", Options{MessageSizeLimit: 10}, "MessageSizeLimit 10"},
		{"a transport for the mailbox domain", Options{Transports: map[string]string{DefaultDomain: "smtp:[127.0.0.1]:1"}}, "is the mailbox domain"},
		{"an extra line with a line break", Options{Extra: []string{"a = b\nc = d"}}, "want one line"},
		{"a greylisted recipient with a comma", Options{Greylisted: []string{"a,b@example.test"}}, `greylisted recipient "a,b@example.test"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.opts.withDefaults().validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	err := Options{Domain: "a b", MaxConnections: -1}.withDefaults().validate()
	require.Error(t, err)
	assert.Equal(t, 2, strings.Count(err.Error(), "\n")+1, "every problem at once: %v", err)
}

func TestMainCFFollowsTheOptions(t *testing.T) {
	t.Parallel()
	l := newLayout("/tmp/x")
	certs := certFiles{Cert: "/tmp/x/conf/cert.pem", Key: "/tmp/x/conf/key.pem"}
	base := mainCF(l, Options{}.withDefaults(), certs, false)
	assert.Contains(t, base, "\nsmtputf8_enable = yes\n")
	assert.Contains(t, base, "\nrecipient_delimiter =\n")
	assert.Contains(t, base, "\nsmtpd_tls_auth_only = yes\n")
	assert.Contains(t, base, "\nsmtpd_sender_restrictions = permit\n")
	assert.NotContains(t, base, "smtpd_sasl_auth_enable")

	o := Options{
		Users: map[string]string{"alice": "pw"}, AuthRequired: true, PlaintextAuth: true,
		SenderOwners: map[string]string{"alice@example.test": "alice"}, OverQuota: []string{"alice"},
		MaxConnections: 3, MessageSizeLimit: 4096, NoSMTPUTF8: true,
		Transports: map[string]string{"b.test": "smtp:[127.0.0.1]:1", "a.test": "smtp:[127.0.0.1]:2"},
		Extra:      []string{"bounce_queue_lifetime = 0"},
	}.withDefaults()
	all := mainCF(l, o, certs, true)
	for _, line := range []string{
		"smtputf8_enable = no",
		"smtpd_tls_auth_only = no",
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_local_domain = example.test",
		"smtpd_sender_restrictions = reject_sender_login_mismatch, check_sasl_access hash:/tmp/x/conf/quota, check_sender_access hash:/tmp/x/conf/quota, permit_sasl_authenticated, reject",
		"smtpd_sender_login_maps = hash:/tmp/x/conf/owners",
		"smtpd_client_connection_count_limit = 3",
		"smtpd_client_event_limit_exceptions =",
		"message_size_limit = 4096",
		"relay_domains = a.test b.test",
		"bounce_queue_lifetime = 0",
	} {
		assert.Contains(t, all, "\n"+line+"\n")
	}
	assert.True(t, strings.HasSuffix(all, "\nbounce_queue_lifetime = 0\n"), "the extra lines come last, so they win")
}

func TestParseSpamStatus(t *testing.T) {
	t.Parallel()
	out := "Subject: hi\nX-Spam-Status: No, score=3.3 required=5.0 tests=MISSING_DATE,MISSING_MID,\n\tNO_RECEIVED,NO_RELAYS autolearn=no autolearn_force=no version=4.0.1\n\nhello\n"
	score, rules, err := parseSpamStatus([]byte(out))
	require.NoError(t, err)
	assert.InDelta(t, 3.3, score, 1e-9)
	assert.Equal(t, "MISSING_DATE,MISSING_MID,NO_RECEIVED,NO_RELAYS", rules)

	score, rules, err = parseSpamStatus([]byte("X-Spam-Status: No, score=-0.1 required=5.0 tests=none\n\n"))
	require.NoError(t, err)
	assert.InDelta(t, -0.1, score, 1e-9)
	assert.Equal(t, "none", rules)

	_, _, err = parseSpamStatus([]byte("Subject: hi\n\nno status\n"))
	require.Error(t, err)
}

func TestDeliveryOrder(t *testing.T) {
	t.Parallel()
	sec, usec := deliveryTime("1796575182.Vfe00I988132M968873.vm")
	assert.Equal(t, int64(1796575182), sec)
	assert.Equal(t, int64(968873), usec)
	a, b := "1796575182.Vfe00I2M99.vm", "1796575182.Vfe00I1M100.vm"
	sa, ua := deliveryTime(a)
	sb, ub := deliveryTime(b)
	assert.Equal(t, sa, sb)
	assert.Less(t, ua, ub, "microseconds, not names, order the same second")
}
