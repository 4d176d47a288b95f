package tasks

import "time"

// Exported for tests only.
var RetryDelayAt = retryDelay

// SetBreakerClock replaces the breaker's clock.
func SetBreakerClock(b *Breaker, now func() time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.now = now
}
