package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// This file holds the node's NATS authentication and TLS: the options built
// from Config's files, checking those files (at Connect and ReloadAuth),
// explaining a refused connection in one log line naming what to check,
// and keeping secrets out of logs and errors.

// failureLogEvery is how often the same failure to connect is logged again
// while it lasts.
const failureLogEvery = time.Minute

// authFiles is what Config's credential and TLS files hold, as far as a log
// may show it: never a password, token or seed.
type authFiles struct {
	nkeyPub string // the public key of NkeyFile's seed
	attrs   []any  // for a log line
}

// checkAuthConfig reports settings that cannot go together.
func (c *Config) checkAuthConfig() error {
	switch {
	case c.CredsFile != "" && c.NkeyFile != "":
		return errors.New("cluster: give a NATS creds file or an nkey seed file, not both")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("cluster: give both a NATS TLS client certificate and its key, or neither")
	}
	return nil
}

// loadAuth reads and checks every credential and TLS file c names.
func (c *Config) loadAuth() (authFiles, error) {
	var a authFiles
	if err := c.checkAuthConfig(); err != nil {
		return a, err
	}
	if c.CredsFile != "" {
		attrs, err := checkCreds(c.CredsFile)
		if err != nil {
			return a, err
		}
		a.attrs = append(a.attrs, attrs...)
	}
	if c.NkeyFile != "" {
		pub, err := nkeyPublic(c.NkeyFile)
		if err != nil {
			return a, err
		}
		a.nkeyPub = pub
		a.attrs = append(a.attrs, "nkey_file", c.NkeyFile, "nkey", pub)
	}
	if c.TLSCA != "" {
		_, n, err := loadCA(c.TLSCA)
		if err != nil {
			return a, err
		}
		a.attrs = append(a.attrs, "tls_ca", c.TLSCA, "tls_ca_certificates", n)
	}
	if c.TLSCert != "" {
		cert, err := loadClientCert(c.TLSCert, c.TLSKey)
		if err != nil {
			return a, err
		}
		a.attrs = append(a.attrs, "tls_cert", c.TLSCert)
		if leaf := cert.Leaf; leaf != nil {
			a.attrs = append(a.attrs, "tls_cert_subject", leaf.Subject.String(), "tls_cert_not_after", leaf.NotAfter)
		}
	}
	if kind := urlAuth(c.URL); kind != "" {
		a.attrs = append(a.attrs, "url_auth", kind)
	}
	return a, nil
}

// checkCreds checks a .creds file: a user JWT and the seed of that user.
func checkCreds(file string) ([]any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the NATS creds file: %w", err)
	}
	defer wipe(data)
	token, err := nkeys.ParseDecoratedJWT(data)
	if err != nil {
		return nil, fmt.Errorf("cannot read the NATS creds file %s: no user JWT in it", file)
	}
	// jwt's errors may quote what they could not decode: say only what
	// was wrong.
	claims, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, fmt.Errorf("cannot read the NATS creds file %s: it holds no valid user JWT (want the output of `nsc generate creds`)", file)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return nil, fmt.Errorf("cannot read the NATS creds file %s: no user nkey seed in it: %w", file, err)
	}
	defer kp.Wipe()
	pub, _ := kp.PublicKey()
	if pub != claims.Subject {
		return nil, fmt.Errorf("cannot use the NATS creds file %s: its seed is not the key of its JWT's user %s", file, claims.Subject)
	}
	attrs := []any{"creds_file", file, "user", claims.Subject, "user_name", claims.Name, "account", claims.IssuerAccount}
	if claims.IssuerAccount == "" {
		attrs[len(attrs)-1] = claims.Issuer
	}
	if claims.Expires != 0 {
		attrs = append(attrs, "expires", time.Unix(claims.Expires, 0).UTC())
	}
	return attrs, nil
}

// nkeyPublic reads a user nkey seed file, as nats.NkeyOptionFromSeed does,
// and returns its public key.
func nkeyPublic(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("cannot read the NATS nkey seed file: %w", err)
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return "", fmt.Errorf("cannot read the NATS nkey seed file %s: want a user seed (SU...): %w", file, err)
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

func loadCA(file string) (*x509.CertPool, int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read the NATS TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, 0, fmt.Errorf("cannot read the NATS TLS CA file %s: %w", file, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("cannot read the NATS TLS CA file %s: no PEM certificate in it", file)
	}
	return pool, n, nil
}

func loadClientCert(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return cert, fmt.Errorf("cannot load the NATS TLS client certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// authOptions are the nats.go options of c's credentials and TLS. The files
// are read at every connection (nats.go's callbacks), so fixed or rotated
// files are used at the next attempt.
func (c *Config) authOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot use the NATS nkey seed file %s: %w", c.NkeyFile, err)
		}
		opts = append(opts, o)
	}
	var certCB nats.TLSCertHandler
	var caCB nats.RootCAsHandler
	if c.TLSCert != "" {
		certFile, keyFile := c.TLSCert, c.TLSKey
		certCB = func() (tls.Certificate, error) { return loadClientCert(certFile, keyFile) }
	}
	if c.TLSCA != "" {
		caFile := c.TLSCA
		caCB = func() (*x509.CertPool, error) {
			pool, _, err := loadCA(caFile)
			return pool, err
		}
	}
	if certCB != nil || caCB != nil {
		opts = append(opts, nats.ClientTLSConfig(certCB, caCB))
	}
	return opts, nil
}

