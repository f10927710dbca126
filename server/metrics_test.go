package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wspubsub/wspubsub/server"
)

// metricsHub is a hub whose main listener serves /metrics, /healthz and
// /readyz through Config.HTTP, as `wspubsub serve` does.
type metricsHub struct {
	*hub
	http *http.Client
}

// startMetricsHub starts a hub with the observability mux. The handlers need
// the server and the server needs the handlers, so they find it through an
// atomic pointer set once Start returns; before, they answer 503.
func startMetricsHub(t *testing.T, opts ...func(*server.Config)) *metricsHub {
	t.Helper()
	var srv atomic.Pointer[server.Server]
	lazy := func(h func(*server.Server) http.Handler) http.Handler {
		var once sync.Once
		var handler http.Handler
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := srv.Load()
			if s == nil {
				http.Error(w, "starting", http.StatusServiceUnavailable)
				return
			}
			once.Do(func() { handler = h(s) })
			handler.ServeHTTP(w, r)
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", lazy((*server.Server).MetricsHandler))
	mux.Handle("/healthz", lazy((*server.Server).HealthHandler))
	mux.Handle("/readyz", lazy((*server.Server).ReadyHandler))
	h := startHub(t, append([]func(*server.Config){func(c *server.Config) { c.HTTP = mux }}, opts...)...)
	srv.Store(h.Server)
	return &metricsHub{hub: h, http: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

// get fetches path from the main listener.
func (h *metricsHub) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := h.http.Get("http://" + h.Addr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// scrape is one parsed /metrics answer.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

// parseMetrics parses the Prometheus text format.
func parseMetrics(t testing.TB, text string) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, text)
	}
	return scrape{text: text, families: mfs}
}

// scrape GETs /metrics over HTTP from the main listener and parses it.
func (h *metricsHub) scrape(t testing.TB) scrape {
	t.Helper()
	resp, err := h.http.Get("http://" + h.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: reading the body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %q", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	return parseMetrics(t, string(body))
}

// scrapeUntil scrapes until cond holds, failing the test after 5 seconds,
// and returns the scrape that satisfied it.
func (h *metricsHub) scrapeUntil(t testing.TB, what string, cond func(s scrape) bool) scrape {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := h.scrape(t)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last scrape:\n%s", what, s.text)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// find returns the sample of family name with exactly the labels given as
// name, value pairs. A histogram's sample count is asked for as name_count.
func (s scrape) find(name string, labels ...string) (float64, bool) {
	family, histogramCount := name, false
	mf, ok := s.families[family]
	if !ok {
		if base, cut := strings.CutSuffix(name, "_count"); cut {
			family, histogramCount = base, true
			mf, ok = s.families[family]
		}
	}
	if !ok {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		switch {
		case histogramCount && m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case histogramCount:
			return 0, false
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// value is find that fails the test when the sample is missing.
func (s scrape) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.find(name, labels...)
	if !ok {
		t.Fatalf("no sample %s%v in /metrics", name, labels)
	}
	return v
}

// delta is the change of a sample between two scrapes; a sample missing
// from before counts as 0 there.
type delta struct{ before, after scrape }

func (d delta) of(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	b, _ := d.before.find(name, labels...)
	return d.after.value(t, name, labels...) - b
}

// check is one expected value: a delta of a counter or the value of a gauge.
type check struct {
	name   string
	labels []string
	want   float64
	gauge  bool // compare the value itself, not its change
}

func (d delta) expect(t testing.TB, phase string, checks []check) {
	t.Helper()
	for _, c := range checks {
		got := d.after.value(t, c.name, c.labels...)
		what := "value"
		if !c.gauge {
			got, what = d.of(t, c.name, c.labels...), "change"
		}
		if got != c.want {
			t.Errorf("%s: %s%v: %s %v, want %v", phase, c.name, c.labels, what, got, c.want)
		}
	}
}

// metricTypes are the hub's metric families and their types: the README's
// table lists the same. key_cache_lookups_total is there only with a key
// store that has a cache.
var metricTypes = map[string]dto.MetricType{
	"wspubsub_connections":                           dto.MetricType_GAUGE,
	"wspubsub_handshakes_in_progress":                dto.MetricType_GAUGE,
	"wspubsub_topics":                                dto.MetricType_GAUGE,
	"wspubsub_connections_accepted_total":            dto.MetricType_COUNTER,
	"wspubsub_handshakes_refused_total":              dto.MetricType_COUNTER,
	"wspubsub_disconnects_total":                     dto.MetricType_COUNTER,
	"wspubsub_received_messages_total":               dto.MetricType_COUNTER,
	"wspubsub_received_bytes_total":                  dto.MetricType_COUNTER,
	"wspubsub_delivered_messages_total":              dto.MetricType_COUNTER,
	"wspubsub_delivered_bytes_total":                 dto.MetricType_COUNTER,
	"wspubsub_subscriber_writes_total":               dto.MetricType_COUNTER,
	"wspubsub_dropped_messages_total":                dto.MetricType_COUNTER,
	"wspubsub_key_checks_total":                      dto.MetricType_COUNTER,
	"wspubsub_key_cache_lookups_total":               dto.MetricType_COUNTER,
	"wspubsub_topics_expired_total":                  dto.MetricType_COUNTER,
	"wspubsub_build_info":                            dto.MetricType_GAUGE,
	"wspubsub_key_store_up":                          dto.MetricType_GAUGE,
	"wspubsub_draining":                              dto.MetricType_GAUGE,
	"wspubsub_ready":                                 dto.MetricType_GAUGE,
	"wspubsub_history_bytes":                         dto.MetricType_GAUGE,
	"wspubsub_replays_total":                         dto.MetricType_COUNTER,
	"wspubsub_replayed_messages_total":               dto.MetricType_COUNTER,
	"wspubsub_gap_notices_total":                     dto.MetricType_COUNTER,
	"wspubsub_http_publishes_total":                  dto.MetricType_COUNTER,
	"wspubsub_compressed_messages_total":             dto.MetricType_COUNTER,
	"wspubsub_compressed_input_bytes_total":          dto.MetricType_COUNTER,
	"wspubsub_compressed_output_bytes_total":         dto.MetricType_COUNTER,
	"wspubsub_compressed_deliveries_total":           dto.MetricType_COUNTER,
	"wspubsub_compressed_delivered_wire_bytes_total": dto.MetricType_COUNTER,
	"wspubsub_fanout_duration_seconds":               dto.MetricType_HISTOGRAM,
	"wspubsub_handshake_duration_seconds":            dto.MetricType_HISTOGRAM,
}

// checkFamilies checks that the wspubsub families are the documented ones
// with their types, and that no label names a domain or a topic: those are
// unbounded, and a scrape must not grow with the number of topics.
func checkFamilies(t *testing.T, s scrape) {
	t.Helper()
	for name, mf := range s.families {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if l := strings.ToLower(lp.GetName()); strings.Contains(l, "domain") || strings.Contains(l, "topic") {
					t.Errorf("%s has a label %q=%q: no metric may be labelled by domain or topic", name, lp.GetName(), lp.GetValue())
				}
			}
		}
		if !strings.HasPrefix(name, "wspubsub_") {
			continue
		}
		want, ok := metricTypes[name]
		switch {
		case !ok:
			t.Errorf("undocumented metric %s (%s): add it to metricTypes and the README", name, mf.GetType())
		case mf.GetType() != want:
			t.Errorf("%s is a %s, want a %s", name, mf.GetType(), want)
		case mf.GetHelp() == "":
			t.Errorf("%s has no help text", name)
		}
	}
	for name := range metricTypes {
		if _, ok := s.families[name]; !ok && name != "wspubsub_key_cache_lookups_total" {
			t.Errorf("metric %s is missing from /metrics", name)
		}
	}
}

// lint runs the Prometheus linter on the hub's registry (what
// testutil.GatherAndLint does: it is promlint over Gather) and on the text a
// scrape served, and `promtool check metrics` (skipped when promtool is
// missing, unless CI is set).
func lint(t *testing.T, srv *server.Server, text string) {
	t.Helper()
	mfs, err := srv.Registry().Gather()
	if err != nil {
		t.Fatalf("Registry().Gather: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("linting the registry: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint (registry): %s: %s", p.Metric, p.Text)
	}
	problems, err = promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("linting the scrape: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint (scrape): %s: %s", p.Metric, p.Text)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		// CI installs it (.ci/run): there, a missing promtool is a failure.
		if os.Getenv("CI") != "" {
			t.Errorf("CI is set and promtool is not on PATH (Debian package prometheus): cannot run `promtool check metrics`")
			return
		}
		t.Log("promtool is not on PATH: skipping `promtool check metrics`")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestMetricsAfterTraffic drives real traffic through a hub and checks, by
// scraping /metrics over HTTP from its main listener, that every number
// moved by exactly what the traffic calls for.
func TestMetricsAfterTraffic(t *testing.T) {
	const (
		grace   = 200 * time.Millisecond
		version = "v1.2.3-metrics-test"
	)
	h := startMetricsHub(t, func(c *server.Config) {
		c.GracePeriod = grace
		c.Version = version
		c.MaxBacklog = 64 << 10 // for the slow consumer
	})
	if code, body := h.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %q, want 200", code, body)
	}
	if code, body := h.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d %q, want 200", code, body)
	}
	s0 := h.scrape(t)
	checkFamilies(t, s0)

	// Phase 1: a publisher, three subscribers, messages of known sizes sent
	// in lock step (each read of the publisher holds one message, so one
	// fan-out each), and handshakes refused for known reasons.
	p := h.pub(t, "test", "news")
	subs := []*websocket.Conn{h.sub(t, "test", "news"), h.sub(t, "test", "news"), h.sub(t, "test", "news")}
	sizes := []int{0, 1, 10, 125, 126, 1000, 65535, 65536, 70000, 3}
	total := 0
	for i, n := range sizes {
		typ := websocket.BinaryMessage
		if i%2 == 0 {
			typ = websocket.TextMessage
		}
		msg := bytes.Repeat([]byte{'a' + byte(i)}, n)
		if err := p.WriteMessage(typ, msg); err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			expect(t, s, typ, msg)
		}
		total += n
	}
	otherKey, err := h.keys.Add(context.Background(), "other", "o")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		path string
		want int
	}{
		{"/ws/pub/" + otherKey + "/test/news", http.StatusUnauthorized}, // key checked, refused
		{"/ws/pub/garbage/test/news", http.StatusUnauthorized},          // malformed: never checked
		{"/ws/pub/" + h.key + "/test/news", http.StatusConflict},        // key accepted, topic taken
		{"/ws/sub/test/nothing", http.StatusNotFound},
	} {
		if got := h.refused(t, r.path, nil); got != r.want {
			t.Fatalf("%s: %d, want %d", r.path, got, r.want)
		}
	}
	m := len(sizes)
	s1 := h.scrapeUntil(t, "phase 1's deliveries and fan-outs", func(s scrape) bool {
		d, _ := s.find("wspubsub_delivered_messages_total")
		f, _ := s.find("wspubsub_fanout_duration_seconds_count")
		k, _ := s.find("wspubsub_key_checks_total", "result", "accepted")
		hs, _ := s.find("wspubsub_handshake_duration_seconds_count")
		return d >= float64(3*m) && f >= float64(m) && k >= 2 && hs >= 4
	})
	d := delta{s0, s1}
	d.expect(t, "phase 1", []check{
		{name: "wspubsub_received_messages_total", want: float64(m)},
		{name: "wspubsub_received_bytes_total", want: float64(total)},
		{name: "wspubsub_delivered_messages_total", want: float64(3 * m)},
		{name: "wspubsub_delivered_bytes_total", want: float64(3 * total)},
		{name: "wspubsub_subscriber_writes_total", want: float64(3 * m)},
		{name: "wspubsub_dropped_messages_total", labels: []string{"reason", "no_subscribers"}, want: 0},
		{name: "wspubsub_dropped_messages_total", labels: []string{"reason", "slow_consumer"}, want: 0},
		{name: "wspubsub_dropped_messages_total", labels: []string{"reason", "closing"}, want: 0},
		{name: "wspubsub_connections", labels: []string{"role", "publisher"}, want: 1, gauge: true},
		{name: "wspubsub_connections", labels: []string{"role", "subscriber"}, want: 3, gauge: true},
		{name: "wspubsub_connections_accepted_total", labels: []string{"role", "publisher"}, want: 1},
		{name: "wspubsub_connections_accepted_total", labels: []string{"role", "subscriber"}, want: 3},
		{name: "wspubsub_handshakes_refused_total", labels: []string{"reason", "unauthorized"}, want: 2},
		{name: "wspubsub_handshakes_refused_total", labels: []string{"reason", "topic_has_publisher"}, want: 1},
		{name: "wspubsub_handshakes_refused_total", labels: []string{"reason", "topic_not_started"}, want: 1},
		{name: "wspubsub_handshakes_refused_total", labels: []string{"reason", "no_endpoint"}, want: 0},
		{name: "wspubsub_handshakes_refused_total", labels: []string{"reason", "shutting_down"}, want: 0},
		{name: "wspubsub_key_checks_total", labels: []string{"result", "accepted"}, want: 2},
		{name: "wspubsub_key_checks_total", labels: []string{"result", "refused"}, want: 1},
		{name: "wspubsub_key_checks_total", labels: []string{"result", "error"}, want: 0},
		{name: "wspubsub_topics", want: 1, gauge: true},
		{name: "wspubsub_topics_expired_total", want: 0},
		{name: "wspubsub_disconnects_total", labels: []string{"reason", "client"}, want: 0},
		{name: "wspubsub_handshake_duration_seconds_count", want: 4},
		{name: "wspubsub_fanout_duration_seconds_count", want: float64(m)},
		{name: "wspubsub_key_store_up", want: 1, gauge: true},
		{name: "wspubsub_draining", want: 0, gauge: true},
		{name: "wspubsub_ready", want: 1, gauge: true},
		{name: "wspubsub_build_info", labels: []string{"version", version, "goversion", runtime.Version()}, want: 1, gauge: true},
	})
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if v := s1.value(t, name); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}

	// Phase 2: a subscriber leaves with the close handshake.
	if err := subs[2].WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, subs[2], 1000)
	s2 := h.scrapeUntil(t, "the subscriber's disconnect", func(s scrape) bool {
		v, _ := s.find("wspubsub_disconnects_total", "reason", "client")
		return v >= 1
	})
	delta{s1, s2}.expect(t, "phase 2", []check{
		{name: "wspubsub_disconnects_total", labels: []string{"reason", "client"}, want: 1},
		{name: "wspubsub_connections", labels: []string{"role", "subscriber"}, want: 2, gauge: true},
		{name: "wspubsub_connections", labels: []string{"role", "publisher"}, want: 1, gauge: true},
		{name: "wspubsub_topics", want: 1, gauge: true},
	})

	// Phase 3: the publisher leaves; after the grace the topic closes its
	// two subscribers with 4001 (gorilla answers their close frames).
	leave(t, p)
	for _, s := range subs[:2] {
		expectClosed(t, s, 4001)
	}
	s3 := h.scrapeUntil(t, "the topic's expiry", func(s scrape) bool {
		v, _ := s.find("wspubsub_disconnects_total", "reason", "topic_closed")
		c, _ := s.find("wspubsub_disconnects_total", "reason", "client")
		return v >= 2 && c >= s2.value(t, "wspubsub_disconnects_total", "reason", "client")+1
	})
	delta{s2, s3}.expect(t, "phase 3", []check{
		{name: "wspubsub_disconnects_total", labels: []string{"reason", "client"}, want: 1},
		{name: "wspubsub_disconnects_total", labels: []string{"reason", "topic_closed"}, want: 2},
		{name: "wspubsub_topics_expired_total", want: 1},
		{name: "wspubsub_topics", want: 0, gauge: true},
		{name: "wspubsub_connections", labels: []string{"role", "subscriber"}, want: 0, gauge: true},
		{name: "wspubsub_connections", labels: []string{"role", "publisher"}, want: 0, gauge: true},
		{name: "wspubsub_received_messages_total", want: 0},
	})

	// Phase 4: a slow consumer, alone on its topic. Each message the hub
	// read is either written to it or dropped, with a reason.
	p2 := h.pub(t, "test", "slow")
	slow := h.rawDial(t, 4096)
	slow.send(t, []byte(request("GET", "/ws/sub/test/slow", upgradeHeaders()...)))
	slow.upgraded(t)
	msg := bytes.Repeat([]byte{'s'}, 1024)
	sent := 0
	for h.Stats().SlowConsumers.Load() == 0 {
		if sent >= 32<<10 {
			t.Fatalf("no slow consumer after %d messages of %d bytes", sent, len(msg))
		}
		for range 64 {
			if err := p2.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	slow.Close() // the hub waits no longer for its answer to the close frame
	leave(t, p2)
	s4 := h.scrapeUntil(t, "both disconnects and every message read", func(s scrape) bool {
		v, _ := s.find("wspubsub_disconnects_total", "reason", "slow_consumer")
		n, _ := s.find("wspubsub_received_messages_total")
		c, _ := s.find("wspubsub_disconnects_total", "reason", "client")
		return v >= 1 && n-s3.value(t, "wspubsub_received_messages_total") >= float64(sent) &&
			c >= s3.value(t, "wspubsub_disconnects_total", "reason", "client")+1
	})
	d4 := delta{s3, s4}
	d4.expect(t, "phase 4", []check{
		{name: "wspubsub_received_messages_total", want: float64(sent)},
		{name: "wspubsub_received_bytes_total", want: float64(sent * len(msg))},
		{name: "wspubsub_disconnects_total", labels: []string{"reason", "slow_consumer"}, want: 1},
		{name: "wspubsub_disconnects_total", labels: []string{"reason", "client"}, want: 1},
		{name: "wspubsub_connections_accepted_total", labels: []string{"role", "publisher"}, want: 1},
		{name: "wspubsub_connections_accepted_total", labels: []string{"role", "subscriber"}, want: 1},
	})
	delivered := d4.of(t, "wspubsub_delivered_messages_total")
	var dropped float64
	for _, r := range []string{"no_subscribers", "slow_consumer", "closing"} {
		dropped += d4.of(t, "wspubsub_dropped_messages_total", "reason", r)
	}
	if delivered+dropped != float64(sent) {
		t.Errorf("phase 4: %v delivered + %v dropped, want the %d messages read", delivered, dropped, sent)
	}
	if v := d4.of(t, "wspubsub_dropped_messages_total", "reason", "slow_consumer"); v < 1 {
		t.Errorf("phase 4: dropped_messages_total{reason=slow_consumer} grew by %v, want at least 1", v)
	}
	if got := d4.of(t, "wspubsub_delivered_bytes_total"); got != delivered*float64(len(msg)) {
		t.Errorf("phase 4: delivered bytes grew by %v, want %v", got, delivered*float64(len(msg)))
	}
	t.Logf("phase 4: %d messages sent, %v delivered to the slow consumer, %v dropped", sent, delivered, dropped)

	checkFamilies(t, s4)
	lint(t, h.Server, s4.text)
}

// TestReadyzWhileDraining: /readyz answers 503 once Shutdown has begun,
// while /healthz and /metrics keep answering on the main listener (the
// process is alive, and its draining gauge must be scrapeable); a WebSocket
// handshake during the drain is refused with 503 and counted as
// shutting_down.
func TestReadyzWhileDraining(t *testing.T) {
	h := startMetricsHub(t, func(c *server.Config) { c.DrainPeriod = 10 * time.Second })
	if code, body := h.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d %q, want 200", code, body)
	}
	// Raw clients answer no close frame until told: the hub keeps
	// draining, waiting for them, as long as the test needs.
	p := h.rawPub(t, "test", "news")
	s := h.rawSub(t, "test", "news")
	before := gather(t, h.Server)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- h.Shutdown(ctx)
	}()
	p.expectClose(t, 1001)
	s.expectClose(t, 1001)
	// net/http's own client: the hub reads the request before answering.
	if code, body := h.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d %q, want 503", code, body)
	}
	if code, body := h.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while draining: %d %q, want 200", code, body)
	}
	if status := h.refused(t, "/ws/sub/test/news", nil); status != http.StatusServiceUnavailable {
		t.Fatalf("handshake while draining: %d, want 503", status)
	}
	during := gather(t, h.Server)
	if got := during.value(t, "wspubsub_draining"); got != 1 {
		t.Errorf("wspubsub_draining = %v while draining, want 1", got)
	}
	if got := during.value(t, "wspubsub_ready"); got != 0 {
		t.Errorf("wspubsub_ready = %v while draining (/readyz 503), want 0", got)
	}
	if got := (delta{before, during}).of(t, "wspubsub_handshakes_refused_total", "reason", "shutting_down"); got != 1 {
		t.Errorf("handshakes_refused_total{reason=shutting_down} grew by %v for one handshake while draining, want 1", got)
	}
	if code, _ := h.get(t, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics while draining: %d, want 200", code)
	}

	p.closeHandshake(t, 1001)
	s.closeHandshake(t, 1001)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown still running 5s after every client answered")
	}
	after := gather(t, h.Server)
	if got := (delta{before, after}).of(t, "wspubsub_disconnects_total", "reason", "shutdown"); got != 2 {
		t.Errorf("disconnects_total{reason=shutdown} grew by %v, want 2", got)
	}
}

