package auth

import (
	"net/netip"
	"sync"
	"time"

	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/limits"
)

// StatusLimit is the name of the per-caller limit on status reads, as a
// rate limit error (limits.Error.Limit) reports it.
const StatusLimit = "status"

// DefaultStatusReadsPerMinute is Config.StatusReadsPerMinute's default: ten
// reads a second for one caller, far above what a gateway showing its
// users how their mail went needs, far below a sweep of many addresses.
const DefaultStatusReadsPerMinute = 600

// Config configures a Guard.
type Config struct {
	// Keys are the callers. With none the Guard is open: every request is
	// admitted as Anonymous with every scope.
	Keys *Keys
	// LegacyCallers are the networks whose calls to the old
	// message.VarifyService need no key (with keys configured).
	LegacyCallers clientip.Trusted
	// StatusReadsPerMinute bounds each caller's status reads (a token
	// bucket of this size, refilled at this rate); 0 is no bound.
	StatusReadsPerMinute int
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Guard admits requests: it authenticates the caller, checks the scope the
// request needs and bounds each caller's status reads. A nil *Guard is
// open.
type Guard struct {
	cfg    Config
	status *bucket
}

// New returns the Guard of cfg.
func New(cfg Config) *Guard {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Guard{cfg: cfg}
	if cfg.StatusReadsPerMinute > 0 {
		g.status = newBucket(cfg.StatusReadsPerMinute, time.Minute)
	}
	return g
}

// Open reports whether g admits every request without a key: no keys are
// configured.
func (g *Guard) Open() bool { return g == nil || g.cfg.Keys.Len() == 0 }

// anonymous is the caller of an open Guard.
var anonymous = Caller{Name: Anonymous, Scopes: Scopes}

// Admit returns the caller of a request that needs scope, given its
// Authorization value ("Bearer <key>"): ErrUnauthenticated when the key is
// missing or unknown, a *ScopeError when it lacks scope, a *limits.Error
// (StatusLimit) when scope is Status and the caller has used up its status
// reads. The caller is returned with every error but ErrUnauthenticated, so
// that the request's log line can name it.
func (g *Guard) Admit(authorization string, scope Scope) (Caller, error) {
	return g.AdmitPeer(authorization, "", scope)
}

// AdmitPeer is Admit for a request that may come with a verified client
// certificate, certName its name (CertName; "" without one). A request
// that sends a key (an Authorization value of the Bearer scheme, see
// Authorization) is its key's caller, whatever its certificate; one
// without a key is the certificate caller of that name (a "cert" line of
// the key file), or ErrUnauthenticated. A value of another scheme is no
// key.
func (g *Guard) AdmitPeer(authorization, certName string, scope Scope) (Caller, error) {
	c := anonymous
	if !g.Open() {
		var err error
		if !isBearer(authorization) && certName != "" {
			c, err = g.cfg.Keys.Certificate(certName)
		} else {
			c, err = g.cfg.Keys.Authenticate(BearerKey(authorization))
		}
		if err != nil {
			return Caller{}, err
		}
		if !c.Can(scope) {
			return c, &ScopeError{Scope: scope}
		}
	}
	if scope == Status && g != nil && g.status != nil {
		if wait, ok := g.status.take(c.Name, g.cfg.Now()); !ok {
			return c, &limits.Error{Limit: StatusLimit, RetryAfter: wait}
		}
	}
	return c, nil
}

// AdmitLegacy returns the caller of a call to the old
// message.VarifyService, which asks for a send, from peer with the
// Authorization value authorization (usually none: the old gateway sends no
// metadata) and certName the name of its verified client certificate (""
// without one). A call with a key (Bearer) or a certificate is admitted as
// AdmitPeer admits a send; one without either only from LEGACY_CALLERS, as
// Legacy; any other is ErrUnauthenticated. An open Guard admits every
// call.
func (g *Guard) AdmitLegacy(authorization, certName string, peer netip.Addr) (Caller, error) {
	switch {
	case g.Open():
		return anonymous, nil
	case isBearer(authorization) || certName != "":
		return g.AdmitPeer(authorization, certName, Send)
	case peer.IsValid() && g.cfg.LegacyCallers.Contains(peer):
		return Caller{Name: Legacy, Scopes: []Scope{Send}}, nil
	}
	return Caller{}, ErrUnauthenticated
}

// bucket is a token bucket per caller name: size tokens, refilled at size
// per period. The names are the key file's (and Anonymous), so the map is
// bounded by MaxCallers.
type bucket struct {
	size   float64
	period time.Duration

	mu     sync.Mutex
	states map[string]*tokens
}

type tokens struct {
	left float64
	at   time.Time
}

func newBucket(size int, period time.Duration) *bucket {
	return &bucket{size: float64(size), period: period, states: map[string]*tokens{}}
}

// take takes a token of name's bucket at now, or reports how long until
// one is there.
func (b *bucket) take(name string, now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.states[name]
	if !ok {
		st = &tokens{left: b.size, at: now}
		b.states[name] = st
	}
	if elapsed := now.Sub(st.at); elapsed > 0 {
		st.left = min(b.size, st.left+b.size*float64(elapsed)/float64(b.period))
		st.at = now
	}
	if st.left >= 1 {
		st.left--
		return 0, true
	}
	perToken := float64(b.period) / b.size
	return time.Duration((1 - st.left) * perToken), false
}
