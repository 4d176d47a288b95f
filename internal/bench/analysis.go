package bench

import (
	"fmt"
	"strings"
	"time"

	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/loadtest"
)

// Generated is when the report was made.
func (r *Report) Generated() time.Time { return r.finished }

// SegmentDuration is the measured time of one round of one run.
func (r *Report) SegmentDuration() time.Duration {
	return r.Config.Duration / time.Duration(max(r.Config.Rounds, 1))
}

// Rows lists the ceiling and front-end runs, each concurrency together.
func (r *Report) Rows() []LoadRun {
	var rows []LoadRun
	for _, c := range r.Ceiling {
		rows = append(rows, c)
		for _, f := range r.FrontEnd {
			if f.Callers == c.Callers {
				rows = append(rows, f)
			}
		}
	}
	return rows
}

// Drains lists both worker drains.
func (r *Report) Drains() []DrainRun { return []DrainRun{r.Drain, r.SlowDrain} }

// CeilingHigh is the ceiling at the high concurrency.
func (r *Report) CeilingHigh() *LoadRun {
	if c, ok := r.CeilingAt(r.Config.HighCallers); ok {
		return &c
	}
	return nil
}

// E2ESlots is how many busy worker slots the request-to-mail run needs.
func (r *Report) E2ESlots() float64 { return r.E2E.Load.Rate * r.E2E.SinkLatency.Seconds() }

// E2EDefaultBound is the mail rate of the default WORKER_CONCURRENCY (20)
// at the request-to-mail run's SMTP latency.
func (r *Report) E2EDefaultBound() float64 {
	if r.E2E.SinkLatency <= 0 {
		return 0
	}
	return 20 / r.E2E.SinkLatency.Seconds()
}

// Headline is what the README quotes.
type Headline struct {
	Target                string
	Callers, LowCallers   int
	OKThroughput, Ceiling float64
	Share                 float64
	P99Low                time.Duration
}

// Headline returns the legacy gRPC front end's numbers, or nil.
func (r *Report) Headline() *Headline {
	var h Headline
	found := 0
	for _, run := range r.FrontEnd {
		if run.Target != loadtest.TargetGRPCLegacy {
			continue
		}
		switch run.Callers {
		case r.Config.HighCallers:
			c, _ := r.CeilingAt(run.Callers)
			h.Target, h.Callers, h.OKThroughput = run.Target, run.Callers, run.Result.OKThroughput
			h.Ceiling, h.Share = c.Result.OKThroughput, r.Share(run)
			found++
		case r.Config.LowCallers:
			h.LowCallers, h.P99Low = run.Callers, run.Result.Latency.P99
			found++
		}
	}
	if found < 2 {
		return nil
	}
	return &h
}

func (r *Report) frontEnd(target string, callers int) (LoadRun, bool) {
	for _, run := range r.FrontEnd {
		if run.Target == target && run.Callers == callers {
			return run, true
		}
	}
	return LoadRun{}, false
}

func (r *Report) profile(name string) (Profile, bool) {
	for _, p := range r.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}

func (p Profile) share(label string) float64 {
	for _, s := range p.Shares {
		if s.Label == label {
			return s.Percent
		}
	}
	return 0
}

// usPer is the CPU time per request, in µs, of a process that used cores
// while requests per second were served.
func usPer(cores, perSecond float64) float64 {
	if perSecond <= 0 {
		return 0
	}
	return cores / perSecond * 1e6
}

// cpuSum adds up the cores of the named processes.
func cpuSum(m map[string]float64, names ...string) float64 {
	var s float64
	for _, n := range names {
		s += m[n]
	}
	return s
}

