package natstest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/wspubsub/wspubsub/internal/testca"
)

// User requires a user and password of every client.
func User(user, password string) func(*server.Options) {
	return func(o *server.Options) {
		o.Users = append(o.Users, &server.User{Username: user, Password: password})
	}
}

// Token requires a token of every client.
func Token(token string) func(*server.Options) {
	return func(o *server.Options) { o.Authorization = token }
}

// Nkey lets in the client holding the seed of the user public key pub; with
// it, a client must sign with an allowed nkey.
func Nkey(pub string) func(*server.Options) {
	return func(o *server.Options) { o.Nkeys = append(o.Nkeys, &server.NkeyUser{Nkey: pub}) }
}

// NewNkeySeed makes a user nkey and writes its seed to a file in dir, as
// `nk -gen user` would; it returns the file and the public key.
func NewNkeySeed(t testing.TB, dir string) (file, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ = kp.PublicKey()
	f, err := os.CreateTemp(dir, "user-*.nk")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(append(seed, '\n'))
	f.Close()
	return f.Name(), pub
}

// Operator is a throwaway NATS operator with one account, with JetStream,
// for a server in operator mode (decentralized JWT authentication) with a
// memory resolver; Creds makes its users' .creds files.
type Operator struct {
	t      testing.TB
	op     nkeys.KeyPair
	opJWT  *jwt.OperatorClaims
	acc    nkeys.KeyPair
	accPub string
	accJWT string
	sysPub string
	sysJWT string
}

// NewOperator makes an operator, its system account and an account "APP"
// with unlimited JetStream.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, _ := op.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "wspubsub-test"
	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(op)
		must(err)
		return kp, pub, token
	}
	_, sysPub, sysJWT := account("SYS", false)
	oc.SystemAccount = sysPub
	// The operator's JWT is self-signed; the server takes the claims.
	if _, err := oc.Encode(op); err != nil {
		t.Fatal(err)
	}
	acc, accPub, accJWT := account("APP", true)
	return &Operator{t: t, op: op, opJWT: oc, acc: acc, accPub: accPub, accJWT: accJWT, sysPub: sysPub, sysJWT: sysJWT}
}

// Configure puts the server in operator mode, trusting o, with its accounts
// in a memory resolver.
func (o *Operator) Configure(opts *server.Options) {
	res := &server.MemAccResolver{}
	res.Store(o.accPub, o.accJWT)
	res.Store(o.sysPub, o.sysJWT)
	opts.TrustedOperators = []*jwt.OperatorClaims{o.opJWT}
	opts.AccountResolver = res
	opts.SystemAccount = o.sysPub
}

// Creds makes a user of the account and returns its .creds file's content
// (the user's JWT and nkey seed), as `nsc generate creds` would.
func (o *Operator) Creds(name string) []byte {
	o.t.Helper()
	return userCreds(o.t, o.acc, name)
}

// ForeignCreds makes a user signed by an account the server does not know:
// well formed, refused.
func (o *Operator) ForeignCreds(name string) []byte {
	o.t.Helper()
	acc, err := nkeys.CreateAccount()
	if err != nil {
		o.t.Fatal(err)
	}
	return userCreds(o.t, acc, name)
}

func userCreds(t testing.TB, acc nkeys.KeyPair, name string) []byte {
	t.Helper()
	u, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := u.PublicKey()
	seed, _ := u.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	token, err := uc.Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// CA is a throwaway certificate authority for TLS tests.
type CA struct {
	t  testing.TB
	ca *testca.CA
	// PEM is the CA certificate, PEM-encoded.
	PEM []byte
}

// NewCA makes a certificate authority valid for an hour.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca := testca.New(t, name)
	return &CA{t: t, ca: ca, PEM: ca.PEM}
}

// Issue makes a certificate for name signed by the CA, for a server (valid
// for 127.0.0.1) or for a client, and returns it and its key, PEM-encoded.
func (ca *CA) Issue(name string, serverCert bool) (certPEM, keyPEM []byte) {
	ca.t.Helper()
	l := ca.ca.Issue(ca.t, name, serverCert)
	return l.CertPEM, l.KeyPEM
}

// WriteFiles writes a certificate Issue made, and its key, into dir as
// NAME.pem and NAME-key.pem, and returns their paths.
func (ca *CA) WriteFiles(dir, name string, serverCert bool) (certFile, keyFile string) {
	ca.t.Helper()
	c, k := ca.Issue(name, serverCert)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, c, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return certFile, keyFile
}

// TLS makes the server serve TLS with a certificate of ca; with verify, it
// also requires a client certificate signed by ca (mutual TLS).
func (ca *CA) TLS(verify bool) func(*server.Options) {
	ca.t.Helper()
	certPEM, keyPEM := ca.Issue("nats-server", true)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		ca.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.ca.Cert)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if verify {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return func(o *server.Options) {
		o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, verify, cfg, 5
	}
}
