package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/internal/smtptest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/tasks"
)

// grpcCalls are the gRPC front ends as ghz names them; "http" is vegeta's.
var grpcCalls = map[string]string{"grpc-legacy": "message.VarifyService.GetVarifyCode", "grpc-v1": "verifyq.v1.CodeService.SendCode"}

// queued counts the tasks in state over every queue shard: asynq keeps the
// pending ones in a list, the others in sorted sets.
func (e *env) queued(ctx context.Context, state string) (n int64) {
	for _, q := range tasks.Queues(e.shards) {
		if key := "asynq:{" + q + "}:" + state; state == "pending" {
			n += e.rdb.LLen(ctx, key).Val()
		} else {
			n += e.rdb.ZCard(ctx, key).Val()
		}
	}
	return n
}

// ceiling is the design's limit: a send's two Redis round trips (get-or-create
// with the default limits, enqueue) with no RPC, as the enqueuer makes them.
type ceiling struct {
	store  *codes.Store
	queue  *asynq.Client
	shards int
}

func newCeiling(rdb redis.UniversalClient, shards int) (*ceiling, error) {
	store, err := codes.NewStore(rdb, codes.Config{KeyPrefix: codes.DefaultKeyPrefix, TTL: codes.DefaultTTL,
		Length: codes.DefaultLength, Limits: codes.DefaultLimits(), Identity: mail.Identity{TagSeparators: mail.DefaultTagSeparators}})
	return &ceiling{store: store, queue: asynq.NewClientFromRedisClient(rdb), shards: shards}, err
}

// send does in Redis what a send request does for email.
func (c *ceiling) send(ctx context.Context, email string) error {
	now := time.Now()
	issued, err := c.store.GetOrCreate(ctx, codes.Request{Email: email})
	if err != nil {
		return err
	}
	task, err := tasks.NewSendCodeTask(tasks.SendCodePayload{Email: email, Locale: "zh-CN", RequestedAt: now, ExpiresAt: now.Add(issued.ExpiresIn)})
	if err == nil {
		_, err = c.queue.EnqueueContext(ctx, task, asynq.Queue(tasks.QueueFor(email, c.shards)))
	}
	return err
}

