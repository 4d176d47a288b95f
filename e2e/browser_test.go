//go:build browser

// The browser test opens the queue dashboard and the mailpit inbox in
// headless Chromium after a send, saves screenshots of them and checks, in
// the rendered DOM, that the queue and the mail are visible. The screenshots
// go to tmp-screenshots/ (ignored by git), so that a run leaves the work
// tree clean; with REFRESH_SCREENSHOTS=1 (`make screenshots`) they replace
// the committed ones in docs/screenshots/.
// It needs Debian's chromium (or CHROMIUM=path) and mailpit with its web UI
// (MAILPIT=path, default bin/mailpit: `make bin/mailpit`). Run it with
// `make test-browser`.

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/tasks"
)

// The screenshots' folders: the committed ones, which docs/OPERATIONS.md
// shows, and the ignored one a plain run writes to.
const (
	committedScreenshots = "../docs/screenshots"
	scratchScreenshots   = "../tmp-screenshots"
)

// screenshotDir is where this run saves its screenshots: docs/screenshots/
// when REFRESH_SCREENSHOTS is 1, else tmp-screenshots/.
func screenshotDir() string {
	if os.Getenv("REFRESH_SCREENSHOTS") == "1" {
		return committedScreenshots
	}
	return scratchScreenshots
}

type chromium struct {
	bin string
}

func findChromium(t *testing.T) chromium {
	t.Helper()
	bin := os.Getenv("CHROMIUM")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("chromium"); err != nil {
			t.Fatal("chromium not found: apt-get install -y chromium, or set CHROMIUM")
		}
	}
	return chromium{bin: bin}
}

// run starts a fresh headless Chromium (new profile, no background
// networking) on url with extra flags and returns its stdout.
func (c chromium) run(t *testing.T, url string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
		// Let the JavaScript apps fetch their data and render.
		"--virtual-time-budget=10000",
	}, extra...)
	args = append(args, url)
	cmd := exec.CommandContext(ctx, c.bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	return stdout.String()
}

// text returns the visible text of the DOM of url once rendered.
func (c chromium) text(t *testing.T, url string) string {
	t.Helper()
	dom := c.run(t, url, "--dump-dom")
	dom = regexp.MustCompile(`(?s)<(script|style)[^>]*>.*?</(script|style)>`).ReplaceAllString(dom, " ")
	text := html.UnescapeString(regexp.MustCompile(`<[^>]+>`).ReplaceAllString(dom, " "))
	return strings.Join(strings.Fields(text), " ")
}

// screenshot saves url, rendered at 1280x900, as name in screenshotDir.
func (c chromium) screenshot(t *testing.T, url, name string) {
	t.Helper()
	dir := screenshotDir()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path, err := filepath.Abs(filepath.Join(dir, name))
	require.NoError(t, err)
	_ = os.Remove(path)
	c.run(t, url, "--window-size=1280,900", "--screenshot="+path)
	info, err := os.Stat(path)
	require.NoError(t, err, "screenshot written")
	assert.Greater(t, info.Size(), int64(10<<10), "%s is more than a blank page", name)
	t.Logf("screenshot %s", path)
}

type mailpit struct {
	smtpPort int
	ui       string // host:port of the web UI and API
}

func startMailpit(t *testing.T) mailpit {
	t.Helper()
	bin := os.Getenv("MAILPIT")
	if bin == "" {
		bin = filepath.Join("..", "bin", "mailpit")
	}
	bin, err := filepath.Abs(bin)
	require.NoError(t, err)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("mailpit not found at %s: make bin/mailpit, or set MAILPIT", bin)
	}
	var smtpAddr, ui string
	p, err := retryBind(t, "mailpit", func(int) (*proc, error) {
		smtpAddr, ui = freeAddr(t), freeAddr(t)
		cmd := exec.Command(bin,
			"--smtp", smtpAddr, "--listen", ui, "--database", filepath.Join(t.TempDir(), "mailpit.db"),
			"--disable-version-check", "--smtp-disable-rdns", "--block-remote-css-and-fonts", "--quiet",
			// Any other recipient gets 550: a task to archive.
			"--smtp-allowed-recipients", `^browser\.test@`)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		p := run(t, cmd)
		return p, p.waitHTTP("http://"+ui+"/readyz", 15*time.Second)
	})
	p.killAtEnd(t, "mailpit")
	require.NoError(t, err, "mailpit ready")
	_, port, _ := strings.Cut(smtpAddr, ":")
	smtpPort, err := strconv.Atoi(port)
	require.NoError(t, err)
	res, err := http.Get("http://" + ui + "/dist/app.js")
	require.NoError(t, err)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("mailpit at %s has no web UI (a plain go build leaves it out): make bin/mailpit builds it with npm", bin)
	}
	return mailpit{smtpPort: smtpPort, ui: ui}
}

