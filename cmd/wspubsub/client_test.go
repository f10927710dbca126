package main

import (
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clientProc is a `wspubsub sub` or `wspubsub pub` process.
type clientProc struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser // nil unless asked for
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error // Wait's, once done is closed
}

// startClient runs `bin args...`; with pipeStdin its stdin is a pipe the
// test writes, otherwise it is empty. The process is killed when the test
// ends, and its output logged if the test failed.
func startClient(t *testing.T, bin string, pipeStdin bool, args ...string) *clientProc {
	t.Helper()
	p := &clientProc{cmd: exec.Command(bin, args...), stdout: new(syncBuffer), stderr: new(syncBuffer), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if pipeStdin {
		var err error
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("wspubsub %s:\nstdout: %q\nstderr: %s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// exitCode waits for the process to end and returns its exit status.
func (p *clientProc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("wspubsub %s did not exit", strings.Join(p.cmd.Args[1:], " "))
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wspubsub %s: %v", strings.Join(p.cmd.Args[1:], " "), p.err)
	}
	return 0
}

// waitStderr waits until the process's stderr holds what.
func (p *clientProc) waitStderr(t *testing.T, what string) {
	t.Helper()
	waitFor(t, "stderr of wspubsub "+strings.Join(p.cmd.Args[1:], " ")+" to say "+what, func() bool {
		return strings.Contains(p.stderr.String(), what)
	})
}

// waitStdout waits until the process's stdout is exactly want.
func (p *clientProc) waitStdout(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.stdout.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("wspubsub %s printed %q, want %q", strings.Join(p.cmd.Args[1:], " "), p.stdout.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveForClients starts `bin serve` on a free port with a key for domain
// test and args, and returns its address and the key.
func serveForClients(t *testing.T, bin string, args ...string) (addr, key string) {
	t.Helper()
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key = addKey(t, bin, keysFile, "test")
	addr = freePort(t)
	logs := startServe(t, bin, append([]string{"--listen", addr, "--keys-file", keysFile}, args...)...)
	waitFor(t, "the hub to serve", func() bool { return strings.Contains(logs.String(), "wspubsub serving") })
	return addr, key
}

// TestClients runs `wspubsub pub` and `wspubsub sub` as processes against
// `wspubsub serve`, as the README's walk-through does.
func TestClients(t *testing.T) {
	bin := buildBinary(t)

	// Publisher first; subscribers print exactly the lines, with positions
	// under --meta; rewind and since pick up the history; the hub's 4001
	// after the grace period is shown.
	t.Run("lines", func(t *testing.T) {
		addr, key := serveForClients(t, bin, "--grace-period", "300ms")
		base := "ws://" + addr

		early := startClient(t, bin, false, "sub", base+"/ws/sub/test/hello")
		if code := early.exitCode(t); code == 0 {
			t.Errorf("a subscriber before the publisher exited 0")
		}
		if got := early.stderr.String(); !strings.Contains(got, "refused: HTTP 404 Not Found: topic not started") {
			t.Errorf("a subscriber before the publisher says %q, want the 404 and its body", got)
		}
		if early.stdout.String() != "" {
			t.Errorf("a refused subscriber printed %q on stdout", early.stdout.String())
		}

		pub := startClient(t, bin, true, "pub", base+"/ws/pub/"+key+"/test/hello")
		pub.waitStderr(t, "publishing to")
		plain := startClient(t, bin, false, "sub", base+"/ws/sub/test/hello")
		meta := startClient(t, bin, false, "sub", "--meta", base+"/ws/sub/test/hello")
		plain.waitStderr(t, "subscribed to")
		meta.waitStderr(t, "subscribed to")

		lines := []string{"hello", "", "héllo wörld", "tab\there", "ends in CRLF"}
		io.WriteString(pub.stdin, "hello\n\nhéllo wörld\ntab\there\nends in CRLF\r\n")
		plain.waitStdout(t, strings.Join(lines, "\n")+"\n")
		waitFor(t, "five lines from the --meta subscriber", func() bool { return strings.Count(meta.stdout.String(), "\n") == 5 })
		got := strings.Split(strings.TrimSuffix(meta.stdout.String(), "\n"), "\n")
		m := regexp.MustCompile(`^([A-Za-z0-9]{12}):1 hello$`).FindStringSubmatch(got[0])
		if m == nil {
			t.Fatalf("--meta printed %q first, want EPOCH:1 hello", got[0])
		}
		epoch := m[1]
		for i, line := range lines {
			if want := epoch + ":" + string(rune('1'+i)) + " " + line; got[i] != want {
				t.Errorf("--meta line %d: %q, want %q", i+1, got[i], want)
			}
		}

		// The history, through the query the flags add.
		since := startClient(t, bin, false, "sub", "--meta", "--since", epoch+":3", base+"/ws/sub/test/hello")
		since.waitStdout(t, epoch+":4 tab\there\n"+epoch+":5 ends in CRLF\n")
		rewind := startClient(t, bin, false, "sub", "--rewind", "2", base+"/ws/sub/test/hello")
		rewind.waitStdout(t, "tab\there\nends in CRLF\n")
		bad := startClient(t, bin, false, "sub", "--since", "nonsense", base+"/ws/sub/test/hello")
		if code := bad.exitCode(t); code != 1 || !strings.Contains(bad.stderr.String(), "HTTP 400 Bad Request") {
			t.Errorf("--since nonsense: exit %d, %q; want 1 and the hub's 400", code, bad.stderr.String())
		}

		// The end of stdin closes the publisher once the hub took everything.
		pub.stdin.Close()
		if code := pub.exitCode(t); code != 0 {
			t.Fatalf("pub exited %d at the end of its input", code)
		}
		if strings.Contains(pub.stderr.String(), key) {
			t.Errorf("pub printed the full API key: %q", pub.stderr.String())
		}
		for _, s := range []*clientProc{plain, meta, since, rewind} {
			if code := s.exitCode(t); code != 1 {
				t.Errorf("sub exited %d when the topic closed, want 1", code)
			}
			if got := s.stderr.String(); !strings.Contains(got, "closed by the hub: 4001 topic closed") {
				t.Errorf("sub says %q when the topic closed, want the 4001 and its reason", got)
			}
		}
		plain.waitStdout(t, strings.Join(lines, "\n")+"\n") // nothing more
	})

	// Binary frames, from --file and from lines, as hex and raw; Ctrl-C
	// ends a subscriber with 1000, echoed by the hub; the key in
	// Authorization: Bearer.
	t.Run("binary", func(t *testing.T) {
		addr, key := serveForClients(t, bin, "--grace-period", "30s")
		base := "ws://" + addr
		payload := []byte("\x00\x01bin\n\xff")
		file := filepath.Join(t.TempDir(), "msg.bin")
		if err := os.WriteFile(file, payload, 0o600); err != nil {
			t.Fatal(err)
		}
		textPub := startClient(t, bin, false, "pub", "--file", file, base+"/ws/pub/"+key+"/test/bin")
		if code := textPub.exitCode(t); code != 1 || !strings.Contains(textPub.stderr.String(), "not valid UTF-8") {
			t.Errorf("pub --file of invalid UTF-8 without --binary: exit %d, %q", code, textPub.stderr.String())
		}
		pub := startClient(t, bin, false, "pub", "--binary", "--file", file, "--key", key, base+"/ws/pub/test/bin")
		if code := pub.exitCode(t); code != 0 {
			t.Fatalf("pub --binary --file exited %d", code)
		}
		hexSub := startClient(t, bin, false, "sub", "--rewind", "1", base+"/ws/sub/test/bin")
		hexSub.waitStdout(t, hex.EncodeToString(payload)+"\n")
		raw := startClient(t, bin, false, "sub", "--raw", "--rewind", "1", base+"/ws/sub/test/bin")
		raw.waitStdout(t, string(payload))

		lines := startClient(t, bin, true, "pub", "--binary", "--key", key, base+"/ws/pub/test/bin")
		io.WriteString(lines.stdin, "a\nb\n")
		lines.stdin.Close()
		if code := lines.exitCode(t); code != 0 {
			t.Fatalf("pub --binary of lines exited %d", code)
		}
		hexSub.waitStdout(t, hex.EncodeToString(payload)+"\n61\n62\n")
		raw.waitStdout(t, string(payload)+"ab")

		for _, s := range []*clientProc{hexSub, raw} {
			s.cmd.Process.Signal(syscall.SIGINT)
			if code := s.exitCode(t); code != 0 {
				t.Errorf("sub exited %d after SIGINT, want 0", code)
			}
			if got := s.stderr.String(); !strings.Contains(got, "closed: 1000") || strings.Contains(got, "closed by the hub") {
				t.Errorf("sub says %q after SIGINT, want the hub's echo of its 1000", got)
			}
		}
	})

	// The hub's close of a publisher is reported, as is a refused key; a
	// waiting subscriber (--subscribe-waits) stays past the grace period.
	t.Run("refusals", func(t *testing.T) {
		addr, key := serveForClients(t, bin, "--max-message-size", "16", "--subscribe-waits", "--grace-period", "100ms")
		base := "ws://" + addr

		waiting := startClient(t, bin, false, "sub", base+"/ws/sub/test/later")
		waiting.waitStderr(t, "subscribed to")

		big := startClient(t, bin, true, "pub", base+"/ws/pub/"+key+"/test/big")
		io.WriteString(big.stdin, "short\n"+strings.Repeat("x", 100)+"\n")
		big.stdin.Close() // pub's close then crosses the hub's: it must still report the 1009
		if code := big.exitCode(t); code != 1 {
			t.Errorf("pub of a message over --max-message-size exited %d, want 1", code)
		}
		if got := big.stderr.String(); !strings.Contains(got, "closed by the hub: 1009") {
			t.Errorf("pub of a message over --max-message-size says %q, want the hub's 1009", got)
		}

		// A file is one message and its end at once: pub has sent its close
		// when the hub refuses the message, and must wait to say so.
		bigFile := filepath.Join(t.TempDir(), "big.txt")
		if err := os.WriteFile(bigFile, []byte(strings.Repeat("y", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
		bigPub := startClient(t, bin, false, "pub", "--file", bigFile, base+"/ws/pub/"+key+"/test/bigfile")
		if code := bigPub.exitCode(t); code != 1 || !strings.Contains(bigPub.stderr.String(), "closed by the hub: 1009") {
			t.Errorf("pub --file over --max-message-size: exit %d, %q; want 1 and the hub's 1009", code, bigPub.stderr.String())
		}

		wrong := startClient(t, bin, false, "pub", "--key", "wsp_00000000000000000000000000000000000000", base+"/ws/pub/test/big")
		if code := wrong.exitCode(t); code != 1 || !strings.Contains(wrong.stderr.String(), "refused: HTTP 401 Unauthorized") {
			t.Errorf("pub with a wrong key: exit %d, %q; want 1 and the 401", code, wrong.stderr.String())
		}

		time.Sleep(time.Second) // ten grace periods
		select {
		case <-waiting.done:
			t.Fatalf("a waiting subscriber was closed: %s", waiting.stderr.String())
		default:
		}
		waiting.cmd.Process.Signal(syscall.SIGINT)
		if code := waiting.exitCode(t); code != 0 || !strings.Contains(waiting.stderr.String(), "closed: 1000") {
			t.Errorf("waiting sub after SIGINT: exit %d, %q", code, waiting.stderr.String())
		}
	})

	// Ctrl-C while the handshake hangs gives up at once, not after --timeout.
	t.Run("interrupt", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		sub := startClient(t, bin, false, "sub", "--timeout", "30s", "ws://"+ln.Addr().String()+"/ws/sub/test/x")
		c, err := ln.Accept() // its request comes, and no answer
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sub.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-sub.done:
		case <-time.After(5 * time.Second):
			t.Fatal("sub did not give up on SIGINT during its handshake")
		}
		if code := sub.exitCode(t); code != 1 || !strings.Contains(sub.stderr.String(), "interrupted while connecting") {
			t.Errorf("sub interrupted while connecting: exit %d, %q", code, sub.stderr.String())
		}
	})

	// wss:// with --ca; without it the certificate is refused, with a hint.
	t.Run("tls", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		writeTestCert(t, 7, certFile, keyFile)
		addr, key := serveForClients(t, bin, "--tls-cert", certFile, "--tls-key", keyFile)
		base := "wss://" + addr

		untrusted := startClient(t, bin, false, "pub", "--key", key, base+"/ws/pub/test/tls")
		if code := untrusted.exitCode(t); code != 1 || !strings.Contains(untrusted.stderr.String(), "--ca FILE") {
			t.Errorf("pub to an untrusted certificate: exit %d, %q; want 1 and a hint", code, untrusted.stderr.String())
		}
		pub := startClient(t, bin, true, "pub", "--ca", certFile, "--key", key, base+"/ws/pub/test/tls")
		pub.waitStderr(t, "publishing to wss://")
		sub := startClient(t, bin, false, "sub", "--ca", certFile, base+"/ws/sub/test/tls")
		sub.waitStderr(t, "subscribed to")
		io.WriteString(pub.stdin, "over TLS\n")
		pub.stdin.Close()
		sub.waitStdout(t, "over TLS\n")
		if code := pub.exitCode(t); code != 0 {
			t.Errorf("pub over wss:// exited %d", code)
		}
	})
}

// TestClientsUsage: help lists the clients, and bad arguments exit 2
// before any connection.
func TestClientsUsage(t *testing.T) {
	code, out, _ := cli(t, "help")
	if code != 0 || !strings.Contains(out, "wspubsub sub [flags] URL") || !strings.Contains(out, "wspubsub pub [flags] URL") {
		t.Errorf("help: exit %d, %q; want both clients listed", code, out)
	}
	for _, args := range [][]string{
		{"sub"},
		{"pub"},
		{"sub", "--raw", "--meta", "ws://127.0.0.1:1/ws/sub/a/b"},
		{"sub", "ftp://127.0.0.1/ws/sub/a/b"},
		{"pub", "ws:///ws/pub/a/b"},
		{"sub", "--ca", "/nonexistent/ca.pem", "wss://127.0.0.1:1/ws/sub/a/b"},
	} {
		if code, _, stderr := cli(t, args...); code != 2 || stderr == "" {
			t.Errorf("wspubsub %s: exit %d, %q; want 2 and a reason", strings.Join(args, " "), code, stderr)
		}
	}
}
