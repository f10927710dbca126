package result

import "fmt"

// HubSample is what a hub's /metrics said at one moment: its resources and
// what it holds.
type HubSample struct {
	// T is seconds from the start of the run.
	T           float64 `json:"t_s"`
	Goroutines  float64 `json:"goroutines"`
	OpenFDs     float64 `json:"open_fds"`
	RSS         float64 `json:"rss_bytes"`
	Connections float64 `json:"connections"` // publishers and subscribers
	Topics      float64 `json:"topics"`
}

// Max keeps the largest of each field of s and o (T is left alone: each
// field's peak may come at another time).
func (s *HubSample) Max(o HubSample) {
	s.Goroutines = max(s.Goroutines, o.Goroutines)
	s.OpenFDs = max(s.OpenFDs, o.OpenFDs)
	s.RSS = max(s.RSS, o.RSS)
	s.Connections = max(s.Connections, o.Connections)
	s.Topics = max(s.Topics, o.Topics)
}

// Tolerance is how far a hub's resources may be from where they started
// once a run is over and the settle period has passed.
type Tolerance struct {
	Goroutines float64 `json:"goroutines"` // ± this many
	OpenFDs    float64 `json:"open_fds"`   // ± this many
	// RSS may grow by RSSBytes or by RSSFraction of the start, whichever
	// is larger.
	RSSBytes    float64 `json:"rss_bytes"`
	RSSFraction float64 `json:"rss_fraction"`
}

// DefaultTolerance is the soak's: goroutines and files ±5, memory +20% or
// +8 MiB; connections and topics must be back to 0 exactly.
var DefaultTolerance = Tolerance{Goroutines: 5, OpenFDs: 5, RSSBytes: 8 << 20, RSSFraction: 0.2}

// RSSLimit is the most RSS allowed after a run that started at start.
func (t Tolerance) RSSLimit(start float64) float64 {
	return start + max(t.RSSBytes, t.RSSFraction*start)
}

// Leaks lists what in end is not back near start.
func (t Tolerance) Leaks(start, end HubSample) []string {
	var out []string
	if d := end.Goroutines - start.Goroutines; d > t.Goroutines || d < -t.Goroutines {
		out = append(out, fmt.Sprintf("goroutines %.0f → %.0f (tolerance ±%.0f)", start.Goroutines, end.Goroutines, t.Goroutines))
	}
	if d := end.OpenFDs - start.OpenFDs; d > t.OpenFDs || d < -t.OpenFDs {
		out = append(out, fmt.Sprintf("open files %.0f → %.0f (tolerance ±%.0f)", start.OpenFDs, end.OpenFDs, t.OpenFDs))
	}
	if lim := t.RSSLimit(start.RSS); end.RSS > lim {
		out = append(out, fmt.Sprintf("RSS %.1f MiB → %.1f MiB (limit %.1f MiB: +%.0f%% or +%.0f MiB)",
			start.RSS/(1<<20), end.RSS/(1<<20), lim/(1<<20), 100*t.RSSFraction, t.RSSBytes/(1<<20)))
	}
	if end.Connections != 0 {
		out = append(out, fmt.Sprintf("%.0f connections left (want 0)", end.Connections))
	}
	if end.Topics != 0 {
		out = append(out, fmt.Sprintf("%.0f topics left (want 0)", end.Topics))
	}
	return out
}

// Soak is what the soak scenario saw: clients of every kind came and went
// for a while; afterwards the hub must be back where it started.
type Soak struct {
	DurationSeconds float64 `json:"duration_s"`
	// Start is the idle hub before the run, Peak the largest values seen
	// while clients came and went, End the hub after the settle period.
	Start HubSample `json:"start"`
	Peak  HubSample `json:"peak"`
	End   HubSample `json:"end"`
	// SettleSeconds is how long after the last client left the hub took to
	// come back within Tolerance (or the whole settle timeout if it did
	// not).
	SettleSeconds float64     `json:"settle_s"`
	Settled       bool        `json:"settled"`
	Tolerance     Tolerance   `json:"tolerance"`
	Samples       []HubSample `json:"samples,omitempty"`

	// Clients counts the short-lived clients by kind, Expected the answers
	// the hub gave them as they should be (refusals of bad handshakes
	// included) and Unexpected the others, by reason.
	Clients    map[string]int `json:"clients"`
	Expected   int            `json:"expected"`
	Unexpected map[string]int `json:"unexpected,omitempty"`
	// Delivered, Gaps, Duplicates and OutOfOrder are what the short-lived
	// subscribers received while they stayed.
	Delivered  int64 `json:"delivered"`
	Gaps       int64 `json:"gaps"`
	Duplicates int64 `json:"duplicates"`
	OutOfOrder int64 `json:"out_of_order"`
	// Published counts the messages short-lived publishers sent.
	Published int64 `json:"published"`
}

func (s *Soak) check(add func(string, ...any)) {
	if s.End.T == 0 {
		return // the run stopped before the end: its error says why
	}
	for _, l := range s.Tolerance.Leaks(s.Start, s.End) {
		add("not back to the start after %.0f s: %s", s.SettleSeconds, l)
	}
	if n := sumCounts(s.Unexpected); n > 0 {
		add("%d short-lived clients got an unexpected answer (%s)", n, FormatCounts(s.Unexpected))
	}
	if s.Gaps > 0 || s.Duplicates > 0 || s.OutOfOrder > 0 {
		add("short-lived subscribers saw %d gaps, %d duplicates, %d out of order", s.Gaps, s.Duplicates, s.OutOfOrder)
	}
}

