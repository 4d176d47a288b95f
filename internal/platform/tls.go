package platform

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// MaxPEMBytes bounds each certificate, key and CA file read.
const MaxPEMBytes = 1 << 20

// TLSFiles name a server's TLS files, all PEM: its certificate (chain) and
// key, both or neither, and optionally the CAs that sign its clients'
// certificates.
type TLSFiles struct {
	Cert, Key string
	// ClientCA, when set, requires every client to present a certificate
	// that one of its CAs signed (mTLS).
	ClientCA string
}

// Enabled reports whether f names a certificate: TLS is on.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" }

// Config returns the tls.Config of f (nil when TLS is off): TLS 1.2 at
// least; the certificate and key re-read when either file changes (a
// CertReloader), so that they rotate without a restart; with ClientCA,
// client certificates required and verified against it (read once). Its
// errors say which file is wrong, without the variable's name, which the
// caller adds.
func (f TLSFiles) Config(logger *slog.Logger) (*tls.Config, error) {
	if !f.Enabled() {
		if f.ClientCA != "" {
			return nil, errors.New("a client CA needs the server's certificate and key")
		}
		return nil, nil //nolint:nilnil // TLS off
	}
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("the certificate and its key go together: set both or neither")
	}
	r, err := NewCertReloader(f.Cert, f.Key, logger)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
	}
	if f.ClientCA != "" {
		if cfg.ClientCAs, err = ClientCAs(f.ClientCA); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientCAs reads the PEM certificates of path, at least one.
func ClientCAs(path string) (*x509.CertPool, error) {
	pem, err := readPEM(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

// readPEM reads at most MaxPEMBytes of path.
func readPEM(path string) ([]byte, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the operator names the file
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, MaxPEMBytes+1))
	if err == nil && len(b) > MaxPEMBytes {
		err = fmt.Errorf("%s: larger than %d bytes", path, MaxPEMBytes)
	}
	return b, err
}

// CertReloader serves a certificate and key from two PEM files, re-read
// when either changes. Each handshake looks at the files' identity, size
// and modification time (two stat calls, far cheaper than the handshake)
// and reads them again only when one changed. A pair that does not load
// (a half-written file, a key that is not the certificate's) is logged
// once as a warning and the last good pair kept.
type CertReloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
}

// fileStamp is what tells that a file changed.
type fileStamp struct {
	info os.FileInfo
	size int64
	mod  time.Time
}

func (s fileStamp) same(o fileStamp) bool {
	return s.info != nil && o.info != nil && os.SameFile(s.info, o.info) && s.size == o.size && s.mod.Equal(o.mod)
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{info: fi, size: fi.Size(), mod: fi.ModTime()}
}

// NewCertReloader loads the pair, or says why it does not load.
func NewCertReloader(certFile, keyFile string, logger *slog.Logger) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, logger: logger}
	r.stamp = [2]fileStamp{stampOf(certFile), stampOf(keyFile)}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert = cert
	return r, nil
}

func (r *CertReloader) load() (*tls.Certificate, error) {
	certPEM, err := readPEM(r.certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPEM(r.keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", r.certFile, r.keyFile, err)
	}
	return &cert, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair, re-read
// first when a file changed.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := [2]fileStamp{stampOf(r.certFile), stampOf(r.keyFile)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if now[0].same(r.stamp[0]) && now[1].same(r.stamp[1]) {
		return r.cert, nil
	}
	r.stamp = now // tried once per change, not at every handshake
	cert, err := r.load()
	if err != nil {
		r.logger.Warn("TLS certificate not reloaded: keeping the last good one", "err", err.Error())
		return r.cert, nil
	}
	r.cert = cert
	r.logger.Info("TLS certificate reloaded", "cert_file", r.certFile, "not_after", cert.Leaf.NotAfter.UTC())
	return r.cert, nil
}
