package events

import "time"

// RetryDelayWith is retryDelay with the test's random numbers.
func RetryDelayWith(n int, random func() float64) time.Duration { return retryDelay(n, random) }

// SetTimeout replaces d's request timeout.
func SetTimeout(d *Deliverer, timeout time.Duration) { d.client.Timeout = timeout }
