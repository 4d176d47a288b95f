package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/verifyq/verifyq/auth"
	"github.com/verifyq/verifyq/internal/grpctest"
	"github.com/verifyq/verifyq/internal/metrics/metricstest"
	verifyqv1 "github.com/verifyq/verifyq/proto/verifyq/v1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// nextSerial is a random serial number, one per certificate.
func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate named cn: a server's for 127.0.0.1 and
// localhost, or a client's. It returns the certificate and key in PEM.
func (ca *testCA) issue(t *testing.T, cn string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// client is a client certificate for tls.Config.Certificates.
func (ca *testCA) client(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	c, k := ca.issue(t, cn, false)
	pair, err := tls.X509KeyPair(c, k)
	require.NoError(t, err)
	return pair
}

// writeServerCert writes a server certificate of ca and its key, the key
// first.
func writeServerCert(t *testing.T, ca *testCA, certFile, keyFile string) {
	t.Helper()
	c, k := ca.issue(t, "verifyq", true)
	require.NoError(t, os.WriteFile(keyFile, k, 0o600))
	require.NoError(t, os.WriteFile(certFile, c, 0o600))
}

type tlsStack struct {
	*stack
	serverCA, clientCA *testCA
	key                string // the gateway's API key
	certFile, keyFile  string
}

// startTLSApp runs the App with TLS, a server certificate of its own CA,
// and the key file: "gateway" by key (send, verify) and "billing" by
// certificate (send, status). With mtls it requires client certificates
// of another CA.
func startTLSApp(t *testing.T, mtls bool, configure ...func(*Config)) *tlsStack {
	t.Helper()
	dir := t.TempDir()
	s := &tlsStack{serverCA: newCA(t, "server CA"), clientCA: newCA(t, "client CA"),
		certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	writeServerCert(t, s.serverCA, s.certFile, s.keyFile)
	key, line, err := auth.NewKey("gateway", "send,verify")
	require.NoError(t, err)
	s.key = key
	keysFile := filepath.Join(dir, "keys")
	lines := line + "\n"
	caFile := filepath.Join(dir, "clients.pem")
	if mtls {
		lines += "billing send,status cert\n"
		require.NoError(t, os.WriteFile(caFile, s.clientCA.pem, 0o600))
	}
	require.NoError(t, os.WriteFile(keysFile, []byte(lines), 0o600))
	s.stack = startApp(t, append([]func(*Config){func(c *Config) {
		c.APIKeysFile = keysFile
		c.TLSCertFile, c.TLSKeyFile = s.certFile, s.keyFile
		if mtls {
			c.TLSClientCAFile = caFile
		}
		c.LegacyGRPCAddr = "127.0.0.1:0"
		require.NoError(t, c.LegacyCallers.Decode("127.0.0.1/32"))
	}}, configure...)...)
	return s
}

// clientTLS trusts the server CA and presents certs.
func (s *tlsStack) clientTLS(certs ...tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.serverCA.cert)
	return &tls.Config{RootCAs: pool, Certificates: certs, MinVersion: tls.VersionTLS12}
}

// post sends a code request over HTTPS with cfg and the key (if any).
func (s *tlsStack) post(cfg *tls.Config, key, email string) (int, error) {
	if key == "" {
		return s.postAuthorization(cfg, email)
	}
	return s.postAuthorization(cfg, email, "Bearer "+key)
}

// postAuthorization sends a code request over HTTPS with cfg and an
// Authorization header for each of authorization.
func (s *tlsStack) postAuthorization(cfg *tls.Config, email string, authorization ...string) (int, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodPost, "https://"+s.app.HTTPAddr()+"/v1/codes", strings.NewReader(`{"email":"`+email+`"}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	for _, a := range authorization {
		req.Header.Add("Authorization", a)
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_ = res.Body.Close()
	return res.StatusCode, nil
}

// send calls v1 SendCode over TLS with cfg and the key (if any).
func (s *tlsStack) send(t *testing.T, cfg *tls.Config, key, email string) error {
	t.Helper()
	if key == "" {
		return s.sendAuthorization(t, cfg, email)
	}
	return s.sendAuthorization(t, cfg, email, "Bearer "+key)
}

// sendAuthorization calls v1 SendCode over TLS with cfg and an
// authorization metadata value for each of authorization.
func (s *tlsStack) sendAuthorization(t *testing.T, cfg *tls.Config, email string, authorization ...string) error {
	t.Helper()
	conn, err := grpc.NewClient(s.app.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range authorization {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
	}
	_, err = verifyqv1.NewCodeServiceClient(conn).SendCode(ctx, &verifyqv1.SendCodeRequest{Email: email})
	return err
}

// TLS without client certificates: both edges speak TLS 1.2 or later
// with a key, refuse a call without one, and refuse plaintext; the old
// gateway's plaintext calls go to LEGACY_GRPC_ADDR, which serves nothing
// else and still only to LEGACY_CALLERS.
func TestAppOverTLS(t *testing.T) {
	t.Parallel()
	s := startTLSApp(t, false)
	ctx := context.Background()
	cfg := s.clientTLS()

	code, err := s.post(cfg, s.key, "https@example.com")
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, code)
	code, err = s.post(cfg, "", "nokey@example.com")
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code)
	require.NoError(t, s.send(t, cfg, s.key, "grpcs@example.com"))
	assert.Equal(t, codes.Unauthenticated, status.Code(s.send(t, cfg, "", "nokey@example.com")))

	old := s.clientTLS()
	old.MaxVersion = tls.VersionTLS11
	_, err = s.post(old, s.key, "old@example.com")
	assert.Error(t, err, "TLS 1.1 refused")
	res, err := http.Post("http://"+s.app.HTTPAddr()+"/v1/codes", "application/json", strings.NewReader(`{"email":"plain@example.com"}`))
	if err == nil {
		_ = res.Body.Close()
		assert.Equal(t, http.StatusBadRequest, res.StatusCode, "plain HTTP to a TLS port")
	}
	_, err = grpctest.GetVarifyCode(ctx, t, s.conn, "plain@example.com")
	assert.Equal(t, codes.Unavailable, status.Code(err), "plaintext gRPC to the TLS port")

	legacy := grpctest.Dial(t, s.app.LegacyGRPCAddr())
	rsp, err := grpctest.GetVarifyCode(ctx, t, legacy, "legacy@example.com")
	require.NoError(t, err)
	assert.Equal(t, grpctest.LegacyReply{Error: 0, Email: "legacy@example.com"}, rsp)
	_, err = verifyqv1.NewCodeServiceClient(legacy).SendCode(ctx, &verifyqv1.SendCodeRequest{Email: "v1@example.com"})
	assert.Equal(t, codes.Unimplemented, status.Code(err), "only the old service in plaintext")
	_, err = grpctest.GetVarifyCode(ctx, t, grpcFrom(t, "127.0.0.2", s.app.LegacyGRPCAddr()), "stranger@example.com")
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "outside LEGACY_CALLERS")

	n, err := s.redis.Client(t).Exists(ctx, "code_nokey@example.com", "code_plain@example.com", "code_stranger@example.com", "code_v1@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n)
	fams := metricstest.Scrape(t, "http://"+s.app.AdminAddr()+"/metrics")
	_, found := fams.Value("verifyq_connections_refused_total", map[string]string{"listener": "grpc_legacy"})
	assert.True(t, found, "the legacy listener's refusals are counted from the start")
	lines := s.logs.Matching(t, "enqueuer started")
	require.Len(t, lines, 1)
	assert.Equal(t, true, lines[0]["tls"])
	assert.Equal(t, s.app.LegacyGRPCAddr(), lines[0]["legacy_grpc_addr"])
}

// mTLS: a client certificate the client CA signed, whose name is a
// certificate caller of the key file, calls with that caller's scopes on
// both edges without a key; one of another name needs a key; one of
// another CA, or none, does not complete the handshake.
func TestAppOverMutualTLS(t *testing.T) {
	t.Parallel()
	s := startTLSApp(t, true)
	billing := s.clientTLS(s.clientCA.client(t, "billing"))
	stranger := s.clientTLS(s.clientCA.client(t, "stranger"))

	code, err := s.post(billing, "", "billing@example.com")
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, code)
	require.NoError(t, s.send(t, billing, "", "billing-grpc@example.com"))
	code, err = s.post(stranger, "", "stranger@example.com")
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code, "a name not in the key file")
	assert.Equal(t, codes.Unauthenticated, status.Code(s.send(t, stranger, "", "stranger@example.com")))
	code, err = s.post(stranger, s.key, "keyed@example.com")
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, code, "a key still works")
	require.NoError(t, s.send(t, stranger, s.key, "keyed-grpc@example.com"))

	// An Authorization of another scheme, as a proxy in front may add, is
	// no key: the certificate decides, and a stranger's certificate gains
	// nothing by it. Two Bearer keys are no key that can be told: refused,
	// whatever the certificate.
	const basic = "Basic dXNlcjpwYXNz"
	code, err = s.postAuthorization(billing, "billing-basic@example.com", basic)
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, code, "a certificate caller behind a proxy that adds Basic")
	require.NoError(t, s.sendAuthorization(t, billing, "billing-basic-grpc@example.com", basic))
	code, err = s.postAuthorization(stranger, "stranger@example.com", basic)
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, codes.Unauthenticated, status.Code(s.sendAuthorization(t, stranger, "stranger@example.com", basic)))
	code, err = s.postAuthorization(billing, "stranger@example.com", "Bearer "+s.key, "Bearer "+s.key)
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code, "two keys, with a listed certificate")
	assert.Equal(t, codes.Unauthenticated, status.Code(s.sendAuthorization(t, billing, "stranger@example.com", "Bearer "+s.key, "Bearer vq_other")))

	// billing lacks verify.
	conn, err := grpc.NewClient(s.app.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(billing)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = verifyqv1.NewCodeServiceClient(conn).VerifyCode(context.Background(), &verifyqv1.VerifyCodeRequest{Email: "billing@example.com", Code: "123456"})
	assert.Equal(t, codes.PermissionDenied, status.Code(err))

	other := s.clientTLS(newCA(t, "other CA").client(t, "billing"))
	for name, cfg := range map[string]*tls.Config{"another CA": other, "no certificate": s.clientTLS()} {
		_, err = s.post(cfg, s.key, "refused@example.com")
		assert.Error(t, err, name)
		assert.Equal(t, codes.Unavailable, status.Code(s.send(t, cfg, s.key, "refused@example.com")), name)
	}
	n, err := s.redis.Client(t).Exists(context.Background(), "code_stranger@example.com", "code_refused@example.com").Result()
	require.NoError(t, err)
	assert.Zero(t, n)

	fams := metricstest.Scrape(t, "http://"+s.app.AdminAddr()+"/metrics")
	for _, labels := range []map[string]string{
		{"api": "http", "route": "/v1/codes", "caller": "billing", "outcome": "ok"},
		{"api": "grpc", "route": "/verifyq.v1.CodeService/SendCode", "caller": "billing", "outcome": "ok"},
		{"api": "http", "route": "/v1/codes", "caller": "gateway", "outcome": "ok"},
	} {
		want := 1.0
		if labels["caller"] == "billing" {
			want = 2 // with and without a Basic header
		}
		v, found := fams.Value("verifyq_requests_total", labels)
		assert.True(t, found, "%v", labels)
		assert.Equal(t, want, v, "%v", labels)
	}
}

// serverSerial handshakes with addr (ALPN proto) and returns the serial
// number of the server's certificate.
func serverSerial(t *testing.T, cfg *tls.Config, addr, proto string) *big.Int {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{proto}
	c, err := tls.Dial("tcp", addr, cfg)
	require.NoError(t, err)
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// A certificate replaced on disk is served from the next connection on,
// on both listeners, without a restart; a pair that does not load is
// logged and the last good one kept.
func TestAppReloadsCertificate(t *testing.T) {
	t.Parallel()
	s := startTLSApp(t, false)
	cfg := s.clientTLS()
	first := serverSerial(t, cfg, s.app.HTTPAddr(), "http/1.1")
	assert.Equal(t, first, serverSerial(t, cfg, s.app.GRPCAddr(), "h2"))

	writeServerCert(t, s.serverCA, s.certFile, s.keyFile)
	second := serverSerial(t, cfg, s.app.HTTPAddr(), "http/1.1")
	assert.NotEqual(t, first, second, "the new certificate")
	assert.Equal(t, second, serverSerial(t, cfg, s.app.GRPCAddr(), "h2"))
	code, err := s.post(cfg, s.key, "rotated@example.com")
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, code)
	require.Len(t, s.logs.Matching(t, "TLS certificate reloaded"), 1)

	// A certificate whose key is not yet written: the last good pair.
	c, _ := s.serverCA.issue(t, "verifyq", true)
	require.NoError(t, os.WriteFile(s.certFile, c, 0o600))
	assert.Equal(t, second, serverSerial(t, cfg, s.app.HTTPAddr(), "http/1.1"))
	assert.Equal(t, second, serverSerial(t, cfg, s.app.GRPCAddr(), "h2"))
	lines := s.logs.Matching(t, "TLS certificate not reloaded: keeping the last good one")
	require.Len(t, lines, 1, "logged once per change")
	assert.Equal(t, "WARN", lines[0]["level"])
}
