package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/openapitest"
	"github.com/verifyq/verifyq/mail"
	"github.com/verifyq/verifyq/outcome"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
	"github.com/verifyq/verifyq/tasks"
)

// The embedded document is the committed file, an OpenAPI 3.1 document
// that kin-openapi loads and validates (its examples included), and its
// JSON form is the same document.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	file, err := os.ReadFile("openapi.yaml")
	require.NoError(t, err)
	assert.Equal(t, file, httpapi.OpenAPI())

	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(httpapi.OpenAPI())
	require.NoError(t, err)
	assert.Equal(t, "3.1.0", doc.OpenAPI)
	assert.True(t, doc.IsOpenAPI31OrLater())
	require.NoError(t, doc.Validate(loader.Context, openapi3.EnableExamplesValidation()))

	raw, err := httpapi.OpenAPIJSON()
	require.NoError(t, err)
	fromJSON, err := openapi3.NewLoader().LoadFromData(raw)
	require.NoError(t, err)
	want, err := json.Marshal(doc)
	require.NoError(t, err)
	got, err := json.Marshal(fromJSON)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))
}

// NewOpenAPIHandler serves the committed document as YAML, and as JSON on
// OpenAPIJSONPath.
func TestOpenAPIHandler(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	httpapi.NewOpenAPIHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, httpapi.OpenAPIPath, nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/yaml", rec.Header().Get("Content-Type"))
	assert.Equal(t, httpapi.OpenAPI(), rec.Body.Bytes())

	rec = httptest.NewRecorder()
	httpapi.NewOpenAPIHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, httpapi.OpenAPIJSONPath, nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	want, err := httpapi.OpenAPIJSON()
	require.NoError(t, err)
	assert.Equal(t, want, rec.Body.Bytes())
}

// publicOperation reports whether op is on the public listener (the
// routes of NewHandler, and its answers to other paths and methods).
func publicOperation(op string) bool {
	return strings.Contains(op, " /v1/") || op == openapitest.NoRoute || op == openapitest.MethodNotAllowed
}

// adminOnlyCodes are the error codes of the admin listener's suppression
// endpoint that are no outcome of an API request.
var adminOnlyCodes = []string{"read_only"}

// The document lists every outcome of the outcome table that an HTTP
// client can read, at its status, and nothing else: a new outcome without
// its documentation fails here, and so does a code the document invents.
func TestOpenAPIListsEveryOutcome(t *testing.T) {
	t.Parallel()
	documented := contract.Documented()
	byName := map[string]*outcome.Outcome{}
	for _, o := range outcome.All() {
		byName[o.Name] = o
	}
	for _, o := range outcome.All() {
		switch {
		case o.LegacyOnly:
			assert.Zero(t, o.HTTPStatus, "%s: no HTTP reply", o.Name)
			continue
		case o == outcome.Canceled:
			// The client went away: no one reads its reply. The document says so.
			assert.Contains(t, contract.Doc().Info.Description, strconv.Itoa(o.HTTPStatus)+" "+o.Name)
			assert.False(t, slices.ContainsFunc(documented, func(r openapitest.Reply) bool { return r.Code == o.Name }))
			continue
		}
		found := slices.ContainsFunc(documented, func(r openapitest.Reply) bool {
			if !publicOperation(r.Operation) {
				return false
			}
			if o == outcome.OK {
				return r.Code == openapitest.Success
			}
			return r.Code == o.Name && r.Status == o.HTTPStatus
		})
		assert.True(t, found, "outcome %s (%d) is in no reply of the OpenAPI document", o.Name, o.HTTPStatus)
	}
	for _, r := range documented {
		if r.Code == openapitest.Success || r.Code == "" {
			continue
		}
		if !publicOperation(r.Operation) && slices.Contains(adminOnlyCodes, r.Code) {
			continue
		}
		o := byName[r.Code]
		if assert.NotNil(t, o, "%s: %q is no outcome", r, r.Code) {
			assert.Equal(t, o.HTTPStatus, r.Status, "%s: the outcome table says %d", r, o.HTTPStatus)
		}
	}
}

