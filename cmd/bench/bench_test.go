package main

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/verifyq/verifyq/internal/smtptest"
)

func TestParse(t *testing.T) {
	lat := latencies{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 9 * time.Millisecond}
	for _, c := range []struct {
		name, report, none, statuses string
		parse                        func([]byte) (toolResult, error)
		elapsed                      time.Duration
	}{
		{"ghz", `{"count":3,"total":2000000000,"slowest":9000000,"statusCodeDistribution":{"OK":2,"Unavailable":1},
			"latencyDistribution":[{"percentage":50,"latency":1000000},{"percentage":90,"latency":2000000},{"percentage":99,"latency":3000000}]}`,
			`{"count":0,"errorDistribution":{"connection refused":1}}`, "[OK:2 Unavailable:1]", parseGHZ, 2 * time.Second},
		{"vegeta", `{"latencies":{"50th":1000000,"90th":2000000,"95th":2500000,"99th":3000000,"max":9000000},
			"duration":1000000000,"wait":5000000,"requests":4,"status_codes":{"202":3,"0":1},"errors":["EOF"]}`,
			`{"requests":0,"errors":["connection refused"]}`, "[0:1 202:3]", parseVegeta, 1005 * time.Millisecond},
	} {
		res, err := c.parse([]byte(c.report))
		if err != nil || res.elapsed != c.elapsed || res.lat != lat || counts(res.statuses) != c.statuses {
			t.Errorf("%s: parse = %+v, %v", c.name, res, err)
		}
		if _, err := c.parse([]byte(c.none)); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s: no requests: err = %v", c.name, err)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 200; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if got, want := percentiles(d), (latencies{100 * time.Millisecond, 180 * time.Millisecond, 198 * time.Millisecond, 200 * time.Millisecond}); got != want {
		t.Fatalf("percentiles = %v, want %v", got, want)
	}
}

func TestSentAt(t *testing.T) {
	want := time.Unix(0, 1795663976123456789)
	email := strings.NewReplacer("{{.RequestNumber}}", "7", "{{.TimestampUnixNano}}", "1795663976123456789").Replace(e2eData[10 : len(e2eData)-2])
	if got, ok := sentAt(email); !ok || !got.Equal(want) {
		t.Fatalf("sentAt(%q) = %v, %v", email, got, ok)
	}
	if _, ok := sentAt("someone@example.com"); ok {
		t.Fatal("sentAt of an address without a time: ok")
	}
}

func TestReplaceBlock(t *testing.T) {
	doc := "hand\n" + blockStart + "\nold\n" + blockEnd + "\nmore hand\n"
	if got, err := replaceBlock(doc, "new\n"); err != nil || got != "hand\n"+blockStart+"\nnew\n"+blockEnd+"\nmore hand\n" {
		t.Fatalf("replaceBlock = %q, %v", got, err)
	}
	if _, err := replaceBlock("no markers", "new\n"); err == nil {
		t.Fatal("no markers: no error")
	}
}

func TestCommandstats(t *testing.T) {
	c := map[string]cmdstat{}
	for range 2 { // two masters
		addCommandstats(c, map[string]map[string]string{
			"Stats":        {"total_commands_processed": "100"},
			"Commandstats": {"cmdstat_evalsha": "calls=3,usec=120,usec_per_call=40.00,rejected_calls=0,failed_calls=0", "cmdstat_hset": "calls=7,usec=14,usec_per_call=2.00"},
		})
	}
	want := map[string]cmdstat{"": {calls: 200}, "evalsha": {6, 240}, "hset": {14, 28}}
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Fatalf("commandstats = %v, want %v", c, want)
	}
	before := map[string]cmdstat{"": {calls: 10}, "evalsha": {1, 40}, "info": {1, 500}}
	after := map[string]cmdstat{"": {calls: 54}, "evalsha": {7, 280}, "hset": {36, 72}, "info": {2, 1000}, "ping": {1, 12}}
	got := perRequest(before, after, 6)
	if want := (commands{sent: 7.0 / 6, evalsha: 1, other: 1.0 / 6, inScripts: 6, usec: 42}); fmt.Sprintf("%.9v", got) != fmt.Sprintf("%.9v", want) {
		t.Fatalf("perRequest = %+v, want %+v", got, want)
	}
}

