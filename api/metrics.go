package api

import (
	"net/http"
	"time"
)

// RequestObserver records one answered request (metrics.Enqueuer). The gRPC
// edge records into the same observer with api "grpc".
type RequestObserver interface {
	ObserveRequest(api, route, outcome string, d time.Duration)
}

// Routes are the values of the route label: the API's paths, and "other"
// for any path that is not one (so that a scanner cannot mint label values).
const (
	RouteSend   = "/v1/codes"
	RouteVerify = "/v1/codes/verify"
	RouteOther  = "other"
)

// Instrument wraps h, the HTTP API, to report every request to obs with api
// "http", its route and an outcome derived from the reply's status (see
// Outcome).
func Instrument(h http.Handler, obs RequestObserver) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		route := RouteOther
		if p := r.URL.Path; p == RouteSend || p == RouteVerify {
			route = p
		}
		obs.ObserveRequest("http", route, Outcome(sw.status()), time.Since(start))
	})
}

// Outcome maps a reply's status to the fixed set of request outcomes:
// ok, invalid, not_found, mismatch, rate_limited, unavailable, error. It
// follows the one mapping of service errors to statuses in Handler.fail.
func Outcome(status int) string {
	switch {
	case status >= 200 && status < 300:
		return "ok"
	case status == http.StatusGone:
		return "not_found" // no live code
	case status == http.StatusUnprocessableEntity:
		return "mismatch"
	case status == http.StatusTooManyRequests:
		return "rate_limited"
	case status == http.StatusServiceUnavailable:
		return "unavailable"
	case status >= 400 && status < 500:
		// Bad JSON, address, locale or code; wrong method; no such path.
		return "invalid"
	default:
		return "error"
	}
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
