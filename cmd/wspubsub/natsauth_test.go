package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster/natstest"
)

// waitLine waits until logs hold s.
func waitLine(t *testing.T, logs *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", s, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crossNodes checks that a message published on node a reaches a
// subscriber on node b.
func crossNodes(t *testing.T, key, a, b, topic string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	pub, _, err := d.Dial("ws://"+a+"/ws/pub/"+key+"/test/"+topic, nil)
	if err != nil {
		t.Fatalf("publisher on %s: %v", a, err)
	}
	defer pub.Close()
	sub, _, err := d.Dial("ws://"+b+"/ws/sub/test/"+topic, nil)
	if err != nil {
		t.Fatalf("subscriber on %s: %v", b, err)
	}
	defer sub.Close()
	pub.WriteMessage(websocket.TextMessage, []byte("hello "+topic))
	sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := sub.ReadMessage(); err != nil || string(got) != "hello "+topic {
		t.Fatalf("subscriber on %s got %q, %v", b, got, err)
	}
}

// TestServeNATSCredsRecoversOnSIGHUP runs two `wspubsub serve` nodes on a
// NATS server in operator mode: one with good --nats-creds joins; one
// whose creds the server refuses serves but is not ready (/readyz 503,
// wspubsub_ready 0) and logs one line naming --nats-creds; once its file
// holds good creds and it gets SIGHUP it is ready and carries messages.
// The seeds never appear in the output.
func TestServeNATSCredsRecoversOnSIGHUP(t *testing.T) {
	bin := buildBinary(t)
	op := natstest.NewOperator(t)
	ns := natstest.StartWith(t, op.Configure)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	key := addKey(t, bin, keysFile, "test")
	goodCreds, badCreds := op.Creds("a"), op.ForeignCreds("b")
	goodFile, badFile := filepath.Join(dir, "a.creds"), filepath.Join(dir, "b.creds")
	os.WriteFile(goodFile, goodCreds, 0o600)
	os.WriteFile(badFile, badCreds, 0o600)

	addrA, addrB := freePort(t), freePort(t)
	_, logsA := startServeCmd(t, bin, "--listen", addrA, "--keys-file", keysFile, "--nats-url", ns.URL,
		"--nats-creds", goodFile, "--node-name", "a", "--drain-period", "100ms")
	cmdB, logsB := startServeCmd(t, bin, "--listen", addrB, "--keys-file", keysFile, "--nats-url", ns.URL,
		"--nats-creds", badFile, "--node-name", "b", "--drain-period", "100ms")
	waitReady(t, addrA)

	const refusal = "NATS refused this node's credentials (authorization violation): check --nats-creds "
	waitLine(t, logsB, "wspubsub serving")
	waitLine(t, logsB, refusal)
	time.Sleep(2 * time.Second) // retries, every 250 ms to 1.25 s
	if n := strings.Count(logsB.String(), "msg=\""+refusal); n != 1 {
		t.Errorf("the refusal is logged %d times, want once", n)
	}
	if code, body := status("http://" + addrB + "/readyz"); code != 503 || !strings.Contains(body, refusal) {
		t.Errorf("/readyz of the refused node: %d %q, want 503 naming the refusal", code, body)
	}
	if _, body := status("http://" + addrB + "/metrics"); !strings.Contains(body, "\nwspubsub_ready 0\n") || !strings.Contains(body, "wspubsub_cluster_connected 0") {
		t.Errorf("the refused node's metrics do not show it unready and unconnected")
	}
	if code, _ := status("http://" + addrB + "/healthz"); code != 200 {
		t.Errorf("the refused node's /healthz: %d, want 200: it stays up", code)
	}

	// Fixed file, SIGHUP: ready well before any reconnect backoff could matter.
	os.WriteFile(badFile, op.Creds("b"), 0o600)
	cmdB.Process.Signal(syscall.SIGHUP)
	waitLine(t, logsB, "NATS credentials reloaded")
	waitReady(t, addrB)
	crossNodes(t, key, addrA, addrB, "fixed")
	crossNodes(t, key, addrB, addrA, "back")

	for _, creds := range [][]byte{goodCreds, badCreds} {
		seed := seedLine(creds)
		if strings.Contains(logsA.String()+logsB.String(), seed) {
			t.Errorf("a seed is in the output")
		}
	}
}

func seedLine(creds []byte) string {
	for line := range strings.Lines(string(creds)) {
		if strings.HasPrefix(line, "SU") {
			return strings.TrimSpace(line)
		}
	}
	panic("no seed in the creds")
}

// TestServeNATSSecretsNeverLogged runs `wspubsub serve` with a password,
// a token and an nkey seed that NATS refuses, and with a good password, at
// debug level: no password, token or seed appears in the output, in
// /readyz, or in `config check`.
func TestServeNATSSecretsNeverLogged(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	addKey(t, bin, keysFile, "test")
	seedFile, _ := natstest.NewNkeySeed(t, dir)
	seed, _ := os.ReadFile(seedFile)
	_, registered := natstest.NewNkeySeed(t, dir)

	pw := natstest.StartWith(t, natstest.User("hub", "Pw-s3cret-1"))
	tok := natstest.StartWith(t, natstest.Token("T0ken-s3cret-2"))
	nk := natstest.StartWith(t, natstest.Nkey(registered))
	withUser := func(u, info string) string { return strings.Replace(u, "nats://", "nats://"+info+"@", 1) }
	secrets := []string{"Pw-s3cret-1", "Wr0ng-s3cret-3", "T0ken-s3cret-2", "T0ken-wr0ng-4", strings.TrimSpace(string(seed))}
	runs := []struct {
		url, want string
		extra     []string
		ready     bool
	}{
		{withUser(pw.URL, "hub:Pw-s3cret-1"), `msg="connected to NATS"`, nil, true},
		{withUser(pw.URL, "hub:Wr0ng-s3cret-3"), "check the user and password in --nats-url", nil, false},
		{withUser(tok.URL, "T0ken-wr0ng-4") + "," + withUser(tok.URL, "T0ken-s3cret-2"), `msg="connected to NATS"`, nil, true},
		{withUser(tok.URL, "T0ken-wr0ng-4"), "check the token in --nats-url", nil, false},
		{nk.URL, "check --nats-nkey", []string{"--nats-nkey", seedFile}, false},
	}
	for _, r := range runs {
		addr := freePort(t)
		args := []string{"--listen", addr, "--keys-file", keysFile, "--nats-url", r.url, "--log-level", "debug"}
		_, logs := startServeCmd(t, bin, append(args, r.extra...)...)
		waitLine(t, logs, r.want)
		waitLine(t, logs, "wspubsub serving")
		if r.ready {
			waitReady(t, addr)
		}
		code, body := status("http://" + addr + "/readyz")
		if (code == 200) != r.ready {
			t.Errorf("%s: /readyz %d %s", r.want, code, body)
		}
		out := logs.String() + body
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s: the output shows the secret %q:\n%s", r.want, s, out)
			}
		}
	}

	clearEnv(t)
	code, out, errOut := cli(t, "config", "check", "--nats-url", "nats://T0ken-s3cret-2@h1:4222,hub:Pw-s3cret-1@h2:4222")
	if code != 0 || !strings.Contains(out, "nats://xxxxx@h1:4222,hub:xxxxx@h2:4222") {
		t.Errorf("config check: exit %d, %s %s", code, out, errOut)
	}
	for _, s := range secrets {
		if strings.Contains(out+errOut, s) {
			t.Errorf("config check shows %q", s)
		}
	}
}