// message waits for the first message in the mailpit inbox and returns its ID.
func (m mailpit) message(t *testing.T) string {
	t.Helper()
	var id string
	require.Eventually(t, func() bool {
		res, err := http.Get("http://" + m.ui + "/api/v1/messages")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var list struct {
			Messages []struct{ ID string } `json:"messages"`
		}
		if json.NewDecoder(res.Body).Decode(&list) != nil || len(list.Messages) == 0 {
			return false
		}
		id = list.Messages[0].ID
		return true
	}, 20*time.Second, 100*time.Millisecond, "the mail reaches mailpit")
	return id
}

func TestBrowserDashboardAndInbox(t *testing.T) {
	browser := findChromium(t)
	mp := startMailpit(t)
	rs := redistest.Start(t)
	common := map[string]string{"REDIS_URL": rs.URL(), "DASHBOARD_AUTH": "ops:s3cret"}
	enqEnv := map[string]string{}
	wrkEnv := map[string]string{
		"SMTP_URL": smtpURL("127.0.0.1", mp.smtpPort, "10s"), "MAIL_FROM": "verifyq <no-reply@verifyq.test>",
	}
	for k, v := range common {
		enqEnv[k], wrkEnv[k] = v, v
	}
	enq := start(t, "enqueuer", enqEnv)
	start(t, "worker", wrkEnv)
	api, enqAdmin := enq.env["HTTP_ADDR"], enq.env["ADMIN_ADDR"]

	const email, rejected = "browser.test@example.com", "rejected.user@example.com"
	for _, to := range []string{rejected, email} {
		res, err := http.Post("http://"+api+"/v1/codes", "application/json",
			strings.NewReader(`{"email":"`+to+`","locale":"en"}`))
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusAccepted, res.StatusCode)
	}
	id := mp.message(t)
	require.Eventually(t, func() bool {
		info, err := asynq.NewInspectorFromRedisClient(rs.Client(t)).GetQueueInfo(tasks.Queue)
		return err == nil && info.Archived == 1
	}, 10*time.Second, 50*time.Millisecond, "the 550 task archived")

	// The dashboard, with the credentials in the URL: Chromium keeps them
	// for the page's own requests (its scripts and its API calls).
	dashboard := fmt.Sprintf("http://ops:s3cret@%s/monitoring/", enqAdmin)
	text := browser.text(t, dashboard)
	assert.Contains(t, text, "Queue State Size", "the queue table rendered")
	assert.Regexp(t, `\bmail run 1\b`, text, "the mail queue, running, one task (archived)")
	browser.screenshot(t, dashboard, "dashboard.png")
	// The archived task: its payload shows the address masked.
	archived := dashboard + "queues/mail?status=archived"
	text = browser.text(t, archived)
	assert.Contains(t, text, "r***@example.com")
	assert.Contains(t, text, "550")
	assert.NotContains(t, text, rejected)
	browser.screenshot(t, archived, "dashboard-archived.png")
	// Without the credentials the browser gets nothing but the challenge.
	assert.NotContains(t, browser.text(t, fmt.Sprintf("http://%s/monitoring/", enqAdmin)), "Queue")

	inbox := "http://" + mp.ui + "/"
	text = browser.text(t, inbox)
	assert.Contains(t, text, email, "the mail in the inbox")
	assert.Contains(t, text, "Your verification code")
	browser.screenshot(t, inbox, "mailpit-inbox.png")

	// The mail itself: mailpit shows its HTML part in a frame; its raw
	// HTML view carries the code.
	code, err := rs.Client(t).Get(context.Background(), "code_"+email).Result()
	require.NoError(t, err)
	assert.Contains(t, browser.text(t, "http://"+mp.ui+"/view/"+id+".html"), code)
	browser.screenshot(t, "http://"+mp.ui+"/view/"+id, "mailpit-message.png")
}
