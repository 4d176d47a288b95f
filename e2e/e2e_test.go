// Package e2e builds the enqueuer and worker binaries and runs them as
// processes against a real redis-server and a real SMTP server, the way they
// run in production.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/internal/smtptest"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "verifyq-e2e-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../cmd/enqueuer", "../cmd/worker")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		os.Exit(1)
	}
	code := m.Run()
	redistest.ClosePool()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	cmd *exec.Cmd
	// env is the environment a binary runs with, the addresses start
	// chose included.
	env  map[string]string
	logs *syncBuffer
	// exited is closed once the process has exited; err is then its exit.
	exited chan struct{}
	err    error
}

// listenVars are the variables of each binary's listening addresses.
var listenVars = map[string][]string{
	"enqueuer": {"HTTP_ADDR", "GRPC_ADDR", "ADMIN_ADDR"},
	"worker":   {"ADMIN_ADDR"},
}

// bindAttempts bounds how many times retryBind launches a process.
const bindAttempts = 3

// start runs a binary with env, waits until its ADMIN_ADDR answers ready,
// and stops it with SIGTERM when the test ends, failing the test unless it
// exits 0. Each listening address env leaves empty is a free loopback port;
// when another process binds one of its ports first, retryBind starts it
// again with every listening address chosen anew. The addresses it listens
// on are in the proc's env.
func start(t *testing.T, name string, env map[string]string) *proc {
	t.Helper()
	env = maps.Clone(env)
	p, err := retryBind(t, name, func(attempt int) (*proc, error) {
		for _, v := range listenVars[name] {
			if attempt > 1 || env[v] == "" {
				env[v] = freeAddr(t)
			}
		}
		cmd := exec.Command(filepath.Join(binDir, name))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		p := run(t, cmd)
		p.env = maps.Clone(env)
		return p, p.waitHTTP("http://"+env["ADMIN_ADDR"]+"/readyz", 15*time.Second)
	})
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, p.logs.String())
		}
	})
	require.NoError(t, err, name)
	return p
}

// retryBind calls launch, which chooses free loopback ports for a process,
// starts it and waits until it serves, up to bindAttempts times while the
// process exits because a port was taken. A port is free only when it is
// chosen: a parallel test's Redis, or an outgoing connection's ephemeral
// port, may bind it before the process does. It returns the last process
// launched and its error.
func retryBind(t *testing.T, name string, launch func(attempt int) (*proc, error)) (*proc, error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := launch(attempt)
		if err == nil || attempt == bindAttempts || !p.bindFailed() {
			return p, err
		}
		t.Logf("%s: a port chosen for it was taken before it bound it; choosing again: %s", name, p.logs.String())
	}
}

// run starts cmd with its output in the proc's logs.
func run(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	require.NoError(t, cmd.Start())
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p
}

// waitHTTP waits until a GET of url answers 200; it fails if the process
// exits first or url does not answer so within timeout.
func (p *proc) waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if res, err := http.Get(url); err == nil { //nolint:gosec // G107: a loopback URL the test chose
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited before %s answered: %w", url, p.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 in %v", url, timeout)
		}
	}
}

// bindFailed reports whether the process exited because an address it was
// to listen on was taken.
func (p *proc) bindFailed() bool {
	select {
	case <-p.exited:
		return strings.Contains(p.logs.String(), "address already in use")
	default:
		return false
	}
}

// killAtEnd kills a tool the tests run (Jaeger, mailpit) when the test
// ends, says so when it had exited by itself, and logs its output when the
// test failed.
func (p *proc) killAtEnd(t *testing.T, name string) {
	t.Helper()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if <-p.exited; p.err == nil {
			t.Logf("%s exited before it was killed", name)
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, p.logs.String())
		}
	})
}

// stop sends SIGTERM unless the process has exited, and checks that it
// exits 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		assert.NoError(t, p.err, "%s exits 0 on SIGTERM", filepath.Base(p.cmd.Path))
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("%s did not stop on SIGTERM", filepath.Base(p.cmd.Path))
	}
}