// TestServeNATSAuthConfigErrors: settings that cannot go together stop
// serve with exit 2, files it cannot read or use with exit 1, each with a
// clear message.
func TestServeNATSAuthConfigErrors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	addKey(t, bin, keysFile, "test")
	seedFile, _ := natstest.NewNkeySeed(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("not PEM"), 0o600)
	url := "nats://127.0.0.1:1"
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--nats-creds", seedFile}, 2, "need --nats-url"},
		{[]string{"--nats-url", url, "--nats-creds", seedFile, "--nats-nkey", seedFile}, 2, "not both"},
		{[]string{"--nats-url", url, "--nats-tls-cert", notPEM}, 2, "both --nats-tls-cert and --nats-tls-key"},
		{[]string{"--nats-url", url, "--nats-creds", filepath.Join(dir, "missing.creds")}, 1, "cannot read the NATS creds file"},
		{[]string{"--nats-url", url, "--nats-creds", seedFile}, 1, "holds no valid user JWT"},
		{[]string{"--nats-url", url, "--nats-nkey", notPEM}, 1, "cannot read the NATS nkey seed file"},
		{[]string{"--nats-url", url, "--nats-tls-ca", notPEM}, 1, "no PEM certificate"},
		{[]string{"--nats-url", url, "--nats-tls-cert", notPEM, "--nats-tls-key", notPEM}, 1, "cannot load the NATS TLS client certificate"},
	} {
		cmd := exec.Command(bin, append([]string{"serve", "--listen", freePort(t), "--keys-file", keysFile}, tt.args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != tt.code || !strings.Contains(string(out), tt.want) {
			t.Errorf("serve %q: %v, want exit %d with %q:\n%s", tt.args, err, tt.code, tt.want, out)
		}
	}
}
