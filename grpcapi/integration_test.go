package grpcapi_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/clientip"
	vqcodes "github.com/verifyq/verifyq/codes"
	"github.com/verifyq/verifyq/delivery"
	"github.com/verifyq/verifyq/grpcapi"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/logtest"
	"github.com/verifyq/verifyq/internal/metrics"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	"github.com/verifyq/verifyq/internal/servicetest"
	"github.com/verifyq/verifyq/limits"
	"github.com/verifyq/verifyq/mail"
	messagepb "github.com/verifyq/verifyq/proto/message"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
	"github.com/verifyq/verifyq/tasks"
)

// stack is the gRPC server on the real service, Redis and metrics.
type stack struct {
	*servicetest.Env
	conn    *grpc.ClientConn
	logs    *logtest.Buffer
	metrics *httptest.Server
}

// start serves the gRPC edge on a loopback port, on the real service with
// the given limits (and wrong codes allowed) and its own redis-server, and dials it. Health follows a
// PING of that Redis, checked every 100 ms.
func start(t *testing.T, l limits.Config, maxAttempts int) *stack {
	t.Helper()
	// The test is the gateway: its metadata names the end user.
	return startOn(t, l, maxAttempts, nil, trust(t, "127.0.0.1"))
}

// startWith is start with guard admitting the callers.
func startWith(t *testing.T, l limits.Config, maxAttempts int, guard *auth.Guard) *stack {
	t.Helper()
	return startOn(t, l, maxAttempts, guard, trust(t, "127.0.0.1"))
}

// startTrusting is start with trusted as TRUSTED_PROXIES.
func startTrusting(t *testing.T, l limits.Config, maxAttempts int, trusted clientip.Trusted) *stack {
	t.Helper()
	return startOn(t, l, maxAttempts, nil, trusted)
}

// startOn is start with guard and trusted.
func startOn(t *testing.T, l limits.Config, maxAttempts int, guard *auth.Guard, trusted clientip.Trusted) *stack {
	t.Helper()
	s := &stack{Env: servicetest.New(t, l, maxAttempts)}
	logger, logs := logtest.New(t)
	s.logs = logs
	reg := metrics.NewRegistry()
	m := metrics.NewEnqueuer(reg, nil)
	s.metrics = httptest.NewServer(metrics.Handler(reg))
	t.Cleanup(s.metrics.Close)
	srv := grpcapi.New(m.Service(s.Service), logger, grpcapi.Config{
		Ready:          func(ctx context.Context) error { return s.RDB.Ping(ctx).Err() },
		ReadyInterval:  100 * time.Millisecond,
		Metrics:        m,
		TrustedProxies: trusted,
		Guard:          guard,
	})
	s.conn = serve(t, srv)
	return s
}

func (s *stack) legacy(t *testing.T, email string) grpctest.LegacyReply {
	t.Helper()
	rsp, err := grpctest.GetVarifyCode(context.Background(), t, s.conn, email)
	require.NoError(t, err, "the old service always answers with an OK status")
	return rsp
}

func (s *stack) v1() verifyqv1.CodeServiceClient { return verifyqv1.NewCodeServiceClient(s.conn) }

func (s *stack) waitHealth(t *testing.T, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	for _, name := range []string{"", "message.VarifyService", "verifyq.v1.CodeService"} {
		require.Eventually(t, func() bool { return healthOf(t, s.conn, name) == want }, 10*time.Second, 50*time.Millisecond,
			"health of %q becomes %s", name, want)
	}
}

func (s *stack) pending(t *testing.T) int {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(s.RDB).GetQueueInfo(tasks.Queue)
	if err != nil {
		return 0
	}
	return info.Pending
}

// The old gateway's call, with messages built from the old .proto file at
// run time: error 0, the address echoed, no code, the code stored under the
// old key and a send task queued.
func TestGRPCOldServiceSendsCode(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	const email = "Old.Gateway@Example.com"

	rsp := s.legacy(t, email)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: email, Code: ""}, rsp)
	code, err := s.RDB.Get(context.Background(), "code_"+email).Result()
	require.NoError(t, err, "key code_<email>, the address as sent")
	assert.Len(t, code, 6)
	assert.Equal(t, 1, s.pending(t), "one send task queued")
}

