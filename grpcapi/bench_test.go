package grpcapi_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/metrics"
	"github.com/verifyq/verifyq/internal/platform"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

// reportCPU reports the CPU time the process spent (user and system, the
// client's side included) per op from now until the function it returns
// is called: on a machine shared with other work it varies less than the
// time per op.
func reportCPU(b *testing.B) func() {
	before := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-before)/float64(b.N), "cpu-ns/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// instant is a service that answers every call at once: what is left of a
// call's cost is the edge's own.
type instant struct{}

func (instant) SendCode(context.Context, service.SendRequest) (service.Sent, error) {
	return service.Sent{ExpiresIn: 10 * time.Minute, Created: true, ResendAfter: time.Minute}, nil
}

func (instant) VerifyCode(context.Context, service.VerifyRequest) error { return nil }

func (instant) Status(context.Context, codes.ID) (delivery.Status, error) {
	return delivery.Status{}, nil
}

// BenchmarkSendCode measures the gRPC edge alone: SendCode of the old
// service and of verifyq.v1 over one loopback connection (as the gateway
// keeps one channel), from 8 callers per GOMAXPROCS, through every
// interceptor, the caller check, the metrics and the access log (JSON into
// io.Discard, as the enqueuer writes it to stdout), against a service
// that answers at once. The client's side of each call is in the figures
// too.
func BenchmarkSendCode(b *testing.B) {
	reg := metrics.NewRegistry()
	m := metrics.NewEnqueuer(reg, nil)
	srv := grpcapi.New(m.Service(instant{}), platform.NewLogger(io.Discard, slog.LevelInfo), grpcapi.Config{Metrics: m})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := errors.Join(srv.Shutdown(ctx), <-served); err != nil {
			b.Error(err)
		}
	})
	conn := grpctest.Dial(b, ln.Addr().String())
	legacy, v1 := messagepb.NewVarifyServiceClient(conn), verifyqv1.NewCodeServiceClient(conn)
	var n atomic.Int64
	for _, tc := range []struct {
		name string
		call func(ctx context.Context, email string) error
	}{
		{"legacy", func(ctx context.Context, email string) error {
			_, err := legacy.GetVarifyCode(ctx, &messagepb.GetVarifyReq{Email: email})
			return err
		}},
		{"v1", func(ctx context.Context, email string) error {
			_, err := v1.SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email, Locale: "en"})
			return err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			defer reportCPU(b)()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := tc.call(ctx, "user-"+strconv.FormatInt(n.Add(1), 10)+"@example.com"); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
