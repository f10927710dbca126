// Package target is the hub a load run talks to: our binary started by the
// bench (with a fresh keys file and a free port), the reference hub started
// as a subprocess of the bench binary itself, an in-process reference hub
// for tests, or a hub someone else already runs.
//
// Every target is on the loopback range: the bench refuses any other
// address. Concurrency contract: a Target is used by one goroutine; Stop may
// be called more than once.
package target

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/refhub"
)

// Target is a hub under test.
type Target struct {
	// Name labels the target in reports: "ours", "reference" or the URL.
	Name string
	// Server is the hub's address.
	Server netip.AddrPort
	// Domain and Key let the bench publish.
	Domain string
	Key    string
	// PID is the hub's process id, or 0 when unknown (then server CPU and
	// memory are not reported).
	PID int
	// InProcess is true when the hub runs inside the bench's own process, so
	// its CPU and memory cannot be told from the client's.
	InProcess bool
	// Nodes are the hubs of a cluster target, Server first: subscribers are
	// spread over them, and the publishers (see the scenario package).
	// Nil for a single hub.
	Nodes []netip.AddrPort
	// PIDs are the processes of every node of a cluster target, measured
	// together; nil for a single hub (PID).
	PIDs []int

	children []*Target // the nodes a cluster target started
	killed   bool      // Kill ended it on purpose: Exited does not count it

	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	dir     string
	stop    func() error
}

// RoleEnv names the environment variable that makes the bench binary act as
// a helper process (see the scenario package); target uses it to start the
// reference hub.
const RoleEnv = "WSPUBSUB_BENCH_ROLE"

// Loopback checks that host:port is on 127.0.0.0/8 and returns it.
func Loopback(hostport string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("cannot parse address %q: %w", hostport, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("cannot parse address %q: the bench needs an IPv4 loopback address: %w", hostport, err)
	}
	if !a.Is4() || !a.IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("cannot target %s: load runs only go to 127.0.0.0/8", a)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("cannot parse port in %q", hostport)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// Attach returns a target for a hub that is already running at rawURL
// (ws://127.0.0.1:8080). pid may be 0.
func Attach(rawURL, domain, key string, pid int) (*Target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cannot parse hub URL %q: %w", rawURL, err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("cannot use hub URL %q: only ws:// is supported", rawURL)
	}
	ap, err := Loopback(u.Host)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return nil, errors.New("cannot publish to a running hub without --key")
	}
	if pid != 0 && !procfs.Alive(pid) {
		return nil, fmt.Errorf("cannot measure the hub: no process %d", pid)
	}
	return &Target{Name: rawURL, Server: ap, Domain: domain, Key: key, PID: pid, stop: func() error { return nil }}, nil
}

// AttachCluster returns a target for the nodes of a running cluster, at
// rawURLs (the first gets the publishers); pids, if given, are their
// processes.
func AttachCluster(rawURLs []string, domain, key string, pids []int) (*Target, error) {
	if len(rawURLs) == 0 {
		return nil, errors.New("cannot attach to a cluster of no hubs")
	}
	var t *Target
	for i, u := range rawURLs {
		pid := 0
		if len(pids) > 0 {
			if len(pids) != len(rawURLs) {
				return nil, fmt.Errorf("cannot measure %d hubs with %d process ids", len(rawURLs), len(pids))
			}
			pid = pids[i]
		}
		n, err := Attach(u, domain, key, pid)
		if err != nil {
			return nil, err
		}
		if t == nil {
			t = n
		}
		t.Nodes = append(t.Nodes, n.Server)
		if pid != 0 {
			t.PIDs = append(t.PIDs, pid)
		}
	}
	if len(rawURLs) > 1 {
		t.Name = fmt.Sprintf("%s and %d more nodes", rawURLs[0], len(rawURLs)-1)
	}
	return t, nil
}

// Servers are the addresses subscribers go to: every node.
func (t *Target) Servers() []netip.AddrPort {
	if len(t.Nodes) > 0 {
		return t.Nodes
	}
	return []netip.AddrPort{t.Server}
}

