// Package outcome declares, once, every way a request to verifyq can end:
// for each outcome its HTTP status and error code, its verifyq.v1 gRPC
// status and reason, its number on the old message.VarifyService, its
// metric label, the level it is logged at and the message a caller reads.
//
// Both edges (httpapi, grpcapi) and the request metrics read this table and
// nothing else: adding an outcome is one entry here plus its tests. Of maps
// a service error to its outcome.
package outcome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/service"
)

// Outcome is one way a request can end.
type Outcome struct {
	// Name is the outcome's name: the HTTP error code in the JSON reply
	// and the "outcome" field of the request's log line.
	Name string
	// HTTPStatus is the HTTP reply's status. A success answers with its
	// route's own 2xx status (202 for a send, 200 for a verify).
	HTTPStatus int
	// GRPCCode is the status of a verifyq.v1 call.
	GRPCCode codes.Code
	// Reason is the google.rpc.ErrorInfo reason of a verifyq.v1 error, the
	// value a client switches on; empty for errors that carry none.
	Reason string
	// Legacy is the error number of a message.VarifyService reply.
	Legacy int32
	// Metric is the value of the "outcome" label of the request metrics.
	Metric string
	// Level is the level of the request's log line.
	Level slog.Level
	// Message is what the caller reads. It never carries internals.
	Message string
	// Err is the service error that ends a request with this outcome,
	// matched with errors.Is; nil for success, Internal and the HTTP-only
	// outcomes.
	Err error
	// HTTPOnly marks outcomes of the HTTP transport itself (bad JSON, a
	// wrong method or path): on gRPC the framework answers those cases.
	HTTPOnly bool
	// LegacyOnly marks outcomes only the old message.VarifyService has.
	LegacyOnly bool
	// Access marks the outcomes of the caller check (package auth), which
	// each edge makes before the service runs. The old
	// message.VarifyService answers them with their gRPC status, not in
	// band: Legacy is unused.
	Access bool
}

// Numbers of message.GetVarifyRsp.error. 0, 1 and 2 are the old service's
// and keep their meaning; verifyq adds new numbers for new outcomes and
// never reuses one.
const (
	LegacySuccess        int32 = 0 // Success
	LegacyRedisErr       int32 = 1 // RedisErr: Redis or the queue is unreachable, retry later
	LegacyException      int32 = 2 // Exception: any other failure
	LegacyInvalidAddress int32 = 3 // the address is not a bare address
	LegacyRateLimited    int32 = 4 // a send limit refused the request
	LegacyUndeliverable  int32 = 5 // the address is suppressed: refused or bounced for good, or complained of, lately
)

// Values of the "outcome" label of the request metrics.
const (
	MetricOK            = "ok"
	MetricCoalesced     = "coalesced"
	MetricInvalid       = "invalid"
	MetricNotFound      = "not_found"
	MetricMismatch      = "mismatch"
	MetricRateLimited   = "rate_limited"
	MetricUndeliverable = "undeliverable"
	MetricCanceled      = "canceled"
	MetricDeadline      = "deadline_exceeded"
	MetricUnavailable   = "unavailable"
	MetricUnauth        = "unauthenticated"
	MetricDenied        = "permission_denied"
	MetricError         = "error"
)

