package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/wspubsub/wspubsub/bench/result"
)

// Run is one section of the HTML report: a result, or ours and the
// reference side by side.
type Run struct {
	Ours      *result.Result
	Reference *result.Result // nil unless compared
}

var palette = map[string]string{"ours": "#2563eb", "reference": "#ea580c"}

func colorOf(r *result.Result, i int) string {
	if c, ok := palette[r.Target]; ok {
		return c
	}
	return []string{"#2563eb", "#ea580c", "#059669", "#7c3aed"}[i%4]
}

func (r Run) results() []*result.Result {
	if r.Reference == nil {
		return []*result.Result{r.Ours}
	}
	return []*result.Result{r.Ours, r.Reference}
}

type card struct {
	Label   string
	Values  []cardValue
	Ratio   string
	Verdict string // "good", "bad" or ""
	Note    string
}

type cardValue struct {
	Who   string
	Color string
	Value string
}

type section struct {
	Title    string
	Describe string
	Pass     bool
	Problems []string
	Cards    []card
	Charts   []template.HTML
	Rows     [][]string
	Heads    []string
}

// HTML writes a self-contained report page for runs.
func HTML(w io.Writer, title string, runs []Run) error {
	host, _ := os.Hostname()
	data := struct {
		Title    string
		Host     string
		CPUs     int
		When     string
		Sections []section
	}{Title: title, Host: host, CPUs: runtime.NumCPU(), When: time.Now().Format("2006-01-02 15:04:05 MST")}
	for _, run := range runs {
		data.Sections = append(data.Sections, buildSection(run))
	}
	if err := page.Execute(w, data); err != nil {
		return fmt.Errorf("cannot render the HTML report: %w", err)
	}
	return nil
}

