package main

import (
	"testing"

	"go.uber.org/goleak"
)

// The App tests open and close whole enqueuers: HTTP, gRPC and admin
// servers, the readiness loop and the Redis pool. Nothing may outlive them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
