package grpcapi

import (
	"context"
	"net"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/verifyq/verifyq/auth"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// Scopes are the scope each verifyq.v1 method needs; a test checks that
// every method of the service has one.
var Scopes = map[string]auth.Scope{
	verifyqv1.CodeService_SendCode_FullMethodName:   auth.Send,
	verifyqv1.CodeService_VerifyCode_FullMethodName: auth.Verify,
	verifyqv1.CodeService_GetStatus_FullMethodName:  auth.Status,
}

// admit asks the Guard whether a call of the code services may run, before
// its handler (and so the service) does: a verifyq.v1 call by its
// authorization metadata ("Bearer <key>") and the method's scope; an old
// message.VarifyService call by its key if it sends one, else by its peer's
// address (LEGACY_CALLERS; the peer as the connection says, never
// forwarded metadata). Over mTLS a call without a key is its verified
// client certificate's caller (auth.Guard.AdmitPeer). A refused call ends with the outcome's status
// (UNAUTHENTICATED, PERMISSION_DENIED, or RESOURCE_EXHAUSTED for status
// reads), also on the old service. Health and reflection are not asked.
// The caller's name goes to the call's log line and metrics.
func (s *Server) admit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var (
		caller auth.Caller
		err    error
	)
	switch scope, ok := Scopes[info.FullMethod]; {
	case info.FullMethod == messagepb.VarifyService_GetVarifyCode_FullMethodName:
		caller, err = s.cfg.Guard.AdmitLegacy(authorization(ctx), certName(ctx), peerAddr(ctx))
	case ok:
		caller, err = s.cfg.Guard.AdmitPeer(authorization(ctx), certName(ctx), scope)
	default:
		return handler(ctx, req)
	}
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok {
		x.caller = caller.Name
	}
	if err != nil {
		return nil, fail(ctx, err)
	}
	return handler(ctx, req)
}

// authorization is the call's authorization metadata value of the Bearer
// scheme, as auth.Authorization picks it from all of them.
func authorization(ctx context.Context) string {
	// The one key, not a copy of all the call's metadata.
	return auth.Authorization(metadata.ValueFromIncomingContext(ctx, "authorization"))
}

// peerAddr is the address of the call's peer, the zero Addr when it is not
// an IP address (a Unix socket).
func peerAddr(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok && tcp.Zone == "" {
		// What parsing its String gives (an IPv4 address in its 4-byte
		// form), without formatting and parsing it.
		return tcp.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		return ap.Addr()
	}
	return netip.Addr{}
}

// certName is the name (auth.CertName) of the call's verified client
// certificate, "" when the connection is not TLS or has none.
func certName(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 && len(info.State.VerifiedChains[0]) > 0 {
			return auth.CertName(info.State.VerifiedChains[0][0])
		}
	}
	return ""
}
