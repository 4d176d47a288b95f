package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/outcome"
)

// SuppressionList is what the admin's suppression endpoint needs
// (delivery.Suppressions).
type SuppressionList interface {
	List(ctx context.Context, limit int) ([]delivery.Suppression, error)
	Lift(ctx context.Context, email string) (bool, error)
	LiftID(ctx context.Context, id string) (bool, error)
}

var _ SuppressionList = (*delivery.Suppressions)(nil)

// MaxSuppressionsListed bounds one listing of the suppression list.
const MaxSuppressionsListed = 1000

type suppressionEntry struct {
	delivery.Suppression
	ExpiresIn int64 `json:"expires_in"`
}

// NewSuppressionsHandler serves the suppression list for ops, on the admin
// server behind its auth: GET lists it (addresses masked, at most
// MaxSuppressionsListed), DELETE with ?email= (any spelling of the mailbox)
// or ?id= lifts an entry: 200 when it was listed, 404 when not.
func NewSuppressionsHandler(list SuppressionList) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			entries, err := list.List(r.Context(), MaxSuppressionsListed)
			if err != nil {
				writeOutcome(w, outcome.Unavailable)
				return
			}
			out := make([]suppressionEntry, 0, len(entries))
			for _, e := range entries {
				out = append(out, suppressionEntry{Suppression: e, ExpiresIn: int64(e.ExpiresIn / time.Second)})
			}
			writeJSON(w, http.StatusOK, map[string]any{"suppressions": out})
		case http.MethodDelete:
			q := r.URL.Query()
			if len(q) != 1 || len(q["email"])+len(q["id"]) != 1 {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: errorDetail{Code: "invalid_query", Message: "give exactly one of email or id"}})
				return
			}
			var lifted bool
			var err error
			if email := q.Get("email"); email != "" {
				lifted, err = list.Lift(r.Context(), email)
			} else {
				lifted, err = list.LiftID(r.Context(), q.Get("id"))
			}
			switch {
			case errors.Is(err, mail.ErrInvalidAddress):
				writeOutcome(w, outcome.InvalidEmail)
			case err != nil:
				writeOutcome(w, outcome.Unavailable)
			case !lifted:
				writeJSON(w, http.StatusNotFound, errorBody{Error: errorDetail{Code: "not_found", Message: "not on the suppression list"}})
			default:
				writeJSON(w, http.StatusOK, map[string]bool{"lifted": true})
			}
		default:
			w.Header().Set("Allow", "GET, DELETE")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: errorDetail{Code: "method_not_allowed", Message: "use GET or DELETE"}})
		}
	})
}

// writeOutcome writes o's error reply as the outcome table has it.
func writeOutcome(w http.ResponseWriter, o *outcome.Outcome) {
	writeJSON(w, o.HTTPStatus, errorBody{Error: errorDetail{Code: o.Name, Message: o.Message}})
}