// start chooses again when a port chosen for a binary is taken before the
// binary binds it: here the HTTP_ADDR given is held by the test.
func TestStartChoosesAgainWhenAPortIsTaken(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	d := redistest.Shared(t)
	p := start(t, "enqueuer", map[string]string{"REDIS_MODE": d.Mode(), "REDIS_URL": d.URL(), "HTTP_ADDR": taken.Addr().String()})
	assert.NotEqual(t, taken.Addr().String(), p.env["HTTP_ADDR"])
	res, err := http.Get("http://" + p.env["HTTP_ADDR"] + "/v1/codes/status?email=a@example.com")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode, "served on the address chosen again")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

type stack struct {
	redis              redistest.Deployment
	smtp               *smtptest.Server
	enqueuer, worker   *proc
	api, grpc          string
	enqAdmin, wrkAdmin string
	// The environment each binary was started with.
	enqEnv, wrkEnv map[string]string
}

// startStack runs both binaries on a Redis of the test's own, of the mode
// VERIFYQ_TEST_REDIS_MODE names (single by default; REDIS_MODE and
// REDIS_URL tell the binaries), and an SMTP server. Without options the
// Redis is redistest.Shared's; with options (WithAOF) a fresh one. The
// worker's SMTP_URL names the test's SMTP server, with the timeout of the
// extra smtpTimeout (1s without).
func startStack(t *testing.T, extra map[string]string, redisOpts ...redistest.Option) *stack {
	t.Helper()
	var d redistest.Deployment
	if len(redisOpts) == 0 {
		d = redistest.Shared(t)
	} else {
		d = redistest.StartMode(t, redisOpts...)
	}
	return startStackOn(t, d, extra)
}

// smtpTimeout in the extra variables of startStack is the timeout of the
// worker's SMTP_URL.
const smtpTimeout = "smtp_timeout"

// smtpURL is the SMTP_URL of a plain-text SMTP server on host:port.
func smtpURL(host string, port int, timeout string) string {
	return "smtp://" + net.JoinHostPort(host, strconv.Itoa(port)) + "?tls=none&timeout=" + timeout
}

// startStackOn is startStack on the deployment d.
func startStackOn(t *testing.T, d redistest.Deployment, extra map[string]string) *stack {
	t.Helper()
	return startStackOwn(t, d, extra, nil, nil)
}

// startStackOwn is startStackOn with variables of each binary's own besides
// extra: enqExtra the enqueuer's, wrkExtra the worker's.
func startStackOwn(t *testing.T, d redistest.Deployment, extra, enqExtra, wrkExtra map[string]string) *stack {
	t.Helper()
	s := &stack{redis: d, smtp: smtptest.Start(t)}
	common := map[string]string{"REDIS_MODE": d.Mode(), "REDIS_URL": d.URL(), "LOG_LEVEL": "debug"}
	enqEnv := map[string]string{}
	timeout := "1s"
	if d, ok := extra[smtpTimeout]; ok {
		timeout = d
	}
	wrkEnv := map[string]string{
		"SMTP_URL":           smtpURL(s.smtp.Host(), s.smtp.Port(), timeout),
		"MAIL_FROM":          "verifyq <no-reply@verifyq.test>",
		"WORKER_CONCURRENCY": "10",
	}
	for _, m := range []map[string]string{enqEnv, wrkEnv} {
		for k, v := range common {
			m[k] = v
		}
		for k, v := range extra {
			if k != smtpTimeout {
				m[k] = v
			}
		}
	}
	maps.Copy(enqEnv, enqExtra)
	maps.Copy(wrkEnv, wrkExtra)
	s.startEnqueuer(t, enqEnv)
	s.startWorker(t, wrkEnv)
	return s
}

// startEnqueuer starts the stack's enqueuer with env, on the addresses env
// names or on free ones, and keeps its environment and addresses.
func (s *stack) startEnqueuer(t *testing.T, env map[string]string) {
	t.Helper()
	s.enqueuer = start(t, "enqueuer", env)
	s.enqEnv = s.enqueuer.env
	s.api, s.grpc, s.enqAdmin = s.enqEnv["HTTP_ADDR"], s.enqEnv["GRPC_ADDR"], s.enqEnv["ADMIN_ADDR"]
}

