package httpapi

import (
	"bytes"
	_ "embed" // the OpenAPI document
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"go.yaml.in/yaml/v3"
)

// The paths the admin listener serves the OpenAPI document on.
const (
	OpenAPIPath     = "/openapi.yaml"
	OpenAPIJSONPath = "/openapi.json"
)

// openAPIYAML is the OpenAPI 3.1 document of the HTTP API, written once,
// in openapi.yaml; the tests check every request and reply against it.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPI returns the OpenAPI 3.1 document of the HTTP API (the public
// routes and the admin listener's suppression list) as committed, in YAML.
func OpenAPI() []byte { return bytes.Clone(openAPIYAML) }

// openAPIJSON is the document converted to JSON, once.
var openAPIJSON = sync.OnceValues(func() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return json.MarshalIndent(doc, "", "  ")
})

// OpenAPIJSON returns the document as JSON: the same content as OpenAPI,
// for tools that read no YAML.
func OpenAPIJSON() ([]byte, error) {
	b, err := openAPIJSON()
	return bytes.Clone(b), err
}

// NewOpenAPIHandler serves the document: as JSON on OpenAPIJSONPath, as
// YAML (application/yaml, RFC 9512) on any other path. It holds nothing
// secret: it is the contract callers generate clients from.
func NewOpenAPIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, contentType := openAPIYAML, "application/yaml"
		if r.URL.Path == OpenAPIJSONPath {
			var err error
			if body, err = openAPIJSON(); err != nil {
				http.Error(w, "the OpenAPI document does not convert to JSON", http.StatusInternalServerError)
				return
			}
			contentType = "application/json"
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(body)
	})
}
