// Package openapitest checks HTTP exchanges against verifyq's OpenAPI
// document (httpapi/openapi.yaml) with kin-openapi's openapi3filter.
//
// A Contract wraps a test binary's HTTP transport (Transport, or Install
// for http.DefaultTransport) so that every request a test makes and the
// reply it gets are checked, whatever client code the test uses:
//
//   - the reply must be documented for its operation: its status, its
//     headers and its body's schema, so an undocumented status, header
//     value, field or error code is a problem;
//   - a request the document refuses (a missing member, an unknown one, a
//     value out of bounds) must not be answered with a success;
//   - a path that is no operation must get the document's NoRoute reply,
//     and a method a path does not take its MethodNotAllowed reply.
//
// It counts every (operation, status, error code) it saw. Main runs a
// package's tests and then fails when a problem was found or when a
// documented operation, status or error code was never exercised.
package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// The pseudo-operations of replies to requests that match no operation,
// and the document's responses (components/responses) they must be.
const (
	NoRoute          = "(no route)"
	MethodNotAllowed = "(method not allowed)"

	noRouteResponse          = "NoRoute"
	methodNotAllowedResponse = "MethodNotAllowed"
)

// Success is the code of a 2xx reply.
const Success = "ok"

// Reply names one documented kind of reply: an operation ("POST
// /v1/codes", or NoRoute or MethodNotAllowed), a status, and the error
// code of its JSON body (Success for a 2xx, empty for a reply that is not
// a JSON error).
type Reply struct {
	Operation string
	Status    int
	Code      string
}

func (r Reply) String() string {
	s := fmt.Sprintf("%s %d", r.Operation, r.Status)
	if r.Code != "" {
		s += " " + r.Code
	}
	return s
}

// Contract checks exchanges against one OpenAPI document and remembers
// what it saw and what was wrong. It is safe for concurrent use.
type Contract struct {
	doc        *openapi3.T
	router     routers.Router
	documented []Reply
	options    *openapi3filter.Options

	mu       sync.Mutex
	seen     map[Reply]int
	problems []string
}

// Load parses the document and prepares its router. The document's
// servers are ignored: tests listen on ports of their own.
func Load(document []byte) (*Contract, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(document)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid: %w", err)
	}
	// Route by path alone: drop the servers, on a copy of the paths.
	routed := *doc
	routed.Servers = nil
	routed.Paths = openapi3.NewPaths()
	for path, item := range doc.Paths.Map() {
		item := *item
		item.Servers = nil
		routed.Paths.Set(path, &item)
	}
	router, err := gorillamux.NewRouter(&routed)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI document: %w", err)
	}
	c := &Contract{
		doc:    doc,
		router: router,
		options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
			AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		},
		seen: map[Reply]int{},
	}
	if c.documented, err = documentedReplies(doc); err != nil {
		return nil, err
	}
	return c, nil
}

// Doc is the parsed document.
func (c *Contract) Doc() *openapi3.T { return c.doc }

// Documented lists every reply the document names: each operation's
// statuses, a 4xx or 5xx JSON error once per code its schema allows, and
// the replies to requests that match no operation.
func (c *Contract) Documented() []Reply { return slices.Clone(c.documented) }

func documentedReplies(doc *openapi3.T) ([]Reply, error) {
	var out []Reply
	add := func(op string, status string, ref *openapi3.ResponseRef) error {
		n, err := strconv.Atoi(status)
		if err != nil {
			return fmt.Errorf("%s: response %q: want a status, not a range or default", op, status)
		}
		codes, err := ErrorCodes(ref.Value)
		if err != nil {
			return fmt.Errorf("%s %s: %w", op, status, err)
		}
		switch {
		case n < 300:
			out = append(out, Reply{op, n, Success})
		case len(codes) == 0:
			out = append(out, Reply{op, n, ""})
		}
		for _, code := range codes {
			out = append(out, Reply{op, n, code})
		}
		return nil
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, ref := range op.Responses.Map() {
				if err := add(method+" "+path, status, ref); err != nil {
					return nil, err
				}
			}
		}
	}
	for op, name := range map[string]string{NoRoute: noRouteResponse, MethodNotAllowed: methodNotAllowedResponse} {
		ref := doc.Components.Responses[name]
		if ref == nil {
			return nil, fmt.Errorf("components/responses/%s is missing", name)
		}
		status := map[string]string{NoRoute: "404", MethodNotAllowed: "405"}[op]
		if err := add(op, status, ref); err != nil {
			return nil, err
		}
	}
	sortReplies(out)
	return out, nil
}

