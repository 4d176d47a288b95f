package mail_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
)

// BenchmarkCompose measures building a verification mail and rendering it
// to the bytes sent in DATA, per locale.
func BenchmarkCompose(b *testing.B) {
	for _, loc := range []mail.Locale{mail.LocaleZhCN, mail.LocaleEN} {
		b.Run(string(loc), func(b *testing.B) {
			m := testMessage()
			m.Locale = loc
			b.ReportAllocs()
			for b.Loop() {
				g, err := mail.Compose(testFrom, m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := g.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSend measures Send against the in-process SMTP server with no
// latency: compose, and MAIL, RCPT and DATA on a pooled connection.
// "serial" sends one mail after another; "parallel" sends from 4 goroutines
// per GOMAXPROCS. The conns metric is the number of connections the server
// accepted over the whole benchmark: the pool keeps it near the number of
// concurrent senders however many mails are sent.
func BenchmarkSend(b *testing.B) {
	for _, tc := range []struct {
		name        string
		parallelism int
	}{{"serial", 0}, {"parallel", 4}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := smtptest.Start(b, smtptest.WithEnvelopeOnly())
			s, err := mail.NewSender(mail.SMTPConfig{
				Host: srv.Host(), Port: srv.Port(), TLS: mail.TLSNone, From: testFrom,
				Timeout: 5 * time.Second, MaxIdle: 64,
			}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			ctx := context.Background()
			m := testMessage()
			b.ReportAllocs()
			if tc.parallelism == 0 {
				for b.Loop() {
					if err := s.Send(ctx, m); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(tc.parallelism)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Send(ctx, m); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(srv.Connections()), "conns")
			srv.ClearMessages()
		})
	}
}
