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
	dir, err := os.MkdirTemp("", "wspubsub-bench-")
	if err != nil {
		return nil, fmt.Errorf("cannot make a directory for the hub's keys: %w", err)
	}
	keys := filepath.Join(dir, "keys")
	out, err := exec.CommandContext(ctx, bin, "keys", "add", "--domain", opt.Domain, "--keys-file", keys).Output()
	if err != nil {
		os.RemoveAll(dir)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, fmt.Errorf("cannot add a key with %s keys add: %w", bin, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if key == "" {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot add a key: %s keys add printed nothing", bin)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
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
	args = append(args, opt.ExtraArgs...)
	t := &Target{Name: "ours", Domain: opt.Domain, Key: key, dir: dir}
	if err := t.spawn(ctx, bin, args, nil, listen, opt); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot start %s: %w", bin, err)
	}
	return t, nil
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

// Exited reports whether a hub the bench started has exited.
func (t *Target) Exited() bool {
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
