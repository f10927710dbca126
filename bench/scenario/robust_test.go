package scenario

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/target"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// ourHub runs our hub in this process, serving /metrics on its main
// listener as `wspubsub serve` does. Its process metrics are the test
// binary's, clients included, so the tests loosen the memory tolerance.
func ourHub(t *testing.T, opts ...func(*server.Config)) *target.Target {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.Add(context.Background(), "bench", "bench")
	if err != nil {
		t.Fatal(err)
	}
	var srv atomic.Pointer[server.Server]
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		s := srv.Load()
		if s == nil {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		s.MetricsHandler().ServeHTTP(w, r)
	})
	cfg := server.Config{
		Listen: "127.0.0.1:0", Keys: store, HTTP: mux,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Store(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	ap, err := target.Loopback(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return &target.Target{Name: "ours", Server: ap, Domain: "bench", Key: key, InProcess: true}
}

// loose is the tolerance for a hub sharing the test's process.
var loose = result.Tolerance{Goroutines: 5, OpenFDs: 5, RSSBytes: 64 << 20, RSSFraction: 1}

func TestSoak(t *testing.T) {
	tg := ourHub(t, func(c *server.Config) { c.GracePeriod = 200 * time.Millisecond; c.CloseTimeout = time.Second })
	o := Options{
		Scenario: "soak", Topics: 2, SubsPerTopic: 5, Size: 64, Rate: 50, Duration: 3 * time.Second,
		ChurnRate: 40, ChurnLife: 300 * time.Millisecond, Workers: 2, Settle: 50 * time.Millisecond,
		DrainTimeout: 3 * time.Second, Timeout: time.Minute, SettleTimeout: 20 * time.Second, Tolerance: loose,
		Sources: []string{"127.0.0.2", "127.0.0.3"},
	}
	r := run(t, tg, o)
	s := r.Soak
	if s == nil || !s.Settled {
		t.Fatalf("soak: %+v", s)
	}
	n := 0
	for _, v := range s.Clients {
		n += v
	}
	if n < 80 || s.Expected != n || len(s.Unexpected) != 0 {
		t.Errorf("%d short-lived clients, %d as expected, unexpected %v", n, s.Expected, s.Unexpected)
	}
	for _, k := range kindNames {
		if k != kindNames[kindOwnSub] && s.Clients[k] == 0 {
			t.Errorf("no %s among %v", k, s.Clients)
		}
	}
	if s.Peak.Connections < 10 || s.Peak.Topics < 2 || s.End.Connections != 0 || s.End.Topics != 0 {
		t.Errorf("peak %+v end %+v", s.Peak, s.End)
	}
	if r.Expected != 10*150 || r.Lost != 0 || s.Delivered == 0 || s.Published == 0 {
		t.Errorf("expected %d lost %d; short-lived delivered %d published %d", r.Expected, r.Lost, s.Delivered, s.Published)
	}
}

// TestSoakReportsLeaks: a hub whose metrics do not come back fails the
// soak, naming what stayed. The clients talk to the reference hub; the
// metrics are a fake that keeps 3 connections and a topic forever.
func TestSoakReportsLeaks(t *testing.T) {
	tg := refTarget(t)
	var scrapes atomic.Int64
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held := 3
		if scrapes.Add(1) <= 2 {
			held = 0 // the start
		}
		fmt.Fprintln(w, "go_goroutines 10\nprocess_open_fds 12\nprocess_resident_memory_bytes 1e7")
		fmt.Fprintf(w, "wspubsub_connections{role=\"subscriber\"} %d\n", held)
		fmt.Fprintf(w, "wspubsub_topics %d\n", held/3)
	}))
	defer metrics.Close()
	o := Options{
		Scenario: "soak", Topics: 1, SubsPerTopic: 2, Size: 64, Rate: 20, Duration: time.Second,
		ChurnRate: 10, ChurnLife: 200 * time.Millisecond, Workers: 1, Timeout: time.Minute,
		SettleTimeout: 2 * time.Second, MetricsURL: metrics.URL,
	}
	r, err := Run(context.Background(), tg, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pass() || r.Soak == nil || r.Soak.Settled {
		t.Fatalf("a hub that keeps connections passed: %v %v", r.Errors, r.Failures)
	}
	all := strings.Join(r.Failures, "\n")
	if !strings.Contains(all, "3 connections left") || !strings.Contains(all, "1 topics left") || strings.Contains(all, "goroutines") {
		t.Errorf("failures %q do not name what was left, and only that", r.Failures)
	}
	// The soak refuses a hub that already holds connections.
	r, err = Run(context.Background(), tg, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) == 0 || !strings.Contains(r.Errors[0], "hub of its own") {
		t.Errorf("errors %q", r.Errors)
	}
}

func TestSlowConsumer(t *testing.T) {
	const backlog = 64 << 10
	tg := ourHub(t, func(c *server.Config) { c.MaxBacklog = backlog })
	o := Options{
		Scenario: "slowconsumer", SubsPerTopic: 20, Size: 8192, Rate: 200, MaxBacklog: backlog,
		Stall: time.Second, Window: 500 * time.Millisecond, CutoffTimeout: 30 * time.Second,
		MaxP99Jump: time.Second, Tolerance: loose, Workers: 2, Settle: 50 * time.Millisecond,
		DrainTimeout: 3 * time.Second, Timeout: time.Minute,
	}
	r := run(t, tg, o)
	s := r.Slow
	if !s.CutOff || s.CloseCode != 4000 || s.Disconnects != 1 || s.Dropped < 1 {
		t.Errorf("slow consumer: %+v", s)
	}
	if s.QueuedBytes < backlog || s.QueuedBytes > backlog+s.KernelBuffer {
		t.Errorf("%d bytes queued for a bound of %d + kernel %d", s.QueuedBytes, backlog, s.KernelBuffer)
	}
	if r.Subscribers != 20 || r.Lost != 0 || r.Expected == 0 || r.Expected != r.Delivered {
		t.Errorf("fast subscribers: %d, expected %d delivered %d lost %d", r.Subscribers, r.Expected, r.Delivered, r.Lost)
	}
	if s.Before.Count == 0 || s.After.Count == 0 {
		t.Errorf("latency windows: before %+v after %+v", s.Before, s.After)
	}
}

// TestSlowConsumerNeedsOurHub: the reference hub has no /metrics.
func TestSlowConsumerNeedsOurHub(t *testing.T) {
	r, err := Run(context.Background(), refTarget(t), Options{Scenario: "slowconsumer", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r.Pass() || len(r.Errors) == 0 {
		t.Fatalf("ran against the reference hub: %+v", r)
	}
}
