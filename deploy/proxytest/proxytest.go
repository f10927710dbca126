// Package proxytest runs the real nginx and HAProxy with the configuration
// files deploy/ ships, for tests of the hub behind them: each file is used
// as it is, with only its ports, paths and certificate replaced, and a
// replacement that no longer finds its text fails the test, so the files
// cannot drift from what is tested.
//
// Each function is for one test's goroutine; the proxy runs in the
// foreground of a process group of its own, ended when the test ends.
package proxytest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proxy is a running proxy.
type Proxy struct {
	// Addr is the 127.0.0.1 address it listens on (TLS).
	Addr string
	out  *buffer
}

// Output is what the proxy wrote to its stdout and stderr so far.
func (p *Proxy) Output() string { return p.out.String() }

// Binary returns the path of a proxy's program: path if it exists, else
// name on PATH. Without one it skips the test, unless CI is set, where it
// fails: .ci/run installs Debian's nginx and haproxy.
func Binary(t testing.TB, name, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed (CI is set, so this fails instead of skipping; .ci/run installs it)", name)
	}
	t.Skipf("%s is not installed: apt-get install %s to run this test", name, name)
	return ""
}

// DeployFile is the path of a file in the repository's deploy directory,
// found from the test's working directory (a package directory).
func DeployFile(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "deploy", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no deploy/%s above the test's directory", name)
		}
		dir = parent
	}
}

// substitute reads file and makes each replacement, old then new; an old
// text that is not in the file fails the test.
func substitute(t testing.TB, file string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s no longer has %q: update the test with it", file, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// workDir makes a directory for a proxy's files that its unprivileged
// workers may enter (nginx run as root hands its work to nobody), removed
// when the test ends.
func workDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wspubsub-proxytest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// freeAddr is a 127.0.0.1 address with a port nothing listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartNginx runs nginx with deploy/nginx.conf, listening on a free
// 127.0.0.1 port with certFile and keyFile, proxying to the hub at
// upstream (host:port); its pid file and logs go to a directory of its own.
func StartNginx(t testing.TB, upstream, certFile, keyFile string) *Proxy {
	t.Helper()
	bin := Binary(t, "nginx", "/usr/sbin/nginx")
	dir := workDir(t)
	addr := freeAddr(t)
	conf := substitute(t, DeployFile(t, "nginx.conf"),
		"pid /run/nginx.pid;", "pid "+filepath.Join(dir, "nginx.pid")+";",
		"error_log /var/log/nginx/error.log;", "error_log "+filepath.Join(dir, "error.log")+";",
		"access_log /var/log/nginx/access.log;", "access_log "+filepath.Join(dir, "access.log")+";",
		"listen 443 ssl;", "listen "+addr+" ssl;",
		"server 127.0.0.1:8080;", "server "+upstream+";",
		"/etc/ssl/wspubsub/fullchain.pem", certFile,
		"/etc/ssl/wspubsub/privkey.pem", keyFile,
	)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return start(t, addr, bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path, "-g", "daemon off;")
}

// StartHAProxy runs haproxy with deploy/haproxy.cfg, listening on a free
// 127.0.0.1 port with pemFile (certificate chain and key), sending every
// connection to the hub at upstream (host:port) with its PROXY header; it
// logs to its stdout.
func StartHAProxy(t testing.TB, upstream, pemFile string) *Proxy {
	t.Helper()
	bin := Binary(t, "haproxy", "/usr/sbin/haproxy")
	dir := workDir(t)
	addr := freeAddr(t)
	conf := substitute(t, DeployFile(t, "haproxy.cfg"),
		"log /dev/log local0", "log stdout format raw local0",
		"bind :443 ssl crt /etc/haproxy/wspubsub.pem", "bind "+addr+" ssl crt "+pemFile,
		"10.0.0.11:8080", upstream,
		"10.0.0.12:8080", upstream, // both servers on the one hub
	)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	return start(t, addr, bin, "-db", "-f", path)
}

// The lines deploy/haproxy.cfg's comment gives for TLS passthrough, in
// place of its bind and default-server lines.
const (
	passthroughBind    = "bind :443"
	passthroughServers = "default-server send-proxy-v2 check check-send-proxy check-ssl verify required ca-file /etc/haproxy/wspubsub-ca.pem inter 2s fall 2 rise 2"
)

// StartHAProxyPassthrough runs haproxy with deploy/haproxy.cfg changed as
// its comment says for TLS passthrough: listening on a free 127.0.0.1
// port without TLS, sending every connection to the hub at upstream
// (host:port), which serves TLS itself, with its PROXY header before the
// client's TLS; its health checks speak TLS after their header and verify
// the hub's certificate with caFile. It logs to its stdout.
func StartHAProxyPassthrough(t testing.TB, upstream, caFile string) *Proxy {
	t.Helper()
	bin := Binary(t, "haproxy", "/usr/sbin/haproxy")
	dir := workDir(t)
	addr := freeAddr(t)
	conf := substitute(t, DeployFile(t, "haproxy.cfg"),
		// The comment's lines, there as they are used below.
		"#     "+passthroughBind+"\n", "#     "+passthroughBind+"\n",
		"#     "+passthroughServers+"\n", "#     "+passthroughServers+"\n",
		"log /dev/log local0", "log stdout format raw local0",
		"bind :443 ssl crt /etc/haproxy/wspubsub.pem alpn http/1.1", strings.Replace(passthroughBind, ":443", addr, 1),
		"default-server send-proxy-v2 check check-send-proxy inter 2s fall 2 rise 2",
		strings.Replace(passthroughServers, "/etc/haproxy/wspubsub-ca.pem", caFile, 1),
		"10.0.0.11:8080", upstream,
		"10.0.0.12:8080", upstream, // both servers on the one hub
	)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	return start(t, addr, bin, "-db", "-f", path)
}

// start runs a proxy in the foreground and waits until addr accepts
// connections.
func start(t testing.TB, addr, bin string, args ...string) *Proxy {
	t.Helper()
	p := &Proxy{Addr: addr, out: new(buffer)}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), p.Output())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", filepath.Base(bin), p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %v\n%s", filepath.Base(bin), addr, err, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buffer is a bytes.Buffer written by a process and read by the test.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
