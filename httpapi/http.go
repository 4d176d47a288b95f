// Package httpapi is verifyq's HTTP edge: JSON requests in, JSON replies out.
// Every reply's status, error code and message come from the outcome table
// (package outcome), as on the gRPC edge. Every API request is admitted by
// the auth Guard (its Authorization: Bearer key and the route's scope)
// before anything else is read, runs under panic recovery and a deadline,
// and ends in one log line (the caller's name, the address masked, never
// the key or the code) and one observation of the request metrics.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/outcome"
	"github.com/verifyq/verifyq/service"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 4 << 10

// DefaultRequestTimeout is Config.RequestTimeout when zero.
const DefaultRequestTimeout = 5 * time.Second

// Service is what the HTTP edge needs (service.Service).
type Service interface {
	SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error)
	VerifyCode(ctx context.Context, req service.VerifyRequest) error
	Status(ctx context.Context, id codes.ID) (delivery.Status, error)
}

var _ Service = (*service.Service)(nil)

// RequestObserver records one answered request (metrics.Enqueuer), the same
// observer the gRPC edge reports to.
type RequestObserver interface {
	ObserveRequest(api, route, caller, outcome string, d time.Duration)
}

// Routes are the values of the route label and the log's path: the API's
// paths, and "other" for any path that is not one (so that a scanner cannot
// mint label values).
const (
	RouteSend   = "/v1/codes"
	RouteVerify = "/v1/codes/verify"
	RouteStatus = "/v1/codes/status"
	RouteOther  = "other"
)

// Config configures a Handler.
type Config struct {
	// TrustedProxies are the peers whose X-Forwarded-For is believed; any
	// other peer is the end user itself.
	TrustedProxies clientip.Trusted
	// RequestTimeout bounds every request. Zero means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Metrics, when set, records every request.
	Metrics RequestObserver
	// Guard admits the callers; nil admits everyone (auth.Anonymous).
	Guard *auth.Guard
}

// Handler serves the public HTTP API.
type Handler struct {
	svc    Service
	logger *slog.Logger
	cfg    Config
	mux    *http.ServeMux
}

// NewHandler returns the HTTP API on svc.
func NewHandler(svc Service, logger *slog.Logger, cfg Config) *Handler {
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	h := &Handler{svc: svc, logger: logger, cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST "+RouteSend, h.sendCode)
	h.mux.HandleFunc("POST "+RouteVerify, h.verifyCode)
	h.mux.HandleFunc("GET "+RouteStatus, h.status)
	notAllowed := func(allow string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			reply(w, r, outcome.MethodNotAllowed, nil)
		}
	}
	h.mux.HandleFunc(RouteSend, notAllowed(http.MethodPost))
	h.mux.HandleFunc(RouteVerify, notAllowed(http.MethodPost))
	h.mux.HandleFunc(RouteStatus, notAllowed(http.MethodGet+", "+http.MethodHead))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { reply(w, r, outcome.NoRoute, nil) })
	return h
}

// exchange is what a request's handler tells ServeHTTP for its log line
// and metrics; it travels in the request's context.
type exchange struct {
	outcome *outcome.Outcome
	caller  string
	email   string
	err     error
}

type exchangeKey struct{}

func exchangeOf(r *http.Request) *exchange {
	if x, ok := r.Context().Value(exchangeKey{}).(*exchange); ok {
		return x
	}
	return &exchange{}
}

// ServeHTTP answers one request under a deadline and panic recovery, then
// logs it and records it in the metrics.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	x := &exchange{}
	ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), exchangeKey{}, x), h.cfg.RequestTimeout)
	defer cancel()
	r = r.WithContext(ctx)
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler { //nolint:errorlint // a sentinel panic value, compared as net/http does
				panic(p)
			}
			h.logger.ErrorContext(ctx, "http handler panicked", "path", route(r), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			x.err = errors.New("panic")
			if sw.code == 0 {
				reply(sw, r, outcome.Internal, nil)
			}
			x.outcome = outcome.Internal
		}
		h.finish(r, x, sw.status(), time.Since(start))
	}()
	h.mux.ServeHTTP(sw, r)
}

// finish logs the request in one line and records it in the metrics.
func (h *Handler) finish(r *http.Request, x *exchange, status int, d time.Duration) {
	o := x.outcome
	if o == nil { // a reply not written through reply: only a bug does that
		o = outcome.Internal
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", route(r)),
		slog.Int("status", status),
		slog.String("outcome", o.Name),
		slog.Int64("ms", d.Milliseconds()),
	}
	if x.caller != "" {
		attrs = append(attrs, slog.String("caller", x.caller))
	}
	if x.email != "" {
		attrs = append(attrs, slog.String("email", mail.MaskAddress(x.email)))
	}
	if x.err != nil && o.Level >= slog.LevelWarn {
		attrs = append(attrs, slog.String("err", x.err.Error()))
	}
	h.logger.LogAttrs(r.Context(), o.Level, "http request", attrs...)
	if h.cfg.Metrics != nil {
		h.cfg.Metrics.ObserveRequest("http", route(r), x.caller, o.Metric, d)
	}
}

