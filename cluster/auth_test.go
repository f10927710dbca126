package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/cluster/natstest"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// logBuffer collects a node's log lines for a test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count is how many lines log s, the readiness warning's quote of it
// aside.
func (l *logBuffer) count(s string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		if strings.Contains(line, s) && !strings.Contains(line, "cluster not ready yet") {
			n++
		}
	}
	return n
}

// newAuthCluster is newCluster with a NATS server configured by configure.
func newAuthCluster(t *testing.T, configure ...func(*natsserver.Options)) *testCluster {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.Add(context.Background(), "test", "tester")
	if err != nil {
		t.Fatal(err)
	}
	return &testCluster{nats: natstest.StartWith(t, configure...), store: store, key: key}
}

// carries checks that a message published on a reaches a subscriber on b.
func carries(t *testing.T, a, b *node, topic string) {
	t.Helper()
	p := a.pub(t, topic)
	s := b.sub(t, topic)
	publish(t, p, websocket.TextMessage, []byte("across "+topic))
	expect(t, s, websocket.TextMessage, []byte("across "+topic))
}

// refusedNode connects a node that NATS refuses, and checks that it is not
// ready, says why in its readiness and logs want in one line (and not
// again: the retries every 250 ms are not logged), and never logs any of
// secrets. It returns the node, its hub and its logs.
func refusedNode(t *testing.T, tc *testCluster, natsURL string, want string, secrets []string, cfg func(*cluster.Config)) (*cluster.Node, *server.Server, *logBuffer) {
	t.Helper()
	logs := new(logBuffer)
	ccfg := cluster.Config{URL: natsURL, Name: "refused", ConnectWait: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if cfg != nil {
		cfg(&ccfg)
	}
	cl, err := cluster.Connect(ccfg)
	if err != nil {
		t.Fatalf("Connect: %v (a refusal must not fail Connect)", err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	srv, err := server.Start(server.Config{Listen: "127.0.0.1:0", Keys: tc.store, Logger: logger(t), Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	deadline := time.Now().Add(10 * time.Second)
	for logs.count(want) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no line logs %q:\n%s", want, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // several retries
	if n := logs.count(want); n != 1 {
		t.Errorf("%q logged %d times, want once:\n%s", want, n, logs)
	}
	err = srv.Ready()
	if !errors.Is(err, cluster.ErrNotConnected) || !strings.Contains(err.Error(), want) {
		t.Errorf("Ready() = %v, want ErrNotConnected saying %q", err, want)
	}
	// It serves local topics meanwhile.
	h := &node{Server: srv, cl: cl, tc: tc, url: "ws://" + srv.Addr()}
	if st := h.refused(t, "/ws/pub/"+tc.key+"/test/local"); st != 503 {
		t.Errorf("a new publisher on a node not connected: %d, want 503", st)
	}
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) || strings.Contains(err.Error(), s) {
			t.Errorf("the logs or readiness show the secret %q:\n%s", s, logs)
		}
	}
	return cl, srv, logs
}

func withURL(u string) func(*server.Config, *cluster.Config) {
	return func(_ *server.Config, c *cluster.Config) { c.URL = u }
}

// TestAuthUserPassword: a NATS server requiring a user and password takes
// nodes that give them in the URL; a wrong password leaves the node not
// ready, with one clear line, and the password is never logged.
func TestAuthUserPassword(t *testing.T) {
	tc := newAuthCluster(t, natstest.User("hub", "s3cret-pw"))
	good := strings.Replace(tc.nats.URL, "nats://", "nats://hub:s3cret-pw@", 1)
	a, b := tc.node(t, good), tc.node(t, good)
	carries(t, a, b, "pw")

	bad := strings.Replace(tc.nats.URL, "nats://", "nats://hub:wr0ng-pw@", 1)
	refusedNode(t, tc, bad, "NATS refused this node's credentials (authorization violation): check the user and password in --nats-url",
		[]string{"wr0ng-pw", "s3cret-pw"}, nil)
}

// TestAuthToken: the same with a token, nats://TOKEN@HOST, which
// nats.go's own URL redaction would show.
func TestAuthToken(t *testing.T) {
	tc := newAuthCluster(t, natstest.Token("t0ken-right"))
	good := strings.Replace(tc.nats.URL, "nats://", "nats://t0ken-right@", 1)
	a, b := tc.node(t, good), tc.node(t, good)
	carries(t, a, b, "token")

	bad := strings.Replace(tc.nats.URL, "nats://", "nats://t0ken-wrong@", 1)
	refusedNode(t, tc, bad+","+bad, "NATS refused this node's credentials (authorization violation): check the token in --nats-url",
		[]string{"t0ken-wrong"}, nil)
	// Without any credentials, the line says to give some.
	refusedNode(t, tc, tc.nats.URL, "the server requires credentials: give --nats-creds", nil, nil)
}

// TestAuthNkey: a node signs with the seed of --nats-nkey; a seed the server
// does not list is refused.
func TestAuthNkey(t *testing.T) {
	dir := t.TempDir()
	seedFile, pub := natstest.NewNkeySeed(t, dir)
	tc := newAuthCluster(t, natstest.Nkey(pub))
	withSeed := func(f string) func(*server.Config, *cluster.Config) {
		return func(_ *server.Config, c *cluster.Config) { c.NkeyFile = f }
	}
	a, b := tc.node(t, "", withSeed(seedFile)), tc.node(t, "", withSeed(seedFile))
	carries(t, a, b, "nkey")

	other, _ := natstest.NewNkeySeed(t, dir)
	seed, _ := os.ReadFile(other)
	cl, _, logs := refusedNode(t, tc, tc.nats.URL, "NATS refused this node's credentials (authorization violation): check --nats-nkey "+other,
		[]string{strings.TrimSpace(string(seed))}, func(c *cluster.Config) { c.NkeyFile = other })

	// The listed seed in its file: nats.go took the old public key at
	// Connect, so the reload says to restart.
	good, _ := os.ReadFile(seedFile)
	os.WriteFile(other, good, 0o600)
	if err := cl.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "restart the node to use it") || strings.Contains(logs.String(), strings.TrimSpace(string(good))) {
		t.Errorf("the reload of a seed with a new public key:\n%s", logs)
	}
}

// TestAuthCreds: in operator mode a node joins with a .creds file; with the
// creds of an account the server does not know it is refused, and once the
// file holds good creds, ReloadAuth makes it ready at once.
func TestAuthCreds(t *testing.T) {
	op := natstest.NewOperator(t)
	tc := newAuthCluster(t, op.Configure)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.creds")
	if err := os.WriteFile(good, op.Creds("hub"), 0o600); err != nil {
		t.Fatal(err)
	}
	withCreds := func(f string) func(*server.Config, *cluster.Config) {
		return func(_ *server.Config, c *cluster.Config) { c.CredsFile = f }
	}
	a, b := tc.node(t, "", withCreds(good)), tc.node(t, "", withCreds(good))
	carries(t, a, b, "creds")

	bad := filepath.Join(dir, "node.creds")
	foreign := op.ForeignCreds("stranger")
	if err := os.WriteFile(bad, foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	cl, srv, logs := refusedNode(t, tc, tc.nats.URL, "NATS refused this node's credentials (authorization violation): check --nats-creds "+bad,
		[]string{seedOf(foreign)}, func(c *cluster.Config) { c.CredsFile = bad })

	// A broken file: ReloadAuth says so and the node stays as it is.
	os.WriteFile(bad, []byte("not creds"), 0o600)
	if err := cl.ReloadAuth(); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("ReloadAuth with a broken file: %v", err)
	}
	// Fixed: ready at once, well within the reconnect backoff.
	fixed := op.Creds("hub2")
	os.WriteFile(bad, fixed, 0o600)
	if err := cl.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node to be ready with fixed creds", func() bool { return srv.Ready() == nil })
	if !strings.Contains(logs.String(), "NATS credentials reloaded") || strings.Contains(logs.String(), seedOf(fixed)) {
		t.Errorf("the reload's log:\n%s", logs)
	}
	c := &node{Server: srv, cl: cl, tc: tc, url: "ws://" + srv.Addr()}
	carries(t, a, c, "fixed")
}

// seedOf is the seed in a .creds file.
func seedOf(creds []byte) string {
	for line := range strings.Lines(string(creds)) {
		if strings.HasPrefix(line, "SU") {
			return strings.TrimSpace(line)
		}
	}
	panic("no seed")
}

// TestTLS: a NATS server with a certificate of a private CA takes nodes
// given that CA (--nats-tls-ca); a node that does not trust it is not
// ready and says to check --nats-tls-ca.
func TestTLS(t *testing.T) {
	ca := natstest.NewCA(t, "test CA")
	tc := newAuthCluster(t, ca.TLS(false))
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	withCA := func(_ *server.Config, c *cluster.Config) { c.TLSCA = caFile }
	a, b := tc.node(t, "", withCA), tc.node(t, "", withCA)
	carries(t, a, b, "tls")

	other := natstest.NewCA(t, "another CA")
	otherFile := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(otherFile, other.PEM, 0o600)
	refusedNode(t, tc, tc.nats.URL, "cannot verify the NATS server's TLS certificate", nil,
		func(c *cluster.Config) { c.TLSCA = otherFile })
}

// TestMutualTLS: a NATS server that requires client certificates takes
// nodes with one its CA signed (--nats-tls-cert, --nats-tls-key); one
// without is refused, and one with a certificate of another CA too.
func TestMutualTLS(t *testing.T) {
	ca := natstest.NewCA(t, "test CA")
	tc := newAuthCluster(t, ca.TLS(true))
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	certFile, keyFile := ca.WriteFiles(dir, "hub", false)
	withCert := func(_ *server.Config, c *cluster.Config) { c.TLSCA, c.TLSCert, c.TLSKey = caFile, certFile, keyFile }
	a, b := tc.node(t, "", withCert), tc.node(t, "", withCert)
	carries(t, a, b, "mtls")

	refusedNode(t, tc, tc.nats.URL, "it may require a client certificate: give --nats-tls-cert and --nats-tls-key", nil,
		func(c *cluster.Config) { c.TLSCA = caFile })

	other := natstest.NewCA(t, "another CA")
	strangerCert, strangerKey := other.WriteFiles(dir, "stranger", false)
	cl, srv, _ := refusedNode(t, tc, tc.nats.URL, "NATS refused this node's TLS client certificate", nil,
		func(c *cluster.Config) { c.TLSCA, c.TLSCert, c.TLSKey = caFile, strangerCert, strangerKey })

	// New files in place (a certificate manager's renewal): the next
	// connection reads them.
	for from, to := range map[string]string{certFile: strangerCert, keyFile: strangerKey} {
		b, _ := os.ReadFile(from)
		os.WriteFile(to, b, 0o600)
	}
	if err := cl.ReloadAuth(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node to be ready with its new certificate", func() bool { return srv.Ready() == nil })
	carries(t, a, &node{Server: srv, cl: cl, tc: tc, url: "ws://" + srv.Addr()}, "renewed")
}

// TestAuthConfigErrors: Connect refuses settings that cannot work, and
// files it cannot read, naming them, without showing a secret.
func TestAuthConfigErrors(t *testing.T) {
	dir := t.TempDir()
	seed, _ := natstest.NewNkeySeed(t, dir)
	seedBytes, _ := os.ReadFile(seed)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("SUnot-a-seed\n"), 0o600)
	for _, tt := range []struct {
		name string
		cfg  cluster.Config
		want string
	}{
		{"creds and nkey", cluster.Config{CredsFile: seed, NkeyFile: seed}, "not both"},
		{"cert without key", cluster.Config{TLSCert: seed}, "both a NATS TLS client certificate and its key"},
		{"key without cert", cluster.Config{TLSKey: seed}, "both a NATS TLS client certificate and its key"},
		{"missing creds", cluster.Config{CredsFile: filepath.Join(dir, "none.creds")}, "cannot read the NATS creds file"},
		{"seed as creds", cluster.Config{CredsFile: seed}, "holds no valid user JWT"},
		{"bad seed", cluster.Config{NkeyFile: garbage}, "cannot read the NATS nkey seed file " + garbage},
		{"missing CA", cluster.Config{TLSCA: filepath.Join(dir, "none.pem")}, "cannot read the NATS TLS CA file"},
		{"CA not PEM", cluster.Config{TLSCA: garbage}, "no PEM certificate"},
		{"cert not PEM", cluster.Config{TLSCert: garbage, TLSKey: garbage}, "cannot load the NATS TLS client certificate"},
	} {
		tt.cfg.URL = "nats://127.0.0.1:1"
		_, err := cluster.Connect(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		} else if strings.Contains(err.Error(), strings.TrimSpace(string(seedBytes))) {
			t.Errorf("%s: the error shows the seed: %v", tt.name, err)
		}
	}
}

// TestRedactURL: passwords and tokens are hidden, in every URL of a list,
// with or without a scheme.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                   "nats://127.0.0.1:4222",
		"nats://u:pw@h:4222":                      "nats://u:xxxxx@h:4222",
		"nats://TOKEN@h:4222":                     "nats://xxxxx@h:4222",
		"tls://u:p@ss@h1,nats://TOK@h2,nats://h3": "tls://u:xxxxx@h1,nats://xxxxx@h2,nats://h3",
		"u:pw@h:4222, TOKEN@h2":                   "u:xxxxx@h:4222, xxxxx@h2",
		"nats://u:p%40w@h/x":                      "nats://u:xxxxx@h/x",
		"wss://t@h:443":                           "wss://xxxxx@h:443",
		"":                                        "",
		"nats://127.0.0.1:4222,nats://127.0.0.1:4223": "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
	} {
		if got := cluster.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRedactURL: in a list of NATS URLs built from arbitrary users,
// passwords, tokens and hosts, every password and token is replaced by
// xxxxx and everything else is kept as it was.
func FuzzRedactURL(f *testing.F) {
	f.Add(uint8(1), "hub", "s3cret", "127.0.0.1:4222", "T0KEN", "h2:4222/x")
	f.Add(uint8(0), "u", "p%40ss", "h", "t", "h")
	f.Add(uint8(2), "", "pw", "[::1]:4222", "tok:en", "h")
	schemes := []string{"", "nats://", "tls://", "ws://", "wss://"}
	f.Fuzz(func(t *testing.T, schemeN uint8, user, password, host, token, host2 string) {
		for _, s := range []string{user, password, host, token, host2} {
			if strings.ContainsAny(s, "@,") || strings.Contains(s, "://") {
				t.Skip() // not one URL element: nats.go splits on ',' first
			}
		}
		if strings.Contains(user, ":") || strings.TrimLeft(user, " \t") != user || strings.TrimLeft(token, " \t") != token {
			t.Skip() // leading blanks are kept or not, with or without a scheme
		}
		if strings.Contains(user+":"+password, "://") {
			t.Skip() // "u://..." is a URL with scheme u, not user u's password
		}
		scheme := schemes[int(schemeN)%len(schemes)]
		in := scheme + user + ":" + password + "@" + host + "," + scheme + token + "@" + host2
		tokenOut := "xxxxx"
		if u, _, ok := strings.Cut(token, ":"); ok {
			tokenOut = u + ":xxxxx" // a user and password after all
		}
		want := scheme + user + ":xxxxx@" + host + "," + scheme + tokenOut + "@" + host2
		if got := cluster.RedactURL(in); got != want {
			t.Fatalf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	})
}
