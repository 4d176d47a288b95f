package grpcapi

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/verifyq/verifyq/outcome"
)

// errorDomain is the google.rpc.ErrorInfo domain of verifyq's errors.
const errorDomain = "verifyq"

// statusOf is the status of a verifyq.v1 call that ended with outcome o and
// error err, as the outcome table says: its code and message, and for
// outcomes with a reason a google.rpc.ErrorInfo a client can switch on. A
// rate limit adds which limit (ErrorInfo metadata "limit") and a
// google.rpc.RetryInfo.
func statusOf(o *outcome.Outcome, err error) *status.Status {
	if o == outcome.OK {
		return status.New(codes.OK, "")
	}
	st := status.New(o.GRPCCode, o.Text(err))
	if o.Reason == "" {
		return st
	}
	info := &errdetails.ErrorInfo{Reason: o.Reason, Domain: errorDomain}
	ds := []protoadapt.MessageV1{info}
	if limit, retry, ok := outcome.RateLimit(err); ok {
		info.Metadata = map[string]string{"limit": limit}
		ds = append(ds, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry.Round(time.Millisecond))})
	}
	if withDs, derr := st.WithDetails(ds...); derr == nil {
		return withDs
	}
	return st
}
