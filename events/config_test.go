package events_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/events"
)

func TestParseURLs(t *testing.T) {
	t.Parallel()
	urls, err := events.ParseURLs(" https://hooks.example.com/verifyq , http://127.0.0.1:9000/in,http://localhost/x,http://[::1]:8/")
	require.NoError(t, err)
	assert.Equal(t, []string{"https://hooks.example.com/verifyq", "http://127.0.0.1:9000/in", "http://localhost/x", "http://[::1]:8/"}, urls)
	none, err := events.ParseURLs("  ")
	require.NoError(t, err)
	assert.Nil(t, none, "unset: events off")

	for in, want := range map[string]string{
		"http://hooks.example.com/":                                     "http is allowed only to a loopback host",
		"ftp://hooks.example.com/":                                      `scheme "ftp"`,
		"https://user:pw@hooks.example.com/":                            "credentials in the URL",
		"https://hooks.example.com/#x":                                  "fragment",
		"hooks.example.com/path":                                        "not an absolute URL",
		"https://a.example/,":                                           "endpoint 2: empty",
		"https://a.example/,https://a.example/":                         "listed twice",
		"https://a.example/" + strings.Repeat("p", events.MaxURLLength): "longer than",
		strings.Repeat("https://a.example/,", events.MaxEndpoints) + "https://b.example/": "at most 10",
	} {
		_, err := events.ParseURLs(in)
		if assert.Error(t, err, in) {
			assert.Contains(t, err.Error(), want, in)
			assert.NotContains(t, err.Error(), "pw", "no credentials echoed")
		}
	}
}

func TestParseSecrets(t *testing.T) {
	t.Parallel()
	k1, k2 := []byte(strings.Repeat("a", 32)), []byte(strings.Repeat("b", 24))
	s1 := events.SecretPrefix + base64.StdEncoding.EncodeToString(k1)
	s2 := events.SecretPrefix + base64.StdEncoding.EncodeToString(k2)
	keys, err := events.ParseSecrets(s1 + ", " + s2)
	require.NoError(t, err)
	assert.Equal(t, [][]byte{k1, k2}, keys)

	short := events.SecretPrefix + base64.StdEncoding.EncodeToString([]byte("short"))
	for in, want := range map[string]string{
		base64.StdEncoding.EncodeToString(k1): "want whsec_",
		events.SecretPrefix + "!!!":           "not standard base64",
		short:                                 "the key has 5 bytes, want 24 to 64",
		s1 + "," + short:                      "the previous secret: the key has 5 bytes",
		s1 + "," + s2 + "," + s1:              "at most one previous secret",
	} {
		_, err := events.ParseSecrets(in)
		if assert.Error(t, err, in) {
			assert.Contains(t, err.Error(), want)
			assert.NotContains(t, err.Error(), strings.TrimPrefix(s1, events.SecretPrefix), "no secret echoed")
		}
	}
}
