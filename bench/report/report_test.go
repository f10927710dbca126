package report

import (
	"bytes"
	"slices"
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
		ServerCPUSeconds: 0.5 * scale, ServerSchedCPUSeconds: 0.5 * scale, ServerSchedCPUPerDeliveryUs: 2 * scale, ServerCPUPerDeliveryUs: 2 * scale, ClientCPUSeconds: 1, ClientCPUPerDeliveryUs: 4, RSSPerConn: 2048,
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

// yLabels returns, for each chart of out whose title starts with prefix,
// its y axis labels in order.
func yLabels(out, prefix string) [][]string {
	var all [][]string
	for _, svg := range strings.Split(out, "<svg")[1:] {
		if !strings.Contains(svg, `aria-label="`+prefix) {
			continue
		}
		var labels []string
		for _, part := range strings.Split(svg, `text-anchor="end">`)[1:] {
			labels = append(labels, part[:strings.Index(part, "<")])
		}
		all = append(all, labels)
	}
	return all
}

// TestSplitPanelsShareScale: runs of very different lengths get a panel
// each, and the two panels of a figure share one y scale however far apart
// the runs are (here 30 M against 1.5 k deliveries/s, 8 s against 0.25 ms).
func TestSplitPanelsShareScale(t *testing.T) {
	ours, ref := sample("ours", 1), sample("reference", 1)
	ref.PublishSeconds = 20 // not similar in length: split panels
	for i := range ours.Series {
		ours.Series[i].Deliveries = 30e6
		ours.Series[i].P99, ours.Series[i].Max = 250, 300 // µs
		ref.Series[i].Deliveries = 1500
		ref.Series[i].P99, ref.Series[i].Max = 8e6, 9e6
	}
	var b bytes.Buffer
	if err := HTML(&b, "scales", []Run{{Ours: ours, Reference: ref}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, title := range []string{"Throughput over time — ", "Latency percentiles over time — "} {
		panels := yLabels(out, title)
		if len(panels) != 2 {
			t.Fatalf("%d panels titled %q, want one per run", len(panels), title)
		}
		if len(panels[0]) == 0 || strings.Join(panels[0], " ") != strings.Join(panels[1], " ") {
			t.Errorf("%q panels have different y scales:\n ours      %q\n reference %q", title, panels[0], panels[1])
		}
	}
	// The throughput scale reaches the larger run's 30 M.
	if p := yLabels(out, "Throughput over time — "); !strings.HasPrefix(p[0][len(p[0])-1], "3") {
		t.Errorf("throughput scale tops at %q, want 30 M", p[0][len(p[0])-1])
	}
}

// TestTooShortToMeasure: a run whose CPU time is under a few 10 ms ticks
// says so in the tables, the ratios and the HTML report, instead of
// "0.000 µs per delivery" and a ratio of 0.00; a measured run does not.
func TestTooShortToMeasure(t *testing.T) {
	ours, ref := sample("ours", 1), sample("reference", 2)
	ours.ServerCPUSeconds, ours.ServerCPUPerDeliveryUs = 0, 0 // not one tick
	ours.ClientCPUSeconds, ours.ClientCPUPerDeliveryUs = 0.01, 10

	var b bytes.Buffer
	Table(&b, ours)
	if out := b.String(); !strings.Contains(out, "server CPU  0.00 s = too short to measure per delivery") ||
		!strings.Contains(out, "client CPU  0.01 s = too short to measure per delivery") || strings.Contains(out, "0.000 µs per delivery") {
		t.Errorf("table of a too short run:\n%s", out)
	}
	b.Reset()
	Table(&b, ref)
	if out := b.String(); strings.Contains(out, "too short") || !strings.Contains(out, "4.000 µs per delivery") {
		t.Errorf("table of a measured run:\n%s", out)
	}

	b.Reset()
	CompareTable(&b, ours, ref)
	var cpu string
	for l := range strings.Lines(b.String()) {
		if strings.Contains(l, "server CPU per delivery") {
			cpu = l
		}
	}
	if !strings.Contains(cpu, "too short to measure") || strings.Contains(cpu, "0.00 ") {
		t.Errorf("ratio of a too short run: %q", cpu)
	}
	x := result.Compare(ours, ref)
	if i := slices.IndexFunc(x, func(x result.Ratio) bool { return x.Name == "server CPU per delivery" }); i < 0 ||
		!x[i].OursTooShort || x[i].ReferenceTooShort || x[i].Ratio != 0 {
		t.Errorf("Compare: %+v", x)
	}

	b.Reset()
	if err := HTML(&b, "short", []Run{{Ours: ours, Reference: ref}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Count(out, "too short to measure") < 2 || strings.Contains(out, "0.000 µs") {
		t.Errorf("HTML report of a too short run does not say so")
	}
	if strings.Contains(out, "ours / reference = 0.00×") {
		t.Errorf("HTML report prints a ratio of 0.00 for a too short run")
	}
}