// Processes are the hub processes to measure: every node's, or none.
func (t *Target) Processes() []int {
	if len(t.PIDs) > 0 {
		return t.PIDs
	}
	if t.PID != 0 {
		return []int{t.PID}
	}
	return nil
}

// InProcess starts the reference hub inside this process on a free
// loopback port; tests use it.
func InProcess(domain string, cfg refhub.Config) (*Target, error) {
	key := randomKey()
	cfg.Keys = map[string]string{key: domain}
	s, err := refhub.Listen("127.0.0.1:0", cfg)
	if err != nil {
		return nil, err
	}
	ap, err := Loopback(s.Addr)
	if err != nil {
		return nil, err
	}
	return &Target{
		Name: "reference", Server: ap, Domain: domain, Key: key, PID: os.Getpid(), InProcess: true,
		stop: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return s.Close(ctx)
		},
	}, nil
}

// HubOptions are passed to a hub the bench starts.
type HubOptions struct {
	Domain         string
	SubscribeWaits bool
	MaxBacklog     int64         // bytes; 0 leaves the hub's default
	GracePeriod    time.Duration // 0 leaves the hub's default
	// PingInterval and PongTimeout, when set, are passed to both hubs
	// (--ping-interval, --pong-timeout): a subscriber that answers no ping
	// is closed with 4003.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// HistorySize, when positive, is our hub's --history-size (messages
	// kept per topic for since and rewind); 0 leaves its default (a hub
	// without history is --hub-arg --history-size=0). The reference hub
	// keeps none.
	HistorySize int
	// ExtraArgs are appended to our hub's serve command line.
	ExtraArgs []string
	// Stderr receives the hub's output besides its log file; may be nil.
	Stderr *os.File
	// LogPath, when set, is where the hub's output goes (appended) and
	// stays after the run; otherwise it goes to a temporary file that Stop
	// removes.
	LogPath string
}

// StartOurs runs `bin keys add` for a fresh key and `bin serve` on a free
// loopback port, and waits until it accepts connections.
func StartOurs(ctx context.Context, bin string, opt HubOptions) (*Target, error) {
	dir, keys, key, err := addKey(ctx, bin, opt.Domain)
	if err != nil {
		return nil, err
	}
	t, err := startOne(ctx, bin, dir, keys, key, nil, opt)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t.dir = dir
	return t, nil
}

