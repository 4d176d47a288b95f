// Package script runs verifyq's Lua scripts on Redis: a batch of script
// calls in one pipeline of EVALSHA, loaded and run again where Redis did not
// know a script, with plain commands of one key beside them.
package script

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Call is one script with its keys and arguments, or, with Script nil, a
// plain command (Command: its name and arguments) that needs no script of
// its own, such as one ZADD.
type Call struct {
	Script  *redis.Script
	Keys    []string
	Args    []any
	Command []any
}

// Run runs calls in one pipeline and returns their replies. A call whose
// script Redis does not know (after a restart, on a new cluster node) is
// run again, alone with the others that failed so, once its script is
// loaded on every node; the calls that did run, plain commands included,
// are not run twice. The error is the first call's that failed, whether
// in the first pipeline or in the one that ran the unknown scripts again;
// the replies are returned with it, so that a caller can tell what ran.
func Run(ctx context.Context, rdb redis.UniversalClient, calls ...Call) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; ; attempt++ {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, i := range todo {
				if calls[i].Script == nil {
					cmds[i] = p.Do(ctx, calls[i].Command...)
					continue
				}
				cmds[i] = calls[i].Script.EvalSha(ctx, p, calls[i].Keys, calls[i].Args...)
			}
			return nil
		})
		if err == nil && attempt > 0 {
			// The calls run again succeeded; one that failed otherwise in
			// the first pipeline (a refused command beside an unknown
			// script) fails the run all the same.
			err = firstErr(cmds)
		}
		if err == nil || attempt > 0 || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return cmds, err
		}
		var again []int
		for _, i := range todo {
			if redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT") {
				again = append(again, i)
				if lerr := calls[i].Script.Load(ctx, rdb).Err(); lerr != nil {
					return cmds, lerr
				}
			}
		}
		todo = again
	}
}

// firstErr is the first error of cmds, in their order.
func firstErr(cmds []*redis.Cmd) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// ErrEmptyReply is returned by Replies for a script that returned nothing.
var ErrEmptyReply = errors.New("empty reply")

// Replies returns each command's reply as a list, or the first error,
// naming the reply's place.
func Replies(cmds []*redis.Cmd) ([][]any, error) {
	out := make([][]any, len(cmds))
	for i, c := range cmds {
		r, err := c.Slice()
		if err == nil && len(r) == 0 {
			err = ErrEmptyReply
		}
		if err != nil {
			return nil, fmt.Errorf("reply %d: %w", i, err)
		}
		out[i] = r
	}
	return out, nil
}
