package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/verifyq/verifyq/service"
)

// Legacy error numbers of message.GetVarifyRsp. 0, 1 and 2 are the old
// service's and keep their meaning; verifyq adds new numbers for new
// outcomes and never reuses one.
const (
	legacySuccess        int32 = 0 // Success
	legacyRedisErr       int32 = 1 // RedisErr: service.ErrUnavailable
	legacyException      int32 = 2 // Exception: any other failure
	legacyInvalidAddress int32 = 3 // the address is not a bare address
	legacyRateLimited    int32 = 4 // a send limit refused the request
)

// legacyError maps a service error to the legacy error number: the one place
// where that mapping lives.
func legacyError(err error) int32 {
	switch {
	case err == nil:
		return legacySuccess
	case errors.Is(err, service.ErrInvalidAddress):
		return legacyInvalidAddress
	case errors.Is(err, service.ErrRateLimited):
		return legacyRateLimited
	case errors.Is(err, service.ErrUnavailable):
		return legacyRedisErr
	default:
		return legacyException
	}
}

// errorDomain is the google.rpc.ErrorInfo domain of verifyq's errors.
const errorDomain = "verifyq"

// statusOf maps a service error to the status of a verifyq.v1 call: the one
// place where that mapping lives. Messages never carry internals; domain
// errors carry a google.rpc.ErrorInfo whose reason a client can switch on.
func statusOf(err error) *status.Status {
	var limited *service.RateLimitError
	switch {
	case err == nil:
		return status.New(codes.OK, "")
	case errors.Is(err, service.ErrInvalidAddress):
		return withReason(codes.InvalidArgument, "INVALID_EMAIL", "email must be a bare address such as user@example.com, at most 254 bytes")
	case errors.Is(err, service.ErrUnknownLocale):
		return withReason(codes.InvalidArgument, "INVALID_LOCALE", `locale must be "zh-CN" or "en"`)
	case errors.Is(err, service.ErrInvalidCode):
		return withReason(codes.InvalidArgument, "INVALID_CODE", fmt.Sprintf("code must be a non-empty string of at most %d bytes", service.MaxCodeLength))
	case errors.Is(err, service.ErrAttemptsExhausted):
		return withReason(codes.FailedPrecondition, "ATTEMPTS_EXHAUSTED", "the code is wrong, and that was the last attempt: request a new code")
	case errors.Is(err, service.ErrMismatch):
		// Not NotFound: there is a live code, and this one is not it.
		return withReason(codes.FailedPrecondition, "CODE_MISMATCH", "the code is wrong")
	case errors.Is(err, service.ErrNotFound):
		return withReason(codes.NotFound, "CODE_NOT_FOUND", "no live code for this address: it expired, was used, or was never requested")
	case errors.As(err, &limited):
		retry := max(limited.RetryAfter, 0)
		st := status.New(codes.ResourceExhausted, fmt.Sprintf("rate limited, retry in %d s", int64(math.Ceil(retry.Seconds()))))
		return details(st,
			&errdetails.ErrorInfo{Reason: "RATE_LIMITED", Domain: errorDomain, Metadata: map[string]string{"limit": limited.Limit}},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(retry.Round(time.Millisecond))},
		)
	case errors.Is(err, service.ErrRateLimited):
		return withReason(codes.ResourceExhausted, "RATE_LIMITED", "rate limited")
	// Context errors before ErrUnavailable, which may wrap them: a call cut
	// off by its deadline is DeadlineExceeded, not a Redis outage.
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, service.ErrUnavailable):
		return status.New(codes.Unavailable, "the service is temporarily unavailable, try again")
	default:
		return status.New(codes.Internal, "internal error")
	}
}

func withReason(c codes.Code, reason, msg string) *status.Status {
	return details(status.New(c, msg), &errdetails.ErrorInfo{Reason: reason, Domain: errorDomain})
}

// details adds ds to st, or returns st as it is if they cannot be encoded.
func details(st *status.Status, ds ...protoadapt.MessageV1) *status.Status {
	if withDs, err := st.WithDetails(ds...); err == nil {
		return withDs
	}
	return st
}
