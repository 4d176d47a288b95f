package mtatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// certFiles are the PEM files of a test CA and of the server certificate
// it signed for "localhost" and 127.0.0.1.
type certFiles struct {
	CA, Cert, Key string
	Pool          *x509.CertPool
}

// writeCerts generates a CA and a server certificate, both ECDSA P-256 and
// valid from an hour ago for a day, and writes them under dir.
func writeCerts(dir string) (certFiles, error) {
	files := certFiles{CA: dir + "/ca.pem", Cert: dir + "/cert.pem", Key: dir + "/key.pem"}
	now := time.Now()
	caKey, caDER, err := makeCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "mtatest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, nil)
	if err != nil {
		return files, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return files, err
	}
	key, der, err := makeCert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, caKey)
	if err != nil {
		return files, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return files, err
	}
	for _, f := range []struct {
		path, kind string
		blocks     [][]byte
		mode       os.FileMode
	}{
		{files.CA, "CERTIFICATE", [][]byte{caDER}, 0o644},
		// The chain: Postfix sends the CA too, as a server its intermediates.
		{files.Cert, "CERTIFICATE", [][]byte{der, caDER}, 0o644},
		{files.Key, "EC PRIVATE KEY", [][]byte{keyDER}, 0o600},
	} {
		if err := writePEM(f.path, f.kind, f.blocks, f.mode); err != nil {
			return files, err
		}
	}
	files.Pool = x509.NewCertPool()
	files.Pool.AddCert(ca)
	return files, nil
}

// makeCert creates a certificate from tmpl with a new key, signed by parent
// (self-signed when parent is nil), and returns the key and the DER.
func makeCert(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62)); err != nil {
		return nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("mtatest: create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return key, der, nil
}

// writePEM writes blocks as PEM blocks of kind into path.
func writePEM(path, kind string, blocks [][]byte, mode os.FileMode) error {
	var out []byte
	for _, b := range blocks {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: b})...)
	}
	return os.WriteFile(path, out, mode)
}
