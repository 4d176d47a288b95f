// Package api is verifyq's HTTP edge: JSON requests in, JSON replies out,
// and the one place where service errors become HTTP statuses.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/verifyq/verifyq/service"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 4 << 10

// Service is what the HTTP edge needs (service.Service).
type Service interface {
	SendCode(ctx context.Context, req service.SendRequest) (service.Sent, error)
	VerifyCode(ctx context.Context, email, code string) error
}

var _ Service = (*service.Service)(nil)

// Handler serves the public HTTP API.
type Handler struct {
	svc     Service
	logger  *slog.Logger
	mux     *http.ServeMux
	trusted []netip.Prefix
}

// NewHandler returns the HTTP API on svc. X-Forwarded-For is believed only
// when the request comes from an address in trustedProxies.
func NewHandler(svc Service, logger *slog.Logger, trustedProxies []netip.Prefix) *Handler {
	h := &Handler{svc: svc, logger: logger, mux: http.NewServeMux(), trusted: trustedProxies}
	h.mux.HandleFunc("POST /v1/codes", h.sendCode)
	h.mux.HandleFunc("POST /v1/codes/verify", h.verifyCode)
	h.mux.HandleFunc("/v1/codes", methodNotAllowed)
	h.mux.HandleFunc("/v1/codes/verify", methodNotAllowed)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type sendRequest struct {
	Email  string `json:"email"`
	Locale string `json:"locale"`
}

type sendResponse struct {
	Email       string `json:"email"`
	ExpiresIn   int64  `json:"expires_in"`
	ResendAfter int64  `json:"resend_after"`
}

func (h *Handler) sendCode(w http.ResponseWriter, r *http.Request) {
	var req sendRequest
	if !h.decode(w, r, &req) {
		return
	}
	sent, err := h.svc.SendCode(r.Context(), service.SendRequest{Email: req.Email, Locale: req.Locale, Client: h.client(r)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, sendResponse{
		Email:       req.Email,
		ExpiresIn:   int64(sent.ExpiresIn.Seconds()),
		ResendAfter: seconds(sent.ResendAfter),
	})
}

type verifyRequest struct {
	Email string `json:"email"`
	Code  string `json:"code"`
}

type verifyResponse struct {
	Email    string `json:"email"`
	Verified bool   `json:"verified"`
}

func (h *Handler) verifyCode(w http.ResponseWriter, r *http.Request) {
	var req verifyRequest
	if !h.decode(w, r, &req) {
		return
	}
	if err := h.svc.VerifyCode(r.Context(), req.Email, req.Code); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, verifyResponse{Email: req.Email, Verified: true})
}

// decode reads one JSON object of at most MaxBodyBytes into v, or writes the
// error reply and returns false.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes))
		return false
	}
	writeError(w, http.StatusBadRequest, "invalid_json", "request body must be one JSON object with string fields")
	return false
}

// fail translates a service error into an HTTP reply: the one place where
// that mapping lives. Internal details are logged, never sent.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var limited *service.RateLimitError
	switch {
	case errors.Is(err, service.ErrInvalidAddress):
		writeError(w, http.StatusBadRequest, "invalid_email", "email must be a bare address such as user@example.com, at most 254 bytes")
	case errors.Is(err, service.ErrUnknownLocale):
		writeError(w, http.StatusBadRequest, "invalid_locale", `locale must be "zh-CN" or "en"`)
	case errors.Is(err, service.ErrInvalidCode):
		writeError(w, http.StatusBadRequest, "invalid_code", "code must be a non-empty string")
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", strconv.FormatInt(seconds(limited.RetryAfter), 10))
		writeError(w, http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("too many codes requested (%s limit); retry in %d s", limited.Limit, seconds(limited.RetryAfter)))
	case errors.Is(err, service.ErrAttemptsExhausted):
		writeError(w, http.StatusUnprocessableEntity, "attempts_exhausted", "the code is wrong, and that was the last attempt: request a new code")
	case errors.Is(err, service.ErrMismatch):
		writeError(w, http.StatusUnprocessableEntity, "code_mismatch", "the code is wrong")
	case errors.Is(err, service.ErrNotFound):
		writeError(w, http.StatusGone, "code_not_found", "no live code for this address: it expired, was used, or was never requested")
	case errors.Is(err, service.ErrUnavailable):
		h.logger.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the service is temporarily unavailable, try again")
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the reply.
		writeError(w, http.StatusServiceUnavailable, "canceled", "request canceled")
	default:
		h.logger.ErrorContext(r.Context(), "request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

// client returns the end user's address from X-Forwarded-For when the
// request comes from a trusted proxy: the rightmost entry that is not itself
// a trusted proxy. Otherwise "": the peer is the gateway, not a user, and is
// never limited as if it were one.
func (h *Handler) client(r *http.Request) string {
	if len(h.trusted) == 0 || !h.isTrusted(peerAddr(r.RemoteAddr)) {
		return ""
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		addr, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return "" // a malformed chain names nobody reliably
		}
		if !h.isTrusted(addr) {
			return addr.String()
		}
	}
	return ""
}

func (h *Handler) isTrusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range h.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// seconds rounds d up to whole seconds, so a client that waits that long is
// never early.
func seconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

func methodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
