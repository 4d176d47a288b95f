package platform

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// adminAnswerWithin is the longest request of the admin server: the
// default 30 s CPU profile of /debug/pprof/profile, and some.
const adminAnswerWithin = 35 * time.Second

// AdminWriteTimeout bounds a reply of the admin server: its longest
// request and WriteMargin, so that a CPU profile fits.
const AdminWriteTimeout = adminAnswerWithin + WriteMargin

// NewAdminServer returns the server for ADMIN_ADDR: NewHTTPServer with a
// write timeout that lets a CPU profile finish.
func NewAdminServer(h http.Handler, logger *slog.Logger) *http.Server {
	return NewHTTPServer(h, logger, adminAnswerWithin)
}

// IsLoopback reports whether a listener on addr (host:port) is reachable
// from this host only: the host is "localhost" or a loopback IP. An empty
// host (":8081") or an unspecified one ("0.0.0.0") listens on every
// interface; other names are not resolved and count as not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// BasicAuth guards next with HTTP basic authentication. The user and the
// password are both compared in constant time (as SHA-256 digests, so their
// lengths do not leak either); a failure gets 401 with a WWW-Authenticate
// challenge for realm.
func BasicAuth(user, password, realm string, next http.Handler) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(password))
	challenge := fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", realm)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(u))
		gotPass := sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// MountPprof serves net/http/pprof under /debug/pprof/ on mux, each handler
// wrapped by guard (BasicAuth, or nothing on a loopback-only listener).
func MountPprof(mux *http.ServeMux, guard func(http.Handler) http.Handler) {
	mux.Handle("/debug/pprof/", guard(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", guard(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", guard(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", guard(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", guard(http.HandlerFunc(pprof.Trace)))
}

// healthCheckTimeout bounds HealthCheck: a hung server is not ready.
const healthCheckTimeout = 3 * time.Second

// healthClient asks the admin server itself: a proxy that the environment
// names for the process's other traffic (HTTP_PROXY, which Go skips only
// for loopback) never stands between a check and an ADMIN_ADDR on another
// interface.
var healthClient = &http.Client{Timeout: healthCheckTimeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// HealthCheck asks the admin server listening on addr whether the process
// is ready (GET /readyz) and returns nil on 200. It is the -healthcheck
// flag of both binaries, for container health checks in images without a
// shell or curl. A listener on every interface (":8081", "0.0.0.0:8081") is
// asked on 127.0.0.1.
func HealthCheck(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ADMIN_ADDR: %w", err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, healthCheckTimeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := healthClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	if res.StatusCode != http.StatusOK {
		return errors.New(res.Status + ": " + strings.TrimSpace(string(body)))
	}
	return nil
}