// startWorker starts the stack's worker with env, as startEnqueuer does.
func (s *stack) startWorker(t *testing.T, env map[string]string) {
	t.Helper()
	s.worker = start(t, "worker", env)
	s.wrkEnv = s.worker.env
	s.wrkAdmin = s.wrkEnv["ADMIN_ADDR"]
}

// server is the stack's Redis in single mode; a test that calls it calls
// singleOnly first.
func (s *stack) server(t *testing.T) *redistest.Server {
	t.Helper()
	srv, ok := s.redis.(*redistest.Server)
	require.True(t, ok, "a single-mode test on a %s deployment", s.redis.Mode())
	return srv
}

// singleOnly skips a test that needs the single deployment (it stops and
// restarts the one server, or sets up ACL users on it) in the sentinel and
// cluster runs; it runs in the single run, which is make test.
func singleOnly(t *testing.T) {
	t.Helper()
	if m := redistest.Mode(); m != redistest.ModeSingle {
		t.Skipf("single mode only (runs with %s unset or single), not %s", redistest.EnvMode, m)
	}
}

// skipInMode skips a test in the run of mode, for why.
func skipInMode(t *testing.T, mode, why string) {
	t.Helper()
	if redistest.Mode() == mode {
		t.Skipf("not in %s mode (%s=%s): %s", mode, redistest.EnvMode, mode, why)
	}
}

// modeOnly skips a test of one deployment (a failover, a cluster's spread)
// in the runs of the other modes; it runs in the run of its own mode.
func modeOnly(t *testing.T, mode string) {
	t.Helper()
	if m := redistest.Mode(); m != mode {
		t.Skipf("%s mode only (runs with %s=%s), not %s", mode, redistest.EnvMode, mode, m)
	}
}

func (s *stack) post(t *testing.T, path string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	res, err := http.Post("http://"+s.api+path, "application/json", bytes.NewReader(b))
	require.NoError(t, err)
	defer res.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
	return res.StatusCode, m
}

func (s *stack) code(t *testing.T, email string) (string, time.Duration) {
	t.Helper()
	rdb := s.redis.UniversalClient(t)
	code, err := rdb.Get(context.Background(), "code_"+email).Result()
	require.NoError(t, err)
	ttl, err := rdb.PTTL(context.Background(), "code_"+email).Result()
	require.NoError(t, err)
	return code, ttl
}

// noLimits turns the send limits off, for tests that repeat requests.
var noLimits = map[string]string{"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0", "ADDRESS_SENDS_PER_HOUR": "0", "CLIENT_SENDS_PER_HOUR": "0"}

// behindGateway is env with the tests' loopback address a trusted proxy:
// a gateway that speaks for many clients, so that its connections are
// bounded by MAX_CONNECTIONS alone, not by its source's share.
func behindGateway(env map[string]string) map[string]string {
	out := maps.Clone(env)
	out["TRUSTED_PROXIES"] = "127.0.0.1"
	return out
}

