package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// buildBinary builds the wspubsub command into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to build the binary with")
	}
	bin := filepath.Join(t.TempDir(), "wspubsub")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// addKey adds a key for domain to keysFile with the binary's CLI and
// returns it.
func addKey(t *testing.T, bin, keysFile, domain string) string {
	t.Helper()
	out, err := exec.Command(bin, "keys", "add", "--domain", domain, "--keys-file", keysFile).Output()
	if err != nil {
		t.Fatalf("keys add: %v", err)
	}
	return lastLine(string(out))
}

// startServe runs `bin serve args...` until the test ends, and returns its
// output, which is logged if the test fails.
func startServe(t *testing.T, bin string, args ...string) *syncBuffer {
	t.Helper()
	_, logs := startServeCmd(t, bin, args...)
	return logs
}

// startServeCmd is startServe for a test that signals or waits for the
// process itself.
func startServeCmd(t *testing.T, bin string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	logs := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("wspubsub serve %s:\n%s", strings.Join(args, " "), logs.String())
		}
	})
	return cmd, logs
}

// freePort returns a loopback address nothing listens on, as far as a
// listen and close can tell.
func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		// The kernel may hand a just-closed port out again: never give
		// one twice, or a test's hub and its metrics listener collide.
		if !portsGiven[addr] {
			portsGiven[addr] = true
			return addr
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[string]bool{}
)

