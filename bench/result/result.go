// Package result holds what a load run measured: the Part each client
// process reports, how Parts merge, and the Result a whole run is summed up
// in, which the report package renders and --json prints.
//
// Concurrency contract: plain values with no internal locking. A Part is
// built by one goroutine (a client worker) and handed over whole; Merge and
// the summaries run on the coordinating goroutine.
package result

import (
	"fmt"
	"sort"
	"time"
)

// Part is what one client worker or process measured over a run.
type Part struct {
	// Subscribers is the number of subscriber upgrades that succeeded.
	Subscribers int `json:"subscribers"`
	// DialFailed counts subscriber connects or upgrades that failed;
	// DialErrors groups them by reason.
	DialFailed int            `json:"dial_failed"`
	DialErrors map[string]int `json:"dial_errors,omitempty"`
	// FirstDial and LastOpen bound the connect phase (Unix ns).
	FirstDial int64 `json:"first_dial_ns"`
	LastOpen  int64 `json:"last_open_ns"`

	// Expected is the number of deliveries owed to subscribers that stayed
	// for the whole publish phase; Delivered counts what every subscriber
	// received, Unique what stayed ones received once.
	Expected   int64 `json:"expected"`
	Delivered  int64 `json:"delivered"`
	Unique     int64 `json:"unique"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	OutOfOrder int64 `json:"out_of_order"`
	Corrupt    int64 `json:"corrupt"`
	Bytes      int64 `json:"bytes"`
	// Dropped counts stayed subscribers whose connection ended before the
	// run did; CloseCodes counts the close codes the server sent them.
	Dropped    int         `json:"dropped"`
	CloseCodes map[int]int `json:"close_codes,omitempty"`
	FirstRecv  int64       `json:"first_recv_ns"`
	LastRecv   int64       `json:"last_recv_ns"`

	// ClientCPU is the CPU time the process used between the start of the
	// publish phase and the end of the run (ns).
	ClientCPU int64 `json:"client_cpu_ns"`
	// Reads and Wakeups count the client's read and epoll_wait calls that
	// returned something, over the whole run.
	Reads   int64 `json:"reads"`
	Wakeups int64 `json:"wakeups"`
	// WireBytes counts the bytes the subscribers read off their sockets
	// after the handshake: frames as sent, compressed or not.
	WireBytes int64 `json:"wire_bytes"`

	Latency *Hist `json:"latency"`
	// Series are deliveries by receive time in buckets of SeriesWidth ns
	// from SeriesStart.
	SeriesStart int64    `json:"series_start_ns"`
	SeriesWidth int64    `json:"series_width_ns"`
	Series      []Bucket `json:"series,omitempty"`

	Churn Churn `json:"churn"`
	// Reconnect is the reconnect scenario's own count.
	Reconnect Reconnect `json:"reconnect"`
}

// Bucket is one interval of a time series.
type Bucket struct {
	Deliveries int64 `json:"deliveries"`
	Bytes      int64 `json:"bytes"`
	// Latency is in microseconds; nil when nothing arrived.
	Latency *Hist `json:"latency,omitempty"`
}

// Churn is what subscribers that came and went while messages flowed saw.
type Churn struct {
	Opened int `json:"opened"`
	Failed int `json:"failed"`
	// Dropped counts churners the server closed before we did.
	Dropped    int            `json:"dropped"`
	Errors     map[string]int `json:"errors,omitempty"`
	Delivered  int64          `json:"delivered"`
	Gaps       int64          `json:"gaps"` // messages missing between a churner's first and last
	Duplicates int64          `json:"duplicates"`
	OutOfOrder int64          `json:"out_of_order"`
}

// Merge adds src into dst. Series must share start and width.
func Merge(dst *Part, src *Part) {
	dst.Subscribers += src.Subscribers
	dst.DialFailed += src.DialFailed
	dst.DialErrors = mergeCounts(dst.DialErrors, src.DialErrors)
	dst.FirstDial = minNonZero(dst.FirstDial, src.FirstDial)
	dst.LastOpen = max(dst.LastOpen, src.LastOpen)
	dst.Expected += src.Expected
	dst.Delivered += src.Delivered
	dst.Unique += src.Unique
	dst.Lost += src.Lost
	dst.Duplicates += src.Duplicates
	dst.OutOfOrder += src.OutOfOrder
	dst.Corrupt += src.Corrupt
	dst.Bytes += src.Bytes
	dst.Dropped += src.Dropped
	for k, v := range src.CloseCodes {
		if dst.CloseCodes == nil {
			dst.CloseCodes = map[int]int{}
		}
		dst.CloseCodes[k] += v
	}
	dst.FirstRecv = minNonZero(dst.FirstRecv, src.FirstRecv)
	dst.LastRecv = max(dst.LastRecv, src.LastRecv)
	dst.ClientCPU += src.ClientCPU
	dst.Reads += src.Reads
	dst.WireBytes += src.WireBytes
	dst.Wakeups += src.Wakeups
	if src.Latency != nil {
		if dst.Latency == nil {
			dst.Latency = NewLatency()
		}
		dst.Latency.Merge(src.Latency)
	}
	if dst.SeriesWidth == 0 {
		dst.SeriesStart, dst.SeriesWidth = src.SeriesStart, src.SeriesWidth
	}
	for len(dst.Series) < len(src.Series) {
		dst.Series = append(dst.Series, Bucket{})
	}
	for i, b := range src.Series {
		d := &dst.Series[i]
		d.Deliveries += b.Deliveries
		d.Bytes += b.Bytes
		if b.Latency != nil {
			if d.Latency == nil {
				d.Latency = NewSeriesLatency()
			}
			d.Latency.Merge(b.Latency)
		}
	}
	c, s := &dst.Churn, &src.Churn
	c.Opened += s.Opened
	c.Failed += s.Failed
	c.Dropped += s.Dropped
	c.Errors = mergeCounts(c.Errors, s.Errors)
	c.Delivered += s.Delivered
	c.Gaps += s.Gaps
	c.Duplicates += s.Duplicates
	c.OutOfOrder += s.OutOfOrder
	dst.Reconnect.merge(&src.Reconnect)
}

func mergeCounts(dst, src map[string]int) map[string]int {
	for k, v := range src {
		if dst == nil {
			dst = map[string]int{}
		}
		dst[k] += v
	}
	return dst
}

func minNonZero(a, b int64) int64 {
	if a == 0 {
		return b
	}
	if b == 0 {
		return a
	}
	return min(a, b)
}

// Params are the knobs a run was started with, reported beside its figures.
type Params struct {
	Topics       int     `json:"topics"`
	SubsPerTopic int     `json:"subs_per_topic"`
	Publishers   int     `json:"publishers"`
	Size         int     `json:"size"`
	Count        int     `json:"count"`
	Rate         float64 `json:"rate"` // messages/s per publisher; 0 = as fast as possible
	ChurnRate    float64 `json:"churn_rate,omitempty"`
	ChurnLife    string  `json:"churn_life,omitempty"`
	Hold         string  `json:"hold,omitempty"`
	Duration     string  `json:"duration,omitempty"`
	Cuts         int     `json:"cuts,omitempty"`
	CutMode      string  `json:"cut_mode,omitempty"`
	KillNode     int     `json:"kill_node,omitempty"`
	KillAt       string  `json:"kill_at,omitempty"`
	Procs        int     `json:"procs"`
	Workers      int     `json:"workers"`
	SourceAddrs  int     `json:"source_addrs"`
	// Compress: subscribers offered permessage-deflate and publishers sent
	// the JSON feed (bench/payload.FillJSON).
	Compress bool `json:"compress,omitempty"`
	// Feed is the JSON feed under Compress: quotes or scores.
	Feed string `json:"feed,omitempty"`
}

// Latency is a latency summary in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

// Summarize reads the percentiles of a nanosecond histogram.
func Summarize(h *Hist) Latency {
	if h.Count() == 0 {
		return Latency{}
	}
	us := func(v int64) float64 { return float64(v) / 1e3 }
	return Latency{
		Count: h.Count(),
		P50:   us(h.Quantile(50)),
		P90:   us(h.Quantile(90)),
		P99:   us(h.Quantile(99)),
		P999:  us(h.Quantile(99.9)),
		Max:   us(h.Max()),
		Mean:  h.H.Mean() / 1e3,
	}
}

// Point is one bucket of a run's time series, ready to plot.
type Point struct {
	T          float64 `json:"t_s"` // bucket start, seconds from the publish start
	Deliveries float64 `json:"deliveries_per_s"`
	MBps       float64 `json:"mb_per_s"`
	P50        float64 `json:"p50_us"`
	P90        float64 `json:"p90_us"`
	P99        float64 `json:"p99_us"`
	Max        float64 `json:"max_us"`
}

// maxPoints bounds the points Points returns; finer series are merged.
const maxPoints = 200

// Points turns a Part's series into plottable points, merging neighbouring
// buckets when there are more than maxPoints.
func Points(p *Part) []Point {
	if p.SeriesWidth == 0 {
		return nil
	}
	// Trim empty buckets at the end.
	n := len(p.Series)
	for n > 0 && p.Series[n-1].Deliveries == 0 {
		n--
	}
	group := (n + maxPoints - 1) / maxPoints
	group = max(group, 1)
	w := float64(p.SeriesWidth) * float64(group) / 1e9
	out := make([]Point, 0, n/group+1)
	for i := 0; i < n; i += group {
		var d, bytes int64
		h := NewSeriesLatency()
		for _, b := range p.Series[i:min(i+group, n)] {
			d += b.Deliveries
			bytes += b.Bytes
			h.Merge(b.Latency)
		}
		pt := Point{T: float64(i) * float64(p.SeriesWidth) / 1e9, Deliveries: float64(d) / w, MBps: float64(bytes) / w / 1e6}
		if h.Count() > 0 {
			pt.P50 = float64(h.Quantile(50))
			pt.P90 = float64(h.Quantile(90))
			pt.P99 = float64(h.Quantile(99))
			pt.Max = float64(h.Max())
		}
		out = append(out, pt)
	}
	return out
}

// Result is the outcome of one scenario against one hub.
type Result struct {
	Scenario string    `json:"scenario"`
	Target   string    `json:"target"`
	Started  time.Time `json:"started"`
	Params   Params    `json:"params"`

	Subscribers    int            `json:"subscribers"`
	Publishers     int            `json:"publishers"`
	DialFailed     int            `json:"dial_failed"`
	DialErrors     map[string]int `json:"dial_errors,omitempty"`
	ConnectSeconds float64        `json:"connect_s"`
	ConnectRate    float64        `json:"connect_per_s"`

	Published        int64       `json:"published"`
	Expected         int64       `json:"expected"`
	Delivered        int64       `json:"delivered"`
	Lost             int64       `json:"lost"`
	Duplicates       int64       `json:"duplicates"`
	OutOfOrder       int64       `json:"out_of_order"`
	Corrupt          int64       `json:"corrupt"`
	Dropped          int         `json:"dropped"`
	CloseCodes       map[int]int `json:"close_codes,omitempty"`
	PublishSeconds   float64     `json:"publish_s"`
	DeliveriesPerSec float64     `json:"deliveries_per_s"`
	MBPerSec         float64     `json:"mb_per_s"`
	Latency          Latency     `json:"latency"`
	LatencyHist      *Hist       `json:"latency_hist,omitempty"`

	ServerCPUSeconds       float64 `json:"server_cpu_s"`
	ServerCPUPerDeliveryUs float64 `json:"server_cpu_us_per_delivery"`
	// ServerSchedCPUSeconds is the same window's CPU time from the threads'
	// schedstat: nanosecond resolution, where the /proc/PID/stat figure
	// moves in 10 ms ticks.
	ServerSchedCPUSeconds       float64 `json:"server_sched_cpu_s"`
	ServerSchedCPUPerDeliveryUs float64 `json:"server_sched_cpu_us_per_delivery"`
	ClientCPUSeconds            float64 `json:"client_cpu_s"`
	ClientCPUPerDeliveryUs      float64 `json:"client_cpu_us_per_delivery"`
	// MessagesPerRead is deliveries per client read call: how well the
	// client batches (higher is cheaper).
	MessagesPerRead float64 `json:"messages_per_read"`
	// WireBytesPerDelivery is the bytes subscribers read off their
	// sockets per delivery: frame headers included, after compression.
	WireBytesPerDelivery float64 `json:"wire_bytes_per_delivery"`
	// Deflated is how many subscribers the hub agreed permessage-deflate
	// with (Params.Compress).
	Deflated        int     `json:"deflated,omitempty"`
	ServerRSSBefore int64   `json:"server_rss_before"`
	ServerRSSAfter  int64   `json:"server_rss_after"`
	RSSPerConn      float64 `json:"server_rss_per_conn"`
	ServerPeakRSS   int64   `json:"server_peak_rss"`
	ServerMeasured  bool    `json:"server_measured"`

	Series []Point `json:"series,omitempty"`
	Churn  *Churn  `json:"churn,omitempty"`
	// Reconnect is the reconnect scenario's cuts, reconnects and recovery.
	Reconnect *Reconnect `json:"reconnect,omitempty"`
	// Cluster is the NATS traffic of a run against several nodes, and the
	// node it killed.
	Cluster *Cluster `json:"cluster,omitempty"`
	// Storm is the storm scenario's figures (its reconnects are in
	// Reconnect).
	Storm *Storm `json:"storm,omitempty"`
	// ConnectServerCPUSeconds is the hub's CPU time (schedstat) while the
	// subscribers connected, and ServerCPUPerHandshakeUs that per
	// subscriber: what accepting one costs the hub.
	ConnectServerCPUSeconds float64 `json:"connect_server_cpu_s,omitempty"`
	ServerCPUPerHandshakeUs float64 `json:"server_cpu_us_per_handshake,omitempty"`
	// Soak and Slow are the soak and slow-consumer scenarios' own findings.
	Soak *Soak         `json:"soak,omitempty"`
	Slow *SlowConsumer `json:"slow_consumer,omitempty"`

	// Errors are what went wrong; Failures are the checks the run failed
	// (loss, duplicates, disorder, failed connects). Both empty means pass.
	Errors   []string `json:"errors,omitempty"`
	Failures []string `json:"failures,omitempty"`
}

// Pass reports whether the run had no error and failed no check.
func (r *Result) Pass() bool { return len(r.Errors) == 0 && len(r.Failures) == 0 }

// Check fills Failures from the counters: anything lost, duplicated,
// reordered or corrupt, failed connects, and subscribers cut off early.
func (r *Result) Check() {
	r.Failures = nil
	add := func(format string, a ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, a...)) }
	if r.DialFailed > 0 {
		add("%d subscriber connects failed (%s)", r.DialFailed, FormatCounts(r.DialErrors))
	}
	if r.Lost > 0 && (r.Reconnect == nil || !r.Reconnect.CannotResume) {
		add("%d of %d deliveries lost", r.Lost, r.Expected)
	}
	if r.Duplicates > 0 {
		add("%d duplicate deliveries", r.Duplicates)
	}
	if r.OutOfOrder > 0 {
		add("%d deliveries out of order", r.OutOfOrder)
	}
	if r.Corrupt > 0 {
		add("%d corrupt messages", r.Corrupt)
	}
	if r.Dropped > 0 {
		add("%d subscribers disconnected early (close codes %v)", r.Dropped, r.CloseCodes)
	}
	if c := r.Churn; c != nil {
		if c.Gaps > 0 || c.Duplicates > 0 || c.OutOfOrder > 0 {
			add("churning subscribers saw %d gaps, %d duplicates, %d out of order", c.Gaps, c.Duplicates, c.OutOfOrder)
		}
		if c.Failed > 0 {
			add("%d churning subscriber connects failed (%s)", c.Failed, FormatCounts(c.Errors))
		}
	}
	if r.Soak != nil {
		r.Soak.check(add)
	}
	if r.Reconnect != nil {
		r.Reconnect.summarize()
		r.Reconnect.check(add)
	}
	if r.Slow != nil {
		r.Slow.check(add)
	}
	if r.Cluster != nil {
		r.Cluster.check(add)
	}
	if r.Storm != nil {
		r.Storm.check(add)
	}
}

// FormatCounts prints a count map in a stable order, largest first.
func FormatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d× %s", m[k], k)
	}
	return s
}

// MinCPUSeconds is the least CPU time a per-delivery CPU figure is worth
// printing from: /proc/PID/stat counts in 10 ms ticks, so under 5 ticks one
// tick more or less moves the figure by 20% or more, and a run shorter than
// one tick reads as 0. Reports say TooShortToMeasure instead.
const MinCPUSeconds = 0.05

// TooShortToMeasure is what reports print for a CPU figure of a run too
// short to measure it (see MinCPUSeconds).
const TooShortToMeasure = "too short to measure"

// CPUMeasured reports whether a CPU time counted in 10 ms ticks is long
// enough to give a per-delivery figure.
func CPUMeasured(seconds float64) bool { return seconds >= MinCPUSeconds }

// Ratio is one figure of ours against the reference.
type Ratio struct {
	Name      string  `json:"name"`
	Unit      string  `json:"unit"`
	Ours      float64 `json:"ours"`
	Reference float64 `json:"reference"`
	// Ratio is ours / reference; 0 when the reference is 0 or either side
	// is too short to measure.
	Ratio float64 `json:"ratio"`
	// LowerIsBetter tells how to read the ratio.
	LowerIsBetter bool `json:"lower_is_better"`
	// OursTooShort and ReferenceTooShort mark a side whose run was too short
	// to measure this figure (a CPU time under MinCPUSeconds).
	OursTooShort      bool `json:"ours_too_short,omitempty"`
	ReferenceTooShort bool `json:"reference_too_short,omitempty"`
}

// TooShort reports whether either side was too short to measure.
func (x Ratio) TooShort() bool { return x.OursTooShort || x.ReferenceTooShort }

// Compare returns the ratios that matter for a scenario: memory per
// connection for idle runs, CPU, latency and throughput for the others.
func Compare(ours, ref *Result) []Ratio {
	var out []Ratio
	add := func(name, unit string, o, r float64, lower bool) {
		x := Ratio{Name: name, Unit: unit, Ours: o, Reference: r, LowerIsBetter: lower}
		if r != 0 {
			x.Ratio = o / r
		}
		out = append(out, x)
	}
	if ours.Scenario == "idle" {
		add("server RSS per connection", "KiB", ours.RSSPerConn/1024, ref.RSSPerConn/1024, true)
		add("connect rate", "conn/s", ours.ConnectRate, ref.ConnectRate, false)
		add("server CPU per handshake", "µs", ours.ServerCPUPerHandshakeUs, ref.ServerCPUPerHandshakeUs, true)
		return out
	}
	if a, b := ours.Storm, ref.Storm; a != nil && b != nil {
		add("storm: all back (101)", "s", a.BackSeconds, b.BackSeconds, true)
		add("storm: all receiving", "s", a.ReceivingSeconds, b.ReceivingSeconds, true)
		add("storm: server CPU per reconnect", "µs", a.ServerCPUPerReconnectUs, b.ServerCPUPerReconnectUs, true)
		add("connect rate (first connect)", "conn/s", ours.ConnectRate, ref.ConnectRate, false)
		return out
	}
	if a, b := ours.Reconnect, ref.Reconnect; a != nil && b != nil {
		add("lost silently", "msgs", float64(ours.Lost), float64(ref.Lost), true)
		add("duplicates", "msgs", float64(ours.Duplicates), float64(ref.Duplicates), true)
		add("out of order", "msgs", float64(ours.OutOfOrder), float64(ref.OutOfOrder), true)
		add("time to recover p50", "ms", a.Recover.P50/1e3, b.Recover.P50/1e3, true)
		add("time to recover p99", "ms", a.Recover.P99/1e3, b.Recover.P99/1e3, true)
		add("time to recover max", "ms", a.Recover.Max/1e3, b.Recover.Max/1e3, true)
	}
	add("server CPU per delivery", "µs", ours.ServerCPUPerDeliveryUs, ref.ServerCPUPerDeliveryUs, true)
	if x := &out[len(out)-1]; !CPUMeasured(ours.ServerCPUSeconds) || !CPUMeasured(ref.ServerCPUSeconds) {
		x.OursTooShort, x.ReferenceTooShort = !CPUMeasured(ours.ServerCPUSeconds), !CPUMeasured(ref.ServerCPUSeconds)
		x.Ratio = 0
	}
	add("p99 latency", "ms", ours.Latency.P99/1e3, ref.Latency.P99/1e3, true)
	add("deliveries/s", "1/s", ours.DeliveriesPerSec, ref.DeliveriesPerSec, false)
	add("server RSS per connection", "KiB", ours.RSSPerConn/1024, ref.RSSPerConn/1024, true)
	return out
}