// A failure is one explained failure to connect to NATS: kind tells
// failures apart for the rate limit (a refusal's details, such as a port,
// change from one attempt to the next); msg is the line to log, naming
// what to check.
type failure struct {
	kind, msg string
	fatal     bool // retrying cannot help until a setting or a file is fixed
}

// explain says why a connection to NATS failed.
func (c *Config) explain(err error) failure {
	text := strings.TrimPrefix(err.Error(), "nats: ")
	var opErr *net.OpError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	for _, refusal := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, refusal) {
			// The same refusal reads "Authorization Violation" at the
			// first attempt and "nats: authorization violation" later.
			why := strings.TrimPrefix(refusal.Error(), "nats: ")
			return failure{why, fmt.Sprintf("NATS refused this node's credentials (%s): %s", why, c.authHint()), true}
		}
	}
	// The server closing the connection right after the TLS handshake is
	// how a refused client certificate shows under TLS 1.3.
	closedAfterHandshake := errors.Is(err, nats.ErrTLS) &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET))
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		return failure{"permission", fmt.Sprintf("NATS denied this node a permission (%s): its NATS user must be allowed to publish and subscribe to the cluster's subjects (CLUSTER.>), $JS.API.>, $KV.> and _INBOX.>", text), true}
	case errors.Is(err, nats.ErrSecureConnWanted):
		return failure{"no-tls", "the NATS server does not offer TLS, but this node requires it (--nats-tls-ca, --nats-tls-cert or a tls:// URL): check --nats-url", true}
	case errors.Is(err, nats.ErrSecureConnRequired):
		return failure{"tls-required", "the NATS server requires TLS: give --nats-tls-ca (or use a tls:// URL)", true}
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalid), errors.As(err, &verify):
		return failure{"server-cert", fmt.Sprintf("cannot verify the NATS server's TLS certificate (%s): check --nats-tls-ca (the CA that signed it) and the host in --nats-url", text), true}
	case c.TLSCert == "" && (errors.As(err, &opErr) && opErr.Op == "remote error" || closedAfterHandshake):
		return failure{"client-cert", fmt.Sprintf("NATS refused this node's TLS connection (%s): it may require a client certificate: give --nats-tls-cert and --nats-tls-key", text), true}
	case errors.As(err, &opErr) && opErr.Op == "remote error" || closedAfterHandshake:
		return failure{"client-cert", fmt.Sprintf("NATS refused this node's TLS client certificate (%s): check --nats-tls-cert and --nats-tls-key (signed by a CA the server trusts)", text), true}
	case errors.Is(err, nats.ErrTLS):
		return failure{"tls", fmt.Sprintf("TLS with NATS failed (%s): check --nats-tls-ca, --nats-tls-cert and --nats-tls-key", text), true}
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission), errors.Is(err, nkeys.ErrNoSeedFound),
		errors.Is(err, nkeys.ErrInvalidSeed), errors.Is(err, nkeys.ErrInvalidNkeySeed):
		return failure{"files", fmt.Sprintf("cannot read this node's NATS credentials (%s): check the --nats-creds, --nats-nkey and --nats-tls-* files", text), true}
	}
	return failure{text, fmt.Sprintf("cannot reach NATS (%s); retrying", text), false}
}

// authHint names the credentials a refusal is about.
func (c *Config) authHint() string {
	switch {
	case c.CredsFile != "":
		return "check --nats-creds " + c.CredsFile
	case c.NkeyFile != "":
		return "check --nats-nkey " + c.NkeyFile + " (and that the server lists its public key)"
	}
	switch urlAuth(c.URL) {
	case "password":
		return "check the user and password in --nats-url"
	case "token":
		return "check the token in --nats-url"
	}
	return "the server requires credentials: give --nats-creds, --nats-nkey, or a user and password or token in --nats-url"
}

// failureLog logs each distinct failure to connect to NATS at most once per
// failureLogEvery, and keeps the latest for Ready to report.
type failureLog struct {
	mu     sync.Mutex
	logged map[string]time.Time // failure kind: when last logged
	kind   string               // of latest
	latest error                // ErrNotConnected with the latest explanation; nil once connected
}

// note records a failure (of the connection, unless connected); it
// reports whether to log it:
// not if a failure of its kind was logged less than failureLogEvery ago.
func (f *failureLog) note(fl failure, connected bool) (log bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !connected && (f.latest == nil || f.kind != fl.kind) {
		f.kind, f.latest = fl.kind, fmt.Errorf("%w: %s", ErrNotConnected, fl.msg)
	}
	now := time.Now()
	if last, ok := f.logged[fl.kind]; ok && now.Sub(last) < failureLogEvery {
		return false
	}
	if f.logged == nil {
		f.logged = make(map[string]time.Time)
	}
	f.logged[fl.kind] = now
	return true
}

