// Package bounce is the bounce intake: an SMTP listener for the return
// path (package returnpath) that takes the reports coming back about
// verifyq's mails, delivery status notifications and complaints (package
// report), matches each to its send by the token of the return path, and
// then records it in the delivery status (bounced, complained) and
// suppresses the address when its recipient failed for good or complained.
//
// Anyone who can reach the listener can send to it: trust comes from the
// token alone, whose MAC binds the send, the purpose and the exact
// address. What the intake cannot match (no token, a forged or expired
// one, a message that is no report) is counted and dropped with a 250, so
// that no MTA retries it or bounces it back; only a failure of Redis,
// after a token was verified, is answered 451 for the MTA to try again.
package bounce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/verifyq/verifyq/bounce/report"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/events"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/returnpath"
)

// Bounds of the intake.
const (
	// MaxMessageBytes bounds a message (SIZE); a larger one gets 552.
	MaxMessageBytes = 256 << 10
	// MaxRecipients bounds the recipients of one message; one more gets
	// 452 (the MTA sends the rest in another transaction).
	MaxRecipients = 10
	// MaxConnections bounds the connections open at once; past it, new
	// ones wait in the kernel's accept queue (platform.LimitListener).
	MaxConnections = 100
	// MaxPerSource bounds the connections of one source (an MTA's default
	// concurrency per destination is 20).
	MaxPerSource = 20
	// Timeout bounds each read and write of a connection.
	Timeout = time.Minute
	// SessionTimeout bounds a connection's whole session, from its accept
	// to its close, past which the intake closes it without a reply.
	// Timeout alone bounds each read, so a client sending a byte every
	// 59 s would hold one of MaxPerSource's places, and a few sources all
	// of MaxConnections, for ever. An MTA sends a MaxMessageBytes report
	// in seconds even on a slow link; ten minutes leave it room for
	// several reports on one connection, and an MTA sends again what a
	// closed connection cut off.
	SessionTimeout = 10 * time.Minute
	// HandleTimeout bounds the records of one message in Redis.
	HandleTimeout = 10 * time.Second
	// maxTokens bounds the tokens tried on one report, and maxCandidates
	// the addresses each is tried with: every pair is an HMAC per
	// purpose and secret. maxPairs bounds the pairs tried on one report
	// in all, across the recipients of a DSN: a report about one mail
	// names one send, and a message of many recipient blocks, each
	// naming other addresses, would otherwise cost their product.
	maxTokens     = MaxRecipients + 2
	maxCandidates = 4
	maxPairs      = maxTokens * maxCandidates
)

// Result is what became of one report, or of one recipient of a DSN: the
// label of the metric verifyq_bounces_total.
type Result string

// Results.
const (
	// ResultBounced: a DSN said the mail failed; its send's status says
	// bounced.
	ResultBounced Result = "bounced"
	// ResultComplained: a complaint; its send's status says complained.
	ResultComplained Result = "complained"
	// ResultStale: a genuine bounce or complaint whose status is gone or
	// follows a later send: only the suppression, if due.
	ResultStale Result = "stale"
	// ResultDelayed: a DSN that says the mail is still being tried:
	// nothing changes.
	ResultDelayed Result = "delayed"
	// ResultOther: a report verifyq does not act on (delivered, relayed,
	// expanded; a feedback type other than abuse).
	ResultOther Result = "other"
	// ResultForged: a token that fits none of the report's addresses
	// under any secret and purpose (or none tried: the report spent the
	// pairs it may try, maxPairs, on its earlier recipients).
	ResultForged Result = "forged"
	// ResultExpired: a genuine token older than returnpath.Window.
	ResultExpired Result = "expired"
	// ResultUnmatched: no token, or no address to check one with (a
	// complaint whose provider redacts the recipient).
	ResultUnmatched Result = "unmatched"
	// ResultMalformed: a message that is no report verifyq reads (an
	// auto-reply, a bounce in free text, a broken report).
	ResultMalformed Result = "malformed"
	// ResultTooLarge: larger than MaxMessageBytes; answered 552.
	ResultTooLarge Result = "too_large"
	// ResultError: Redis failed; answered 451, the MTA tries again.
	ResultError Result = "error"
)

// Results lists every Result, for metrics that pre-create their series.
var Results = []Result{
	ResultBounced, ResultComplained, ResultStale, ResultDelayed, ResultOther, ResultForged,
	ResultExpired, ResultUnmatched, ResultMalformed, ResultTooLarge, ResultError,
}

// Records records a report in the status of the send it is about
// (delivery.Records).
type Records interface {
	// ReportedTask records rep and names the send's task; "" when the
	// status is gone or another send's.
	ReportedTask(ctx context.Context, id codes.ID, sendID string, rep delivery.Report) (string, error)
}

