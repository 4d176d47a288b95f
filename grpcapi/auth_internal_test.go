package grpcapi

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/servicetest"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// The old service's keyless call is admitted by its peer's address, as the
// connection reports it: from LEGACY_CALLERS (loopback by default) as
// legacy, from anywhere else refused with UNAUTHENTICATED before the
// handler runs, whatever forwarded metadata claims.
func TestAdmitLegacyByPeer(t *testing.T) {
	t.Parallel()
	key, line, err := auth.NewKey("gateway", "send")
	require.NoError(t, err)
	keys, err := auth.Parse(strings.NewReader(line))
	require.NoError(t, err)
	loopback, err := clientip.ParseTrusted([]string{"127.0.0.0/8", "::1"})
	require.NoError(t, err)
	logger, logs := logtest.New(t)
	obs := &servicetest.Observer{}
	s := &Server{cfg: Config{Guard: auth.New(auth.Config{Keys: keys, LegacyCallers: loopback})}}
	intercept := func(ctx context.Context, method string) (bool, error) {
		ran := false
		_, err := observe(logger, obs)(ctx, &messagepb.GetVarifyReq{Email: "a@example.com"},
			&grpc.UnaryServerInfo{FullMethod: method},
			func(ctx context.Context, req any) (any, error) {
				return s.admit(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
					ran = true
					return &messagepb.GetVarifyRsp{}, nil
				})
			})
		return ran, err
	}
	from := func(ip string, md ...string) context.Context {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
		return metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
	}
	legacy := messagepb.VarifyService_GetVarifyCode_FullMethodName

	for _, ip := range []string{"127.0.0.1", "127.3.2.1", "::1"} {
		ran, err := intercept(from(ip), legacy)
		require.NoError(t, err, ip)
		assert.True(t, ran, ip)
		assert.Equal(t, auth.Legacy, obs.Take(t).Caller, ip)
	}
	for _, ip := range []string{"192.0.2.2", "10.0.0.1", "fd00::2", "::ffff:192.0.2.2"} {
		ran, err := intercept(from(ip, "x-forwarded-for", "127.0.0.1", "x-client-ip", "127.0.0.1"), legacy)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), ip)
		assert.False(t, ran, "%s: the handler never runs", ip)
		o := obs.Take(t)
		assert.Equal(t, "unauthenticated", o.Outcome, ip)
		assert.Empty(t, o.Caller, ip)
	}
	// No peer at all (not a TCP connection): no network to admit.
	ran, err := intercept(context.Background(), legacy)
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.False(t, ran)
	obs.Take(t)

	// A key admits the call from anywhere.
	ran, err = intercept(from("192.0.2.2", "authorization", "Bearer "+key), legacy)
	require.NoError(t, err)
	assert.True(t, ran)
	assert.Equal(t, "gateway", obs.Take(t).Caller)

	// v1 is never admitted by its network.
	ran, err = intercept(from("127.0.0.1"), verifyqv1.CodeService_SendCode_FullMethodName)
	assert.Equal(t, codes.Unauthenticated, status.Code(err))
	assert.False(t, ran)
	obs.Take(t)

	// Health and reflection ask no key.
	ran, err = intercept(from("192.0.2.2"), "/grpc.health.v1.Health/Check")
	require.NoError(t, err)
	assert.True(t, ran)

	lines := logs.Matching(t, "grpc call")
	assert.Equal(t, "legacy", lines[0]["caller"])
	assert.NotContains(t, logs.String(), key)
}

// Every method of verifyq.v1.CodeService needs a scope.
func TestEveryV1MethodHasAScope(t *testing.T) {
	t.Parallel()
	for _, m := range verifyqv1.CodeService_ServiceDesc.Methods {
		full := "/" + verifyqv1.CodeService_ServiceDesc.ServiceName + "/" + m.MethodName
		assert.Contains(t, Scopes, full)
	}
	assert.Len(t, Scopes, len(verifyqv1.CodeService_ServiceDesc.Methods)+len(verifyqv1.CodeService_ServiceDesc.Streams))
}

// peerAddr reads a TCP peer's address as parsing its String would, an
// IPv4 address in its 4-byte form however the connection holds it.
func TestPeerAddr(t *testing.T) {
	t.Parallel()
	for _, a := range []net.Addr{
		&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 50051}, // 16-byte form
		&net.TCPAddr{IP: net.ParseIP("192.0.2.7").To4(), Port: 1},
		&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1},
		&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443},
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 443, Zone: "eth0"},
		&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 0},
		&net.UnixAddr{Name: "/run/verifyq.sock", Net: "unix"},
	} {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: a})
		want, err := netip.ParseAddrPort(a.String())
		if err != nil {
			assert.False(t, peerAddr(ctx).IsValid(), "%s", a)
			continue
		}
		assert.Equal(t, want.Addr(), peerAddr(ctx), "%s", a)
	}
	assert.False(t, peerAddr(context.Background()).IsValid())
}