// The outcomes. Of tries them in this order, so context errors come before
// Unavailable, which may wrap them.
var (
	OK = &Outcome{Name: "ok", HTTPStatus: http.StatusOK, GRPCCode: codes.OK,
		Legacy: LegacySuccess, Metric: MetricOK, Level: slog.LevelInfo}

	// Coalesced is the old service's resend inside the cooldown while the
	// code lives: success, and no new mail, since the code is on its way.
	// Its callers re-enable their button after 10 s and show an error for
	// any other answer; HTTP and v1 callers get RateLimited instead.
	Coalesced = &Outcome{Name: "coalesced", GRPCCode: codes.OK, LegacyOnly: true,
		Legacy: LegacySuccess, Metric: MetricCoalesced, Level: slog.LevelInfo}

	// Unauthenticated: no API key, or one not in API_KEYS_FILE. Nothing
	// is stored or mailed.
	Unauthenticated = &Outcome{Name: "unauthenticated", HTTPStatus: http.StatusUnauthorized, GRPCCode: codes.Unauthenticated,
		Reason: "UNAUTHENTICATED", Access: true, Metric: MetricUnauth, Level: slog.LevelInfo,
		Message: "a valid API key is required (Authorization: Bearer <key>)", Err: auth.ErrUnauthenticated}
	// PermissionDenied: the key lacks the request's scope; its
	// *auth.ScopeError names the scope. It says nothing of the request's
	// address: the service has not run.
	PermissionDenied = &Outcome{Name: "permission_denied", HTTPStatus: http.StatusForbidden, GRPCCode: codes.PermissionDenied,
		Reason: "PERMISSION_DENIED", Access: true, Metric: MetricDenied, Level: slog.LevelInfo,
		Message: "this API key may not make this request", Err: auth.ErrPermissionDenied}

	Canceled = &Outcome{Name: "canceled", HTTPStatus: StatusClientClosed, GRPCCode: codes.Canceled,
		Legacy: LegacyException, Metric: MetricCanceled, Level: slog.LevelInfo,
		Message: "request canceled", Err: context.Canceled}
	DeadlineExceeded = &Outcome{Name: "deadline_exceeded", HTTPStatus: http.StatusGatewayTimeout, GRPCCode: codes.DeadlineExceeded,
		Legacy: LegacyRedisErr, Metric: MetricDeadline, Level: slog.LevelWarn,
		Message: "the request ran out of time, try again", Err: context.DeadlineExceeded}

	InvalidEmail = &Outcome{Name: "invalid_email", HTTPStatus: http.StatusBadRequest, GRPCCode: codes.InvalidArgument,
		Reason: "INVALID_EMAIL", Legacy: LegacyInvalidAddress, Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "email must be a bare address such as user@example.com, at most 254 bytes", Err: service.ErrInvalidAddress}
	InvalidLocale = &Outcome{Name: "invalid_locale", HTTPStatus: http.StatusBadRequest, GRPCCode: codes.InvalidArgument,
		Reason: "INVALID_LOCALE", Legacy: LegacyException, Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: fmt.Sprintf(`locale must be a BCP 47 language tag such as "ja" or "zh-TW", at most %d bytes`, mail.MaxLocaleLen),
		Err:     service.ErrUnknownLocale}
	InvalidPurpose = &Outcome{Name: "invalid_purpose", HTTPStatus: http.StatusBadRequest, GRPCCode: codes.InvalidArgument,
		Reason: "INVALID_PURPOSE", Legacy: LegacyException, Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "purpose must be empty or one of the configured purposes", Err: service.ErrInvalidPurpose}
	InvalidCode = &Outcome{Name: "invalid_code", HTTPStatus: http.StatusBadRequest, GRPCCode: codes.InvalidArgument,
		Reason: "INVALID_CODE", Legacy: LegacyException, Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: fmt.Sprintf("code must be a non-empty string of at most %d bytes", service.MaxCodeLength), Err: service.ErrInvalidCode}
	NotFound = &Outcome{Name: "code_not_found", HTTPStatus: http.StatusGone, GRPCCode: codes.NotFound,
		Reason: "CODE_NOT_FOUND", Legacy: LegacyException, Metric: MetricNotFound, Level: slog.LevelInfo,
		Message: "no live code for this address: it expired, was used, or was never requested", Err: service.ErrNotFound}
	// Mismatch is not NotFound: there is a live code and this one is not
	// it, so asking for a new code will not help.
	Mismatch = &Outcome{Name: "code_mismatch", HTTPStatus: http.StatusUnprocessableEntity, GRPCCode: codes.FailedPrecondition,
		Reason: "CODE_MISMATCH", Legacy: LegacyException, Metric: MetricMismatch, Level: slog.LevelInfo,
		Message: "the code is wrong", Err: service.ErrMismatch}
	AttemptsExhausted = &Outcome{Name: "attempts_exhausted", HTTPStatus: http.StatusUnprocessableEntity, GRPCCode: codes.FailedPrecondition,
		Reason: "ATTEMPTS_EXHAUSTED", Legacy: LegacyException, Metric: MetricMismatch, Level: slog.LevelInfo,
		Message: "the code is wrong, and that was the last attempt: request a new code", Err: service.ErrAttemptsExhausted}
	// RateLimited's errors are *service.RateLimitError: the edges add
	// which limit and when to retry (Text, RateLimit).
	RateLimited = &Outcome{Name: "rate_limited", HTTPStatus: http.StatusTooManyRequests, GRPCCode: codes.ResourceExhausted,
		Reason: "RATE_LIMITED", Legacy: LegacyRateLimited, Metric: MetricRateLimited, Level: slog.LevelInfo,
		Message: "too many requests", Err: service.ErrRateLimited}
	// Undeliverable: the address is on the suppression list, after its
	// mail server refused or bounced a mail for good, or its recipient
	// complained of one; nothing is mailed.
	Undeliverable = &Outcome{Name: "undeliverable", HTTPStatus: http.StatusUnprocessableEntity, GRPCCode: codes.FailedPrecondition,
		Reason: "UNDELIVERABLE", Legacy: LegacyUndeliverable, Metric: MetricUndeliverable, Level: slog.LevelInfo,
		Message: "mail to this address was refused, bounced or reported as spam lately; use another address", Err: service.ErrUndeliverable}
	Unavailable = &Outcome{Name: "unavailable", HTTPStatus: http.StatusServiceUnavailable, GRPCCode: codes.Unavailable,
		Legacy: LegacyRedisErr, Metric: MetricUnavailable, Level: slog.LevelError,
		Message: "the service is temporarily unavailable, try again", Err: service.ErrUnavailable}
	// Internal is every error no other outcome claims: a bug, a panic.
	Internal = &Outcome{Name: "internal", HTTPStatus: http.StatusInternalServerError, GRPCCode: codes.Internal,
		Legacy: LegacyException, Metric: MetricError, Level: slog.LevelError,
		Message: "internal error"}

	InvalidJSON = &Outcome{Name: "invalid_json", HTTPStatus: http.StatusBadRequest, HTTPOnly: true,
		Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "request body must be one JSON object with string fields"}
	InvalidQuery = &Outcome{Name: "invalid_query", HTTPStatus: http.StatusBadRequest, HTTPOnly: true,
		Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "the query must be one email parameter and at most one purpose parameter"}
	BodyTooLarge = &Outcome{Name: "body_too_large", HTTPStatus: http.StatusRequestEntityTooLarge, HTTPOnly: true,
		Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "request body is larger than the limit"}
	UnsupportedMediaType = &Outcome{Name: "unsupported_media_type", HTTPStatus: http.StatusUnsupportedMediaType, HTTPOnly: true,
		Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "Content-Type must be application/json"}
	MethodNotAllowed = &Outcome{Name: "method_not_allowed", HTTPStatus: http.StatusMethodNotAllowed, HTTPOnly: true,
		Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "this path does not take this method; the Allow header lists those it takes"}
	NoRoute = &Outcome{Name: "not_found", HTTPStatus: http.StatusNotFound, HTTPOnly: true,
		Metric: MetricInvalid, Level: slog.LevelInfo,
		Message: "no such endpoint"}
)

