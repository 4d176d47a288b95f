package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/internal/grpctest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// keysFile writes a key file with one caller and returns its path and key.
func keysFile(t *testing.T, name, scopes string) (path, key string) {
	t.Helper()
	key, line, err := auth.NewKey(name, scopes)
	require.NoError(t, err)
	path = filepath.Join(t.TempDir(), "api-keys")
	require.NoError(t, os.WriteFile(path, []byte(line+"\n"), 0o600))
	return path, key
}

// The binaries with API_KEYS_FILE: without a key nothing is mailed, with
// one it is; the old gateway's call (plaintext, no metadata) from loopback
// is mailed as it always was.
func TestAuthEndToEnd(t *testing.T) {
	t.Parallel()
	path, key := keysFile(t, "gateway", "send,verify")
	s := startStack(t, map[string]string{"API_KEYS_FILE": path})
	conn := grpctest.Dial(t, s.grpc)
	ctx := context.Background()

	req, err := http.NewRequest(http.MethodPost, "http://"+s.api+"/v1/codes", strings.NewReader(`{"email":"nokey@example.com"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, res.StatusCode)
	_, err = verifyqv1.NewCodeServiceClient(conn).SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "nokey@example.com"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))

	rsp, err := grpctest.GetVarifyCode(ctx, t, conn, "old@example.com")
	require.NoError(t, err)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "old@example.com"}, rsp)
	withKey := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	_, err = verifyqv1.NewCodeServiceClient(conn).SendCode(withKey, &verifyqv1.SendCodeRequest{Email: "new@example.com"})
	require.NoError(t, err)

	msgs := s.smtp.WaitMessages(t, 2, 10*time.Second)
	var to []string
	for _, m := range msgs {
		to = append(to, m.To...)
	}
	assert.ElementsMatch(t, []string{"old@example.com", "new@example.com"}, to, "nothing mailed without a key")

	s.enqueuer.stop(t)
	assert.NotContains(t, s.enqueuer.logs.String(), key, "never the key")
	assert.Contains(t, s.enqueuer.logs.String(), `"caller":"legacy"`)
	assert.Contains(t, s.enqueuer.logs.String(), `"caller":"gateway"`)
}

// With LEGACY_CALLERS a network that does not hold 127.0.0.1, the old
// gateway's call from loopback is refused with UNAUTHENTICATED and nothing
// is mailed.
func TestAuthLegacyCallerOutsideTheNetworks(t *testing.T) {
	t.Parallel()
	path, _ := keysFile(t, "gateway", "send")
	s := startStack(t, map[string]string{"API_KEYS_FILE": path, "LEGACY_CALLERS": "192.0.2.0/24"})
	_, err := grpctest.GetVarifyCode(context.Background(), t, grpctest.Dial(t, s.grpc), "far@example.com")
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	s.enqueuer.stop(t)
	assert.Contains(t, s.enqueuer.logs.String(), `"outcome":"unauthenticated"`)
	assert.Empty(t, s.smtp.Messages())
}
