package httpapi_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/verifyq/verifyq/httpapi"
	"github.com/verifyq/verifyq/internal/openapitest"
)

// contract is the OpenAPI document every exchange of these tests is
// checked against (TestMain).
var contract *openapitest.Contract

// TestMain checks every request these tests make over http.DefaultTransport
// and its reply against httpapi/openapi.yaml, then fails when one did not
// match or when a documented operation, status or error code was never
// exercised (openapitest.Contract.Main).
func TestMain(m *testing.M) {
	var err error
	if contract, err = openapitest.Load(httpapi.OpenAPI()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(contract.Main(m))
}