// StatusClientClosed is the HTTP status recorded for a request whose client
// went away before the answer (nginx's 499); nobody reads the reply.
const StatusClientClosed = 499

// all is the table, in the order Of tries it.
var all = []*Outcome{
	OK, Coalesced, Unauthenticated, PermissionDenied, Canceled, DeadlineExceeded,
	InvalidEmail, InvalidLocale, InvalidPurpose, InvalidCode, NotFound, Mismatch, AttemptsExhausted, RateLimited, Undeliverable,
	Unavailable, Internal,
	InvalidJSON, InvalidQuery, BodyTooLarge, UnsupportedMediaType, MethodNotAllowed, NoRoute,
}

// All returns every outcome, in table order.
func All() []*Outcome { return append([]*Outcome(nil), all...) }

// Metrics returns every value of the "outcome" label, each once, in table
// order, so the metric series can exist from the start.
func Metrics() []string {
	var out []string
	seen := map[string]bool{}
	for _, o := range all {
		if !seen[o.Metric] {
			seen[o.Metric] = true
			out = append(out, o.Metric)
		}
	}
	return out
}

// Of returns the outcome of a request that ended with err: OK for nil, the
// first outcome whose Err matches, else Internal. ctx is the request's: an
// error that only says Redis could not be reached (or nothing we know) while
// the request's context has ended is the context's outcome, because the
// caller went away or ran out of time, not Redis.
func Of(ctx context.Context, err error) *Outcome {
	if err == nil {
		return OK
	}
	for _, o := range all {
		if o.Err != nil && errors.Is(err, o.Err) {
			if o == Unavailable {
				break
			}
			return o
		}
	}
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return Canceled
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, service.ErrUnavailable):
		return Unavailable
	}
	return Internal
}

// DetailError carries what exactly was wrong with a caller's input; Text
// adds it to the outcome's message. It never holds anything secret.
type DetailError struct{ Detail string }

func (e *DetailError) Error() string { return e.Detail }

// Text is the message the caller reads for err: Message, plus the detail of
// a *DetailError, the scope an API key lacks, and for a rate limit which
// limit refused and when to retry.
func (o *Outcome) Text(err error) string {
	var detail *DetailError
	if errors.As(err, &detail) {
		return o.Message + ": " + detail.Detail
	}
	var scope *auth.ScopeError
	if errors.As(err, &scope) && o == PermissionDenied {
		return o.Message + ": " + scope.Error()
	}
	if limit, retry, ok := RateLimit(err); ok && o == RateLimited {
		return fmt.Sprintf("%s (%s limit); retry in %d s", o.Message, limit, Seconds(retry))
	}
	return o.Message
}

// RateLimit returns which limit refused a request that ended with err and
// how long to wait before retrying, and whether err is a rate limit at all.
func RateLimit(err error) (limit string, retryAfter time.Duration, ok bool) {
	var limited *service.RateLimitError
	if !errors.As(err, &limited) {
		return "", 0, false
	}
	return limited.Limit, max(limited.RetryAfter, 0), true
}

// Seconds is d in whole seconds, rounded up so that a caller who waits that
// long is never early; never negative.
func Seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