// Invalid addresses: in-band error 3 on the old service, InvalidArgument on
// v1; nothing stored, nothing queued.
func TestGRPCInvalidAddress(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	for _, email := range []string{"", "not an address", "x@example.com\r\nBcc: y@example.com", "Name <a@example.com>"} {
		assert.Equal(t, grpctest.LegacyReply{Error: 3}, s.legacy(t, email), "%q: error 3, the refused address not echoed", email)
		_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: email})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%q", email)
	}
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "a@example.com", Locale: "en_GB!"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "not a language tag")

	assert.Empty(t, s.Keys(t, "code_*"))
	assert.Zero(t, s.pending(t))
}

// verifyq.v1 takes a BCP 47 tag and the task carries the locale it
// matched; the old service mails zh-CN whatever the default is.
func TestGRPCLocale(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	s.Service.DefaultLocale = mail.LocaleEN // before any call: read by the server's goroutines after
	for _, tt := range []struct{ email, tag, want string }{
		{"hk@example.com", "zh-HK", "zh-TW"},
		{"br@example.com", "pt", "pt-BR"},
		{"nl@example.com", "nl", "en"},
		{"none@example.com", "", "en"},
	} {
		_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: tt.email, Locale: tt.tag})
		require.NoError(t, err, tt.tag)
	}
	require.Equal(t, grpctest.LegacyReply{Email: "old@example.com"}, s.legacy(t, "old@example.com"))
	got := map[string]string{}
	for _, p := range s.Pending(t) {
		got[p.Email] = p.Locale
	}
	assert.Equal(t, map[string]string{"hk@example.com": "zh-TW", "br@example.com": "pt-BR", "nl@example.com": "en",
		"none@example.com": "en", "old@example.com": "zh-CN"}, got)
}

// Redis goes away and comes back: error 1 and Unavailable meanwhile, health
// NOT_SERVING, and everything works again without restarting the enqueuer.
func TestGRPCRedisOutage(t *testing.T) {
	t.Parallel()
	servicetest.SingleOnly(t) // it stops the one server
	s := start(t, limits.Config{}, 0)
	s.waitHealth(t, healthpb.HealthCheckResponse_SERVING)
	require.Equal(t, int32(0), s.legacy(t, "before@example.com").Error)

	s.Redis.Stop()
	s.waitHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	assert.Equal(t, grpctest.LegacyReply{Error: 1, Email: "during@example.com"}, s.legacy(t, "during@example.com"))
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "during@example.com"})
	assert.Equal(t, codes.Unavailable, status.Code(err))
	_, err = s.v1().VerifyCode(context.Background(), &verifyqv1.VerifyCodeRequest{Email: "during@example.com", Code: "123456"})
	assert.Equal(t, codes.Unavailable, status.Code(err))

	require.NoError(t, s.Redis.Restart())
	s.waitHealth(t, healthpb.HealthCheckResponse_SERVING)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "after@example.com"}, s.legacy(t, "after@example.com"))
	res, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "after2@example.com"})
	require.NoError(t, err)
	assert.Equal(t, int64(600), res.GetExpiresIn())
}

// Verify over v1: a wrong code, the right one (consumed), the same again.
// The logs hold neither the code nor the address.
func TestGRPCVerifyCode(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	const email = "Verify.Me@example.com"
	ctx := context.Background()

	res, err := s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email, Locale: "en"})
	require.NoError(t, err)
	assert.Greater(t, res.GetExpiresIn(), int64(590))
	assert.LessOrEqual(t, res.GetExpiresIn(), int64(600))
	assert.Zero(t, res.GetResendAfter())
	code, err := s.RDB.Get(ctx, "code_"+email).Result()
	require.NoError(t, err)

	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: wrong})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "wrong code")
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: ""})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "empty code")

	ok, err := s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code})
	require.NoError(t, err, "right code")
	assert.True(t, ok.GetVerified())
	n, err := s.RDB.Exists(ctx, "code_"+email).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "consumed")

	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code})
	assert.Equal(t, codes.NotFound, status.Code(err), "reused code")

	logs := s.logs.String()
	assert.Contains(t, logs, `"email":"V***@example.com"`)
	assert.Contains(t, logs, `"code":"FailedPrecondition"`)
	assert.NotContains(t, logs, code)
	assert.NotContains(t, logs, wrong)
	assert.NotContains(t, logs, email)
}

