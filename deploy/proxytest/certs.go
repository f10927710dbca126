package proxytest

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/wspubsub/wspubsub/internal/testca"
)

// Certs is a throwaway CA and a server certificate it signed for
// 127.0.0.1 and localhost, written to files.
type Certs struct {
	// CertFile holds the server's chain (leaf, then CA), KeyFile its key,
	// PEMFile both (as HAProxy wants them); CAFile holds the CA alone.
	CertFile, KeyFile, PEMFile, CAFile string
	// Pool trusts the CA, for Go clients.
	Pool *x509.CertPool
	// SPKI is the base64 SHA-256 of the server key's SubjectPublicKeyInfo,
	// for Chromium's --ignore-certificate-errors-spki-list.
	SPKI string
}

// ClientConfig is a TLS client configuration that trusts the CA.
func (c *Certs) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, ServerName: "127.0.0.1"}
}

// NewCerts makes a CA and a server certificate, valid for an hour, in a
// directory of the test's.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	dir := workDir(t)
	ca := testca.New(t, "wspubsub throwaway test CA")
	leaf := ca.Issue(t, "127.0.0.1", true)
	chain := append(append([]byte(nil), leaf.CertPEM...), ca.PEM...)
	keyPEM := leaf.KeyPEM
	c := &Certs{
		CertFile: filepath.Join(dir, "fullchain.pem"),
		KeyFile:  filepath.Join(dir, "privkey.pem"),
		PEMFile:  filepath.Join(dir, "haproxy.pem"),
		CAFile:   filepath.Join(dir, "ca.pem"),
		Pool:     x509.NewCertPool(),
	}
	c.Pool.AddCert(ca.Cert)
	sum := sha256.Sum256(leaf.Cert.RawSubjectPublicKeyInfo)
	c.SPKI = base64.StdEncoding.EncodeToString(sum[:])
	for path, data := range map[string][]byte{
		c.CertFile: chain, c.KeyFile: keyPEM, c.PEMFile: append(append([]byte(nil), chain...), keyPEM...),
		c.CAFile: ca.PEM,
	} {
		// Readable by the proxies' workers, which do not run as root.
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return c
}
