package report

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wspubsub/wspubsub/bench/result"
)

func sample(target string, scale float64) *result.Result {
	h := result.NewLatency()
	for i := 1; i <= 1000; i++ {
		h.Record(int64(float64(i*1000) * scale))
	}
	r := &result.Result{
		Scenario: "fanout", Target: target, Params: result.Params{Topics: 1, SubsPerTopic: 10, Publishers: 1, Size: 128, Count: 100},
		Subscribers: 10, Expected: 1000, Delivered: 1000, PublishSeconds: 1, DeliveriesPerSec: 1000,
		Latency: result.Summarize(h), LatencyHist: h, ServerMeasured: true,
		ServerCPUPerDeliveryUs: 2 * scale, RSSPerConn: 2048,
	}
	for i := range 20 {
		r.Series = append(r.Series, result.Point{T: float64(i) / 10, Deliveries: 1000 + float64(i), P50: 100, P99: 900 * scale, Max: 1000 * scale})
	}
	r.Check()
	return r
}

func TestHTML(t *testing.T) {
	var b bytes.Buffer
	if err := HTML(&b, "test <report>", []Run{{Ours: sample("ours", 1), Reference: sample("reference", 3)}, {Ours: sample("ours", 1)}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"<svg", "polyline", "ours / reference = 0.33×", "test &lt;report&gt;", "Latency by percentile"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "http://") && !strings.Contains(out, `xmlns="http://www.w3.org/2000/svg"`) || strings.Contains(out, "<script") {
		t.Error("report is not self-contained")
	}
}

func TestTables(t *testing.T) {
	var b bytes.Buffer
	ours, ref := sample("ours", 1), sample("reference", 2)
	Table(&b, ours)
	CompareTable(&b, ours, ref)
	out := b.String()
	for _, want := range []string{"PASS", "server CPU per delivery", "0.50"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}

func TestRobustTables(t *testing.T) {
	soak := sample("ours", 1)
	soak.Scenario = "soak"
	soak.Soak = &result.Soak{Start: result.HubSample{Goroutines: 11, RSS: 14 << 20}, End: result.HubSample{T: 130, Goroutines: 11, RSS: 18 << 20},
		Settled: true, Tolerance: result.DefaultTolerance, Clients: map[string]int{"subscriber": 3}, Expected: 3}
	slow := sample("ours", 1)
	slow.Scenario = "slowconsumer"
	slow.Slow = &result.SlowConsumer{MaxBacklog: 1 << 20, CutOff: true, CloseCode: 4000, QueuedBytes: 3 << 20, Disconnects: 1,
		Before: result.Latency{Count: 1, P99: 4000}, After: result.Latency{Count: 1, P99: 5000}, MaxP99JumpUs: 5000, Tolerance: result.DefaultTolerance}
	var b bytes.Buffer
	for _, r := range []*result.Result{soak, slow} {
		r.Check()
		Table(&b, r)
	}
	if err := HTML(&b, "robust", []Run{{Ours: soak}, {Ours: slow}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"hub at end", "back within tolerance", "close 4000", "before 4.00ms", "hub at peak", "p99 before → after"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
