package grpcapi

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/verifyq/verifyq/outcome"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/service"
)

// legacyServer is message.VarifyService as the old gateway calls it.
type legacyServer struct {
	messagepb.UnimplementedVarifyServiceServer
	s *Server
}

// GetVarifyCode sends a code in the default locale. Every outcome is an OK
// status: the gateway turns any other status into its own RPC-failed error.
// Code stays empty, as it always did: the gateway would pass it on.
func (l legacyServer) GetVarifyCode(ctx context.Context, req *messagepb.GetVarifyReq) (*messagepb.GetVarifyRsp, error) {
	_, err := l.s.svc.SendCode(ctx, service.SendRequest{Email: req.GetEmail(), Client: clientOf(ctx)})
	return &messagepb.GetVarifyRsp{Error: record(ctx, err).Legacy, Email: req.GetEmail()}, nil
}

// codeServer is verifyq.v1.CodeService.
type codeServer struct {
	verifyqv1.UnimplementedCodeServiceServer
	s *Server
}

func (c codeServer) SendCode(ctx context.Context, req *verifyqv1.SendCodeRequest) (*verifyqv1.SendCodeResponse, error) {
	sent, err := c.s.svc.SendCode(ctx, service.SendRequest{Email: req.GetEmail(), Locale: req.GetLocale(), Client: clientOf(ctx)})
	if err != nil {
		return nil, fail(ctx, err)
	}
	record(ctx, nil)
	return &verifyqv1.SendCodeResponse{
		ExpiresIn:   int64(sent.ExpiresIn / time.Second),
		ResendAfter: outcome.Seconds(sent.ResendAfter),
	}, nil
}

func (c codeServer) VerifyCode(ctx context.Context, req *verifyqv1.VerifyCodeRequest) (*verifyqv1.VerifyCodeResponse, error) {
	if err := c.s.svc.VerifyCode(ctx, req.GetEmail(), req.GetCode()); err != nil {
		return nil, fail(ctx, err)
	}
	record(ctx, nil)
	return &verifyqv1.VerifyCodeResponse{Verified: true}, nil
}

// fail records err as the call's outcome and returns its status error.
func fail(ctx context.Context, err error) error {
	return statusOf(record(ctx, err), err).Err()
}

// clientOf returns the end user's IP address as the gateway forwards it in
// the metadata: the first entry of x-forwarded-for, else x-client-ip. It is
// empty when neither holds an IP address. The peer address is not used: it is
// the gateway's.
func clientOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, key := range []string{"x-forwarded-for", "x-client-ip"} {
		vals := md.Get(key)
		if len(vals) == 0 {
			continue
		}
		first, _, _ := strings.Cut(vals[0], ",")
		if ip := parseIP(strings.TrimSpace(first)); ip != "" {
			return ip
		}
	}
	return ""
}

// parseIP returns the canonical form of an IP address, with or without a
// port, or "" when s is neither.
func parseIP(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap().String()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap().String()
	}
	return ""
}