func TestSpread(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want spread
		text string
	}{
		{nil, spread{}, "0.0"},
		{[]float64{3}, spread{3, 3, 3}, "3.0"},
		{[]float64{4, 1, 2}, spread{2, 1, 4}, "2.0 (1.0–4.0)"},
		{[]float64{4, 1, 2, 3}, spread{2.5, 1, 4}, "2.5 (1.0–4.0)"},
	} {
		if got := spreadOf(c.in); got != c.want || got.format("%.1f") != c.text {
			t.Errorf("spreadOf(%v) = %v, %q; want %v, %q", c.in, got, got.format("%.1f"), c.want, c.text)
		}
	}
}

// phaseOf is a phase whose runs and drain give the figures of
// compareFigure's test.
func phaseOf(cfg config, rate float64, p99 time.Duration, drain, inScripts float64) phase {
	ph := phase{drain: drainRun{rate: drain, cmds: commands{usec: 2 * inScripts}}}
	for _, name := range compared {
		for _, callers := range []int{cfg.high, cfg.low} {
			ph.runs = append(ph.runs, loadRun{name: name, callers: callers, enqueued: int(rate),
				res: toolResult{elapsed: time.Second, lat: latencies{p99: p99}}, cmds: commands{inScripts: inScripts}})
		}
	}
	// The ceiling counts for neither the rates nor the commands.
	return phase{runs: append(ph.runs, loadRun{name: "ceiling", callers: cfg.high, enqueued: 1e6, cmds: commands{inScripts: 99}}), drain: ph.drain}
}

func TestCompareFigure(t *testing.T) {
	cfg := defaultConfig
	base := []phase{phaseOf(cfg, 1000, 6*time.Millisecond, 1000, 18), phaseOf(cfg, 1100, 5*time.Millisecond, 1000, 18), phaseOf(cfg, 900, 5*time.Millisecond, 1000, 18)}
	tree := []phase{phaseOf(cfg, 1300, 4*time.Millisecond, 1600, 12), phaseOf(cfg, 1400, 4*time.Millisecond, 1400, 12), phaseOf(cfg, 1170, 5*time.Millisecond, 1400, 12)}
	// The floor answers 2000/s at 3 ms and drains 1450/s: the drain's
	// 1.5x is beyond it.
	floor := []phase{phaseOf(cfg, 2000, 3*time.Millisecond, 1450, 0), phaseOf(cfg, 2000, 3*time.Millisecond, 1450, 0), phaseOf(cfg, 2000, 3*time.Millisecond, 1450, 0)}
	want := map[string]struct {
		ratio   spread
		verdict string
	}{
		"grpc-v1 at 64 callers, sends/s":                                 {spread{1.3, 1.2727272727272727, 1.3}, "holds"},
		"grpc-v1 at 8 callers, p99 ms":                                   {spread{0.8, 0.6666666666666666, 1}, "holds in the median only"},
		"Redis commands inside scripts per send":                         {spread{2.0 / 3, 2.0 / 3, 2.0 / 3}, "holds"},
		"Redis CPU per mail, µs":                                         {spread{2.0 / 3, 2.0 / 3, 2.0 / 3}, ""},
		"worker drain into a 0 ms sink (WORKER_CONCURRENCY=20), mails/s": {spread{1.4, 1.4, 1.6}, "**missed**, beyond the floor"},
	}
	seen := 0
	for _, f := range figures(cfg) {
		c := compareFigure(f, tree, base, floor)
		w, ok := want[c.what]
		if !ok {
			continue
		}
		seen++
		if d := math.Abs(c.ratio.med-w.ratio.med) + math.Abs(c.ratio.lo-w.ratio.lo) + math.Abs(c.ratio.hi-w.ratio.hi); !(d < 1e-9) || c.verdict != w.verdict {
			t.Errorf("%s: ratio %v, %q; want %v, %q", c.what, c.ratio, c.verdict, w.ratio, w.verdict)
		}
	}
	if seen != len(want) {
		t.Fatalf("%d of the %d figures found", seen, len(want))
	}
	// The floor's ratio is the floor over the baseline in each round; a
	// figure without a floor has none.
	if c := compareFigure(figures(cfg)[1], tree, base, floor); c.floorRatio.med != 2 || c.floorRatio.lo != 2000.0/1100 || c.floorRatio.hi != 2000.0/900 {
		t.Errorf("%s: floor ratio %v", c.what, c.floorRatio)
	}
	if c := compareFigure(figures(cfg)[5], tree, base, floor); c.floor != (spread{}) {
		t.Errorf("%s: a floor %v", c.what, c.floor)
	}
	// Without a floor (none measured) a miss is a miss.
	if c := compareFigure(figures(cfg)[4], tree, base, nil); c.verdict != "**missed**" {
		t.Errorf("%s without a floor: %q", c.what, c.verdict)
	}
	// A tree still at 18 commands misses the absolute target whatever the ratio.
	f := figures(cfg)[5]
	if c := compareFigure(f, base, base, floor); c.what != "Redis commands inside scripts per send" || c.tree.med != 18 || c.verdict != "**missed**" {
		t.Fatalf("%s: %v, %q", c.what, c.tree, c.verdict)
	}
}