// KnownPaths hands next every request whose path is not one of the API's
// routes with the path "/", which answers the same (outcome.NoRoute), so
// that next, a tracing wrapper (tracing.HTTP), never records a path a
// client made up: it could name an address.
func KnownPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route(r) == RouteOther && r.URL.Path != "/" {
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath, r.RequestURI = "/", "", "/"
		}
		next.ServeHTTP(w, r)
	})
}

func route(r *http.Request) string {
	if p := r.URL.Path; p == RouteSend || p == RouteVerify || p == RouteStatus {
		return p
	}
	return RouteOther
}

type sendRequest struct{ Email, Locale, Purpose string }

type sendResponse struct {
	Email       string `json:"email"`
	ExpiresIn   int64  `json:"expires_in"`
	ResendAfter int64  `json:"resend_after"`
}

func (h *Handler) sendCode(w http.ResponseWriter, r *http.Request) {
	var req sendRequest
	if !h.admit(w, r, auth.Send) || !decode(w, r, map[string]*string{"email": &req.Email, "locale": &req.Locale, "purpose": &req.Purpose}) {
		return
	}
	exchangeOf(r).email = req.Email
	// A send without a locale is in the language of the end user's
	// Accept-Language, as the gateway passed it on.
	accept := strings.Join(r.Header.Values("Accept-Language"), ",")
	sent, err := h.svc.SendCode(r.Context(), service.SendRequest{Email: req.Email, Purpose: req.Purpose, Locale: req.Locale,
		AcceptLanguage: accept, Client: h.client(r)})
	if err != nil {
		replyErr(w, r, err)
		return
	}
	reply(w, r, outcome.OK, nil)
	writeJSON(w, http.StatusAccepted, sendResponse{
		Email:       req.Email,
		ExpiresIn:   int64(sent.ExpiresIn / time.Second),
		ResendAfter: outcome.Seconds(sent.ResendAfter),
	})
}

type verifyRequest struct{ Email, Code, Purpose string }

type verifyResponse struct {
	Email    string `json:"email"`
	Verified bool   `json:"verified"`
}

func (h *Handler) verifyCode(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if !h.admit(w, r, auth.Verify) || !decode(w, r, map[string]*string{"email": &req.Email, "code": &req.Code, "purpose": &req.Purpose}) {
		return
	}
	exchangeOf(r).email = req.Email
	if err := h.svc.VerifyCode(r.Context(), service.VerifyRequest{Email: req.Email, Purpose: req.Purpose, Code: req.Code, Client: h.client(r)}); err != nil {
		replyErr(w, r, err)
		return
	}
	reply(w, r, outcome.OK, nil)
	writeJSON(w, http.StatusOK, verifyResponse{Email: req.Email, Verified: true})
}

type statusResponse struct {
	Email         string `json:"email"`
	State         string `json:"state"`
	Attempts      int    `json:"attempts"`
	NextAttemptIn int64  `json:"next_attempt_in,omitempty"`
	LastFailure   string `json:"last_failure,omitempty"`
	Reply         int    `json:"reply,omitempty"`
	SentAt        string `json:"sent_at,omitempty"`
	Relay         string `json:"relay,omitempty"`
	SentAfterMs   int64  `json:"sent_after_ms,omitempty"`
	ExpiresIn     int64  `json:"expires_in"`
	DSNStatus     string `json:"dsn_status,omitempty"`
	Diagnostic    string `json:"diagnostic,omitempty"`
}

// status answers GET /v1/codes/status?email=...[&purpose=...]: what became
// of the mail of the address's code. The address is required, the purpose
// optional, each given at most once, and nothing else.
func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	if !h.admit(w, r, auth.Status) {
		return
	}
	q := r.URL.Query()
	_, hasPurpose := q["purpose"]
	want := 1
	if hasPurpose {
		want = 2
	}
	if len(q) != want || len(q["email"]) != 1 || hasPurpose && len(q["purpose"]) != 1 {
		reply(w, r, outcome.InvalidQuery, nil)
		return
	}
	email := q.Get("email")
	exchangeOf(r).email = email
	st, err := h.svc.Status(r.Context(), codes.ID{Purpose: q.Get("purpose"), Email: email})
	if err != nil {
		replyErr(w, r, err)
		return
	}
	reply(w, r, outcome.OK, nil)
	res := statusResponse{
		Email:         email,
		State:         st.State,
		Attempts:      st.Attempts,
		NextAttemptIn: outcome.Seconds(st.NextAttemptIn),
		LastFailure:   string(st.LastFailure),
		Reply:         st.Reply,
		Relay:         st.Relay,
		SentAfterMs:   st.SentAfter.Milliseconds(),
		ExpiresIn:     int64(st.ExpiresIn / time.Second),
		DSNStatus:     st.DSN,
		Diagnostic:    st.Diagnostic,
	}
	if !st.SentAt.IsZero() {
		res.SentAt = st.SentAt.UTC().Format(time.RFC3339Nano)
	}
	writeJSON(w, http.StatusOK, res)
}