// Analysis explains, from this run's numbers and profiles, what limits each
// number and why a missed target was missed.
func (r *Report) Analysis() string {
	var b strings.Builder
	para := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\n\n")
	}
	cores := float64(r.Machine.CPUs)

	if c, ok := r.CeilingAt(r.Config.HighCallers); ok {
		redis, harness := c.CPU["redis-server"], c.CPU["harness"]
		verdict := fmt.Sprintf("Redis runs commands on one thread; at %.2f of a core it is close to its limit, so on this machine the ceiling is Redis's.", redis)
		if redis < 0.85 {
			verdict = fmt.Sprintf("Neither is saturated on its own: together they used %.2f of the %.0f cores, and every request waits for two loopback round trips, each a write, a wake-up of Redis's thread and a read. The limit is CPU shared by the client and Redis: Redis itself (one thread) would allow about %.0f/s at %.0f µs a request.", redis+harness, cores, 1e6/usPer(redis, c.Result.OKThroughput), usPer(redis, c.Result.OKThroughput))
		}
		para("**Ceiling.** At %d callers the two round trips ran at %.0f/s. Redis used %.2f of a core (%.0f µs of CPU per request) and the harness, as the Redis client, %.2f (%.0f µs). %s",
			c.Callers, c.Result.OKThroughput, redis, usPer(redis, c.Result.OKThroughput), harness, usPer(harness, c.Result.OKThroughput), verdict)
	}

	if f, ok := r.frontEnd(loadtest.TargetGRPCLegacy, r.Config.HighCallers); ok {
		c, _ := r.CeilingAt(f.Callers)
		tput := f.Result.OKThroughput
		enq, gen, redis := f.CPU["enqueuer"], f.CPU["harness"], f.CPU["redis-server"]
		perReq := usPer(enq+gen+redis, tput)
		ceilPerReq := usPer(cpuSum(c.CPU, "harness", "redis-server"), c.Result.OKThroughput)
		state := "holds"
		if r.Share(f) < MinCeilingShare {
			state = fmt.Sprintf("is missed by %.0f points", (MinCeilingShare-r.Share(f))*100)
		}
		bound := ceilPerReq / perReq
		para("**Front end against the ceiling.** The gRPC front end puts a process and an RPC in the path, and on this machine they run on the same %.0f cores as Redis and the load generator. At %d callers over `grpc-legacy` the enqueuer used %.2f cores (%.0f µs of CPU per request), the generator's gRPC client %.2f (%.0f µs) and Redis %.2f (%.0f µs): %.0f µs of CPU per request in all, against %.0f µs for the ceiling (its Redis client and Redis). When the cores are the limit, as here (%.2f of %.0f busy, others included), the front end can reach at most %.0f µs / %.0f µs = %.0f %% of the ceiling; it reached %.0f %%, so the target %s. Redis was busy %.0f %% of the time: the front end is limited by the CPU it shares with Redis and the generator, not by Redis.",
			cores, f.Callers, enq, usPer(enq, tput), gen, usPer(gen, tput), redis, usPer(redis, tput), perReq, ceilPerReq,
			cpuSum(f.CPU, "enqueuer", "harness", "redis-server", cpuOthers), cores, ceilPerReq, perReq, bound*100, r.Share(f)*100, state, redis*100)
	}
	if p, ok := r.profile("enqueuer"); ok {
		para("**Where the enqueuer's CPU goes** (profile above; the shares overlap): go-redis %.0f %%, the system calls under it included: each request is two Redis round trips, and go-redis also peeks at every pooled connection with a non-blocking `recvfrom` before it uses it (%.0f %%; no option turns that off). System calls in all %.0f %% (gRPC's reads and writes, the Redis round trips, one log line per call). gRPC's own transport and framing outside the handlers %.0f %%. verifyq's own code %.0f %% (address validation, the task payload's JSON, masking the address for the log line, the interceptors). Logging %.0f %%, metrics %.0f %%, garbage collection %.0f %%, growing goroutine stacks %.0f %% (calls run on kept gRPC stream workers; one that finds them all busy starts on a new goroutine, whose stack the chain of interceptors and go-redis outgrows). The bulk is the two round trips and the RPC, which is what the design asks for, and system calls and wake-ups are dear on this VM: in this run one round trip to Redis with the script took %s (`BenchmarkGetOrCreate/serial`, on an idle machine).",
			p.share(shareRedisClient), p.share(shareConnCheck), p.share(shareSyscalls), p.share(shareGRPC), p.share(shareOwn),
			p.share(shareLogging), p.share(shareMetrics), p.share(shareGC), p.share(shareStack), r.roundTrip())
	}

	if f, ok := r.frontEnd(loadtest.TargetGRPCLegacy, r.Config.LowCallers); ok {
		c, _ := r.CeilingAt(f.Callers)
		state := "holds"
		if f.Result.Latency.P99 > MaxP99LowCallers {
			state = fmt.Sprintf("is missed by %s", loadtest.Millis(f.Result.Latency.P99-MaxP99LowCallers))
		}
		para("**Latency at %d callers.** `grpc-legacy` answered with p50 %s and p99 %s (the target %s); the ceiling's two round trips alone take p50 %s and p99 %s at the same callers. The difference is the RPC (a loopback round trip and a hop through the enqueuer's goroutines) and, in the tail, scheduling: the generator, the enqueuer and Redis were all runnable on %.0f cores (%.2f cores busy in all), so a request at times waits for a core, and each process's garbage collector takes its share in bursts.",
			f.Callers, loadtest.Millis(f.Result.Latency.P50), loadtest.Millis(f.Result.Latency.P99), state,
			loadtest.Millis(c.Result.Latency.P50), loadtest.Millis(c.Result.Latency.P99), cores,
			cpuSum(f.CPU, "enqueuer", "harness", "redis-server", cpuOthers))
	}

	d := r.Drain
	if d.Mails > 0 {
		w := d.CPU["worker"]
		state := "holds"
		if d.Rate < MinDrainRate {
			state = fmt.Sprintf("is missed by %.0f mails/s (%.0f %%)", MinDrainRate-d.Rate, (1-d.Rate/MinDrainRate)*100)
		}
		extra := ""
		if p, ok := r.profile("worker"); ok {
			extra = fmt.Sprintf(" The worker's profile (shares overlap): system calls %.0f %%, the SMTP client %.0f %%, go-redis %.0f %%, asynq's own work %.0f %%, composing and writing the mail %.0f %% (rendering alone is about %s a mail, see `BenchmarkCompose`), verifyq's own code %.0f %%, logging %.0f %%, garbage collection %.0f %%.",
				p.share(shareSyscalls), p.share(shareSMTP), p.share(shareRedisClient), p.share(shareAsynq), p.share(shareCompose),
				r.composeCost(), p.share(shareOwn), p.share(shareLogging), p.share(shareGC))
		}
		para("**Worker into a 0 ms sink.** %.0f mails/s at `WORKER_CONCURRENCY=%d`; the target %s. The worker used %.2f cores (%.0f µs a mail), the sink in the harness %.2f and Redis %.2f: %.2f of the %.0f cores. A mail is three Redis round trips (asynq's dequeue, the peek at the code, asynq's done) and an SMTP transaction of four (MAIL, RCPT, DATA, end of data), each a write, a read and a wake-up on both sides; with the sink and Redis on the same cores, the CPU is the limit, and more slots or more worker processes only share it.%s",
			d.Rate, d.Concurrency, state, w, usPer(w, d.Rate), d.CPU["harness (sink)"], d.CPU["redis-server"],
			cpuSum(d.CPU, "worker", "harness (sink)", "redis-server", cpuOthers), cores, extra)
	}
	sd := r.SlowDrain
	if sd.Mails > 0 {
		state := "holds"
		if sd.Rate < MinSlowDrainShare*sd.Bound {
			state = fmt.Sprintf("is missed by %.1f points", (MinSlowDrainShare-sd.Rate/sd.Bound)*100)
		}
		perMail := time.Duration(0)
		if sd.Rate > 0 {
			perMail = time.Duration(float64(sd.Concurrency) / sd.Rate * float64(time.Second))
		}
		para("**Worker into a %s sink.** %d slots each hold a mail for the sink's %s, so %.0f mails/s is the most they can send; the worker sent %.0f (%.1f %%), so the target %s. Each slot spent %s per mail, %s more than the sink's latency: the SMTP commands before DATA, the three Redis round trips and the hand-over between asynq's goroutines. It opened %d SMTP connections for %d mails: the pool (one idle connection per slot) keeps one connection per slot and reuses it. The next saving would be SMTP PIPELINING (RFC 2920), which sends MAIL, RCPT and DATA in one round trip instead of three; `mail.Sender` speaks through `net/smtp`, which does not pipeline.",
			sd.SinkLatency, sd.Concurrency, sd.SinkLatency, sd.Bound, sd.Rate, 100*sd.Rate/max(sd.Bound, 1), state,
			perMail.Round(100*time.Microsecond), (perMail - sd.SinkLatency).Round(100*time.Microsecond), sd.Connections, sd.Delivered)
	}
	e := r.E2E
	if e.Measured > 0 {
		state := "holds"
		if e.ToAccept.P99 > MaxE2EP99 {
			state = fmt.Sprintf("is missed by %s", loadtest.Millis(e.ToAccept.P99-MaxE2EP99))
		}
		para("**Request to SMTP accept.** p99 %s at %.0f requests/s with a %s sink; the target %s. Of the p50 of %s, %s is the sink; the rest is mostly the wait for the worker's next look at the queue (every 50 ms, asleep between 25 and 75 ms when it found the queue empty).",
			loadtest.Millis(e.ToAccept.P99), e.Load.Rate, e.SinkLatency, state, loadtest.Millis(e.ToAccept.P50), e.SinkLatency)
		para("**Memory.** Peak RSS under that load: enqueuer %s, worker %s (the target is %s each). After the %d-caller runs the enqueuer's was %s: with %d requests in flight it opens up to %d Redis connections (go-redis gives each 64 KiB of buffers) and keeps up to %d gRPC stream workers with their stacks, and the Go heap, collected at twice its live size, grows with them. All of these are bounded; nothing is kept per request, so none of it grows with the number of requests.",
			mb(e.EnqueuerRSS), mb(e.WorkerRSS), mb(MaxPeakRSS), r.Config.HighCallers, mb(r.EnqueuerFrontEndRSS),
			r.Config.HighCallers, r.PoolSize, grpcapi.StreamWorkersPerCPU*r.Machine.CPUs)
	}
	return strings.TrimSpace(b.String())
}

// composeCost is BenchmarkCompose's time per mail from this run.
func (r *Report) composeCost() string { return r.goBenchmark("BenchmarkCompose/", "a few tens of µs") }

// roundTrip is BenchmarkGetOrCreate/serial's time per call from this run:
// one round trip to Redis with the script.
func (r *Report) roundTrip() string {
	return r.goBenchmark("BenchmarkGetOrCreate/serial", "tens of µs")
}

// goBenchmark returns the ns/op, in µs, of the first Go benchmark of this
// run whose name starts with prefix, or otherwise when there is none.
func (r *Report) goBenchmark(prefix, otherwise string) string {
	for line := range strings.SplitSeq(r.GoBenchmarks, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[0], prefix) && f[3] == "ns/op" {
			var ns float64
			if _, err := fmt.Sscanf(f[2], "%g", &ns); err == nil {
				return fmt.Sprintf("%.0f µs", ns/1000)
			}
		}
	}
	return otherwise
}