// Reflection lists every service, and every grpcurl example of docs/API.md
// names a method that reflection resolves, with a request that parses and a
// call that answers as docs/API.md says.
func TestGRPCReflectionAndAPIDocExamples(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	s.waitHealth(t, healthpb.HealthCheckResponse_SERVING)

	services := grpctest.Services(t, s.conn)
	for _, name := range []string{"message.VarifyService", "verifyq.v1.CodeService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		assert.Contains(t, services, name)
	}
	m := grpctest.Method(t, s.conn, "message.VarifyService/GetVarifyCode")
	assert.Equal(t, "/message.VarifyService/GetVarifyCode", "/"+string(m.Parent().FullName())+"/"+string(m.Name()))

	doc, err := os.ReadFile("../docs/API.md")
	require.NoError(t, err)
	example := regexp.MustCompile(`(?m)^grpcurl -plaintext(?: -d '([^']*)')? localhost:50051 (\S+)$`)
	found := example.FindAllStringSubmatch(string(doc), -1)
	require.Len(t, found, 7, "the grpcurl examples of docs/API.md")
	var methods []string
	for _, ex := range found {
		reqJSON, symbol := ex[1], ex[2]
		if symbol == "list" {
			continue
		}
		methods = append(methods, symbol)
		m := grpctest.Method(t, s.conn, symbol)
		out, err := grpctest.InvokeJSON(context.Background(), t, s.conn, m, reqJSON)
		if symbol == "verifyq.v1.CodeService/VerifyCode" {
			if err != nil { // nil only if 123456 was the live code
				assert.Equal(t, codes.FailedPrecondition, status.Code(err), "the made-up code of docs/API.md")
			}
			continue
		}
		require.NoError(t, err, symbol)
		assert.True(t, json.Valid([]byte(out)))
		if symbol == "message.VarifyService/GetVarifyCode" {
			assert.JSONEq(t, `{"email": "user@example.com"}`, out, "as docs/API.md shows it")
		}
	}
	assert.ElementsMatch(t, []string{
		"message.VarifyService/GetVarifyCode",
		"verifyq.v1.CodeService/SendCode",
		"verifyq.v1.CodeService/VerifyCode",
		"verifyq.v1.CodeService/SendCode",
		"verifyq.v1.CodeService/GetStatus",
		"grpc.health.v1.Health/Check",
	}, methods)
}

// limitDetails returns the RetryInfo delay and the ErrorInfo limit of a v1
// ResourceExhausted status.
func limitDetails(t *testing.T, err error) (time.Duration, string) {
	t.Helper()
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), "%v", err)
	var delay time.Duration
	var limit string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			delay = d.GetRetryDelay().AsDuration()
		case *errdetails.ErrorInfo:
			limit = d.GetMetadata()["limit"]
		}
	}
	return delay, limit
}

// The resend cooldown over both services: the old one answers in band with
// error 4, v1 with ResourceExhausted and RetryInfo.
func TestGRPCResendCooldown(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{Cooldown: time.Minute}, 0)

	res, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "cool@example.com"})
	require.NoError(t, err)
	assert.Equal(t, int64(60), res.GetResendAfter())

	assert.Equal(t, int32(4), s.legacy(t, "Cool@Example.com").Error, "case variants share the cooldown; that code is not live: refused in band")
	_, err = s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "cool@example.com"})
	delay, limit := limitDetails(t, err)
	assert.Equal(t, "cooldown", limit)
	assert.Greater(t, delay, 50*time.Second)
	assert.LessOrEqual(t, delay, time.Minute)
	assert.Equal(t, 1, s.pending(t), "refused sends enqueue nothing")
}

// A caller that is no trusted proxy is the client itself, on both
// services: its own address gets the per-client limits, and metadata it
// sends changes nothing. So with TRUSTED_PROXIES elsewhere and with nothing
// trusted.
func TestGRPCDirectCallerIsLimitedByItsPeer(t *testing.T) {
	t.Parallel()
	for name, trusted := range map[string]clientip.Trusted{
		"TRUSTED_PROXIES elsewhere": trust(t, "10.0.0.0/8"),
		"nothing trusted":           nil,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startTrusting(t, limits.Config{ClientPerHour: 2, ClientVerifiesPerHour: 1}, 0, trusted)
			spoof := metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", "203.0.113.9",
				"x-client-ip", "203.0.113.10")
			_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "one@example.com"})
			require.NoError(t, err)
			assert.Equal(t, int32(0), s.legacy(t, "two@example.com").Error)
			_, err = s.v1().SendCode(spoof, &verifyqv1.SendCodeRequest{Email: "three@example.com"})
			_, limit := limitDetails(t, err)
			assert.Equal(t, "client", limit, "the peer's own cap; the metadata is not believed")
			assert.Equal(t, int32(4), s.legacy(t, "four@example.com").Error, "the old service: rate limited, in band")

			_, err = s.v1().VerifyCode(spoof, &verifyqv1.VerifyCodeRequest{Email: "one@example.com", Code: "000000"})
			require.NotEqual(t, codes.ResourceExhausted, status.Code(err))
			_, err = s.v1().VerifyCode(spoof, &verifyqv1.VerifyCodeRequest{Email: "one@example.com", Code: "000000"})
			_, limit = limitDetails(t, err)
			assert.Equal(t, "client_verify", limit)
		})
	}
}

