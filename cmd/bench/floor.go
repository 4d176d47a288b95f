package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/tasks"
)

// The floor is what the libraries and the load generator allow on this
// machine when verifyq does no work at all: ghz against a grpc-go server
// whose two services answer at once (no interceptor, no Redis), and an
// asynq server whose handler returns at once, on the same Redis and with
// the worker's slots and queues. No build of verifyq can answer faster
// than the first or drain faster than the second on the same cores, so a
// ratio to the baseline beyond the floor's cannot hold on this machine
// (figure.floored).

// floorLegacy and floorV1 answer every send at once.
type floorLegacy struct {
	messagepb.UnimplementedVarifyServiceServer
}

func (floorLegacy) GetVarifyCode(_ context.Context, req *messagepb.GetVarifyReq) (*messagepb.GetVarifyRsp, error) {
	return &messagepb.GetVarifyRsp{Email: req.GetEmail()}, nil
}

type floorV1 struct {
	verifyqv1.UnimplementedCodeServiceServer
}

func (floorV1) SendCode(context.Context, *verifyqv1.SendCodeRequest) (*verifyqv1.SendCodeResponse, error) {
	return &verifyqv1.SendCodeResponse{ExpiresIn: 600, ResendAfter: 60}, nil
}

// floor measures the floor phase: the compared gRPC front ends at both
// concurrencies against a server that does nothing, and the 0 ms drain's
// tasks through an asynq server that does nothing with them.
func (e *env) floor(ctx context.Context) (ph phase, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ph, err
	}
	srv := grpc.NewServer()
	messagepb.RegisterVarifyServiceServer(srv, floorLegacy{})
	verifyqv1.RegisterCodeServiceServer(srv, floorV1{})
	reflection.Register(srv) // ghz reads the services as it does from the enqueuer
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Stop()
		err = errors.Join(err, <-served)
	}()
	// Repeated addresses are fine here: nothing is limited.
	data, err := e.ghzMessages(e.prefix+"floor", 1000)
	if err != nil {
		return ph, err
	}
	for _, callers := range []int{e.cfg.high, e.cfg.low} {
		for _, name := range compared {
			if _, err := e.ghzFor(ctx, name, ln.Addr().String(), callers, e.cfg.warmup, data); err != nil {
				return ph, err
			}
			r := loadRun{name: name, callers: callers}
			if r.res, err = e.ghzFor(ctx, name, ln.Addr().String(), callers, e.cfg.duration, data); err != nil {
				return ph, err
			}
			r.enqueued = r.res.statuses["OK"]
			ph.runs = append(ph.runs, r)
			logf("%sfloor-%-12s %2d callers %7.0f ok/s  p50 %s p99 %s", e.prefix, name, callers, r.okRate(), ms(r.res.lat.p50), ms(r.res.lat.p99))
		}
	}
	ph.drain, err = e.floorDrain(ctx, e.cfg.drain)
	return ph, err
}

// floorDrain fills the queue as for the drain (fill) and measures how fast
// an asynq server with s.conc slots on the worker's queues runs a handler
// that does nothing over its tasks, from the first task to the last.
func (e *env) floorDrain(ctx context.Context, s drainSpec) (drainRun, error) {
	r := drainRun{drainSpec: s, name: "asynq-drain-noop"}
	e.reset(0)
	if err := e.fill(ctx, r.name, s.mails); err != nil {
		return r, err
	}
	prio := map[string]int{}
	for _, q := range tasks.Queues(e.shards) {
		prio[q] = 1
	}
	var done, first, last atomic.Int64
	all := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{Concurrency: s.conc, Queues: prio, LogLevel: asynq.ErrorLevel})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		last.Store(now)
		if done.Add(1) == int64(s.mails) {
			close(all)
		}
		return nil
	})); err != nil {
		return r, err
	}
	defer srv.Shutdown()
	select {
	case <-all:
	case <-time.After(time.Minute):
		return r, fmt.Errorf("the no-op drain ran %d of %d tasks in a minute", done.Load(), s.mails)
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.delivered = int(done.Load())
	r.rate = float64(r.delivered-1) / time.Duration(last.Load()-first.Load()).Seconds()
	logf("%s%-18s %5.0f tasks/s, %d of %d", e.prefix, r.name, r.rate, r.delivered, s.mails)
	return r, nil
}
