package main

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/openapitest"
	"github.com/verifyq/verifyq/internal/platform"
)

// The admin listener serves the committed OpenAPI document, without
// credentials even when DASHBOARD_AUTH is set, as YAML and as JSON; both
// parse as a valid OpenAPI 3.1 document. The running enqueuer answers as
// it says: a send on the public listener and a listing of the suppression
// list on the admin listener, checked against it.
func TestAdminServesOpenAPI(t *testing.T) {
	t.Parallel()
	app := startApp(t, func(c *Config) { c.DashboardAuth = platform.Credentials{User: "ops", Password: "s3cret"} }).app
	admin := "http://" + app.AdminAddr()
	committed, err := os.ReadFile("../../httpapi/openapi.yaml")
	require.NoError(t, err)

	res, err := http.Get(admin + httpapi.OpenAPIPath)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, "application/yaml", res.Header.Get("Content-Type"))
	status, body := get(t, admin+httpapi.OpenAPIPath)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, string(committed), body, "the served document is the committed file")
	status, asJSON := get(t, admin+httpapi.OpenAPIJSONPath)
	require.Equal(t, http.StatusOK, status)

	var docs []*openapi3.T
	for _, raw := range []string{body, asJSON} {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData([]byte(raw))
		require.NoError(t, err)
		assert.Equal(t, "3.1.0", doc.OpenAPI)
		require.NoError(t, doc.Validate(loader.Context))
		docs = append(docs, doc)
	}
	assert.Equal(t, docs[0].Paths.InMatchingOrder(), docs[1].Paths.InMatchingOrder())

	contract, err := openapitest.Load([]byte(body))
	require.NoError(t, err)
	client := &http.Client{Transport: contract.Transport(http.DefaultTransport)}
	res, err = client.Post("http://"+app.HTTPAddr()+"/v1/codes", "application/json", strings.NewReader(`{"email":"doc@example.com","locale":"en"}`))
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusAccepted, res.StatusCode)
	req, err := http.NewRequest(http.MethodGet, admin+SuppressionsPath, nil)
	require.NoError(t, err)
	req.SetBasicAuth("ops", "s3cret")
	res, err = client.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Empty(t, contract.Problems())
}