// reset forgets what was logged: the next failure is logged at once.
func (f *failureLog) reset(connected bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.logged)
	if connected {
		f.latest = nil
	}
}

// why is the latest explanation of why the node is not connected, or nil.
func (f *failureLog) why() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.latest
}

// noteFailure logs, rate-limited, why the connection to NATS failed. nc is
// the connection (n.nc may not be set yet when nats.go calls back).
func (n *Node) noteFailure(nc *nats.Conn, err error) {
	if err == nil {
		return
	}
	fl := n.cfg.explain(err)
	fl.msg = n.redact(fl.msg)
	connected := nc.IsConnected()
	if !n.failures.note(fl, connected) {
		return
	}
	msg := fl.msg
	if fl.fatal && !connected {
		n.log.Error(msg+"; the node is not ready: it keeps the topics it already serves, and refuses new publishers (503) until this is fixed", "url", RedactURL(n.cfg.URL))
	} else if fl.fatal {
		n.log.Error(msg, "url", RedactURL(n.cfg.URL))
	} else {
		n.log.Warn(msg, "url", RedactURL(n.cfg.URL))
	}
}

// ReloadAuth reads the credential and TLS files again and checks them,
// logging what they hold (never a secret); the connection reads them
// itself at its next attempt. If the node is not connected, it asks for an
// attempt now, so that fixed files take effect at once. It returns what is
// wrong with the files, also logged. A seed of --nats-nkey with another
// public key than the one the node connected with needs a restart (NATS
// takes the public key at Connect), which it logs.
func (n *Node) ReloadAuth() error {
	a, err := n.cfg.loadAuth()
	if err != nil {
		err = n.redactErr(err)
		n.log.Error("cannot reload the NATS credentials: the next connection to NATS will fail until they are fixed", "err", err)
		return err
	}
	if n.nkeyPub != "" && a.nkeyPub != n.nkeyPub {
		n.log.Warn("the nkey seed in --nats-nkey has another public key than the one this node connected with: restart the node to use it (NATS takes the public key at connect; until then every reconnection fails)",
			"connected_as", n.nkeyPub, "new_nkey", a.nkeyPub)
	}
	if len(a.attrs) == 0 {
		n.log.Info("NATS credentials: no files to reload")
	} else {
		n.log.Info("NATS credentials reloaded", a.attrs...)
	}
	n.failures.reset(false)
	if !n.nc.IsConnected() {
		n.log.Info("not connected to NATS: trying again now")
		n.nc.ForceReconnect()
	}
	return nil
}

// secrets returns the passwords and tokens of a NATS URL list, as written
// and unescaped, for redact.
func secrets(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		info, ok := userinfo(u)
		if !ok {
			continue
		}
		if _, pw, ok := strings.Cut(info, ":"); ok {
			info = pw
		}
		if info == "" {
			continue
		}
		out = append(out, info)
		if un, err := url.PathUnescape(info); err == nil && un != info {
			out = append(out, un)
		}
	}
	return out
}

// userinfo returns the part of one NATS URL before its host's '@'.
func userinfo(u string) (string, bool) {
	u = strings.TrimSpace(u)
	if _, rest, ok := strings.Cut(u, "://"); ok {
		u = rest
	}
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return "", false
	}
	return u[:at], true
}

// urlAuth says what credentials a NATS URL list holds: "password",
// "token" or "".
func urlAuth(list string) string {
	for _, u := range strings.Split(list, ",") {
		if info, ok := userinfo(u); ok {
			if strings.Contains(info, ":") {
				return "password"
			}
			return "token"
		}
	}
	return ""
}

// RedactURL hides the secrets of a NATS URL or comma-separated list of
// URLs, with or without a scheme: nats://USER:PASSWORD@HOST becomes
// nats://USER:xxxxx@HOST and nats://TOKEN@HOST (nats.go takes a user
// without a password as a token) becomes nats://xxxxx@HOST.
func RedactURL(list string) string {
	if !strings.Contains(list, "@") {
		return list
	}
	parts := strings.Split(list, ",")
	for i, u := range parts {
		start := len(u) - len(strings.TrimLeft(u, " \t"))
		if s := strings.Index(u, "://"); s >= 0 {
			start = s + 3
		}
		at := strings.LastIndex(u, "@")
		if at < start {
			continue
		}
		if user, _, ok := strings.Cut(u[start:at], ":"); ok {
			parts[i] = u[:start] + user + ":xxxxx" + u[at:]
		} else {
			parts[i] = u[:start] + "xxxxx" + u[at:]
		}
	}
	return strings.Join(parts, ",")
}

// redact hides the URL's passwords and tokens wherever s quotes them.
func (n *Node) redact(s string) string {
	for _, secret := range n.secrets {
		s = strings.ReplaceAll(s, secret, "xxxxx")
	}
	return s
}

// redactErr is err with its text redacted; errors.Is and As still see err.
func (n *Node) redactErr(err error) error {
	if err == nil {
		return nil
	}
	if text := n.redact(err.Error()); text != err.Error() {
		return &redactedError{text, err}
	}
	return err
}

type redactedError struct {
	text string
	err  error
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }
