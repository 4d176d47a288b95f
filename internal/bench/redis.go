package bench

import (
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisStats is a snapshot of the counters of INFO stats and commandstats.
type redisStats struct {
	total int64            // total_commands_processed: every command, those run by scripts too
	calls map[string]int64 // calls per command name
}

func readRedisStats(ctx context.Context, rdb *redis.Client) (redisStats, error) {
	info, err := rdb.Info(ctx, "stats", "commandstats").Result()
	if err != nil {
		return redisStats{}, err
	}
	s := redisStats{calls: map[string]int64{}}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			s.total, _ = strconv.ParseInt(v, 10, 64)
			continue
		}
		// cmdstat_evalsha:calls=2,usec=...
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				s.calls[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return s, nil
}

// topLevel are the commands a client of verifyq sends itself; every other
// command counted during a run was run by a Lua script (GET, SET, PTTL,
// ZADD, HSET, LPUSH, ...), which the enqueuer never sends on its own. INFO is
// the harness's.
var topLevel = []string{"evalsha", "eval", "sadd", "ping", "hello", "client|setinfo", "select", "auth", "script|load"}

// commandsPerRequest is what a run cost Redis, per request.
type commandsPerRequest struct {
	// Sent counts commands the clients sent (round trips): EVALSHA, EVAL
	// (only after a NOSCRIPT), SADD (asynq, once per process), PING
	// (readiness checks), connection set-up.
	Sent float64
	// EvalSHA and Eval count the script calls among them.
	EvalSHA, Eval float64
	// Other counts the sent commands that were not script calls.
	Other float64
	// InScripts counts the commands the scripts ran.
	InScripts float64
}

// sub returns the counts of s less those of before.
func (s redisStats) sub(before redisStats) redisStats {
	d := redisStats{total: s.total - before.total, calls: map[string]int64{}}
	for k, v := range s.calls {
		d.calls[k] = v - before.calls[k]
	}
	return d
}

// add returns the sum of two deltas.
func (s redisStats) add(o redisStats) redisStats {
	d := redisStats{total: s.total + o.total, calls: map[string]int64{}}
	for k, v := range s.calls {
		d.calls[k] += v
	}
	for k, v := range o.calls {
		d.calls[k] += v
	}
	return d
}

func perRequest(before, after redisStats, requests int) commandsPerRequest {
	return perRequestDelta(after.sub(before), requests)
}

// perRequestDelta divides the counts of a delta by requests.
func perRequestDelta(delta redisStats, requests int) commandsPerRequest {
	if requests == 0 {
		return commandsPerRequest{}
	}
	n := float64(requests)
	d := func(name string) float64 { return float64(delta.calls[name]) }
	var sent float64
	for _, name := range topLevel {
		sent += d(name)
	}
	info := d("info")
	c := commandsPerRequest{
		Sent:    sent / n,
		EvalSHA: d("evalsha") / n,
		Eval:    d("eval") / n,
	}
	c.Other = c.Sent - c.EvalSHA - c.Eval
	c.InScripts = (float64(delta.total) - sent - info) / n
	return c
}
