package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/service"
)

// recordingService validates like the real service and records what reached
// it.
type recordingService struct{ emails []string }

func (r *recordingService) SendCode(_ context.Context, req service.SendRequest) (service.Sent, error) {
	if err := mail.ValidateAddress(req.Email); err != nil {
		return service.Sent{}, err
	}
	if _, err := mail.MatchLocale(req.Locale, mail.DefaultLocale); err != nil {
		return service.Sent{}, err
	}
	r.emails = append(r.emails, req.Email)
	return service.Sent{}, nil
}

func (r *recordingService) VerifyCode(_ context.Context, req service.VerifyRequest) error {
	email, code := req.Email, req.Code
	if err := mail.ValidateAddress(email); err != nil {
		return err
	}
	if code == "" {
		return service.ErrInvalidCode
	}
	return service.ErrMismatch
}

// FuzzRequestDecoding sends arbitrary bodies: the handler never panics,
// always answers JSON with a known status, and only a valid address reaches
// the service.
func FuzzRequestDecoding(f *testing.F) {
	for _, s := range []string{
		`{"email":"a@example.com"}`, `{"email":"a@example.com","locale":"en"}`, `{"email":"a@example.com","code":"123456"}`,
		`{"email":"a@example.com\r\nBcc: b@example.com"}`, `{"email":null}`, `{"email":["a"]}`, `[]`, `"x"`, `{`, ``,
		`{"email":"a@example.com"} {}`, `{"email":"\u0000@example.com"}`, `{"email":"` + strings.Repeat("a", 300) + `@x.com"}`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, body string, verify bool) {
		svc := &recordingService{}
		h := httpapi.NewHandler(svc, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Config{})
		path := "/v1/codes"
		if verify {
			path = "/v1/codes/verify"
		}
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch rec.Code {
		case http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("reply is not JSON: %q", rec.Body.String())
		}
		for _, e := range svc.emails {
			if mail.ValidateAddress(e) != nil {
				t.Fatalf("invalid address %q reached the service", e)
			}
		}
	})
}

func (r *recordingService) Status(_ context.Context, id codes.ID) (delivery.Status, error) {
	if err := mail.ValidateAddress(id.Email); err != nil {
		return delivery.Status{}, err
	}
	r.emails = append(r.emails, id.Email)
	return delivery.Status{State: delivery.StateNone}, nil
}