// SlowConsumer is what the slow-consumer scenario saw: one subscriber stops
// reading among many fast ones.
type SlowConsumer struct {
	FastSubscribers int   `json:"fast_subscribers"`
	MaxBacklog      int64 `json:"max_backlog"`
	// KernelBuffer is the most the kernel may hold for the slow one on top
	// of MaxBacklog: the hub's socket send buffer (net.ipv4.tcp_wmem's
	// maximum) and the slow client's receive buffer.
	KernelBuffer int64 `json:"kernel_buffer"`
	// StallSeconds is when the slow one stopped reading, from the publish
	// start; CutoffSeconds how long after that the hub cut it off (0 if it
	// never did).
	StallSeconds  float64 `json:"stall_s"`
	CutoffSeconds float64 `json:"cutoff_s"`
	CutOff        bool    `json:"cut_off"`
	// QueuedBytes is what the hub had accepted for the slow one when it
	// was cut off: what it read after it resumed reading, up to the close.
	QueuedBytes int64 `json:"queued_bytes"`
	// CloseCode is the close code the slow one got (0: none, the
	// connection just ended).
	CloseCode int `json:"close_code"`
	// Disconnects is the growth of wspubsub_disconnects_total{reason=
	// "slow_consumer"}; Dropped of wspubsub_dropped_messages_total{reason=
	// "slow_consumer"}.
	Disconnects float64 `json:"slow_consumer_disconnects"`
	Dropped     float64 `json:"slow_consumer_drops"`
	// The fast subscribers' latency in the window before the stall and
	// from the stall to Window after the cut-off, in microseconds.
	WindowSeconds float64 `json:"window_s"`
	Before        Latency `json:"before"`
	After         Latency `json:"after"`
	MaxP99JumpUs  float64 `json:"max_p99_jump_us"`
	// RSS of the hub: in the window before the stall (Baseline), the
	// largest while the slow one fell behind (Peak), and at the end of the
	// after window (After), which must be within Tolerance of Baseline.
	RSSBaseline float64   `json:"rss_baseline"`
	RSSPeak     float64   `json:"rss_peak"`
	RSSAfter    float64   `json:"rss_after"`
	Tolerance   Tolerance `json:"tolerance"`
	// The same for the Go heap in use (go_memstats_heap_inuse_bytes), which
	// shows the backlog's memory come and go where RSS, which the runtime
	// gives back to the kernel lazily, may not; reported, not checked.
	HeapBaseline float64 `json:"heap_baseline"`
	HeapPeak     float64 `json:"heap_peak"`
	HeapAfter    float64 `json:"heap_after"`
}

func (s *SlowConsumer) check(add func(string, ...any)) {
	if !s.CutOff {
		add("the subscriber that stopped reading was not cut off")
		return
	}
	if s.CloseCode != 4000 && s.CloseCode != 0 {
		add("the slow subscriber got close %d, want 4000", s.CloseCode)
	}
	if s.Disconnects != 1 {
		add("disconnects_total{reason=slow_consumer} grew by %.0f, want 1", s.Disconnects)
	}
	if hi := s.MaxBacklog + s.KernelBuffer; s.QueuedBytes > hi {
		add("%d bytes were queued for the slow subscriber, more than its bound %d + kernel buffers %d", s.QueuedBytes, s.MaxBacklog, s.KernelBuffer)
	}
	// The last write before the cut-off may be refused whole: one read of
	// the publisher's socket (64 KiB) under the bound is still at it.
	if lo := s.MaxBacklog - 128<<10; s.CloseCode == 4000 && s.QueuedBytes < lo {
		add("the slow subscriber was cut off with %d bytes queued, before its bound %d", s.QueuedBytes, s.MaxBacklog)
	}
	if s.Before.Count == 0 || s.After.Count == 0 {
		add("no latency measured before (%d) or after (%d) the stall", s.Before.Count, s.After.Count)
	} else if jump := s.After.P99 - s.Before.P99; jump > s.MaxP99JumpUs {
		add("fast subscribers' p99 latency jumped by %.2f ms (%.2f → %.2f ms), more than %.2f ms",
			jump/1e3, s.Before.P99/1e3, s.After.P99/1e3, s.MaxP99JumpUs/1e3)
	}
	if lim := s.Tolerance.RSSLimit(s.RSSBaseline); s.RSSAfter > lim {
		add("hub RSS %.1f MiB after the cut-off, above %.1f MiB (baseline %.1f MiB)", s.RSSAfter/(1<<20), lim/(1<<20), s.RSSBaseline/(1<<20))
	}
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// WindowLatency sums up the latency of the deliveries p received between
// from and to (Unix ns), from its time series: its buckets that lie in the
// window, whole. The figures are in microseconds, like Summarize's.
func WindowLatency(p *Part, from, to int64) Latency {
	h := NewSeriesLatency()
	if p.SeriesWidth <= 0 {
		return Latency{}
	}
	for i, b := range p.Series {
		start := p.SeriesStart + int64(i)*p.SeriesWidth
		if start < from || start+p.SeriesWidth > to {
			continue
		}
		h.Merge(b.Latency)
	}
	if h.Count() == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.Count(),
		P50:   float64(h.Quantile(50)),
		P90:   float64(h.Quantile(90)),
		P99:   float64(h.Quantile(99)),
		P999:  float64(h.Quantile(99.9)),
		Max:   float64(h.Max()),
		Mean:  h.H.Mean(),
	}
}