// When the cooldown and the hourly cap both refuse, the v1 RetryInfo and
// the limit are the cap's (about an hour), not the cooldown's; the old
// service, inside the cooldown with the code live, still coalesces.
func TestGRPCRetryAfterIsTheLongestLimit(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{Cooldown: time.Minute, AddressPerHour: 1}, 0)
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "both@example.com"})
	require.NoError(t, err)
	_, err = s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "both@example.com"})
	delay, limit := limitDetails(t, err)
	assert.Equal(t, "address", limit)
	assert.Greater(t, delay, time.Minute, "more than the cooldown")
	assert.LessOrEqual(t, delay, time.Hour)
	assert.Equal(t, int32(0), s.legacy(t, "both@example.com").Error, "coalesced: the code is on its way")
	assert.Equal(t, 1, s.pending(t), "one mail")
}

// The per-client cap counts the end user named in the metadata; without one
// the gateway is never limited.
func TestGRPCClientCap(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{ClientPerHour: 1}, 0)
	user := metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", "203.0.113.9")

	_, err := s.v1().SendCode(user, &verifyqv1.SendCodeRequest{Email: "one@example.com"})
	require.NoError(t, err)
	_, err = s.v1().SendCode(user, &verifyqv1.SendCodeRequest{Email: "two@example.com"})
	_, limit := limitDetails(t, err)
	assert.Equal(t, "client", limit)
	for _, email := range []string{"three@example.com", "four@example.com"} {
		assert.Equal(t, int32(0), s.legacy(t, email).Error, "no client identity, no per-client limit")
	}
}

// Wrong codes up to VERIFY_MAX_ATTEMPTS invalidate the code over v1 too.
func TestGRPCAttemptLimit(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 2)
	ctx := context.Background()
	_, err := s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "g@example.com"})
	require.NoError(t, err)
	code, err := s.RDB.Get(ctx, "code_g@example.com").Result()
	require.NoError(t, err)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "g@example.com", Code: wrong})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "g@example.com", Code: wrong})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: "g@example.com", Code: code})
	assert.Equal(t, codes.NotFound, status.Code(err), "the right code no longer verifies")
}

// gRPC calls are counted like HTTP requests, with api="grpc"; the legacy
// service's outcome follows its in-band error number.
func TestGRPCCallsAreMeasured(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{Cooldown: time.Minute}, 0)
	require.Equal(t, int32(0), s.legacy(t, "m@example.com").Error)
	require.Equal(t, int32(0), s.legacy(t, "m@example.com").Error, "coalesced")
	require.Equal(t, int32(4), s.legacy(t, "M@example.com").Error, "the mailbox's cooldown, and no live code for this spelling")
	_, err := s.v1().SendCode(context.Background(), &verifyqv1.SendCodeRequest{Email: "bad"})
	require.Error(t, err)

	fams := metricstest.Scrape(t, s.metrics.URL)
	for _, tt := range []struct {
		route, outcome string
	}{
		{"/message.VarifyService/GetVarifyCode", "ok"},
		{"/message.VarifyService/GetVarifyCode", "coalesced"},
		{"/message.VarifyService/GetVarifyCode", "rate_limited"},
		{"/verifyq.v1.CodeService/SendCode", "invalid"},
	} {
		v, ok := fams.Value("verifyq_requests_total", map[string]string{"api": "grpc", "route": tt.route, "outcome": tt.outcome})
		assert.True(t, ok, "%+v", tt)
		assert.Equal(t, 1.0, v, "%+v", tt)
	}
	v, _ := fams.Value("verifyq_rate_limited_total", map[string]string{"limit": "cooldown"})
	assert.Equal(t, 1.0, v)
	v, _ = fams.Value("verifyq_codes_issued_total", map[string]string{"result": "coalesced"})
	assert.Equal(t, 1.0, v)
}

