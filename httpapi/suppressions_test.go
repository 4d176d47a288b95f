package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/redistest"
	"github.com/verifyq/verifyq/mail"
)

// suppressionsEnv serves the suppression endpoint on a real list in a
// Redis of the mode VERIFYQ_TEST_REDIS_MODE names.
type suppressionsEnv struct {
	sup *delivery.Suppressions
	url string
}

func newSuppressionsEnv(t *testing.T, cfg httpapi.SuppressionsConfig) *suppressionsEnv {
	t.Helper()
	rdb := redistest.StartMode(t).UniversalClient(t)
	sup := delivery.NewSuppressions(rdb, mail.Identity{TagSeparators: mail.DefaultTagSeparators})
	srv := httptest.NewServer(httpapi.NewSuppressionsHandler(sup, cfg))
	t.Cleanup(srv.Close)
	return &suppressionsEnv{sup: sup, url: srv.URL}
}

func (e *suppressionsEnv) add(t *testing.T, email string, reason delivery.Reason, at time.Time) {
	t.Helper()
	require.NoError(t, e.sup.Add(context.Background(), delivery.Entry{
		Email: email, Reason: reason, Reply: 550, Enhanced: "5.1.1",
		Diagnostic: "5.1.1 <" + email + "> unknown", Added: at, For: time.Hour,
	}))
}

// do sends method with query and returns the status and the JSON body.
func (e *suppressionsEnv) do(t *testing.T, method, query string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+"/suppressions?"+query, nil)
	require.NoError(t, err)
	status, body, _ := do(t, req)
	return status, body
}

func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func window(after, before time.Time) string {
	return url.Values{"added_after": {after.Format(time.RFC3339)}, "added_before": {before.Format(time.RFC3339)}}.Encode()
}

// GET lists the entries with their fields, filtered by reason and window;
// DELETE lifts one exact address, or every entry of a window.
func TestSuppressionsList(t *testing.T) {
	t.Parallel()
	e := newSuppressionsEnv(t, httpapi.SuppressionsConfig{})
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	e.add(t, "alice+x@example.com", delivery.ReasonRecipientRefused, start.Add(-time.Hour))
	for i := range 5 {
		e.add(t, fmt.Sprintf("user%d@example.com", i), delivery.ReasonRecipientRefused, start.Add(time.Duration(i)*time.Minute))
	}
	e.add(t, "bob@example.com", delivery.ReasonBounced, start.Add(time.Minute))

	status, body := e.do(t, http.MethodGet, "")
	require.Equal(t, http.StatusOK, status)
	list, _ := body["suppressions"].([]any)
	require.Len(t, list, 7)
	assert.Equal(t, false, body["truncated"])
	first, _ := list[0].(map[string]any)
	assert.Equal(t, "a***@example.com", first["address"], "oldest first, masked")
	assert.Equal(t, "recipient_refused", first["reason"])
	assert.InDelta(t, 550, first["reply"], 0)
	assert.Equal(t, "5.1.1", first["enhanced_code"])
	assert.Equal(t, "<a***@example.com> unknown", first["diagnostic"])
	assert.Equal(t, start.Add(-time.Hour).Format(time.RFC3339), first["added_at"])
	assert.Equal(t, start.Format(time.RFC3339), first["expires_at"])
	assert.Contains(t, first, "expires_in")
	assert.Contains(t, first, "id")
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), "alice", "no address in clear")

	status, body = e.do(t, http.MethodGet, "reason=bounced")
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, body["suppressions"], 1)
	status, body = e.do(t, http.MethodGet, "reason=recipient_refused&"+window(start, start.Add(3*time.Minute)))
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, body["suppressions"], 3, "minutes 0, 1 and 2: at or after the start, before the end")

	status, body = e.do(t, http.MethodDelete, "reason=recipient_refused&"+window(start, start.Add(time.Hour)))
	require.Equal(t, http.StatusOK, status)
	assert.InDelta(t, 5, body["lifted_count"], 0)
	status, body = e.do(t, http.MethodGet, "")
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, body["suppressions"], 2, "alice before the window, bob of another reason")

	status, body = e.do(t, http.MethodDelete, "email=alice@example.com")
	assert.Equal(t, http.StatusNotFound, status, "another spelling")
	assert.Equal(t, "not_found", errorCode(body))
	status, body = e.do(t, http.MethodDelete, "email="+url.QueryEscape("alice+x@EXAMPLE.com"))
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, true, body["lifted"])

	status, body = e.do(t, http.MethodGet, "")
	require.Equal(t, http.StatusOK, status)
	list, _ = body["suppressions"].([]any)
	require.Len(t, list, 1)
	bob, _ := list[0].(map[string]any)
	id, _ := bob["id"].(string)
	status, _ = e.do(t, http.MethodDelete, "id="+id)
	assert.Equal(t, http.StatusOK, status)
	status, _ = e.do(t, http.MethodDelete, "id="+id)
	assert.Equal(t, http.StatusNotFound, status)
}