// Events queues the events of the reports (events.Emitter).
type Events interface {
	Emit(ctx context.Context, ev events.Event) error
}

// Suppressor puts an address on the suppression list
// (delivery.Suppressions).
type Suppressor interface {
	Add(ctx context.Context, e delivery.Entry) error
}

// Observer counts what became of the reports (the worker's metrics).
type Observer interface {
	BounceHandled(r Result)
}

var (
	_ Records    = (*delivery.Records)(nil)
	_ Suppressor = (*delivery.Suppressions)(nil)
	_ Events     = (*events.Emitter)(nil)
)

// Config is what an Intake needs. Path (signed), Records and Logger are
// required.
type Config struct {
	// Path is the return path whose tokens the intake opens, and whose
	// address alone it takes mail for.
	Path *returnpath.Path
	// Purposes are the purposes a token may be for, the default one ("")
	// among them.
	Purposes []string
	// Records records bounces and complaints in the delivery status.
	Records Records
	// Suppressor, when set, suppresses an address for SuppressFor after a
	// bounce that says its recipient failed for good, or a complaint.
	Suppressor  Suppressor
	SuppressFor time.Duration
	// Observer, when set, counts the results.
	Observer Observer
	// Events, when set (WEBHOOK_URLS), is told each bounce and complaint
	// recorded in its send's status (code.bounced, code.complained).
	Events Events
	// Hostname is the name of the greeting; empty is the return path's
	// domain.
	Hostname string
	// Logger logs each report's result, addresses masked.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// SessionTimeout bounds each connection's session; zero is
	// SessionTimeout, the constant. Tests shorten it.
	SessionTimeout time.Duration
}

// Intake is the bounce intake.
type Intake struct {
	cfg Config
	log *slog.Logger
	srv *smtp.Server

	mu     sync.Mutex
	closed bool           // Shutdown began
	busy   sync.WaitGroup // Data handlers recording a report
}

// New returns the intake of cfg. It does not listen yet (Serve).
func New(cfg Config) (*Intake, error) {
	if cfg.Path == nil || !cfg.Path.Signed() || cfg.Records == nil || cfg.Logger == nil {
		return nil, errors.New("bounce: the intake needs a signed return path, the records and a logger")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = SessionTimeout
	}
	if !slices.Contains(cfg.Purposes, "") {
		cfg.Purposes = append([]string{""}, cfg.Purposes...)
	}
	in := &Intake{cfg: cfg, log: cfg.Logger.With(slog.String("component", "bounce"))}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{in: in}, nil }))
	srv.Domain = cfg.Hostname
	if srv.Domain == "" {
		srv.Domain = mail.Domain(cfg.Path.String())
	}
	srv.MaxMessageBytes = MaxMessageBytes
	srv.MaxRecipients = MaxRecipients
	srv.ReadTimeout, srv.WriteTimeout = Timeout, Timeout
	// A DSN about a mail sent with SMTPUTF8 is itself one (RFC 6533); the
	// session reads bytes either way.
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = errorLog{in.log}
	in.srv = srv
	return in, nil
}

// Serve takes connections from ln until Shutdown; the caller bounds ln
// (MaxConnections, MaxPerSource), Serve each session's time
// (SessionTimeout). It returns nil after Shutdown.
func (in *Intake) Serve(ln net.Listener) error {
	ln = &sessionListener{Listener: ln, limit: in.cfg.SessionTimeout, log: in.log}
	if err := in.srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// sessionListener closes each connection it accepts once limit has passed
// since. go-smtp's server sets a deadline of its own before each read and
// write (Timeout), which would undo one set here; closing the connection
// ends a read in progress all the same, and the session with it.
type sessionListener struct {
	net.Listener
	limit time.Duration
	log   *slog.Logger
}

// Accept implements net.Listener.
func (l *sessionListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sessionConn{Conn: c, timer: time.AfterFunc(l.limit, func() {
		l.log.Debug("session too long: connection closed", "limit", l.limit)
		_ = c.Close()
	})}, nil
}

// sessionConn stops its session's timer when it is closed.
type sessionConn struct {
	net.Conn
	timer *time.Timer
}

// Close implements net.Conn.
func (c *sessionConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}

// Shutdown stops listening and closes every session at once: an MTA
// keeps what it had not finished sending, and sends it again later (a
// report recorded twice is recorded once). Then it waits, until ctx ends,
// for the reports being recorded.
func (in *Intake) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	err := in.srv.Close()
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	done := make(chan struct{})
	go func() {
		in.busy.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("bounce: reports still being recorded: %w", ctx.Err()))
	}
}