// syncBuffer is a bytes.Buffer a subprocess and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var plainHTTP = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// status GETs url; 0 when there is no answer.
func status(url string) (int, string) {
	resp, err := plainHTTP.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// drainSubscriber is what one subscriber saw.
type drainSubscriber struct {
	got    atomic.Int64 // messages, gap-free from 0
	gap    error        // the first message out of sequence
	err    error        // what ended the reading
	closed time.Time    // when it ended
}

// TestSIGTERMDrainsUnderLoad runs the binary, loads it with a publisher and
// 50 subscribers, and sends SIGTERM while the publisher keeps sending: every
// message the hub accepted reaches every subscriber, everyone gets 1001, the
// subscribers' closes are spread over --drain-period, readiness drops at
// once, a new handshake gets 503, and the process exits 0 in time.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	const (
		numSubs         = 50
		minMessages     = 200 // each subscriber has this many before the signal
		drainPeriod     = time.Second
		shutdownTimeout = 5 * time.Second
	)
	bin := buildBinary(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")

	listen, metricsListen := freePort(t), freePort(t)
	cmd := exec.Command(bin, "serve", "--listen", listen, "--keys-file", keysFile,
		"--drain-period", drainPeriod.String(), "--shutdown-timeout", shutdownTimeout.String(),
		"--metrics-listen", metricsListen)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill() // a no-op once it has exited
		if t.Failed() {
			t.Logf("wspubsub serve's output:\n%s", logs.String())
		}
	})

	mainURL, metricsURL := "http://"+listen, "http://"+metricsListen
	deadline := time.Now().Add(10 * time.Second)
	for {
		c1, _ := status(mainURL + "/healthz")
		c2, _ := status(metricsURL + "/healthz")
		if c1 == http.StatusOK && c2 == http.StatusOK {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("wspubsub serve exited before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 200 from /healthz on both listeners: main %d, metrics %d", c1, c2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// --metrics-listen moves /metrics off the main listener.
	if code, _ := status(mainURL + "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the main listener with --metrics-listen: %d, want 404", code)
	}
	for _, path := range []string{"/readyz", "/metrics"} {
		if code, body := status(metricsURL + path); code != http.StatusOK {
			t.Fatalf("%s on the metrics listener: %d %q, want 200", path, code, body)
		}
	}

	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	wsURL := "ws://" + listen
	pub, _, err := dialer.Dial(wsURL+"/ws/pub/"+key+"/test/drain", nil)
	if err != nil {
		t.Fatalf("publisher: %v", err)
	}
	defer pub.Close()
	subs := make([]*drainSubscriber, numSubs)
	var readers sync.WaitGroup
	for i := range subs {
		c, _, err := dialer.Dial(wsURL+"/ws/sub/test/drain", nil)
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
		defer c.Close()
		s := &drainSubscriber{}
		subs[i] = s
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for {
				_, data, err := c.ReadMessage()
				if err != nil {
					s.err, s.closed = err, time.Now()
					return
				}
				n := s.got.Load()
				if s.gap == nil && (len(data) < 8 || binary.BigEndian.Uint64(data) != uint64(n)) {
					s.gap = fmt.Errorf("message %d: got %x", n, data[:min(8, len(data))])
				}
				if s.gap == nil {
					s.got.Add(1)
				}
			}
		}()
	}

	// The publisher sends a numbered message every half millisecond until
	// the hub closes it, and reads for its close frame.
	pubErr := make(chan error, 1)
	go func() {
		pub.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := pub.ReadMessage()
		pubErr <- err
	}()
	var sent atomic.Int64
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		msg := make([]byte, 64)
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for seq := uint64(0); ; seq++ {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg, seq)
			pub.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := pub.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	defer func() { close(stopPub); <-pubDone }()

	deadline = time.Now().Add(10 * time.Second)
	for {
		least := int64(-1)
		for _, s := range subs {
			if n := s.got.Load(); least < 0 || n < least {
				least = n
			}
		}
		if least >= minMessages {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the slowest subscriber has %d messages, want %d", least, minMessages)
		}
		time.Sleep(5 * time.Millisecond)
	}

	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness drops at once on the metrics listener, which still answers.
	for {
		code, _ := status(metricsURL + "/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if since := time.Since(signalled); since > 500*time.Millisecond {
			t.Fatalf("/readyz on the metrics listener still answers %d %v after SIGTERM, want 503", code, since)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("/readyz answered 503 %v after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	// A new handshake while draining is refused.
	if c, resp, err := dialer.Dial(wsURL+"/ws/sub/test/drain", nil); err == nil {
		c.Close()
		t.Errorf("a subscriber upgraded during the drain, want 503")
	} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("handshake during the drain: %v (response %v), want 503", err, resp)
	}

	// The publisher is closed first; once it has its 1001 the hub reads
	// nothing more from it, and the metrics listener still answers for the
	// rest of the drain.
	if err := <-pubErr; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("publisher: %v, want close 1001", err)
	}
	var received, delivered, draining float64 = -1, -1, -1
	if code, body := status(metricsURL + "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics on the metrics listener during the drain: %d, want 200", code)
	} else {
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("parsing /metrics: %v", err)
		}
		one := func(name string) float64 {
			mf, ok := mfs[name]
			if !ok || len(mf.GetMetric()) != 1 {
				t.Fatalf("/metrics: no single sample of %s", name)
			}
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
		received, delivered, draining = one("wspubsub_received_messages_total"), one("wspubsub_delivered_messages_total"), one("wspubsub_draining")
		if draining != 1 {
			t.Errorf("wspubsub_draining = %v during the drain, want 1", draining)
		}
	}

	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("wspubsub serve: %v, want exit status 0", err)
		}
		if took := time.Since(signalled); took > shutdownTimeout+time.Second {
			t.Errorf("wspubsub serve exited %v after SIGTERM, want within %v", took, shutdownTimeout+time.Second)
		}
		t.Logf("exited %v after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	case <-time.After(shutdownTimeout + time.Second - time.Since(signalled)):
		t.Fatalf("wspubsub serve still running %v after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	}
	readers.Wait()

	n := subs[0].got.Load()
	first, last := subs[0].closed, subs[0].closed
	for i, s := range subs {
		if s.gap != nil {
			t.Errorf("subscriber %d: %v", i, s.gap)
		}
		if got := s.got.Load(); got != n {
			t.Errorf("subscriber %d got messages 0..%d, subscriber 0 got 0..%d: the hub lost messages it had accepted", i, got-1, n-1)
		}
		if !websocket.IsCloseError(s.err, websocket.CloseGoingAway) {
			t.Errorf("subscriber %d: %v, want close 1001", i, s.err)
		}
		if s.closed.Before(first) {
			first = s.closed
		}
		if s.closed.After(last) {
			last = s.closed
		}
	}
	if n < minMessages {
		t.Errorf("subscribers got %d messages, want at least %d", n, minMessages)
	}
	if s := sent.Load(); n > s {
		t.Errorf("subscribers got %d messages, the publisher sent %d", n, s)
	}
	if received >= 0 && (received != float64(n) || delivered != float64(n*numSubs)) {
		t.Errorf("the hub received %v messages and delivered %v, the subscribers got %d each (%d in all)", received, delivered, n, n*numSubs)
	}
	if spread := last.Sub(first); spread < 2*drainPeriod/5 {
		t.Errorf("subscribers closed within %v of each other, want them spread over the %v drain period", spread, drainPeriod)
	}
	t.Logf("publisher sent %d, each subscriber got %d; closes spread over %v", sent.Load(), n, last.Sub(first).Round(time.Millisecond))
}