// gather reads the hub's registry in process, in the text format, for when
// the main listener no longer answers /metrics.
func gather(t testing.TB, srv *server.Server) scrape {
	t.Helper()
	mfs, err := srv.Registry().Gather()
	if err != nil {
		t.Fatalf("Registry().Gather: %v", err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return parseMetrics(t, b.String())
}

// TestHandshakesInProgressCountsOnlyHandshakes: the gauge counts
// connections that have not finished their handshake, and nothing else:
// not the scrape's own plain HTTP request, not an upgraded connection the
// hub has closed and that has yet to answer its close frame.
func TestHandshakesInProgressCountsOnlyHandshakes(t *testing.T) {
	h := startMetricsHub(t, func(c *server.Config) { c.GracePeriod = 50 * time.Millisecond })
	idle := h.scrape(t).value(t, "wspubsub_handshakes_in_progress")
	if idle != 0 {
		t.Errorf("idle hub: handshakes_in_progress = %v, want 0 (the scrape is no handshake)", idle)
	}

	half := h.rawDial(t, 0)
	half.send(t, []byte("GET /ws/sub/test/news HTTP/1.1\r\nHost: h\r\n"))
	h.scrapeUntil(t, "the half-sent handshake to count", func(s scrape) bool {
		v, _ := s.find("wspubsub_handshakes_in_progress")
		return v >= 1
	})
	half.Close()
	h.scrapeUntil(t, "the abandoned handshake to go", func(s scrape) bool {
		v, _ := s.find("wspubsub_handshakes_refused_total", "reason", "abandoned")
		return v >= 1
	})

	// A subscriber closed with 4001 that does not answer stays open, in
	// its closing state, for CloseTimeout.
	p := h.pub(t, "test", "news")
	s := h.rawSub(t, "test", "news")
	leave(t, p)
	s.expectClose(t, 4001)
	got := h.scrape(t)
	if v := got.value(t, "wspubsub_connections", "role", "subscriber"); v != 0 {
		t.Errorf("closing subscriber: connections{role=subscriber} = %v, want 0", v)
	}
	if v := got.value(t, "wspubsub_handshakes_in_progress"); v != idle {
		t.Errorf("closing subscriber: handshakes_in_progress = %v, %v when idle: it counts as a handshake, though its handshake ended long ago", v, idle)
	}
	s.closeHandshake(t, 4001)
}