func sortReplies(rs []Reply) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Operation != b.Operation {
			return a.Operation < b.Operation
		}
		if a.Status != b.Status {
			return a.Status < b.Status
		}
		return a.Code < b.Code
	})
}

// ErrorCodes returns the error codes a response's JSON body may carry: the
// enum its schema puts on error.code (written next to the Error schema's
// $ref, which the loader appends to the schema's allOf). A response that
// is not a JSON error has none.
func ErrorCodes(res *openapi3.Response) ([]string, error) {
	mt := res.Content.Get("application/json")
	if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
		return nil, nil
	}
	var codes []string
	var visit func(s *openapi3.Schema)
	visit = func(s *openapi3.Schema) {
		if e := s.Properties["error"]; e != nil && e.Value != nil {
			if code := e.Value.Properties["code"]; code != nil && code.Value != nil {
				for _, v := range code.Value.Enum {
					if str, ok := v.(string); ok {
						codes = append(codes, str)
					}
				}
			}
		}
		for _, sub := range s.AllOf {
			if sub.Value != nil {
				visit(sub.Value)
			}
		}
	}
	visit(mt.Schema.Value)
	if len(codes) == 0 && mt.Schema.Value.Properties["error"] != nil {
		return nil, errors.New("an error reply without an enum of its codes")
	}
	slices.Sort(codes)
	return slices.Compact(codes), nil
}

// Check checks one exchange: req with its body reqBody, answered with
// status, header and body. It records the reply and returns the problem,
// if any (also kept for Problems).
func (c *Contract) Check(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	ctx := context.Background()
	vreq := req.Clone(ctx)
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	vreq.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	vreq.ContentLength = int64(len(reqBody))
	what := fmt.Sprintf("%s %s -> %d", req.Method, req.URL.RequestURI(), status)

	route, params, err := c.router.FindRoute(vreq)
	var op string
	var reqErr error
	switch {
	case errors.Is(err, routers.ErrPathNotFound):
		op, route = NoRoute, c.pseudoRoute(vreq, NoRoute, noRouteResponse, http.StatusNotFound)
	case errors.Is(err, routers.ErrMethodNotAllowed):
		op, route = MethodNotAllowed, c.pseudoRoute(vreq, MethodNotAllowed, methodNotAllowedResponse, http.StatusMethodNotAllowed)
	case err != nil:
		return c.problem("%s: routing: %v", what, err)
	default:
		op = route.Method + " " + route.Path
		reqErr = openapi3filter.ValidateRequest(ctx, &openapi3filter.RequestValidationInput{
			Request: vreq, PathParams: params, Route: route, Options: c.options,
		})
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route, Options: c.options},
		Status:                 status,
		Header:                 header,
		Options:                c.options,
	}
	in.SetBodyBytes(body)
	reply := Reply{Operation: op, Status: status, Code: replyCode(status, header, body)}
	c.mu.Lock()
	c.seen[reply]++
	c.mu.Unlock()
	if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
		return c.problem("%s: the reply is not as documented for %s: %v\nbody: %.300s", what, op, err, body)
	}
	if reqErr != nil && status < 400 {
		return c.problem("%s: the document refuses this request (%v), but it was answered %d", what, reqErr, status)
	}
	return nil
}