// StartCluster runs n nodes of our hub, clustered over the NATS server at
// natsURL under a cluster name of their own, sharing one key file; the
// first node gets the publishers. It waits until every node is ready.
func StartCluster(ctx context.Context, bin string, n int, natsURL string, opt HubOptions) (*Target, error) {
	dir, keys, key, err := addKey(ctx, bin, opt.Domain)
	if err != nil {
		return nil, err
	}
	t := &Target{Name: fmt.Sprintf("ours, %d nodes", n), Domain: opt.Domain, Key: key, dir: dir}
	t.stop = func() error {
		var errs []error
		for _, c := range t.children {
			errs = append(errs, c.Stop())
		}
		return errors.Join(errs...)
	}
	name := "bench" + strings.ToLower(rand.Text()[:8])
	for i := range n {
		o := opt
		if o.LogPath != "" {
			o.LogPath = fmt.Sprintf("%s.node%d", opt.LogPath, i+1)
		}
		extra := []string{"--nats-url", natsURL, "--cluster-name", name, "--node-name", fmt.Sprintf("node%d", i+1)}
		logDir := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		if err := os.Mkdir(logDir, 0o755); err != nil {
			t.Stop()
			return nil, fmt.Errorf("cannot make a directory for node %d's log: %w", i+1, err)
		}
		c, err := startOne(ctx, bin, logDir, keys, key, extra, o)
		if err != nil {
			t.Stop()
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		t.children = append(t.children, c)
		t.Nodes = append(t.Nodes, c.Server)
		t.PIDs = append(t.PIDs, c.PID)
	}
	t.Server, t.PID = t.Nodes[0], t.PIDs[0]
	for _, c := range t.children {
		if err := c.waitReady(ctx, 15*time.Second); err != nil {
			t.Stop()
			return nil, err
		}
	}
	return t, nil
}

// addKey makes a key file with a key for domain in a new directory.
func addKey(ctx context.Context, bin, domain string) (dir, keys, key string, err error) {
	dir, err = os.MkdirTemp("", "wspubsub-bench-")
	if err != nil {
		return "", "", "", fmt.Errorf("cannot make a directory for the hub's keys: %w", err)
	}
	keys = filepath.Join(dir, "keys")
	out, err := exec.CommandContext(ctx, bin, "keys", "add", "--domain", domain, "--keys-file", keys).Output()
	if err != nil {
		os.RemoveAll(dir)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return "", "", "", fmt.Errorf("cannot add a key with %s keys add: %w", bin, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	key = strings.TrimSpace(lines[len(lines)-1])
	if key == "" {
		os.RemoveAll(dir)
		return "", "", "", fmt.Errorf("cannot add a key: %s keys add printed nothing", bin)
	}
	return dir, keys, key, nil
}

// startOne runs `bin serve` on a free port with the key file keys, its
// output in dir (removed by the caller).
func startOne(ctx context.Context, bin, dir, keys, key string, extra []string, opt HubOptions) (*Target, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"serve", "--listen", listen, "--keys-file", keys}
	if opt.SubscribeWaits {
		args = append(args, "--subscribe-waits")
	}
	if opt.MaxBacklog > 0 {
		args = append(args, "--max-backlog", strconv.FormatInt(opt.MaxBacklog, 10))
	}
	if opt.GracePeriod > 0 {
		args = append(args, "--grace-period", opt.GracePeriod.String())
	}
	args = append(args, keepaliveArgs(opt)...)
	if opt.HistorySize > 0 {
		args = append(args, "--history-size", strconv.Itoa(opt.HistorySize))
	}
	args = append(args, extra...)
	args = append(args, opt.ExtraArgs...)
	t := &Target{Name: "ours", Domain: opt.Domain, Key: key, dir: dir}
	err = t.spawn(ctx, bin, args, nil, listen, opt)
	t.dir = "" // the caller's
	if err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", bin, err)
	}
	return t, nil
}

// keepaliveArgs are the flags both hubs take for pings.
func keepaliveArgs(opt HubOptions) []string {
	var args []string
	if opt.PingInterval > 0 {
		args = append(args, "--ping-interval", opt.PingInterval.String())
	}
	if opt.PongTimeout > 0 {
		args = append(args, "--pong-timeout", opt.PongTimeout.String())
	}
	return args
}

// waitReady waits until the hub's /readyz answers 200.
func (t *Target) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", t.Server.String(), time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "GET /readyz HTTP/1.1\r\nHost: bench\r\n\r\n")
			var buf [32]byte
			n, _ := io.ReadAtLeast(c, buf[:], 12)
			c.Close()
			if n >= 12 && string(buf[9:12]) == "200" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hub %s not ready within %v: %s", t.Server, d, t.LogTail(1024))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartReference runs the reference hub as a subprocess of the bench binary
// self (normally os.Executable()), so its CPU and memory are measured the
// way ours are.
func StartReference(ctx context.Context, self string, opt HubOptions) (*Target, error) {
	dir, err := os.MkdirTemp("", "wspubsub-bench-ref-")
	if err != nil {
		return nil, fmt.Errorf("cannot make a directory for the reference hub's log: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	key := randomKey()
	args := []string{"refhub", "--listen", listen, "--key", key, "--domain", opt.Domain}
	if opt.SubscribeWaits {
		args = append(args, "--subscribe-waits")
	}
	if opt.GracePeriod > 0 {
		args = append(args, "--grace-period", opt.GracePeriod.String())
	}
	args = append(args, keepaliveArgs(opt)...)
	t := &Target{Name: "reference", Domain: opt.Domain, Key: key, dir: dir}
	env := []string{RoleEnv + "=refhub"}
	if err := t.spawn(ctx, self, args, env, listen, opt); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot start the reference hub: %w", err)
	}
	return t, nil
}

func (t *Target) spawn(ctx context.Context, bin string, args, env []string, listen string, opt HubOptions) error {
	ap, err := Loopback(listen)
	if err != nil {
		return err
	}
	t.Server = ap
	t.logPath = filepath.Join(t.dir, "hub.log")
	if opt.LogPath != "" {
		t.logPath = opt.LogPath
	}
	logf, err := os.OpenFile(t.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot create the hub's log file: %w", err)
	}
	fmt.Fprintf(logf, "# %s %s\n", bin, strings.Join(args, " "))
	stderr := opt.Stderr
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if stderr != nil {
		cmd.Stderr = io.MultiWriter(logf, stderr)
	}
	// The hub dies with the bench even if the bench is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	t.cmd = cmd
	t.PID = cmd.Process.Pid
	t.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(t.exited)
	}()
	t.stop = t.stopProcess
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-t.exited:
			return fmt.Errorf("hub exited before listening on %s: %s", listen, t.LogTail(2048))
		case <-ctx.Done():
			t.stopProcess()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.stopProcess()
			return fmt.Errorf("hub did not listen on %s within 15 s: %s", listen, t.LogTail(2048))
		}
	}
}