// The old client re-enables "get code" after 10 s and shows one generic
// error for any non-zero error. A resend inside the cooldown while the code
// lives is error 0 and no new mail, since the code is on its way; it does
// not count against the hourly cap. v1 still answers RESOURCE_EXHAUSTED.
func TestGRPCLegacyResendIsCoalesced(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{Cooldown: time.Minute, AddressPerHour: 2}, 0)
	ctx := context.Background()
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "user@example.com"}, s.legacy(t, "user@example.com"))
	code := s.Code(t, "user@example.com")
	for range 3 {
		assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "user@example.com"}, s.legacy(t, "user@example.com"))
	}
	assert.Equal(t, 1, s.pending(t), "one mail queued in all")
	assert.Equal(t, code, s.Code(t, "user@example.com"), "the same code")
	n, err := s.RDB.ZCard(ctx, limits.AddressKey(delivery.MailboxID("user@example.com"))).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "coalesced resends are not counted")
	_, err = s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "user@example.com"})
	_, limit := limitDetails(t, err)
	assert.Equal(t, "cooldown", limit)
	line := s.logs.Matching(t, "grpc call")
	assert.Equal(t, "coalesced", line[2]["outcome"])

	// After the cooldown, a resend mails the same code again, as before.
	servicetest.EndCooldowns(ctx, t, s.RDB, delivery.MailboxID("user@example.com"), time.Minute)
	assert.Equal(t, int32(0), s.legacy(t, "user@example.com").Error)
	assert.Equal(t, 2, s.pending(t))
	assert.Equal(t, code, s.Code(t, "user@example.com"))
}

// rawCodec sends requests as the bytes given, so a test can send what no
// proto library would encode: invalid UTF-8 in a string field.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// stringFields encodes a message of string fields numbered from 1.
func stringFields(values ...string) []byte {
	var b []byte
	for i, v := range values {
		b = protowire.AppendTag(b, protowire.Number(i+1), protowire.BytesType)
		b = protowire.AppendString(b, v)
	}
	return b
}

// Invalid UTF-8 is bad input, not a server error: INVALID_ARGUMENT on v1,
// an OK reply with error 3 (and no address echoed) on the old service;
// nothing stored, nothing queued.
func TestGRPCInvalidUTF8(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	ctx := context.Background()
	raw := grpc.ForceCodecV2(rawCodec{})
	bad := "a\xff@example.com"

	var legacy messagepb.GetVarifyRsp
	require.NoError(t, s.conn.Invoke(ctx, "/message.VarifyService/GetVarifyCode", stringFields(bad), &legacy, raw))
	assert.Equal(t, int32(3), legacy.GetError())
	assert.Empty(t, legacy.GetEmail(), "never echoed")

	var sent verifyqv1.SendCodeResponse
	err := s.conn.Invoke(ctx, "/verifyq.v1.CodeService/SendCode", stringFields(bad), &sent, raw)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	var verified verifyqv1.VerifyCodeResponse
	err = s.conn.Invoke(ctx, "/verifyq.v1.CodeService/VerifyCode", stringFields("a@example.com", "12\xff34"), &verified, raw)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "a code that is not UTF-8: %v", err)
	err = s.conn.Invoke(ctx, "/verifyq.v1.CodeService/SendCode", stringFields("a@example.com", "e\xffn"), &sent, raw)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "a locale that is not UTF-8: %v", err)
	err = s.conn.Invoke(ctx, "/verifyq.v1.CodeService/SendCode", []byte{0x0a, 0xff}, &sent, raw)
	assert.Equal(t, codes.Internal, status.Code(err), "what is not protobuf at all is still refused by the framework")

	assert.Empty(t, s.Keys(t, "*"), "nothing stored, nothing queued")
	assert.NotContains(t, s.logs.String(), "\\ufffd")
}

