package openapitest_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/internal/openapitest"
)

// doc is a small document of the shape of httpapi/openapi.yaml: one
// operation, its error codes as an enum next to the Error schema's $ref.
const doc = `
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /things:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: false
              required: [name]
              properties:
                name: {type: string, maxLength: 8}
      responses:
        '201':
          description: made
          content:
            application/json:
              schema:
                type: object
                additionalProperties: false
                required: [name]
                properties:
                  name: {type: string}
        '400':
          description: bad
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
                properties:
                  error:
                    properties:
                      code:
                        enum: [invalid_name, invalid_json]
        '429':
          description: slow down
          headers:
            Retry-After:
              required: true
              schema: {type: integer}
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
                properties:
                  error:
                    properties:
                      code:
                        enum: [rate_limited]
components:
  responses:
    NoRoute:
      description: no such path
      content:
        application/json:
          schema:
            $ref: '#/components/schemas/Error'
            properties:
              error:
                properties:
                  code:
                    enum: [not_found]
    MethodNotAllowed:
      description: no such method
      content:
        application/json:
          schema:
            $ref: '#/components/schemas/Error'
            properties:
              error:
                properties:
                  code:
                    enum: [method_not_allowed]
  schemas:
    Error:
      type: object
      additionalProperties: false
      required: [error]
      properties:
        error:
          type: object
          additionalProperties: false
          required: [code, message]
          properties:
            code: {type: string}
            message: {type: string}
`

// server answers every request with status, headers and body.
func server(t *testing.T, status int, body string, header ...string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func load(t *testing.T) *openapitest.Contract {
	t.Helper()
	c, err := openapitest.Load([]byte(doc))
	require.NoError(t, err)
	return c
}

// send makes one request through the contract's transport.
func send(t *testing.T, c *openapitest.Contract, method, url, body string) error {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	res, err := (&http.Client{Transport: c.Transport(http.DefaultTransport)}).Do(req)
	if err == nil {
		_ = res.Body.Close()
	}
	return err
}

// The documented replies are each operation's statuses, an error status
// once per code of its enum, and the replies to unrouted requests.
func TestDocumented(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []openapitest.Reply{
		{Operation: openapitest.MethodNotAllowed, Status: 405, Code: "method_not_allowed"},
		{Operation: openapitest.NoRoute, Status: 404, Code: "not_found"},
		{Operation: "POST /things", Status: 201, Code: openapitest.Success},
		{Operation: "POST /things", Status: 400, Code: "invalid_json"},
		{Operation: "POST /things", Status: 400, Code: "invalid_name"},
		{Operation: "POST /things", Status: 429, Code: "rate_limited"},
	}, load(t).Documented())
}

// Replies as documented pass, and are counted; the rest stay unexercised.
func TestDocumentedRepliesPass(t *testing.T) {
	t.Parallel()
	c := load(t)
	require.NoError(t, send(t, c, http.MethodPost, server(t, 201, `{"name":"a"}`).URL+"/things", `{"name":"a"}`))
	require.NoError(t, send(t, c, http.MethodPost, server(t, 400, `{"error":{"code":"invalid_name","message":"m"}}`).URL+"/things",
		`{"name":"far too long a name"}`), "a request the document refuses, refused")
	require.NoError(t, send(t, c, http.MethodGet, server(t, 404, `{"error":{"code":"not_found","message":"m"}}`).URL+"/nope", ""))
	require.NoError(t, send(t, c, http.MethodGet, server(t, 405, `{"error":{"code":"method_not_allowed","message":"m"}}`).URL+"/things", ""))
	assert.Empty(t, c.Problems())
	assert.Equal(t, []openapitest.Reply{
		{Operation: "POST /things", Status: 400, Code: "invalid_json"},
		{Operation: "POST /things", Status: 429, Code: "rate_limited"},
	}, c.Unexercised())
}

// Each way a reply or a request can leave the document is caught: the
// request fails with the problem, which Problems keeps for TestMain.
func TestUndocumentedIsCaught(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, method, path, body string
		srv                      func(t *testing.T) *httptest.Server
		says                     string
	}{
		{"an undocumented field", http.MethodPost, "/things", `{"name":"a"}`,
			func(t *testing.T) *httptest.Server { return server(t, 201, `{"name":"a","secret":"x"}`) }, "secret"},
		{"an undocumented status", http.MethodPost, "/things", `{"name":"a"}`,
			func(t *testing.T) *httptest.Server { return server(t, 418, `{}`) }, "status is not supported"},
		{"an undocumented error code", http.MethodPost, "/things", `{"name":"a"}`,
			func(t *testing.T) *httptest.Server {
				return server(t, 400, `{"error":{"code":"invalid_colour","message":"m"}}`)
			}, "invalid_colour"},
		{"a missing required header", http.MethodPost, "/things", `{"name":"a"}`,
			func(t *testing.T) *httptest.Server {
				return server(t, 429, `{"error":{"code":"rate_limited","message":"m"}}`)
			}, "Retry-After"},
		{"a refused request answered with success", http.MethodPost, "/things", `{"name":"a","admin":"yes"}`,
			func(t *testing.T) *httptest.Server { return server(t, 201, `{"name":"a"}`) }, "the document refuses this request"},
		{"an unknown path not answered not_found", http.MethodGet, "/nope", "",
			func(t *testing.T) *httptest.Server { return server(t, 200, `{}`) }, "(no route)"},
		{"a wrong method not answered 405", http.MethodDelete, "/things", "",
			func(t *testing.T) *httptest.Server {
				return server(t, 404, `{"error":{"code":"not_found","message":"m"}}`)
			}, "(method not allowed)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := load(t)
			err := send(t, c, tt.method, tt.srv(t).URL+tt.path, tt.body)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.says)
			require.Len(t, c.Problems(), 1)
			assert.Contains(t, c.Problems()[0], tt.says)
		})
	}
}

// A document whose error reply lists no codes is refused: the codes are
// what the tests must exercise.
func TestErrorWithoutCodesRefused(t *testing.T) {
	t.Parallel()
	bad := strings.Replace(doc, "enum: [rate_limited]", "description: any", 1)
	_, err := openapitest.Load([]byte(bad))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "POST /things 429")
}