func buildSection(run Run) section {
	rs := run.results()
	s := section{Title: run.Ours.Scenario, Describe: Describe(run.Ours), Pass: true}
	for _, r := range rs {
		if !r.Pass() {
			s.Pass = false
		}
		for _, e := range r.Errors {
			s.Problems = append(s.Problems, r.Target+": "+e)
		}
		for _, f := range r.Failures {
			s.Problems = append(s.Problems, r.Target+": "+f)
		}
	}
	// Headline cards.
	type metric struct {
		label string
		get   func(*result.Result) float64
		fmt   func(float64) string
		lower bool
		skip  func(*result.Result) bool
		// tooShort, if set, reports a run too short to measure the figure.
		tooShort func(*result.Result) bool
	}
	noServer := func(r *result.Result) bool { return !r.ServerMeasured }
	var ms []metric
	if run.Ours.Scenario == "idle" {
		ms = []metric{
			{"Server memory per connection", func(r *result.Result) float64 { return r.RSSPerConn / 1024 }, func(v float64) string { return fmt.Sprintf("%.2f KiB", v) }, true, noServer, nil},
			{"Connect rate", func(r *result.Result) float64 { return r.ConnectRate }, func(v float64) string { return si(v) + "/s" }, false, nil, nil},
			{"Subscribers held", func(r *result.Result) float64 { return float64(r.Subscribers) }, func(v float64) string { return fmt.Sprintf("%.0f", v) }, false, nil, nil},
			{"Server RSS after", func(r *result.Result) float64 { return float64(r.ServerRSSAfter) }, func(v float64) string { return mib(int64(v)) }, true, noServer, nil},
		}
	} else {
		ms = []metric{
			{"Deliveries per second", func(r *result.Result) float64 { return r.DeliveriesPerSec }, func(v float64) string { return si(v) }, false, nil, nil},
			{"Server CPU per delivery", func(r *result.Result) float64 { return r.ServerCPUPerDeliveryUs }, usec, true, noServer,
				func(r *result.Result) bool { return !result.CPUMeasured(r.ServerCPUSeconds) }},
			{"p99 latency", func(r *result.Result) float64 { return r.Latency.P99 }, dur, true, nil, nil},
			{"Lost / dup / reordered", func(r *result.Result) float64 { return float64(r.Lost + r.Duplicates + r.OutOfOrder) }, func(v float64) string { return fmt.Sprintf("%.0f", v) }, true, nil, nil},
			{"Server memory per connection", func(r *result.Result) float64 { return r.RSSPerConn / 1024 }, func(v float64) string { return fmt.Sprintf("%.2f KiB", v) }, true, noServer, nil},
			{"Client CPU per delivery", func(r *result.Result) float64 { return r.ClientCPUPerDeliveryUs }, usec, true, nil,
				func(r *result.Result) bool { return !result.CPUMeasured(r.ClientCPUSeconds) }},
		}
	}
	for _, m := range ms {
		c := card{Label: m.label}
		short := func(r *result.Result) bool { return m.tooShort != nil && m.tooShort(r) }
		for i, r := range rs {
			v := "n/a"
			switch {
			case m.skip != nil && m.skip(r):
			case short(r):
				v = result.TooShortToMeasure
			default:
				v = m.fmt(m.get(r))
			}
			c.Values = append(c.Values, cardValue{Who: r.Target, Color: colorOf(r, i), Value: v})
		}
		if len(rs) == 2 && (m.skip == nil || (!m.skip(rs[0]) && !m.skip(rs[1]))) && !short(rs[0]) && !short(rs[1]) {
			o, ref := m.get(rs[0]), m.get(rs[1])
			if ref != 0 {
				ratio := o / ref
				c.Ratio = fmt.Sprintf("ours / reference = %.2f×", ratio)
				if (ratio < 1) == m.lower && ratio != 1 {
					c.Verdict = "good"
				} else if ratio != 1 {
					c.Verdict = "bad"
				}
			}
			if m.lower {
				c.Note = "lower is better"
			} else {
				c.Note = "higher is better"
			}
		}
		s.Cards = append(s.Cards, c)
	}
	if run.Ours.Scenario != "idle" {
		// Runs of very different lengths get a time chart each, or the
		// short one would be a sliver at the left. Each keeps its own time
		// axis, but the pair shares one y scale, so that the panels side by
		// side compare at a glance.
		if len(rs) == 2 && !similarLength(rs[0], rs[1]) {
			for _, pair := range [][]chart{
				{throughputChart(rs[:1]), throughputChart(rs[1:])},
				{latencyOverTime(rs[:1]), latencyOverTime(rs[1:])},
			} {
				shareY(pair)
				for _, c := range pair {
					c.xLabel += " (each run to its own length)"
					s.Charts = append(s.Charts, c.svg())
				}
			}
		} else {
			s.Charts = append(s.Charts, throughputChart(rs).svg(), latencyOverTime(rs).svg())
		}
		s.Charts = append(s.Charts, spectrumChart(rs))
	}
	s.Heads, s.Rows = detailRows(rs)
	return s
}

func similarLength(a, b *result.Result) bool {
	x, y := a.PublishSeconds, b.PublishSeconds
	if x <= 0 || y <= 0 {
		return true
	}
	return x/y < 2 && y/x < 2
}

func chartTitle(base string, rs []*result.Result) string {
	if len(rs) == 1 {
		return base + " — " + rs[0].Target
	}
	return base
}

func throughputChart(rs []*result.Result) chart {
	c := chart{title: chartTitle("Throughput over time", rs), xLabel: "seconds since the first publish", yLabel: "deliveries / s", area: true,
		yFmt: si}
	for i, r := range rs {
		l := line{name: r.Target, color: colorOf(r, i)}
		for _, p := range r.Series {
			l.xs = append(l.xs, p.T)
			l.ys = append(l.ys, p.Deliveries)
		}
		c.lines = append(c.lines, l)
	}
	return c
}

