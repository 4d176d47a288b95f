package mail

import (
	"errors"
	"io"
	"net/smtp"
	"net/textproto"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPlainAuthRefusesCleartextToRemoteHosts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		tls  bool
		ok   bool
	}{
		{"smtp.example.com", false, false},
		{"10.0.0.1", false, false},
		{"smtp.example.com", true, true},
		{"localhost", false, true},
		{"127.0.0.1", false, true},
		{"127.1.2.3", false, true},
		{"::1", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			a := &plainAuth{user: "u", pass: "secret", host: tt.host}
			mech, resp, err := a.Start(&smtp.ServerInfo{Name: tt.host, TLS: tt.tls, Auth: []string{"PLAIN"}})
			if !tt.ok {
				require.ErrorIs(t, err, errInsecureAuth)
				require.Nil(t, resp)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "PLAIN", mech)
			require.Equal(t, "\x00u\x00secret", string(resp))
			_, err = a.Next(nil, true)
			require.Error(t, err)
			next, err := a.Next(nil, false)
			require.NoError(t, err)
			require.Nil(t, next)
		})
	}
}

func TestEnhancedCode(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"5.1.1 user unknown": "5.1.1",
		"4.7.0":              "4.7.0",
		"2.0.0 OK":           "2.0.0",
		"5.123.456 x":        "5.123.456",
		"5.1234.1 x":         "",
		"3.1.1 x":            "",
		"5.1.1x":             "",
		"user unknown":       "",
		"":                   "",
		"5.1.":               "",
	}
	for in, want := range tests {
		require.Equal(t, want, enhancedCode(in), in)
	}
}

func TestIsDeadConn(t *testing.T) {
	t.Parallel()
	require.True(t, isDeadConn(io.EOF))
	require.True(t, isDeadConn(&SMTPError{Code: 421}))
	require.True(t, isDeadConn(&textproto.Error{Code: 421}))
	require.True(t, isDeadConn(syscall.ECONNRESET))
	require.True(t, isDeadConn(syscall.EPIPE))
	require.False(t, isDeadConn(&SMTPError{Code: 451}))
	require.False(t, isDeadConn(errors.New("x")))
}

func TestMinutesUp(t *testing.T) {
	t.Parallel()
	tests := map[time.Duration]int64{
		time.Nanosecond:               1,
		time.Minute:                   1,
		time.Minute + time.Nanosecond: 2,
		10 * time.Minute:              10,
		10*time.Minute - time.Second:  10,
		time.Duration(1<<63 - 1):      153722868,
	}
	for d, want := range tests {
		require.Equal(t, want, minutesUp(d), d.String())
	}
}