func TestWorkerEnv(t *testing.T) {
	sink, err := smtptest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	port := strconv.Itoa(sink.Port())
	old := build{}.workerEnv(sink, 20)
	if old["SMTP_HOST"] != sink.Host() || old["SMTP_PORT"] != port || old["SMTP_TLS"] != "none" || old["SMTP_URL"] != "" || old["WORKER_CONCURRENCY"] != "20" {
		t.Errorf("without SMTP_URL: %v", old)
	}
	cur := build{smtpURL: true}.workerEnv(sink, 20)
	if cur["SMTP_URL"] != "smtp://"+net.JoinHostPort(sink.Host(), port)+"?tls=none" || cur["SMTP_MAX_CONNECTIONS"] != "20" || len(cur) != 3 {
		t.Errorf("with SMTP_URL: %v (no SMTP_HOST and the like)", cur)
	}
}

func TestSlowlogSummary(t *testing.T) {
	got := slowlogSummary([]redis.SlowLog{
		{Args: []string{"EVALSHA", "abc", "1", "k"}, Duration: 30 * time.Microsecond},
		{Args: []string{"evalsha", "abc", "1", "j"}, Duration: 50 * time.Microsecond},
		{Args: []string{"EVAL", "-- mailbox\nredis.call()", "0"}, Duration: 20 * time.Microsecond},
		{Args: []string{"PING"}, Duration: time.Microsecond},
	})
	want := `   calls        total       mean        max  command
       2         80µs       40µs       50µs  evalsha abc
       1         20µs       20µs       20µs  eval -- mailbox
       1          1µs        1µs        1µs  ping
`
	if got != want {
		t.Fatalf("slowlogSummary =\n%s\nwant\n%s", got, want)
	}
}

// CPU per send weighs each front-end run by its sends and leaves the
// ceiling (whose CPU is the harness's) out; CPU per mail reads the
// drain's metered time.
func TestCPUPerRequest(t *testing.T) {
	ph := phase{runs: []loadRun{
		{name: "grpc-v1", enqueued: 1000, res: toolResult{elapsed: time.Second}, cpu: map[string]float64{"enqueuer": 0.5}},
		{name: "grpc-legacy", enqueued: 3000, res: toolResult{elapsed: 2 * time.Second}, cpu: map[string]float64{"enqueuer": 0.25}},
		{name: "ceiling", enqueued: 1e6, res: toolResult{elapsed: time.Second}, cpu: map[string]float64{"enqueuer": 9}},
	}, drain: drainRun{delivered: 4000, wall: 2 * time.Second, cpu: map[string]float64{"worker": 0.8}}}
	// (0.5 s + 0.5 s) / 4000 sends = 250 µs; 1.6 s / 4000 mails = 400 µs.
	if got := ph.enqueuerCPU(); math.Abs(got-250) > 1e-9 {
		t.Errorf("enqueuerCPU = %v, want 250", got)
	}
	if got := ph.drain.workerCPU(); math.Abs(got-400) > 1e-9 {
		t.Errorf("workerCPU = %v, want 400", got)
	}
}
