package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/verifyq/verifyq/service"
)

var redisDown = fmt.Errorf("%w: dial tcp 10.1.2.3:6379: connection refused", service.ErrUnavailable)

func TestLegacyError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int32
	}{
		{nil, 0},
		{redisDown, 1},
		{errors.New("boom"), 2},
		{fmt.Errorf("wrapped: %w", service.ErrInvalidAddress), 3},
		{&service.RateLimitError{Limit: "cooldown", RetryAfter: time.Second}, 4},
		{fmt.Errorf("%w: %w", service.ErrUnavailable, context.DeadlineExceeded), 1},
		{context.Canceled, 2},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, legacyError(tt.err), "%v", tt.err)
	}
	// The old service's numbers never change.
	assert.Equal(t, []int32{0, 1, 2}, []int32{legacySuccess, legacyRedisErr, legacyException})
}

func TestStatusOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{nil, codes.OK, ""},
		{fmt.Errorf("%w: malformed", service.ErrInvalidAddress), codes.InvalidArgument, "INVALID_EMAIL"},
		{service.ErrUnknownLocale, codes.InvalidArgument, "INVALID_LOCALE"},
		{service.ErrInvalidCode, codes.InvalidArgument, "INVALID_CODE"},
		{service.ErrMismatch, codes.FailedPrecondition, "CODE_MISMATCH"},
		{service.ErrAttemptsExhausted, codes.FailedPrecondition, "ATTEMPTS_EXHAUSTED"},
		{service.ErrNotFound, codes.NotFound, "CODE_NOT_FOUND"},
		{service.ErrRateLimited, codes.ResourceExhausted, "RATE_LIMITED"},
		{redisDown, codes.Unavailable, ""},
		{fmt.Errorf("%w: %w", service.ErrUnavailable, context.DeadlineExceeded), codes.DeadlineExceeded, ""},
		{fmt.Errorf("%w: %w", service.ErrUnavailable, context.Canceled), codes.Canceled, ""},
		{errors.New("template: secret detail"), codes.Internal, ""},
	}
	for _, tt := range tests {
		st := statusOf(tt.err)
		assert.Equal(t, tt.code, st.Code(), "%v", tt.err)
		if tt.err != nil {
			assert.NotContains(t, st.Message(), "10.1.2.3", "no internals in a message")
			assert.NotContains(t, st.Message(), "secret")
		}
		var reason string
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				reason = info.GetReason()
				assert.Equal(t, "verifyq", info.GetDomain())
			}
		}
		assert.Equal(t, tt.reason, reason, "%v", tt.err)
	}
}

func TestStatusOfRateLimitCarriesRetryInfo(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("send: %w", &service.RateLimitError{Limit: "address", RetryAfter: 1500 * time.Millisecond})
	st := statusOf(err)
	require.Equal(t, codes.ResourceExhausted, st.Code())
	assert.Contains(t, st.Message(), "retry in 2 s")
	var retry *errdetails.RetryInfo
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.ErrorInfo:
			info = d
		}
	}
	require.NotNil(t, retry)
	assert.Equal(t, 1500*time.Millisecond, retry.GetRetryDelay().AsDuration())
	require.NotNil(t, info)
	assert.Equal(t, "RATE_LIMITED", info.GetReason())
	assert.Equal(t, "address", info.GetMetadata()["limit"])
}
