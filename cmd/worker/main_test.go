package main

import (
	"testing"

	"go.uber.org/goleak"
)

// The App tests open and close whole workers: the asynq servers, the
// breakers' probes, the admin server, the bounce intake, the webhook
// deliveries' connections and the Redis pool. Nothing may outlive them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
