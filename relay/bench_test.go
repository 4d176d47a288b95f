package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/relay"
)

// BenchmarkSend measures Send against the in-process SMTP server with no
// latency: MAIL, RCPT and DATA of a composed mail on a pooled connection.
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
			s, err := relay.NewClient(relay.Config{
				Host: srv.Host(), Port: srv.Port(), TLS: relay.TLSNone,
				Timeout: 5 * time.Second, MaxConns: 64,
			}, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			ctx := context.Background()
			m, err := mail.Compose(testFrom, testMessage())
			if err != nil {
				b.Fatal(err)
			}
			env := relay.Envelope{From: "no-reply@verifyq.test", To: testTo}
			b.ReportAllocs()
			if tc.parallelism == 0 {
				for b.Loop() {
					if err := s.Send(ctx, env, m); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(tc.parallelism)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Send(ctx, env, m); err != nil {
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
