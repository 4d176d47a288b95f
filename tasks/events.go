package tasks

import (
	"context"
	"strconv"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/relay"
)

// RelayEvents returns the BreakerConfig.Notify of the breaker of the relay
// relayName in the worker process worker (host:pid): relay.failing when it
// opens, relay.recovered when it closes. Each worker has its own breakers,
// so each worker that sees an outage tells it; both events of one outage
// derive their webhook-id from the worker, the relay and the time it
// opened.
func RelayEvents(ev Events, relayName, worker string) func(Transition) {
	return func(t Transition) {
		fact := worker + "/" + relayName + "/" + strconv.FormatInt(t.OpenedAt.UnixMilli(), 10)
		e := events.Event{Type: events.RelayRecovered, Fact: fact, At: t.At,
			Data: events.Data{Relay: relayName, Worker: worker, OpenMS: t.At.Sub(t.OpenedAt).Milliseconds()}}
		if t.Opened {
			e.Type, e.Data.OpenMS = events.RelayFailing, 0
			e.Data.Failure = string(delivery.ClassOf(t.Err))
			if r := relay.ReplyError(t.Err); r != nil {
				e.Data.Reply, e.Data.Enhanced = r.Code, r.Enhanced
			}
		}
		_ = ev.Emit(context.Background(), e)
	}
}
