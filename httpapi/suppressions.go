package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/outcome"
)

// SuppressionList is what the admin's suppression endpoint needs
// (delivery.Suppressions).
type SuppressionList interface {
	List(ctx context.Context, f delivery.Filter, limit int) ([]delivery.Suppression, bool, error)
	Lift(ctx context.Context, email string) (bool, error)
	LiftID(ctx context.Context, id string) (bool, error)
	LiftAdded(ctx context.Context, f delivery.Filter) (int, error)
}

var _ SuppressionList = (*delivery.Suppressions)(nil)

// MaxSuppressionsListed bounds one listing of the suppression list.
const MaxSuppressionsListed = 1000

// The query parameters of the suppression endpoint.
const (
	paramEmail       = "email"
	paramID          = "id"
	paramReason      = "reason"
	paramAddedAfter  = "added_after"
	paramAddedBefore = "added_before"
)

// SuppressionsConfig is how the suppression endpoint behaves.
type SuppressionsConfig struct {
	// ReadOnly refuses every DELETE with 403 read_only
	// (DASHBOARD_READONLY).
	ReadOnly bool
}

type suppressionEntry struct {
	delivery.Suppression
	ExpiresIn int64 `json:"expires_in"`
}

// NewSuppressionsHandler serves the suppression list for ops, on the admin
// server behind its auth:
//
//   - GET lists it (addresses masked, at most MaxSuppressionsListed, oldest
//     first; "truncated" says more matched), optionally filtered by
//     ?reason= and the window ?added_after= and ?added_before= (RFC 3339;
//     at or after, before);
//   - DELETE ?email= lifts that exact address, ?id= the entry of a
//     listing: 200 when it was listed, 404 when not;
//   - DELETE ?added_after=&added_before= (both, optionally &reason=) lifts
//     every entry added in the window: 200 {"lifted_count": n}.
//
// A DELETE with none of these is a 400: nothing lifts the whole list by
// accident. With cfg.ReadOnly every DELETE is a 403.
func NewSuppressionsHandler(list SuppressionList, cfg SuppressionsConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			listSuppressions(w, r, list)
		case http.MethodDelete:
			if cfg.ReadOnly {
				writeError(w, http.StatusForbidden, "read_only",
					"the admin server is read-only (DASHBOARD_READONLY=true): suppressions cannot be lifted")
				return
			}
			liftSuppressions(w, r, list)
		default:
			w.Header().Set("Allow", "GET, DELETE")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET or DELETE")
		}
	})
}

func listSuppressions(w http.ResponseWriter, r *http.Request, list SuppressionList) {
	q, err := suppressionQuery(r.URL.RawQuery, paramReason, paramAddedAfter, paramAddedBefore)
	var f delivery.Filter
	if err == nil {
		f, err = suppressionFilter(q)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	}
	entries, more, err := list.List(r.Context(), f, MaxSuppressionsListed)
	switch {
	case errors.Is(err, delivery.ErrInvalidSuppression):
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	case err != nil:
		writeOutcome(w, outcome.Unavailable)
		return
	}
	out := make([]suppressionEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, suppressionEntry{Suppression: e, ExpiresIn: int64(e.ExpiresIn / time.Second)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"suppressions": out, "truncated": more})
}

func liftSuppressions(w http.ResponseWriter, r *http.Request, list SuppressionList) {
	q, err := suppressionQuery(r.URL.RawQuery, paramEmail, paramID, paramReason, paramAddedAfter, paramAddedBefore)
	var f delivery.Filter
	if err == nil {
		f, err = suppressionFilter(q)
	}
	window := q.Has(paramAddedAfter) || q.Has(paramAddedBefore)
	if err == nil {
		switch n := len(q); {
		case q.Has(paramEmail) || q.Has(paramID):
			if n != 1 {
				err = errors.New("give email, id, or a window (added_after and added_before, optionally reason), not several")
			}
		case !window:
			err = errors.New("give email, id, or a window (added_after and added_before, optionally reason): " +
				"nothing lifts the whole list")
		case !q.Has(paramAddedAfter) || !q.Has(paramAddedBefore):
			err = errors.New("a window needs both added_after and added_before")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		return
	}
	if window {
		n, err := list.LiftAdded(r.Context(), f)
		switch {
		case errors.Is(err, delivery.ErrInvalidSuppression):
			writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
		case err != nil:
			writeOutcome(w, outcome.Unavailable)
		default:
			writeJSON(w, http.StatusOK, map[string]int{"lifted_count": n})
		}
		return
	}
	var lifted bool
	if q.Has(paramEmail) {
		lifted, err = list.Lift(r.Context(), q.Get(paramEmail))
	} else {
		lifted, err = list.LiftID(r.Context(), q.Get(paramID))
	}
	switch {
	case errors.Is(err, mail.ErrInvalidAddress):
		writeOutcome(w, outcome.InvalidEmail)
	case errors.Is(err, delivery.ErrInvalidSuppression):
		writeError(w, http.StatusBadRequest, "invalid_query", err.Error())
	case err != nil:
		writeOutcome(w, outcome.Unavailable)
	case !lifted:
		writeError(w, http.StatusNotFound, "not_found", "not on the suppression list")
	default:
		writeJSON(w, http.StatusOK, map[string]bool{"lifted": true})
	}
}

// maxSuppressionQuery bounds the query of a suppression request, in bytes.
const maxSuppressionQuery = 1024

// suppressionQuery parses raw, a query of at most maxSuppressionQuery
// bytes that names only the parameters allowed, each once.
func suppressionQuery(raw string, allowed ...string) (url.Values, error) {
	if len(raw) > maxSuppressionQuery {
		return nil, fmt.Errorf("the query is longer than %d bytes", maxSuppressionQuery)
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errors.New("the query is malformed")
	}
	for name, v := range q {
		if !slices.Contains(allowed, name) {
			return nil, fmt.Errorf("unknown parameter %q: this method takes %s", name, strings.Join(allowed, ", "))
		}
		if len(v) != 1 {
			return nil, fmt.Errorf("give %s once", name)
		}
	}
	return q, nil
}

// suppressionFilter reads the filter parameters of q.
func suppressionFilter(q url.Values) (delivery.Filter, error) {
	var f delivery.Filter
	var err error
	if q.Has(paramReason) {
		if f.Reason, err = delivery.ParseReason(q.Get(paramReason)); err != nil {
			return f, err
		}
	}
	for name, t := range map[string]*time.Time{paramAddedAfter: &f.AddedAfter, paramAddedBefore: &f.AddedBefore} {
		if !q.Has(name) {
			continue
		}
		if *t, err = time.Parse(time.RFC3339, q.Get(name)); err != nil {
			return f, fmt.Errorf("%s: want an RFC 3339 time such as 2025-01-02T15:04:05Z", name)
		}
	}
	if !f.AddedAfter.IsZero() && !f.AddedBefore.IsZero() && !f.AddedAfter.Before(f.AddedBefore) {
		return f, fmt.Errorf("%s must be before %s", paramAddedAfter, paramAddedBefore)
	}
	return f, nil
}

// writeError writes the JSON error reply code, message with status.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

// writeOutcome writes o's error reply as the outcome table has it.
func writeOutcome(w http.ResponseWriter, o *outcome.Outcome) {
	writeError(w, o.HTTPStatus, o.Name, o.Message)
}
