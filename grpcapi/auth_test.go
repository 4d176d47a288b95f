package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/internal/authtest"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/limits"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

func bearer(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

// With keys configured: a v1 call needs a key with its scope, and one
// without stores and queues nothing; the old gateway's call (plaintext, no
// metadata) from loopback works as it always did.
func TestGRPCCallersAuthenticate(t *testing.T) {
	t.Parallel()
	loopback, err := clientip.ParseTrusted([]string{"127.0.0.0/8", "::1"})
	require.NoError(t, err)
	guard, key := authtest.Callers(t, auth.Config{LegacyCallers: loopback}, "gateway send,verify", "desk status")
	s := startWith(t, limits.Config{}, 0, guard)
	ctx := context.Background()

	// No key, a wrong key, a key without the scope: nothing stored, nothing queued.
	_, err = s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "nokey@example.com"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Equal(t, "UNAUTHENTICATED", reasonOf(t, err))
	_, err = s.v1().SendCode(bearer("vq_wrong"), &verifyqv1.SendCodeRequest{Email: "nokey@example.com"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	_, err = s.v1().SendCode(bearer(key["desk"]), &verifyqv1.SendCodeRequest{Email: "nokey@example.com"})
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
	assert.Equal(t, "PERMISSION_DENIED", reasonOf(t, err))
	assert.Contains(t, status.Convert(err).Message(), "send scope")
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "nokey@example.com", Code: "123456"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Empty(t, s.Keys(t, "*nokey*"), "nothing stored")
	assert.Zero(t, s.pending(t), "nothing queued")

	// The old gateway, unchanged.
	rsp := s.legacy(t, "old@example.com")
	assert.Equal(t, int32(0), rsp.Error)
	assert.Equal(t, "old@example.com", rsp.Email)
	assert.Empty(t, rsp.Code)
	assert.Len(t, s.Code(t, "old@example.com"), 6)

	// The right keys work as before.
	sent, err := s.v1().SendCode(bearer(key["gateway"]), &verifyqv1.SendCodeRequest{Email: "new@example.com"})
	require.NoError(t, err)
	assert.Positive(t, sent.GetExpiresIn())
	st, err := s.v1().GetStatus(bearer(key["desk"]), &verifyqv1.GetStatusRequest{Email: "new@example.com"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_QUEUED, st.GetState())
	_, err = s.v1().VerifyCode(bearer(key["gateway"]), &verifyqv1.VerifyCodeRequest{Email: "new@example.com", Code: s.Code(t, "new@example.com")})
	require.NoError(t, err)

	for _, k := range key {
		assert.NotContains(t, s.logs.String(), k, "never a key")
	}
	lines := s.logs.Matching(t, "grpc call")
	assert.Equal(t, "gateway", lines[len(lines)-1]["caller"])
}

// A caller without the status scope learns nothing of an address: the
// refusal is the same, detail for detail, whether the address has a code,
// had one, or never asked.
func TestGRPCStatusWithoutScopeLearnsNothing(t *testing.T) {
	t.Parallel()
	guard, key := authtest.Callers(t, auth.Config{}, "gateway send,verify")
	s := startWith(t, limits.Config{}, 0, guard)
	_, err := s.v1().SendCode(bearer(key["gateway"]), &verifyqv1.SendCodeRequest{Email: "known@example.com"})
	require.NoError(t, err)

	var first *status.Status
	for _, email := range []string{"known@example.com", "never@example.com", "not an address"} {
		_, err := s.v1().GetStatus(bearer(key["gateway"]), &verifyqv1.GetStatusRequest{Email: email})
		st := status.Convert(err)
		assert.Equal(t, codes.PermissionDenied, st.Code(), email)
		if first == nil {
			first = st
			continue
		}
		assert.True(t, proto.Equal(first.Proto(), st.Proto()), "%s: %v vs %v", email, first.Proto(), st.Proto())
	}
}

// Each caller's status reads are bounded (STATUS_READS_PER_MINUTE).
func TestGRPCStatusReadsPerCaller(t *testing.T) {
	t.Parallel()
	now := time.Now()
	guard, key := authtest.Callers(t, auth.Config{StatusReadsPerMinute: 2, Now: func() time.Time { return now }}, "a status", "b status")
	s := startWith(t, limits.Config{}, 0, guard)
	for range 2 {
		_, err := s.v1().GetStatus(bearer(key["a"]), &verifyqv1.GetStatusRequest{Email: "x@example.com"})
		require.NoError(t, err)
	}
	_, err := s.v1().GetStatus(bearer(key["a"]), &verifyqv1.GetStatusRequest{Email: "x@example.com"})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))
	retry, limit := limitDetails(t, err)
	assert.Equal(t, auth.StatusLimit, limit)
	assert.Equal(t, 30*time.Second, retry)
	_, err = s.v1().GetStatus(bearer(key["b"]), &verifyqv1.GetStatusRequest{Email: "x@example.com"})
	require.NoError(t, err, "b has its own")
}

// LEGACY_CALLERS is checked against the connection's real peer: with a
// network that does not hold 127.0.0.1, the old gateway's call from
// loopback is refused with UNAUTHENTICATED and nothing is stored.
func TestGRPCLegacyCallerOutsideTheNetworksIsRefused(t *testing.T) {
	t.Parallel()
	elsewhere, err := clientip.ParseTrusted([]string{"192.0.2.0/24"})
	require.NoError(t, err)
	guard, _ := authtest.Callers(t, auth.Config{LegacyCallers: elsewhere}, "gateway send")
	s := startWith(t, limits.Config{}, 0, guard)
	_, err = grpctest.GetVarifyCode(context.Background(), t, s.conn, "far@example.com")
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.Empty(t, s.Keys(t, "*far@*"), "nothing stored")
	assert.Zero(t, s.pending(t))
	lines := s.logs.Matching(t, "grpc call")
	require.NotEmpty(t, lines)
	assert.Equal(t, "unauthenticated", lines[len(lines)-1]["outcome"])
}

// The old gateway on another host, answered without a key because its
// network is in LEGACY_CALLERS but left out of TRUSTED_PROXIES: it speaks
// for all its users and forwards none of them, so it is not one client
// under CLIENT_SENDS_PER_HOUR. Its sends are bounded by the mailbox,
// domain and global limits, as a trusted gateway's are. A v1 call from the
// same peer is still that client.
func TestGRPCLegacyCallerIsNotOneClient(t *testing.T) {
	t.Parallel()
	loopback, err := clientip.ParseTrusted([]string{"127.0.0.1"})
	require.NoError(t, err)
	guard, keys := authtest.Callers(t, auth.Config{LegacyCallers: loopback}, "gateway send")
	s := startOn(t, limits.Config{ClientPerHour: 1}, 0, guard, nil)
	for _, email := range []string{"one@example.com", "two@example.com", "three@example.com"} {
		rsp, err := grpctest.GetVarifyCode(context.Background(), t, s.conn, email)
		require.NoError(t, err)
		assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: email}, rsp, "no per-client cap on the gateway")
	}
	withKey := bearer(keys["gateway"])
	_, err = s.v1().SendCode(withKey, &verifyqv1.SendCodeRequest{Email: "four@example.com"})
	require.NoError(t, err)
	_, err = s.v1().SendCode(withKey, &verifyqv1.SendCodeRequest{Email: "five@example.com"})
	_, limit := limitDetails(t, err)
	assert.Equal(t, "client", limit, "a caller with a key from that peer is still its own client")
}