// admit asks the Guard whether the request's caller may do what needs
// scope, and notes the caller for the log line and the metrics. On a
// refusal it writes the reply (401 with a Bearer challenge, 403, or 429 for
// status reads) and returns false: nothing of the request has been read,
// and the service does not run. The key is the one Authorization header
// of the Bearer scheme; others are no key, several Bearer ones no valid
// key (auth.Authorization). Over mTLS a request without a key is its
// verified client certificate's caller (auth.Guard.AdmitPeer).
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, scope auth.Scope) bool {
	authorization, certName := auth.Authorization(r.Header.Values("Authorization")), ""
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		certName = auth.CertName(r.TLS.VerifiedChains[0][0])
	}
	caller, err := h.cfg.Guard.AdmitPeer(authorization, certName, scope)
	exchangeOf(r).caller = caller.Name
	if err == nil {
		return true
	}
	if errors.Is(err, auth.ErrUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="verifyq"`)
	}
	replyErr(w, r, err)
	return false
}

// decode reads the body, at most MaxBodyBytes of application/json, as one
// JSON object whose members are exactly some of fields (by exact name, each
// at most once, each a string), or writes the error reply and returns false.
func decode(w http.ResponseWriter, r *http.Request, fields map[string]*string) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		reply(w, r, outcome.UnsupportedMediaType, nil)
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		reply(w, r, outcome.BodyTooLarge, nil)
		return false
	case err != nil:
		reply(w, r, outcome.Of(r.Context(), err), err)
		return false
	}
	if err := decodeObject(body, fields); err != nil {
		reply(w, r, outcome.InvalidJSON, &outcome.DetailError{Detail: err.Error()})
		return false
	}
	return true
}

// decodeObject parses body strictly: one object, members from fields only,
// spelled exactly, none twice, every value a string; nothing after it. The
// error says what is wrong, quoting at most a short member name.
func decodeObject(body []byte, fields map[string]*string) error {
	if !utf8.Valid(body) {
		return errors.New("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("the body is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return errors.New("malformed JSON")
		}
		name, _ := t.(string)
		dst, known := fields[name]
		switch {
		case !known:
			for f := range fields {
				if strings.EqualFold(f, name) {
					return fmt.Errorf("member %s must be spelled %q", quote(name), f)
				}
			}
			return fmt.Errorf("unknown member %s", quote(name))
		case seen[name]:
			return fmt.Errorf("member %q appears twice", name)
		}
		seen[name] = true
		v, err := dec.Token()
		if err != nil {
			return errors.New("malformed JSON")
		}
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("member %q must be a string", name)
		}
		*dst = str
	}
	if _, err := dec.Token(); err != nil {
		return errors.New("malformed JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// quote quotes a member name for an error message, cut to 32 bytes.
func quote(name string) string {
	if len(name) > 32 {
		name = strings.ToValidUTF8(name[:32], "") + "..."
	}
	return strconv.Quote(name)
}

// replyErr answers a request the service refused or failed with err.
func replyErr(w http.ResponseWriter, r *http.Request, err error) {
	reply(w, r, outcome.Of(r.Context(), err), err)
}

// reply records o as the request's outcome and, unless o is OK (whose
// body the route writes), writes its JSON error reply: the table's status,
// name and message, and Retry-After when err says when to retry. Internal
// details of err go to the log line, never into the reply.
func reply(w http.ResponseWriter, r *http.Request, o *outcome.Outcome, err error) {
	x := exchangeOf(r)
	x.outcome, x.err = o, err
	if o == outcome.OK {
		return
	}
	if _, retry, ok := outcome.RateLimit(err); ok {
		w.Header().Set("Retry-After", strconv.FormatInt(outcome.Seconds(retry), 10))
	}
	writeJSON(w, o.HTTPStatus, errorBody{Error: errorDetail{Code: o.Name, Message: o.Text(err)}})
}

// client returns the end user's address as clientip's rule believes it.
func (h *Handler) client(r *http.Request) string {
	var peer netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr()
	}
	return h.cfg.TrustedProxies.Client(peer, r.Header.Values("X-Forwarded-For"))
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
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