func latencyOverTime(rs []*result.Result) chart {
	c := chart{title: chartTitle("Latency percentiles over time", rs), xLabel: "seconds since the first publish", yLabel: "publish → receive", logY: true, yFmt: durTick}
	for i, r := range rs {
		col := colorOf(r, i)
		p50 := line{name: r.Target + " p50", color: col, width: 1.5, dash: "2 3"}
		p99 := line{name: r.Target + " p99", color: col, width: 2.2}
		mx := line{name: r.Target + " max", color: col, width: 1, dash: "7 4"}
		for _, p := range r.Series {
			if p.Deliveries == 0 {
				continue
			}
			p50.xs, p50.ys = append(p50.xs, p.T), append(p50.ys, p.P50)
			p99.xs, p99.ys = append(p99.xs, p.T), append(p99.ys, p.P99)
			mx.xs, mx.ys = append(mx.xs, p.T), append(mx.ys, p.Max)
		}
		c.lines = append(c.lines, p50, p99, mx)
	}
	return c
}

// spectrumChart is the HDR percentile plot: latency against "how many
// nines", so the tail is as wide as the body.
func spectrumChart(rs []*result.Result) template.HTML {
	c := chart{title: "Latency by percentile", xLabel: "percentile", yLabel: "publish → receive", logY: true, yFmt: durTick}
	maxNines := 2.0
	for i, r := range rs {
		h := r.LatencyHist
		if h.Count() == 0 {
			continue
		}
		nines := math.Min(6, math.Log10(float64(h.Count())))
		maxNines = math.Max(maxNines, math.Floor(nines))
		l := line{name: r.Target, color: colorOf(r, i), width: 2.2}
		for x := 0.0; x <= nines+1e-9; x += 0.02 {
			q := 100 * (1 - math.Pow(10, -x))
			l.xs = append(l.xs, x)
			l.ys = append(l.ys, float64(h.Quantile(q))/1e3)
		}
		l.xs = append(l.xs, nines)
		l.ys = append(l.ys, float64(h.Max())/1e3)
		c.lines = append(c.lines, l)
	}
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"}
	for i := 0; i <= int(maxNines) && i < len(labels); i++ {
		c.xTicks = append(c.xTicks, tick{float64(i), labels[i]})
	}
	return c.svg()
}

// usec prints microseconds with three significant digits.
func usec(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f µs", v)
	case v >= 10:
		return fmt.Sprintf("%.1f µs", v)
	case v >= 1:
		return fmt.Sprintf("%.2f µs", v)
	}
	return fmt.Sprintf("%.3f µs", v)
}

// durTick prints a round number of microseconds for an axis: 10ms, 2s.
func durTick(us float64) string {
	s := dur(us)
	for _, unit := range []string{"µs", "ms", "s"} {
		if strings.HasSuffix(s, unit) {
			v := strings.TrimSuffix(s, unit)
			if strings.Contains(v, ".") {
				v = strings.TrimRight(strings.TrimRight(v, "0"), ".")
			}
			return v + unit
		}
	}
	return s
}