// longCodes makes codes of 10 digits for tests that search logs for them: a
// 6-digit code turns up by chance in nanosecond timestamps about once in a
// thousand runs, a 10-digit one practically never.
const longCodes = "10"

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, map[string]string{"RESEND_COOLDOWN": "0", "MAILBOX_GAP": "0", "CODE_LENGTH": longCodes})
	const email = "New.User@Example.com"

	status, body := s.post(t, "/v1/codes", map[string]string{"email": email})
	require.Equal(t, http.StatusAccepted, status, body)
	msgs := s.smtp.WaitMessages(t, 1, 10*time.Second)

	code, ttl := s.code(t, email)
	assert.LessOrEqual(t, ttl, 10*time.Minute)
	assert.Greater(t, ttl, 9*time.Minute)
	assert.Equal(t, []string{email}, msgs[0].To, "the key and the mail keep the address as sent")
	assert.Equal(t, "验证码", msgs[0].Subject)
	assert.Contains(t, msgs[0].Text, code)
	assert.Contains(t, msgs[0].HTML, code)
	assert.Contains(t, msgs[0].Text, "10", "the real lifetime in minutes")
	assert.NotContains(t, msgs[0].Text, "三分钟")

	// A repeat gives the same code and does not extend its lifetime.
	status, body = s.post(t, "/v1/codes", map[string]string{"email": email, "locale": "en"})
	require.Equal(t, http.StatusAccepted, status, body)
	assert.LessOrEqual(t, body["expires_in"], ttl.Seconds())
	msgs = s.smtp.WaitMessages(t, 2, 10*time.Second)
	again, ttl2 := s.code(t, email)
	assert.Equal(t, code, again)
	assert.LessOrEqual(t, ttl2, ttl)
	assert.Contains(t, msgs[1].Text, code)
	assert.Equal(t, "Your verification code", msgs[1].Subject)

	// Verify: wrong, right, reused.
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	status, _ = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": wrong})
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	status, body = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": code})
	assert.Equal(t, http.StatusOK, status, body)
	n, err := s.redis.UniversalClient(t).Exists(context.Background(), "code_"+email).Result()
	require.NoError(t, err)
	assert.Zero(t, n)
	status, _ = s.post(t, "/v1/codes/verify", map[string]string{"email": email, "code": code})
	assert.Equal(t, http.StatusGone, status)

	// Bad input: 400, nothing mailed.
	status, body = s.post(t, "/v1/codes", map[string]string{"email": "x@example.com\r\nBcc: y@example.com"})
	assert.Equal(t, http.StatusBadRequest, status, body)

	// Stop both (SIGTERM, exit 0 is checked) and read every log line.
	s.worker.stop(t)
	s.enqueuer.stop(t)
	assert.Equal(t, 2, s.smtp.Count())
	for _, p := range []*proc{s.enqueuer, s.worker} {
		logs := p.logs.String()
		assert.NotEmpty(t, logs)
		assert.NotContains(t, logs, code, "no code in any log line")
		assert.NotContains(t, logs, email, "no full address in any log line")
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			assert.True(t, json.Valid([]byte(line)), "JSON log line: %s", line)
		}
	}
	assert.Contains(t, s.worker.logs.String(), "N***@Example.com", "masked address")
}

// SMTP down for a few seconds: requests are still answered at once, and every
// mail arrives soon after the server is back.
func TestSMTPOutage(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	require.NoError(t, s.smtp.Stop())

	const n = 5
	for i := range n {
		status, body := s.post(t, "/v1/codes", map[string]string{"email": fmt.Sprintf("outage%d@example.com", i)})
		require.Equal(t, http.StatusAccepted, status, body)
	}
	time.Sleep(3 * time.Second)
	require.NoError(t, s.smtp.Restart())
	back := time.Now()
	s.smtp.WaitMessages(t, n, 25*time.Second)
	t.Logf("all %d mails delivered %s after SMTP came back", n, time.Since(back).Round(time.Millisecond))
}

func TestConcurrentRequestsYieldOneCode(t *testing.T) {
	t.Parallel()
	// 100 connections at once from one address: a gateway, a trusted
	// proxy, which MAX_CONNECTIONS_PER_SOURCE does not bound.
	s := startStack(t, behindGateway(noLimits))
	const email = "crowd@example.com"
	var wg sync.WaitGroup
	statuses := make([]int, 100)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := strings.NewReader(`{"email":"` + email + `"}`)
			res, err := http.Post("http://"+s.api+"/v1/codes", "application/json", b)
			if assert.NoError(t, err) {
				statuses[i] = res.StatusCode
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	for _, st := range statuses {
		assert.Equal(t, http.StatusAccepted, st)
	}
	code, _ := s.code(t, email)
	msgs := s.smtp.WaitMessages(t, 100, 30*time.Second)
	for _, m := range msgs {
		assert.Contains(t, m.Text, code, "every mail carries the one code")
	}
}
