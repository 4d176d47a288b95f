package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/verifyq/verifyq/mail"
)

// Hosts is the set of names the admin server answers to in the Host header
// of a request for the dashboard or pprof: a DNS-rebinding page, served
// from a name its owner points at the admin address, sends its own name
// and is refused. An IP literal is always accepted (a page whose origin is
// the admin's IP address is the admin's own), and so is "localhost"; other
// names only when they are the host of ADMIN_ADDR or listed in
// DASHBOARD_HOSTS. The port is not compared.
type Hosts struct{ names map[string]bool }

// maxHostLen bounds one DASHBOARD_HOSTS entry: the longest DNS name.
const maxHostLen = 253

// HostNames are DASHBOARD_HOSTS: host names or IP addresses, without a
// port, lower case.
type HostNames []string

// Decode parses DASHBOARD_HOSTS: comma-separated names or IP addresses
// without a port, surrounding spaces ignored.
func (h *HostNames) Decode(s string) error {
	if strings.TrimSpace(s) == "" {
		*h = nil
		return nil
	}
	var names HostNames
	var errs []error
	for _, raw := range strings.Split(s, ",") {
		n := normalizeHost(strings.TrimSpace(raw))
		switch {
		case n == "":
			errs = append(errs, errors.New("an empty name"))
		case net.ParseIP(n) == nil && !validName(n):
			errs = append(errs, fmt.Errorf("%q is not a host name or IP address (no port, no scheme)", raw))
		default:
			names = append(names, n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	*h = names
	return nil
}

// validName reports whether h (lower case) is a DNS name: letters, digits,
// '-', '_' and dots, at most 253 bytes, no empty label.
func validName(h string) bool {
	if len(h) > maxHostLen {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// normalizeHost lower-cases h and drops IPv6 brackets and a trailing dot.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return h
}

// AdminHosts returns the names an admin server on adminAddr answers to:
// the host of adminAddr when it is a name, and extra (DASHBOARD_HOSTS),
// besides IP literals and "localhost".
func AdminHosts(adminAddr string, extra []string) Hosts {
	h := Hosts{names: map[string]bool{"localhost": true}}
	if host, _, err := net.SplitHostPort(adminAddr); err == nil && host != "" {
		h.names[normalizeHost(host)] = true
	}
	for _, n := range extra {
		h.names[normalizeHost(n)] = true
	}
	return h
}

// Allows reports whether a request with the Host header hostport (with or
// without a port) is for this server.
func (h Hosts) Allows(hostport string) bool {
	host := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		host = hh
	}
	host = normalizeHost(host)
	if host == "" {
		return false
	}
	return net.ParseIP(host) != nil || h.names[host]
}

// CheckHost answers 421 Misdirected Request, without calling next, to a
// request whose Host header hosts does not allow.
func CheckHost(hosts Hosts, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hosts.Allows(r.Host) {
			http.Error(w, "unknown host: add it to DASHBOARD_HOSTS", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// SameOrigin answers 403, without calling next, to a state-changing request
// (any method but GET, HEAD and OPTIONS) that a browser did not send from
// the server's own pages: it needs Sec-Fetch-Site: same-origin, or, from a
// browser that sends no Sec-Fetch-Site, an Origin whose host and port are
// the request's Host (http or https). A request with neither header (curl,
// a script) is refused too: such a client can send the Origin of the
// server. Browsers send Origin with every such request, so a form or fetch
// on another site cannot ride on cached basic-auth credentials.
func SameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ChangesState(r.Method) && !isSameOrigin(r) {
			http.Error(w, "cross-origin request refused: send Origin of this server or Sec-Fetch-Site: same-origin",
				http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ChangesState reports whether a request of method may change state: any
// method but GET, HEAD and OPTIONS.
func ChangesState(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func isSameOrigin(r *http.Request) bool {
	if site := r.Header.Values("Sec-Fetch-Site"); len(site) > 0 {
		return len(site) == 1 && site[0] == "same-origin"
	}
	origins := r.Header.Values("Origin")
	if len(origins) != 1 {
		return false
	}
	u, err := url.Parse(origins[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// AdminGuard returns what guards the admin server's endpoints for people
// (the dashboard, the suppression list, pprof), outermost first: the Host
// check (CheckHost), basic auth when auth is set, and the audit record of
// every request that may change state (Audit), by auth's user or
// "anonymous". A handler that takes state-changing requests a browser can
// send from another site (a form POST) adds SameOrigin inside it.
func AdminGuard(hosts Hosts, auth Credentials, logger *slog.Logger) func(http.Handler) http.Handler {
	user := Anonymous
	if auth.Set() {
		user = auth.User
	}
	return func(h http.Handler) http.Handler {
		h = Audit(logger, user, h)
		if auth.Set() {
			h = BasicAuth(auth.User, auth.Password, "verifyq admin", h)
		}
		return CheckHost(hosts, h)
	}
}

// Anonymous is the user of an audit record when the admin server asks no
// credentials (a loopback ADMIN_ADDR without DASHBOARD_AUTH).
const Anonymous = "anonymous"

// AuditMessage is the message of every audit record.
const AuditMessage = "admin action"

// Audit logs, once it is answered, every request to next that may change
// state (ChangesState), an INFO line AuditMessage with audit=true: who
// (user, the one BasicAuth let through, or Anonymous), the method, the path,
// the query (when there is one) with every name and value that holds an "@"
// masked as an address, the source address and the status of the reply. It
// never logs a header or the body, so never a password. Requests that only
// read are not logged.
func Audit(logger *slog.Logger, user string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ChangesState(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		attrs := []slog.Attr{slog.Bool("audit", true), slog.String("user", user), slog.String("method", r.Method),
			slog.String("path", r.URL.Path)}
		if q := r.URL.Query(); len(q) > 0 {
			attrs = append(attrs, slog.Any("query", maskQuery(q)))
		}
		attrs = append(attrs, slog.String("remote", r.RemoteAddr), slog.Int("status", sw.Status()))
		logger.LogAttrs(r.Context(), slog.LevelInfo, AuditMessage, attrs...)
	})
}

// maskQuery returns q with every name and value that holds an "@" masked
// (mail.MaskAddress): an audit record names the address a suppression was
// lifted for as every log line does.
func maskQuery(q url.Values) url.Values {
	mask := func(s string) string {
		if strings.Contains(s, "@") {
			return mail.MaskAddress(s)
		}
		return s
	}
	out := make(url.Values, len(q))
	for k, vs := range q {
		for _, v := range vs {
			out.Add(mask(k), mask(v))
		}
	}
	return out
}

// statusWriter remembers the status of a reply.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status is the reply's status: 200 when the handler wrote nothing.
func (w *statusWriter) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