// run sends for new addresses, callers at a time (a closed loop), until n
// are sent or d has passed.
func (c *ceiling) run(ctx context.Context, tag string, callers, n int, d time.Duration) toolResult {
	var next, failed atomic.Int64
	lats := make([][]time.Duration, callers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && time.Since(start) < d && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				t := time.Now()
				if c.send(ctx, address(tag, i)) != nil {
					failed.Add(1)
					continue
				}
				lats[w] = append(lats[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(lats...)
	return toolResult{statuses: map[string]int{"ok": len(all), "error": int(failed.Load())}, elapsed: time.Since(start), lat: percentiles(all)}
}

// topLevel are the commands clients send; every other one counted during
// a run (but the harness's INFO) was run by a Lua script.
var topLevel = []string{"evalsha", "eval", "sadd", "ping", "hello", "client|setinfo", "select", "auth", "script|load"}

// redisCounts is a snapshot of Redis's calls by command, and under ""
// all commands, the scripts' included.
type redisCounts map[string]int64

// counts reads Redis's counters, summed over the masters; the first error
// is kept in e.err.
func (e *env) counts(ctx context.Context) redisCounts {
	c := redisCounts{}
	for _, n := range e.nodes {
		info, err := n.Info(ctx, "stats", "commandstats").Result()
		e.err = errors.Join(e.err, err)
		total, _ := strconv.ParseInt(field(info, "total_commands_processed"), 10, 64)
		c[""] += total
		for line := range strings.SplitSeq(info, "\r\n") {
			if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok { // cmdstat_evalsha:calls=2,usec=...
				name, fields, _ := strings.Cut(rest, ":")
				calls, _, _ := strings.Cut(strings.TrimPrefix(fields, "calls="), ",")
				v, _ := strconv.ParseInt(calls, 10, 64)
				c[name] += v
			}
		}
	}
	return c
}

// commands is a run's cost in Redis per request: commands sent (round
// trips), the script calls among them, the rest, commands the scripts ran.
type commands struct{ sent, evalsha, eval, other, inScripts float64 }

func perRequest(before, after redisCounts, n int) commands {
	d := func(name string) float64 { return float64(after[name]-before[name]) / float64(max(n, 1)) }
	var c commands
	for _, name := range topLevel {
		c.sent += d(name)
	}
	c.evalsha, c.eval = d("evalsha"), d("eval")
	c.other = c.sent - c.evalsha - c.eval
	c.inScripts = d("") - c.sent - d("info")
	return c
}

// loadRun is one measured closed-loop run of a front end or the ceiling.
type loadRun struct {
	name              string
	callers, enqueued int // enqueued: send tasks that reached the queue
	res               toolResult
	cmds              commands
	cpu               map[string]float64
}

// okRate is the send requests a second whose task reached the queue.
func (r loadRun) okRate() float64 { return float64(r.enqueued) / r.res.elapsed.Seconds() }

// frontEnd measures the ceiling and each front end (one enqueuer, production
// defaults) at both concurrencies, each on an empty Redis, into runs.
func (e *env) frontEnd(ctx context.Context, runs *[]loadRun) (rss int64, err error) {
	enq, grpcAddr, httpAddr, err := e.startEnqueuer(ctx, "enqueuer-frontend")
	if err != nil {
		return 0, err
	}
	defer func() { _ = enq.stop() }()
	for _, callers := range []int{e.cfg.high, e.cfg.low} {
		for _, name := range []string{"ceiling", "grpc-legacy", "grpc-v1", "http"} {
			load := func(tag string, d time.Duration) (toolResult, error) {
				switch name {
				case "ceiling":
					return e.ceil.run(ctx, tag, callers, math.MaxInt, d), nil
				case "http":
					return e.vegeta(ctx, httpAddr, tag, callers, d)
				}
				// More messages than the ceiling's rate allows: a repeated
				// address would be refused and show as a missing task.
				data, err := e.ghzMessages(tag, 1000+int(1.5*d.Seconds()*find(*runs, "ceiling", callers).okRate()))
				if err != nil {
					return toolResult{}, err
				}
				return e.ghz(ctx, grpcCalls[name], grpcAddr, callers, d, data...)
			}
			tag := fmt.Sprintf("%s%s-%d-%d", e.prefix, name, callers, time.Now().Unix())
			if _, err := load(tag+"w", e.cfg.warmup); err != nil { // warm-up, not counted
				return 0, err
			}
			e.reset(0)
			r := loadRun{name: name, callers: callers}
			before, meter := e.counts(ctx), cpuMeter(map[string][]int{"enqueuer": {enq.pid()}, "redis": e.redisPID, "load": {os.Getpid()}})
			if r.res, err = load(tag, e.cfg.duration); err != nil {
				return 0, err
			}
			r.cpu = meter()
			if r.res.cpu > 0 { // a load generator of its own, not the harness
				r.cpu["load"] = r.res.cpu
			}
			after := e.counts(ctx)
			n := int(e.queued(ctx, "pending"))
			r.enqueued, r.cmds = n, perRequest(before, after, n)
			*runs = append(*runs, r)
			logf("%s%-12s %2d callers %7.0f ok/s  p50 %s p99 %s  %s  %.3f sent/req", e.prefix, name, callers, r.okRate(), ms(r.res.lat.p50), ms(r.res.lat.p99), counts(r.res.statuses), r.cmds.sent)
			if e.err != nil {
				return 0, e.err
			}
		}
	}
	return peakRSS(enq.pid()), enq.stop()
}

// drainRun is one worker emptying a full queue into the sink.
type drainRun struct {
	name                         string
	mails, conc, delivered, conn int
	latency                      time.Duration
	rate, bound                  float64 // mails a second; what conc allows at latency
	retry, archived              int64
	cmds                         commands
	cpu                          map[string]float64
	rss                          int64
}

// drain fills the queue with mails send tasks (and their codes) and
// measures how fast a worker with conc slots empties it into the sink at
// latency, from the first mail the sink accepted to the last.
func (e *env) drain(ctx context.Context, name string, mails, conc int, latency time.Duration) (drainRun, error) {
	r := drainRun{name: name, mails: mails, conc: conc, latency: latency}
	if latency > 0 {
		r.bound = float64(conc) / latency.Seconds()
	}
	e.reset(latency)
	if res := e.ceil.run(ctx, name, 64, mails, 5*time.Minute); res.statuses["ok"] != mails {
		return r, fmt.Errorf("filling the queue: %v, want ok=%d", res.statuses, mails)
	}
	conns, before := e.sink.Connections(), e.counts(ctx)
	w, err := e.startWorker(ctx, name, conc)
	if err != nil {
		return r, err
	}
	defer func() { _ = w.stop() }()
	meter := cpuMeter(map[string][]int{"worker": {w.pid()}, "sink": {os.Getpid()}, "redis": e.redisPID})
	e.waitMails(ctx, mails)
	r.cpu = meter()
	msgs := e.sink.Messages()
	r.delivered, r.conn, r.cmds = len(msgs), e.sink.Connections()-conns, perRequest(before, e.counts(ctx), len(msgs))
	if len(msgs) > 1 {
		byTime := func(a, b smtptest.Message) int { return a.Accepted.Compare(b.Accepted) }
		r.rate = float64(len(msgs)-1) / slices.MaxFunc(msgs, byTime).Accepted.Sub(slices.MinFunc(msgs, byTime).Accepted).Seconds()
	}
	r.retry, r.archived = e.queued(ctx, "retry"), e.queued(ctx, "archived")
	r.rss = peakRSS(w.pid())
	logf("%s%-18s %5.0f mails/s, %d of %d, %d SMTP connections", e.prefix, name, r.rate, r.delivered, mails, r.conn)
	return r, errors.Join(e.err, w.stop())
}

// reset empties Redis, every master (an error goes to e.err), and the
// sink, at latency.
func (e *env) reset(latency time.Duration) {
	for _, n := range e.nodes {
		e.err = errors.Join(e.err, n.FlushAll(context.Background()).Err())
	}
	e.sink.ClearMessages()
	e.sink.SetLatency(latency)
}

// waitMails waits until the sink holds n mails, or none came for 5 s.
func (e *env) waitMails(ctx context.Context, n int) {
	last, since := -1, time.Now()
	for c := e.sink.Count(); c < n && ctx.Err() == nil && time.Since(since) < 5*time.Second; c = e.sink.Count() {
		if c != last {
			last, since = c, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eRun is requests at a fixed rate through an enqueuer and a worker.
type e2eRun struct {
	res                                 toolResult // the requests, as ghz saw them
	mailed, duplicates, measured, conns int
	toAccept                            latencies // from sending a request to the sink's accepting its mail
	cpu                                 map[string]float64
	enqRSS, wrkRSS                      int64
}

func (e *env) endToEnd(ctx context.Context) (e2eRun, error) {
	var r e2eRun
	e.reset(e.cfg.e2eLatency)
	conns := e.sink.Connections()
	enq, grpcAddr, _, err := e.startEnqueuer(ctx, "enqueuer-e2e")
	if err != nil {
		return r, err
	}
	defer func() { _ = enq.stop() }()
	wrk, err := e.startWorker(ctx, "worker-e2e", e.cfg.e2eConc)
	if err != nil {
		return r, err
	}
	defer func() { _ = wrk.stop() }()
	meter := cpuMeter(map[string][]int{"enqueuer": {enq.pid()}, "worker": {wrk.pid()}, "redis": e.redisPID, "sink": {os.Getpid()}})
	from := time.Now().Add(e.cfg.warmup) // requests made before are the warm-up
	if r.res, err = e.ghz(ctx, grpcCalls["grpc-legacy"], grpcAddr, 50, e.cfg.warmup+e.cfg.e2eDuration,
		"-r", strconv.Itoa(e.cfg.e2eRate), "-d", e2eData); err != nil {
		return r, err
	}
	r.cpu = meter()
	r.cpu["load"] = r.res.cpu
	e.waitMails(ctx, r.res.statuses["OK"])
	r.conns = e.sink.Connections() - conns
	seen := map[string]bool{}
	var lat []time.Duration
	for _, m := range e.sink.Messages() {
		if len(m.To) != 1 || seen[m.To[0]] {
			r.duplicates++
			continue
		}
		seen[m.To[0]] = true
		if sent, ok := sentAt(m.To[0]); ok && !sent.Before(from) {
			lat = append(lat, m.Accepted.Sub(sent))
		}
	}
	r.mailed, r.measured, r.toAccept = len(seen), len(lat), percentiles(lat)
	r.enqRSS, r.wrkRSS = peakRSS(enq.pid()), peakRSS(wrk.pid())
	logf("e2e: %d requests answered OK, %d mailed, p99 %s", r.res.statuses["OK"], r.mailed, ms(r.toAccept.p99))
	return r, errors.Join(e.err, wrk.stop(), enq.stop())
}