func detailRows(rs []*result.Result) ([]string, [][]string) {
	heads := []string{"figure"}
	for _, r := range rs {
		heads = append(heads, r.Target)
	}
	type row struct {
		name string
		f    func(*result.Result) string
	}
	rows := []row{
		{"subscribers (failed)", func(r *result.Result) string { return fmt.Sprintf("%d (%d)", r.Subscribers, r.DialFailed) }},
		{"connect time / rate", func(r *result.Result) string {
			return fmt.Sprintf("%.2f s / %s/s", r.ConnectSeconds, si(r.ConnectRate))
		}},
	}
	if rs[0].Scenario != "idle" {
		rows = append(rows,
			row{"published", func(r *result.Result) string { return fmt.Sprint(r.Published) }},
			row{"delivered / expected", func(r *result.Result) string { return fmt.Sprintf("%d / %d", r.Delivered, r.Expected) }},
			row{"lost · dup · out of order · corrupt", func(r *result.Result) string {
				return fmt.Sprintf("%d · %d · %d · %d", r.Lost, r.Duplicates, r.OutOfOrder, r.Corrupt)
			}},
			row{"subscribers cut off", func(r *result.Result) string { return fmt.Sprintf("%d %s", r.Dropped, codes(r.CloseCodes)) }},
			row{"publish phase", func(r *result.Result) string { return fmt.Sprintf("%.2f s", r.PublishSeconds) }},
			row{"throughput", func(r *result.Result) string {
				return fmt.Sprintf("%s/s · %.1f MB/s", si(r.DeliveriesPerSec), r.MBPerSec)
			}},
			row{"latency p50 · p90 · p99", func(r *result.Result) string {
				return fmt.Sprintf("%s · %s · %s", dur(r.Latency.P50), dur(r.Latency.P90), dur(r.Latency.P99))
			}},
			row{"latency p99.9 · max", func(r *result.Result) string { return fmt.Sprintf("%s · %s", dur(r.Latency.P999), dur(r.Latency.Max)) }},
			row{"server CPU, /proc/PID/stat (per delivery)", func(r *result.Result) string {
				return fmt.Sprintf("%.2f s (%s)", r.ServerCPUSeconds, perDelivery(result.CPUMeasured(r.ServerCPUSeconds), r.ServerCPUPerDeliveryUs))
			}},
			row{"server CPU, schedstat (per delivery)", func(r *result.Result) string {
				return fmt.Sprintf("%.3f s (%s)", r.ServerSchedCPUSeconds, perDelivery(r.ServerSchedCPUSeconds > 0, r.ServerSchedCPUPerDeliveryUs))
			}},
			row{"client messages per read", func(r *result.Result) string { return fmt.Sprintf("%.1f", r.MessagesPerRead) }},
			row{"client CPU (per delivery)", func(r *result.Result) string {
				return fmt.Sprintf("%.2f s (%s)", r.ClientCPUSeconds, perDelivery(result.CPUMeasured(r.ClientCPUSeconds), r.ClientCPUPerDeliveryUs))
			}},
		)
	} else {
		rows = append(rows, row{"server CPU while holding", func(r *result.Result) string { return fmt.Sprintf("%.2f s", r.ServerCPUSeconds) }})
	}
	rows = append(rows,
		row{"server RSS before → after (peak)", func(r *result.Result) string {
			return fmt.Sprintf("%s → %s (%s)", mib(r.ServerRSSBefore), mib(r.ServerRSSAfter), mib(r.ServerPeakRSS))
		}},
		row{"server RSS per connection", func(r *result.Result) string { return fmt.Sprintf("%.2f KiB", r.RSSPerConn/1024) }},
	)
	if rs[0].Churn != nil {
		rows = append(rows, row{"churners opened · failed · gaps", func(r *result.Result) string {
			if r.Churn == nil {
				return ""
			}
			return fmt.Sprintf("%d · %d · %d", r.Churn.Opened, r.Churn.Failed, r.Churn.Gaps)
		}})
	}
	if rs[0].Soak != nil {
		hub := func(h result.HubSample) string {
			return fmt.Sprintf("%.0f · %.0f · %s · %.0f · %.0f", h.Goroutines, h.OpenFDs, mib(int64(h.RSS)), h.Connections, h.Topics)
		}
		rows = append(rows,
			row{"hub at start: goroutines · files · RSS · connections · topics", func(r *result.Result) string { return hub(r.Soak.Start) }},
			row{"hub at peak", func(r *result.Result) string { return hub(r.Soak.Peak) }},
			row{"hub at end", func(r *result.Result) string {
				return fmt.Sprintf("%s (settled %v after %.0f s)", hub(r.Soak.End), r.Soak.Settled, r.Soak.SettleSeconds)
			}},
			row{"short-lived clients · as expected", func(r *result.Result) string {
				n := 0
				for _, v := range r.Soak.Clients {
					n += v
				}
				return fmt.Sprintf("%d · %d", n, r.Soak.Expected)
			}},
		)
	}
	if rs[0].Slow != nil {
		rows = append(rows,
			row{"slow one: cut off after · close · queued", func(r *result.Result) string {
				s := r.Slow
				return fmt.Sprintf("%.2f s · %d · %s", s.CutoffSeconds, s.CloseCode, mib(s.QueuedBytes))
			}},
			row{"fast subscribers' p99 before → after", func(r *result.Result) string {
				return fmt.Sprintf("%s → %s", dur(r.Slow.Before.P99), dur(r.Slow.After.P99))
			}},
			row{"hub RSS before the stall → peak → after", func(r *result.Result) string {
				s := r.Slow
				return fmt.Sprintf("%s → %s → %s", mib(int64(s.RSSBaseline)), mib(int64(s.RSSPeak)), mib(int64(s.RSSAfter)))
			}},
		)
	}
	var out [][]string
	for _, rw := range rows {
		line := []string{rw.name}
		for _, r := range rs {
			line = append(line, rw.f(r))
		}
		out = append(out, line)
	}
	return heads, out
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}}</title>
<style>
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--good:#047857;--bad:#b91c1c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:#111827;color:#f9fafb;padding:20px 32px}
header h1{margin:0;font-size:20px;font-weight:650}
header p{margin:4px 0 0;color:#9ca3af;font-size:13px}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin-bottom:28px}
h2{margin:0;font-size:18px;text-transform:capitalize;display:flex;align-items:center;gap:10px}
.desc{color:var(--muted);margin:4px 0 16px}
.badge{font-size:12px;font-weight:650;padding:2px 9px;border-radius:999px;text-transform:uppercase;letter-spacing:.04em}
.pass{background:#d1fae5;color:var(--good)}.fail{background:#fee2e2;color:var(--bad)}
.problems{background:#fef2f2;border:1px solid #fecaca;color:#7f1d1d;border-radius:8px;padding:8px 14px;margin:0 0 16px}
.problems li{margin:2px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(185px,1fr));gap:12px;margin-bottom:18px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.card .val{font-size:20px;font-weight:650;margin-top:2px;display:flex;align-items:baseline;gap:8px}
.card .who{font-size:11px;font-weight:500;color:var(--muted)}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%}
.ratio{font-size:12px;margin-top:4px;font-weight:600}
.ratio.good{color:var(--good)}.ratio.bad{color:var(--bad)}
.note{font-size:11px;color:var(--muted)}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px;margin-bottom:16px}
.chart{width:100%;height:auto;border:1px solid var(--line);border-radius:8px;background:#fff}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line)}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td:not(:first-child){font-variant-numeric:tabular-nums}
details summary{cursor:pointer;color:var(--muted);margin:4px 0 8px}
</style></head><body>
<header><h1>{{.Title}}</h1><p>{{.When}} · {{.Host}} · {{.CPUs}} CPUs · server figures from /proc of the hub process; latency is publish → receive on one clock</p></header>
<main>
{{range .Sections}}<section>
<h2>{{.Title}} {{if .Pass}}<span class="badge pass">pass</span>{{else}}<span class="badge fail">fail</span>{{end}}</h2>
<p class="desc">{{.Describe}}</p>
{{if .Problems}}<ul class="problems">{{range .Problems}}<li>{{.}}</li>{{end}}</ul>{{end}}
<div class="cards">{{range .Cards}}<div class="card"><div class="label">{{.Label}}</div>
{{range .Values}}<div class="val"><span class="dot" style="background:{{.Color}}"></span>{{.Value}} <span class="who">{{.Who}}</span></div>{{end}}
{{if .Ratio}}<div class="ratio {{.Verdict}}">{{.Ratio}}</div><div class="note">{{.Note}}</div>{{end}}
</div>{{end}}</div>
{{if .Charts}}<div class="charts">{{range .Charts}}{{.}}{{end}}</div>{{end}}
<details open><summary>All figures</summary>
<table><tr>{{range .Heads}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>{{end}}</table></details>
</section>{{end}}
</main></body></html>
`))