func (t *Target) stopProcess() error {
	if t.cmd == nil {
		return nil
	}
	select {
	case <-t.exited:
		return nil
	default:
	}
	t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	t.cmd.Process.Kill()
	<-t.exited
	return fmt.Errorf("hub %d did not stop within 10 s of SIGTERM; killed", t.PID)
}

// Kill ends node i (0-based) of a cluster the bench started with SIGKILL,
// as a crash would, and waits until it is gone. Exited does not count it.
func (t *Target) Kill(i int) error {
	if i < 0 || i >= len(t.children) {
		return fmt.Errorf("cannot kill node %d: the cluster has %d nodes the bench started", i+1, len(t.children))
	}
	c := t.children[i]
	if c.cmd == nil || c.Exited() {
		return fmt.Errorf("cannot kill node %d: it is not running", i+1)
	}
	c.killed = true
	if err := c.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("cannot kill node %d (pid %d): %w", i+1, c.PID, err)
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("node %d (pid %d) still runs 10 s after SIGKILL", i+1, c.PID)
	}
}

// Exited reports whether a hub the bench started has exited, other than
// by Kill.
func (t *Target) Exited() bool {
	for _, c := range t.children {
		if !c.killed && c.Exited() {
			return true
		}
	}
	if t.exited == nil {
		return false
	}
	select {
	case <-t.exited:
		return true
	default:
		return false
	}
}

// LogTail returns up to the last n bytes the started hub wrote.
func (t *Target) LogTail(n int) string {
	if len(t.children) > 0 {
		var parts []string
		for i, c := range t.children {
			if tail := c.LogTail(n / len(t.children)); tail != "" {
				parts = append(parts, fmt.Sprintf("node %d: %s", i+1, tail))
			}
		}
		return strings.Join(parts, "\n")
	}
	if t.logPath == "" {
		return ""
	}
	b, err := os.ReadFile(t.logPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// Stop stops a hub the bench started (SIGTERM, then SIGKILL after 10 s)
// and removes its temporary files.
func (t *Target) Stop() error {
	var err error
	if t.stop != nil {
		err = t.stop()
		t.stop = nil
	}
	if t.dir != "" {
		os.RemoveAll(t.dir)
		t.dir = ""
	}
	return err
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomKey() string {
	return "ref" + rand.Text()
}

// StartNATS runs a throwaway NATS server with JetStream, bin (a
// nats-server binary), on a free 127.0.0.1 port with its storage in a
// temporary directory, and returns its URL and a function that stops it
// and removes the directory. For runs on a machine without a NATS server
// (the smoke in CI).
func StartNATS(ctx context.Context, bin string) (url string, stop func() error, err error) {
	dir, err := os.MkdirTemp("", "wspubsub-bench-nats-")
	if err != nil {
		return "", nil, fmt.Errorf("cannot make a directory for NATS: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	t := &Target{Name: "nats", dir: dir}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "store")}
	if err := t.spawn(ctx, bin, args, nil, listen, HubOptions{}); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("cannot start NATS %s: %w", bin, err)
	}
	return "nats://" + listen, t.Stop, nil
}
