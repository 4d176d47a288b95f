package grpcapi

import (
	"context"
	"math"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/mail"
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

// GetVarifyCode sends a code in zh-CN, the old service's only language,
// whatever DEFAULT_LOCALE says. Every outcome is an OK status: the gateway
// turns any other status into its own RPC-failed error. Code stays empty,
// as it always did: the gateway would pass it on.
func (l legacyServer) GetVarifyCode(ctx context.Context, req *messagepb.GetVarifyReq) (*messagepb.GetVarifyRsp, error) {
	sent, err := l.s.svc.SendCode(ctx, service.SendRequest{Email: req.GetEmail(), Locale: string(mail.LocaleZhCN),
		Client: l.s.legacyClientOf(ctx), Coalesce: true})
	o := record(ctx, err)
	if err == nil && sent.Coalesced {
		o = note(ctx, outcome.Coalesced, nil)
	}
	rsp := &messagepb.GetVarifyRsp{Error: o.Legacy, Email: req.GetEmail()}
	if o == outcome.InvalidEmail {
		rsp.Email = "" // never echo what was refused: it may not even be UTF-8
	}
	return rsp, nil
}

// codeServer is verifyq.v1.CodeService.
type codeServer struct {
	verifyqv1.UnimplementedCodeServiceServer
	s *Server
}

func (c codeServer) SendCode(ctx context.Context, req *verifyqv1.SendCodeRequest) (*verifyqv1.SendCodeResponse, error) {
	sent, err := c.s.svc.SendCode(ctx, service.SendRequest{Email: req.GetEmail(), Purpose: req.GetPurpose(), Locale: req.GetLocale(), Client: c.s.clientOf(ctx)})
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
	if err := c.s.svc.VerifyCode(ctx, service.VerifyRequest{Email: req.GetEmail(), Purpose: req.GetPurpose(), Code: req.GetCode(), Client: c.s.clientOf(ctx)}); err != nil {
		return nil, fail(ctx, err)
	}
	record(ctx, nil)
	return &verifyqv1.VerifyCodeResponse{Verified: true}, nil
}

// fail records err as the call's outcome and returns its status error.
func fail(ctx context.Context, err error) error {
	return statusOf(record(ctx, err), err).Err()
}

// clientOf returns the end user's address as clientip's rule believes it:
// from the metadata x-forwarded-for, else x-client-ip, when the peer is a
// trusted proxy; else the peer itself.
func (s *Server) clientOf(ctx context.Context) string {
	// The two keys, not a copy of all the call's metadata.
	hops := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for")
	if len(hops) == 0 {
		hops = metadata.ValueFromIncomingContext(ctx, "x-client-ip")
	}
	return s.cfg.TrustedProxies.Client(peerAddr(ctx), hops)
}

// legacyClientOf is clientOf for the old service, except that a call
// admitted without a key for its peer's network (LEGACY_CALLERS, caller
// auth.Legacy) is the old gateway asking for its users, which it cannot
// name: like a trusted proxy that forwards nothing, it has no per-client
// limit, also when its peer is not in TRUSTED_PROXIES.
func (s *Server) legacyClientOf(ctx context.Context) string {
	if x, ok := ctx.Value(exchangeKey{}).(*exchange); ok && x.caller == auth.Legacy {
		if peer := peerAddr(ctx); !s.cfg.TrustedProxies.Contains(peer) {
			return ""
		}
	}
	return s.clientOf(ctx)
}

// deliveryStates maps delivery's states to the proto's.
var deliveryStates = map[string]verifyqv1.DeliveryState{
	delivery.StateNone:          verifyqv1.DeliveryState_DELIVERY_STATE_NONE,
	delivery.StateQueued:        verifyqv1.DeliveryState_DELIVERY_STATE_QUEUED,
	delivery.StateSending:       verifyqv1.DeliveryState_DELIVERY_STATE_SENDING,
	delivery.StateRetrying:      verifyqv1.DeliveryState_DELIVERY_STATE_RETRYING,
	delivery.StateSent:          verifyqv1.DeliveryState_DELIVERY_STATE_SENT,
	delivery.StateUndeliverable: verifyqv1.DeliveryState_DELIVERY_STATE_UNDELIVERABLE,
	delivery.StateExpired:       verifyqv1.DeliveryState_DELIVERY_STATE_EXPIRED,
	delivery.StateBounced:       verifyqv1.DeliveryState_DELIVERY_STATE_BOUNCED,
	delivery.StateComplained:    verifyqv1.DeliveryState_DELIVERY_STATE_COMPLAINED,
}

func (c codeServer) GetStatus(ctx context.Context, req *verifyqv1.GetStatusRequest) (*verifyqv1.GetStatusResponse, error) {
	st, err := c.s.svc.Status(ctx, codes.ID{Purpose: req.GetPurpose(), Email: req.GetEmail()})
	if err != nil {
		return nil, fail(ctx, err)
	}
	record(ctx, nil)
	rsp := &verifyqv1.GetStatusResponse{
		State:         deliveryStates[st.State],
		Attempts:      int32(min(st.Attempts, math.MaxInt32)), //nolint:gosec // G115: bounded just here
		NextAttemptIn: outcome.Seconds(st.NextAttemptIn),
		LastFailure:   string(st.LastFailure),
		Reply:         int32(min(st.Reply, 999)), //nolint:gosec // G115: an SMTP reply code is three digits
		ExpiresIn:     int64(st.ExpiresIn / time.Second),
		DsnStatus:     st.DSN,
		Diagnostic:    st.Diagnostic,
	}
	if !st.SentAt.IsZero() {
		rsp.SentAtUnixMs = st.SentAt.UnixMilli()
	}
	rsp.Relay, rsp.SentAfterMs = st.Relay, st.SentAfter.Milliseconds()
	return rsp, nil
}