// begin counts a report being recorded, unless the intake is shutting
// down.
func (in *Intake) begin() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.busy.Add(1)
	return true
}

// Errors the session answers with.
var (
	errNoSuchUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	errTryLater   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Cannot record the report now, try again later"}
)

// session is one SMTP session: any sender (the null one of a DSN too),
// recipients of the return path only.
type session struct {
	in    *Intake
	rcpts []string
}

var _ smtp.Session = (*session)(nil)

func (s *session) Reset()        { s.rcpts = nil }
func (s *session) Logout() error { return nil }

func (s *session) Mail(string, *smtp.MailOptions) error { return nil }

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if _, ours := s.in.cfg.Path.TokenOf(to); !ours {
		return errNoSuchUser
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	if !s.in.begin() {
		return errTryLater
	}
	defer s.in.busy.Done()
	b, err := io.ReadAll(r)
	if errors.Is(err, smtp.ErrDataTooLarge) {
		s.in.count(ResultTooLarge)
		s.in.log.Debug("report dropped", "result", ResultTooLarge)
		return err
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), HandleTimeout)
	defer cancel()
	if _, err := s.in.Handle(ctx, s.rcpts, bytes.NewReader(b)); err != nil {
		return errTryLater
	}
	return nil
}

// Handle takes one message sent to rcpts (addresses of the return path):
// it reads the report, matches it by its tokens, records and counts what
// it says, and returns what became of it. It fails only when Redis does,
// and then after counting ResultError.
func (in *Intake) Handle(ctx context.Context, rcpts []string, msg io.Reader) ([]Result, error) {
	rep, err := report.Read(msg)
	if err != nil {
		// The kind only: a parser's error can quote the line, and so an
		// address.
		why := "malformed"
		if errors.Is(err, report.ErrNotReport) {
			why = "not a report"
		}
		return []Result{in.done(ResultMalformed, "why", why)}, nil
	}
	tokens := in.tokens(rcpts, rep)
	if len(tokens) == 0 {
		return []Result{in.done(ResultUnmatched, "why", "no token")}, nil
	}
	budget := maxPairs
	if rep.Type == report.Feedback {
		res, err := in.complaint(ctx, tokens, &budget, rep)
		return []Result{res}, err
	}
	var out []Result
	for _, r := range rep.Recipients {
		res, err := in.bounce(ctx, tokens, &budget, rep, r)
		out = append(out, res)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// tokens are the tokens a report names: of the recipients it came to, of
// a complaint's Original-Mail-From, and of the original's Return-Path.
func (in *Intake) tokens(rcpts []string, rep *report.Report) []string {
	var out []string
	for _, a := range append(slices.Clip(rcpts), rep.Feedback.MailFrom, rep.Original.ReturnPath) {
		if tok, ours := in.cfg.Path.TokenOf(a); ours && tok != "" && !slices.Contains(out, tok) && len(out) < maxTokens {
			out = append(out, tok)
		}
	}
	return out
}

// candidates are the valid addresses among addrs, each once, at most
// maxCandidates.
func candidates(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		if len(out) < maxCandidates && a != "" && !slices.Contains(out, a) && mail.ValidateAddress(a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// match opens the first of tokens that fits addrs, each token with addrs
// taken from budget, the pairs the report may still try (maxPairs). res
// is "" for a match, else ResultExpired, ResultForged (also when the
// budget is spent) or ResultUnmatched.
func (in *Intake) match(tokens []string, budget *int, addrs []string) (returnpath.Match, Result) {
	if len(addrs) == 0 {
		return returnpath.Match{}, ResultUnmatched
	}
	for _, tok := range tokens {
		if *budget < len(addrs) {
			break
		}
		*budget -= len(addrs)
		m, err := in.cfg.Path.Open(tok, in.cfg.Now(), in.cfg.Purposes, addrs)
		switch {
		case err == nil:
			return m, ""
		case errors.Is(err, returnpath.ErrExpired):
			return m, ResultExpired
		}
	}
	return returnpath.Match{}, ResultForged
}

// bounce acts on one recipient of a DSN.
func (in *Intake) bounce(ctx context.Context, tokens []string, budget *int, rep *report.Report, r report.Recipient) (Result, error) {
	addrs := candidates(append([]string{r.Original, r.Final}, rep.Original.To...)...)
	m, res := in.match(tokens, budget, addrs)
	if res != "" {
		return in.done(res, "action", r.Action), nil
	}
	switch r.Action {
	case report.ActionFailed:
	case report.ActionDelayed:
		return in.done(ResultDelayed, "email", mail.Masked(m.Exact), "dsn", r.Status), nil
	default:
		return in.done(ResultOther, "action", r.Action), nil
	}
	class := delivery.ClassOfReport(r.Status, r.Reply)
	entry := delivery.Entry{Reason: delivery.ReasonBounced, Enhanced: r.Status, Diagnostic: r.Diagnostic}
	if r.Status != "" && r.Reply/100 == int(r.Status[0]-'0') {
		entry.Reply = r.Reply // the quoted reply, when it agrees with the status
	}
	return in.record(ctx, m, addrs, delivery.Report{State: delivery.StateBounced, DSN: r.Status, Diagnostic: r.Diagnostic},
		class.Handling().Suppress, entry, "dsn", r.Status, "class", string(class))
}

// complaint acts on a feedback report.
func (in *Intake) complaint(ctx context.Context, tokens []string, budget *int, rep *report.Report) (Result, error) {
	addrs := candidates(append(slices.Clip(rep.Feedback.RcptTo), rep.Original.To...)...)
	m, res := in.match(tokens, budget, addrs)
	if res != "" {
		return in.done(res, "feedback_type", rep.Feedback.Type), nil
	}
	if rep.Feedback.Type != report.FeedbackAbuse {
		return in.done(ResultOther, "feedback_type", rep.Feedback.Type), nil
	}
	return in.record(ctx, m, addrs, delivery.Report{State: delivery.StateComplained}, true, delivery.Entry{Reason: delivery.ReasonComplaint})
}

// record records rep in the status of m's send, under each spelling of
// its address that the report names (an MTA may fold the domain's case),
// and suppresses the address with entry when suppress.
func (in *Intake) record(ctx context.Context, m returnpath.Match, addrs []string, rep delivery.Report, suppress bool, entry delivery.Entry, fields ...any) (Result, error) {
	var spellings []string
	for _, a := range addrs {
		if mail.Exact(a) == m.Exact {
			spellings = append(spellings, a)
		}
	}
	recorded := false
	for _, email := range spellings {
		task, err := in.cfg.Records.ReportedTask(ctx, codes.ID{Purpose: m.Purpose, Email: email}, m.SendID, rep)
		if err != nil {
			in.log.WarnContext(ctx, "could not record a report: the MTA will try again", "email", mail.Masked(m.Exact), "err", err)
			return in.count(ResultError), err
		}
		if recorded = task != ""; recorded {
			in.emit(ctx, task, codes.ID{Purpose: m.Purpose, Email: email}, rep)
			break
		}
	}
	res := ResultStale
	switch {
	case recorded && rep.State == delivery.StateComplained:
		res = ResultComplained
	case recorded:
		res = ResultBounced
	}
	suppressed := false
	if suppress && in.cfg.Suppressor != nil && in.cfg.SuppressFor > 0 {
		entry.Email, entry.Added, entry.For = spellings[0], in.cfg.Now(), in.cfg.SuppressFor
		if err := in.cfg.Suppressor.Add(ctx, entry); err != nil {
			in.log.WarnContext(ctx, "could not suppress the address: the MTA will try again", "email", mail.Masked(m.Exact), "err", err)
			return in.count(ResultError), err
		}
		suppressed = true
	}
	in.log.InfoContext(ctx, "report recorded", append([]any{
		"result", res, "email", mail.Masked(m.Exact), "purpose", m.Purpose, "suppressed", suppressed,
	}, fields...)...)
	return in.count(res), nil
}

// emit queues the event of rep, recorded for task's send of id's code.
// A report taken again (an MTA sending it twice) has the same webhook-id.
func (in *Intake) emit(ctx context.Context, task string, id codes.ID, rep delivery.Report) {
	if in.cfg.Events == nil {
		return
	}
	typ := events.CodeBounced
	if rep.State == delivery.StateComplained {
		typ = events.CodeComplained
	}
	_ = in.cfg.Events.Emit(ctx, events.Event{Type: typ, Fact: task, At: in.cfg.Now(),
		Data: events.Data{Email: id.Email, Purpose: id.Purpose, TaskID: task, DSN: rep.DSN}})
}

// done counts and logs (at debug: anyone can send these) a report that
// changes nothing.
func (in *Intake) done(res Result, fields ...any) Result {
	in.log.Debug("report dropped", append([]any{"result", res}, fields...)...)
	return in.count(res)
}

func (in *Intake) count(res Result) Result {
	if in.cfg.Observer != nil {
		in.cfg.Observer.BounceHandled(res)
	}
	return res
}

// errorLog routes go-smtp's own messages (a connection's failure) to the
// logger at debug: whoever connects can cause them.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.l.Debug(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.l.Debug(fmt.Sprint(v...)) }