// pseudoRoute is a route whose one response is the document's component
// response name, with status.
func (c *Contract) pseudoRoute(req *http.Request, op, name string, status int) *routers.Route {
	o := openapi3.NewOperation()
	o.Responses = openapi3.NewResponses(openapi3.WithStatus(status, c.doc.Components.Responses[name]))
	return &routers.Route{Spec: c.doc, Path: op, Method: req.Method, Operation: o}
}

// replyCode is the Reply.Code of a reply.
func replyCode(status int, header http.Header, body []byte) string {
	if status < 300 {
		return Success
	}
	if !strings.HasPrefix(header.Get("Content-Type"), "application/json") {
		return ""
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return ""
	}
	return e.Error.Code
}

func (c *Contract) problem(format string, a ...any) error {
	err := fmt.Errorf("openapi: "+format, a...)
	c.mu.Lock()
	c.problems = append(c.problems, err.Error())
	c.mu.Unlock()
	return err
}

// Problems returns every problem found so far.
func (c *Contract) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.problems)
}

// Seen returns every reply seen so far, in order.
func (c *Contract) Seen() []Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Reply, 0, len(c.seen))
	for r := range c.seen {
		out = append(out, r)
	}
	sortReplies(out)
	return out
}

// Unexercised returns the documented replies not seen so far.
func (c *Contract) Unexercised() []Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Reply
	for _, r := range c.documented {
		if c.seen[r] == 0 {
			out = append(out, r)
		}
	}
	return out
}

// Transport returns a RoundTripper that sends through next and checks
// every exchange; a problem is returned as the request's error, so the
// test that made it fails where it made it.
func (c *Contract) Transport(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		var reqBody []byte
		if req.Body != nil && req.Body != http.NoBody {
			var err error
			if reqBody, err = io.ReadAll(req.Body); err != nil {
				return nil, err
			}
			_ = req.Body.Close()
			req = req.Clone(req.Context())
			req.Body = io.NopCloser(bytes.NewReader(reqBody))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
		}
		res, err := next.RoundTrip(req)
		if err != nil {
			return nil, err // no reply: nothing to check
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil {
			return nil, err
		}
		res.Body = io.NopCloser(bytes.NewReader(body))
		if err := c.Check(req, reqBody, res.StatusCode, res.Header, body); err != nil {
			return nil, err
		}
		return res, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// Install checks every exchange over http.DefaultTransport (so
// http.DefaultClient, http.Get and http.Post) from now on.
func (c *Contract) Install() {
	http.DefaultTransport = c.Transport(http.DefaultTransport)
}

// Main runs a package's tests (m.Run) with c installed, then reports:
// it fails when a problem was found, or, when every test of the package
// ran (no -run, -skip, -fuzz or -list), when a documented reply was never
// exercised. It returns the exit code for os.Exit.
func (c *Contract) Main(m *testing.M) int {
	c.Install()
	code := m.Run()
	if problems := c.Problems(); len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "openapi: %d exchanges do not match the document:\n  %s\n", len(problems), strings.Join(problems, "\n  "))
		code = max(code, 1)
	}
	if partial := partialRun(); partial != "" {
		if testing.Verbose() {
			fmt.Fprintf(os.Stderr, "openapi: coverage of the document not checked: %s\n", partial)
		}
		return code
	}
	if missing := c.Unexercised(); len(missing) > 0 {
		lines := make([]string, len(missing))
		for i, r := range missing {
			lines[i] = r.String()
		}
		fmt.Fprintf(os.Stderr, "openapi: %d documented replies were never exercised by the tests:\n  %s\n",
			len(missing), strings.Join(lines, "\n  "))
		code = max(code, 1)
	}
	return code
}

// partialRun says why not every test of the package ran, or "".
func partialRun() string {
	for _, name := range []string{"test.run", "test.skip", "test.fuzz", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return "-" + strings.TrimPrefix(name, "test.") + " " + f.Value.String()
		}
	}
	return ""
}