// GetStatus over v1: none, then queued with the code's lifetime; never the
// code; a bad address is INVALID_ARGUMENT.
func TestGRPCGetStatus(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	ctx := context.Background()
	st, err := s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: "g@example.com"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_NONE, st.GetState())

	assert.Equal(t, int32(0), s.legacy(t, "g@example.com").Error)
	st, err = s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: "g@example.com"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_QUEUED, st.GetState())
	assert.InDelta(t, 600, st.GetExpiresIn(), 2)
	assert.NotContains(t, st.String(), s.Code(t, "g@example.com"))
	assert.Empty(t, st.GetRelay())
	assert.Zero(t, st.GetSentAfterMs())

	// What a worker records when the primary relay takes the mail.
	sentAt := time.Now()
	require.NoError(t, s.Records.Sent(ctx, vqcodes.ID{Email: "g@example.com"}, s.Task(t, vqcodes.ID{Email: "g@example.com"}),
		delivery.Acceptance{At: sentAt, Relay: "primary", SinceRequest: 240 * time.Millisecond}))
	st, err = s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: "g@example.com"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_SENT, st.GetState())
	assert.Equal(t, sentAt.UnixMilli(), st.GetSentAtUnixMs())
	assert.Equal(t, "primary", st.GetRelay())
	assert.Equal(t, int64(240), st.GetSentAfterMs())

	s.Reported(t, vqcodes.ID{Email: "g@example.com"}, delivery.Report{
		State: delivery.StateBounced, DSN: "5.4.4", Diagnostic: "Host or domain name not found",
	})
	st, err = s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: "g@example.com"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_BOUNCED, st.GetState())
	assert.Equal(t, "5.4.4", st.GetDsnStatus())
	assert.Equal(t, "Host or domain name not found", st.GetDiagnostic())
	s.Reported(t, vqcodes.ID{Email: "g@example.com"}, delivery.Report{State: delivery.StateComplained})
	st, err = s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: "g@example.com"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_COMPLAINED, st.GetState())
	assert.Empty(t, st.GetDsnStatus())

	_, err = s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: "nope"})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}

func TestGRPCPurposes(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	const email = "purpose@example.com"
	ctx := context.Background()

	_, err := s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email, Purpose: "reset_password"})
	require.NoError(t, err)
	code, err := s.RDB.Get(ctx, "code_reset_password:"+email).Result()
	require.NoError(t, err)
	n, err := s.RDB.Exists(ctx, "code_"+email).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the default key is not touched")

	st, err := s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: email, Purpose: "reset_password"})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_QUEUED, st.GetState())
	st, err = s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: email})
	require.NoError(t, err)
	assert.Equal(t, verifyqv1.DeliveryState_DELIVERY_STATE_NONE, st.GetState(), "the default purpose has no code")

	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code, Purpose: "register"})
	assert.Equal(t, codes.NotFound, status.Code(err), "a reset code does not complete a sign-up")
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code})
	assert.Equal(t, codes.NotFound, status.Code(err), "nor the default purpose")
	_, err = s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: code, Purpose: "reset_password"})
	require.NoError(t, err)

	for _, call := range []func() error{
		func() error {
			_, err := s.v1().SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email, Purpose: "launch_missiles"})
			return err
		},
		func() error {
			_, err := s.v1().VerifyCode(ctx, &verifyqv1.VerifyCodeRequest{Email: email, Code: "123456", Purpose: "Register"})
			return err
		},
		func() error {
			_, err := s.v1().GetStatus(ctx, &verifyqv1.GetStatusRequest{Email: email, Purpose: "x:y"})
			return err
		},
	} {
		err := call()
		assert.Equal(t, codes.InvalidArgument, status.Code(err))
		assert.Equal(t, "INVALID_PURPOSE", reasonOf(t, err))
	}
}

// reasonOf returns the google.rpc.ErrorInfo reason of err.
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// What another build of the old gateway may send: fields the old
// GetVarifyReq does not have (a newer .proto's), beside the address, also
// when the address is not UTF-8. Unknown fields are skipped as proto3
// says: the call is answered in band, 0 and the address echoed, or error
// 3, never a non-OK status.
func TestGRPCLegacyRequestWithUnknownFields(t *testing.T) {
	t.Parallel()
	s := start(t, limits.Config{}, 0)
	raw := grpc.ForceCodecV2(rawCodec{})
	withUnknown := func(email string) []byte {
		b := stringFields(email, "extra")
		b = protowire.AppendTag(b, 9, protowire.VarintType)
		return protowire.AppendVarint(b, 42)
	}

	var rsp messagepb.GetVarifyRsp
	require.NoError(t, s.conn.Invoke(context.Background(), grpctest.LegacyMethod, withUnknown("extra@example.com"), &rsp, raw))
	assert.Equal(t, int32(0), rsp.GetError())
	assert.Equal(t, "extra@example.com", rsp.GetEmail())
	assert.Equal(t, 1, s.pending(t))

	rsp.Reset()
	require.NoError(t, s.conn.Invoke(context.Background(), grpctest.LegacyMethod, withUnknown("a\xff@example.com"), &rsp, raw),
		"an address that is not UTF-8 beside unknown fields: still in band")
	assert.Equal(t, int32(3), rsp.GetError())
	assert.Empty(t, rsp.GetEmail())
}
