package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// Bounds of a delivery.
const (
	// RequestTimeout bounds one POST, from the connection to the end of
	// the response's headers; a timeout is retried.
	RequestTimeout = 10 * time.Second
	// MaxResponseBytes bounds the part of a response body that is read
	// (and discarded), so that the connection can be reused.
	MaxResponseBytes = 4 << 10
	// DeliverConcurrency is how many deliveries (and expiry checks) a
	// worker runs at once, on an asynq server of its own: at most this
	// many requests wait on endpoints that hang, and none of the mail
	// queues' slots.
	DeliverConcurrency = 8
)

// Retry delays of a delivery: from RetryBase, twice as long each time, up
// to RetryCap, each within ±10 % (jitter). With MaxRetry retries the
// attempts span RetryWindow, 41.7 hours give or take the jitter (37.5 to
// 45.9 hours), after which the delivery is archived (failed).
const (
	RetryBase   = 10 * time.Second
	RetryCap    = 4 * time.Hour
	RetryWindow = 10*(1<<11-1)*time.Second + (MaxRetry-11)*RetryCap
)

// RetryDelay is the asynq.RetryDelayFunc of the events' server.
func RetryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	return retryDelay(n, rand.Float64)
}

func retryDelay(n int, random func() float64) time.Duration {
	d := RetryCap
	if n < 20 {
		d = min(RetryBase<<n, RetryCap)
	}
	return time.Duration(float64(d) * (0.9 + 0.2*random()))
}

// Result is how one delivery attempt ended: a metric label value.
type Result string

// Results of a delivery attempt.
const (
	// ResultDelivered: the endpoint answered 2xx.
	ResultDelivered Result = "delivered"
	// ResultRetried: another status, a timeout or a connection failure;
	// the delivery is tried again.
	ResultRetried Result = "retried"
	// ResultFailed: the last retry failed (after RetryWindow); the
	// delivery is archived.
	ResultFailed Result = "failed"
	// ResultDropped: the task names an endpoint this worker's
	// WEBHOOK_URLS no longer lists, or cannot be read; nothing is sent.
	ResultDropped Result = "dropped"
)

// Results lists every Result, for metrics that pre-create their series.
var Results = []Result{ResultDelivered, ResultRetried, ResultFailed, ResultDropped}

// Deliverer processes TypeDeliver tasks: it signs the event's body and
// POSTs it to its endpoint. It follows no redirect (a 3xx is retried as
// any status but 2xx).
type Deliverer struct {
	urls    []string
	secrets [][]byte
	client  *http.Client
	obs     Observer
	log     *slog.Logger
	now     func() time.Time
}

// NewDeliverer returns the Deliverer to urls (the endpoints it may POST
// to: WEBHOOK_URLS), signing with secrets (ParseSecrets: the current one
// first). obs may be nil.
func NewDeliverer(urls []string, secrets [][]byte, obs Observer, logger *slog.Logger) (*Deliverer, error) {
	if len(urls) == 0 || len(secrets) == 0 || logger == nil {
		return nil, errors.New("events: a deliverer needs endpoints, a secret and a logger")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = DeliverConcurrency
	tr.ResponseHeaderTimeout = RequestTimeout
	return &Deliverer{
		urls: urls, secrets: secrets, obs: obs, log: logger.With("component", "events"), now: time.Now,
		client: &http.Client{
			Transport:     tr,
			Timeout:       RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Sign returns the webhook-signature header of the message id sent at ts
// with body: "v1,<base64 of the HMAC-SHA256 of id.ts.body>" for each
// secret, space-separated.
func Sign(secrets [][]byte, id string, ts time.Time, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, k := range secrets {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
		m.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return strings.Join(sigs, " ")
}

// ProcessTask delivers one event to one endpoint. A 2xx answer ends the
// task; anything else returns an error, which asynq retries with
// RetryDelay. Each attempt is signed anew: webhook-timestamp is the
// attempt's time, as receivers reject old ones (Standard Webhooks: five
// minutes).
func (d *Deliverer) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p deliverPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ID == "" || len(p.Body) == 0 {
		d.count(p.Type, ResultDropped)
		return fmt.Errorf("decode %s payload: %w", TypeDeliver, asynq.SkipRetry)
	}
	log := d.log.With("type", string(p.Type), "webhook_id", p.ID, "endpoint", endpointName(p.URL))
	if !slices.Contains(d.urls, p.URL) {
		d.count(p.Type, ResultDropped)
		log.WarnContext(ctx, "event for an endpoint WEBHOOK_URLS no longer lists: dropped")
		return fmt.Errorf("endpoint not configured: %w", asynq.SkipRetry)
	}
	status, err := d.post(ctx, p)
	if err == nil && status/100 != 2 {
		err = fmt.Errorf("endpoint answered %d", status)
	}
	if err == nil {
		d.count(p.Type, ResultDelivered)
		log.DebugContext(ctx, "event delivered", "status", status)
		return nil
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if retried >= maxRetry {
		d.count(p.Type, ResultFailed)
		log.ErrorContext(ctx, "event not delivered after every retry: given up", "retried", retried, "err", err)
		return err
	}
	d.count(p.Type, ResultRetried)
	log.WarnContext(ctx, "event not delivered, will retry", "retried", retried, "err", err)
	return err
}

// post sends p's body, signed, and returns the response's status; the
// response's body is read up to MaxResponseBytes and discarded.
func (d *Deliverer) post(ctx context.Context, p deliverPayload) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(p.Body))
	if err != nil {
		return 0, err
	}
	ts := d.now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "verifyq-webhooks")
	req.Header.Set("webhook-id", p.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(d.secrets, p.ID, ts, p.Body))
	res, err := d.client.Do(req)
	if err != nil {
		// The URL's path and query may hold a receiver's token: the
		// error names the host only.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, fmt.Errorf("post to %s: %w", endpointName(p.URL), err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, MaxResponseBytes))
	_ = res.Body.Close()
	return res.StatusCode, nil
}

// Close closes the connections to the endpoints that wait idle for the
// next delivery. Call it once the deliveries have ended (the events'
// server shut down).
func (d *Deliverer) Close() { d.client.CloseIdleConnections() }

func (d *Deliverer) count(t Type, r Result) {
	if d.obs != nil && Known(t) {
		d.obs.Delivered(t, r)
	}
}