// A listing stops at MaxSuppressionsListed and says so.
func TestSuppressionsListTruncated(t *testing.T) {
	t.Parallel()
	e := newSuppressionsEnv(t, httpapi.SuppressionsConfig{})
	now := time.Now()
	for i := range httpapi.MaxSuppressionsListed + 1 {
		e.add(t, fmt.Sprintf("u%d@example.com", i), delivery.ReasonRecipientRefused, now)
	}
	status, body := e.do(t, http.MethodGet, "")
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, body["suppressions"], httpapi.MaxSuppressionsListed)
	assert.Equal(t, true, body["truncated"])
}

// Bad parameters are 400s that say what is wrong, and lift nothing; a
// DELETE without an address or a whole window never wipes the list.
func TestSuppressionsBadQueries(t *testing.T) {
	t.Parallel()
	e := newSuppressionsEnv(t, httpapi.SuppressionsConfig{})
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	e.add(t, "keep@example.com", delivery.ReasonRecipientRefused, start)
	win := window(start.Add(-time.Hour), start.Add(time.Hour))
	tests := []struct {
		method, query, code, says string
	}{
		{http.MethodDelete, "", "invalid_query", "nothing lifts the whole list"},
		{http.MethodDelete, "reason=recipient_refused", "invalid_query", "nothing lifts the whole list"},
		{http.MethodDelete, "added_after=2025-03-01T09:00:00Z", "invalid_query", "both added_after and added_before"},
		{http.MethodDelete, "added_before=2025-03-01T11:00:00Z&reason=recipient_refused", "invalid_query", "both"},
		{http.MethodDelete, "email=keep@example.com&" + win, "invalid_query", "not several"},
		{http.MethodDelete, "email=keep@example.com&id=x", "invalid_query", "not several"},
		{http.MethodDelete, "email=keep@example.com&email=keep@example.com", "invalid_query", "once"},
		{http.MethodDelete, "email=nope", "invalid_email", ""},
		{http.MethodDelete, "id=nope", "invalid_query", "<mailbox id>:<address id>"},
		{http.MethodDelete, "added_after=yesterday&added_before=2025-03-01T11:00:00Z", "invalid_query", "added_after: want an RFC 3339 time"},
		{http.MethodDelete, window(start, start), "invalid_query", "added_after must be before added_before"},
		{http.MethodDelete, win + "&reason=spam", "invalid_query", "recipient_refused, bounced, complaint"},
		{http.MethodDelete, "wipe=all", "invalid_query", `unknown parameter "wipe"`},
		{http.MethodDelete, "email=%zz", "invalid_query", "malformed"},
		{http.MethodDelete, "email=" + strings.Repeat("a", 1100), "invalid_query", "longer than"},
		{http.MethodGet, "reason=", "invalid_query", "unknown reason"},
		{http.MethodGet, "email=keep@example.com", "invalid_query", `unknown parameter "email"`},
		{http.MethodGet, "added_before=2025-13-01T00:00:00Z", "invalid_query", "added_before"},
		{http.MethodPost, "", "method_not_allowed", "GET or DELETE"},
	}
	for _, tt := range tests {
		status, body := e.do(t, tt.method, tt.query)
		assert.Contains(t, []int{http.StatusBadRequest, http.StatusMethodNotAllowed}, status, "%s %s", tt.method, tt.query)
		assert.Equal(t, tt.code, errorCode(body), "%s %s", tt.method, tt.query)
		msg, _ := body["error"].(map[string]any)["message"].(string)
		assert.Contains(t, msg, tt.says, "%s %s", tt.method, tt.query)
	}
	list, _, err := e.sup.List(context.Background(), delivery.Filter{}, 10)
	require.NoError(t, err)
	assert.Len(t, list, 1, "nothing was lifted")
}

// A read-only admin server refuses every DELETE with 403 read_only, and
// still lists.
func TestSuppressionsReadOnly(t *testing.T) {
	t.Parallel()
	e := newSuppressionsEnv(t, httpapi.SuppressionsConfig{ReadOnly: true})
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	e.add(t, "keep@example.com", delivery.ReasonRecipientRefused, start)
	for _, q := range []string{"email=keep@example.com", window(start.Add(-time.Hour), start.Add(time.Hour)), ""} {
		status, body := e.do(t, http.MethodDelete, q)
		assert.Equal(t, http.StatusForbidden, status, q)
		assert.Equal(t, "read_only", errorCode(body), q)
	}
	status, body := e.do(t, http.MethodGet, "")
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, body["suppressions"], 1, "nothing was lifted")
}
