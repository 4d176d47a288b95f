package grpcapi

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/verifyq/verifyq/outcome"
	"github.com/verifyq/verifyq/service"
)

func TestStatusOfRateLimitCarriesRetryInfo(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("send: %w", &service.RateLimitError{Limit: "address", RetryAfter: 1500 * time.Millisecond})
	st := statusOf(outcome.RateLimited, err)
	require.Equal(t, codes.ResourceExhausted, st.Code())
	assert.Equal(t, "too many requests (address limit); retry in 2 s", st.Message())
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