// Every example of an error reply on the public listener says its
// outcome's message, as the table has it.
func TestOpenAPIExamplesSayTheOutcomes(t *testing.T) {
	t.Parallel()
	byName := map[string]*outcome.Outcome{}
	for _, o := range outcome.All() {
		byName[o.Name] = o
	}
	doc := contract.Doc()
	check := func(where string, res *openapi3.Response) {
		mt := res.Content.Get("application/json")
		if mt == nil {
			return
		}
		codes, err := openapitest.ErrorCodes(res)
		require.NoError(t, err)
		if len(codes) == 0 {
			return
		}
		var named []string
		for name, ex := range mt.Examples {
			named = append(named, name)
			var body struct {
				Error struct{ Code, Message string }
			}
			raw, err := json.Marshal(ex.Value.Value)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(raw, &body), where)
			assert.Equal(t, name, body.Error.Code, "%s: an example is named after its code", where)
			if o := byName[body.Error.Code]; o != nil {
				assert.True(t, strings.HasPrefix(body.Error.Message, o.Message),
					"%s: example %s says %q, the outcome table %q", where, name, body.Error.Message, o.Message)
			}
		}
		slices.Sort(named)
		assert.Equal(t, codes, named, "%s: one example per code", where)
	}
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		for method, op := range item.Operations() {
			for status, ref := range op.Responses.Map() {
				check(method+" "+path+" "+status, ref.Value)
			}
		}
	}
	for name, ref := range doc.Components.Responses {
		if name != "SuppressionQueryInvalid" {
			check("components/responses/"+name, ref.Value)
		}
	}
}

// schema returns the named component schema's property path.
func schema(t *testing.T, name string, props ...string) *openapi3.Schema {
	t.Helper()
	ref := contract.Doc().Components.Schemas[name]
	require.NotNil(t, ref, name)
	s := ref.Value
	for _, p := range props {
		require.Contains(t, s.Properties, p, "%s.%s", name, p)
		s = s.Properties[p].Value
	}
	return s
}

func enum(s *openapi3.Schema) []string {
	var out []string
	for _, v := range s.Enum {
		out = append(out, v.(string))
	}
	slices.Sort(out)
	return out
}

func sorted[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	slices.Sort(out)
	return out
}

// The document's enums and bounds are the code's: a new delivery state,
// failure class, relay or suppression reason, or a changed bound, without
// its documentation fails here.
func TestOpenAPIEnumsAndBoundsAreTheCode(t *testing.T) {
	t.Parallel()
	var states []string
	for n, name := range verifyqv1.DeliveryState_name {
		if n != int32(verifyqv1.DeliveryState_DELIVERY_STATE_UNSPECIFIED) {
			states = append(states, strings.ToLower(strings.TrimPrefix(name, "DELIVERY_STATE_")))
		}
	}
	slices.Sort(states)
	assert.Equal(t, states, enum(schema(t, "Status", "state")), "Status.state: the states of verifyq.v1")
	assert.Equal(t, sorted(delivery.Classes), enum(schema(t, "Status", "last_failure")))
	assert.Equal(t, sorted([]string{tasks.RelayPrimary, tasks.RelayFallback}), enum(schema(t, "Status", "relay")))
	assert.Equal(t, sorted(delivery.Reasons), enum(schema(t, "SuppressionReason")))
	assert.Equal(t, uint64(delivery.MaxDiagnostic), *schema(t, "Status", "diagnostic").MaxLength)
	assert.Equal(t, uint64(delivery.MaxDiagnostic), *schema(t, "Suppression", "diagnostic").MaxLength)
	assert.Equal(t, uint64(httpapi.MaxSuppressionsListed), *schema(t, "SuppressionList", "suppressions").MaxItems)
	assert.Equal(t, uint64(codes.MaxPurposeLen), *schema(t, "Purpose").MaxLength)
	assert.Equal(t, uint64(mail.MaxLocaleLen), *schema(t, "Locale").MaxLength)
	for _, p := range codes.DefaultPurposes {
		require.NoError(t, codes.ValidatePurpose(p))
		assert.NoError(t, schema(t, "Purpose").VisitJSON(p), p)
	}

	verify := contract.Doc().Components.RequestBodies["Verify"].Value.Content.Get("application/json").Schema.Value
	assert.Equal(t, uint64(service.MaxCodeLength), *verify.Properties["code"].Value.MaxLength)
	for _, name := range []string{"Send", "Verify"} {
		assert.Contains(t, contract.Doc().Components.RequestBodies[name].Value.Description, strconv.Itoa(httpapi.MaxBodyBytes), name)
	}

	// The longest address the code takes is the longest the document does.
	const maxAddress = 254
	assert.Equal(t, uint64(maxAddress), *schema(t, "Email").MaxLength)
	domain := strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." // DNS labels of at most 63 bytes
	domain += strings.Repeat("d", maxAddress-65-len(domain)-4) + ".com"
	longest := strings.Repeat("a", 64) + "@" + domain
	require.Len(t, longest, maxAddress)
	assert.NoError(t, mail.ValidateAddress(longest))
	assert.Error(t, mail.ValidateAddress("a"+longest))
}
