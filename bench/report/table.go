// Package report renders load-run results for people: a plain-text table
// for the terminal and a self-contained HTML page with inline SVG charts (no
// scripts, no network assets).
//
// Concurrency contract: pure functions of their arguments; safe from any
// goroutine.
package report

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/wspubsub/wspubsub/bench/result"
)

// Describe is a one-line summary of a run's parameters.
func Describe(r *result.Result) string {
	p := r.Params
	subs := fmt.Sprintf("%d topic(s) × %d subs", p.Topics, p.SubsPerTopic)
	var what string
	switch r.Scenario {
	case "idle":
		what = fmt.Sprintf("%s, held %s", subs, p.Hold)
	case "soak":
		what = fmt.Sprintf("%s staying, %g msg/s × %d B each; %g short-lived clients/s living ~%s, for %s",
			subs, p.Rate, p.Size, p.ChurnRate, p.ChurnLife, p.Duration)
	case "slowconsumer":
		what = fmt.Sprintf("1 topic × %d fast subs + 1 that stops reading, %g msg/s × %d B", p.SubsPerTopic, p.Rate, p.Size)
	default:
		rate := "as fast as possible"
		if p.Rate > 0 {
			rate = fmt.Sprintf("%g msg/s per publisher", p.Rate)
		}
		what = fmt.Sprintf("%s, %d publisher(s) × %d msgs × %d B, %s", subs, p.Publishers, p.Count, p.Size, rate)
		if r.Scenario == "churn" {
			what += fmt.Sprintf(", churn %g/s living %s", p.ChurnRate, p.ChurnLife)
		}
		if r.Scenario == "reconnect" {
			what += fmt.Sprintf(", each subscriber cut %d× (--cut %s)", p.Cuts, p.CutMode)
			if p.KillNode > 0 {
				what += fmt.Sprintf(", node %d killed at %s", p.KillNode, p.KillAt)
			}
		}
		if r.Scenario == "storm" {
			what = fmt.Sprintf("%s dropped at once and reconnecting at once, 1 message before and 1 after", subs)
		}
	}
	if p.Compress {
		what += ", permessage-deflate offered, JSON feed " + cmp.Or(p.Feed, "quotes")
	}
	return fmt.Sprintf("%s: %s (procs %d × %d workers, %d source addrs)", r.Scenario, what, p.Procs, p.Workers, p.SourceAddrs)
}

// Table writes the human summary of one result.
func Table(w io.Writer, r *result.Result) {
	fmt.Fprintf(w, "== %s against %s\n", Describe(r), r.Target)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("connect", "%d subscribers in %.2f s (%.0f/s), %d failed %s", r.Subscribers, r.ConnectSeconds, r.ConnectRate, r.DialFailed, paren(result.FormatCounts(r.DialErrors)))
	if r.ServerCPUPerHandshakeUs > 0 {
		row("  server CPU", "%.3f s while connecting = %.1f µs per handshake (schedstat)", r.ConnectServerCPUSeconds, r.ServerCPUPerHandshakeUs)
	}
	if r.Scenario != "idle" {
		cd := churnDelivered(r)
		if cd > 0 {
			row("delivered", "%d of %d expected by subscribers that stayed, +%d to churning ones", r.Delivered-cd, r.Expected, cd)
		} else {
			row("delivered", "%d of %d expected", r.Delivered, r.Expected)
		}
		row("integrity", "lost %d, duplicates %d, out of order %d, corrupt %d, subscribers cut off %d %s",
			r.Lost, r.Duplicates, r.OutOfOrder, r.Corrupt, r.Dropped, codes(r.CloseCodes))
		row("throughput", "%s deliveries/s, %.1f MB/s, over %.2f s (%d published)", si(r.DeliveriesPerSec), r.MBPerSec, r.PublishSeconds, r.Published)
		l := r.Latency
		live := ""
		if r.Reconnect != nil {
			live = " (live deliveries; replayed ones are in the time to recover)"
		}
		row("latency", "p50 %s  p90 %s  p99 %s  p99.9 %s  max %s%s", dur(l.P50), dur(l.P90), dur(l.P99), dur(l.P999), dur(l.Max), live)
	} else if r.Dropped > 0 {
		row("dropped", "%d subscribers closed by the server %v", r.Dropped, r.CloseCodes)
	}
	if r.ServerMeasured {
		if r.Scenario == "idle" {
			row("server CPU", "%.2f s while holding", r.ServerCPUSeconds)
		} else {
			row("server CPU", "%.2f s = %s (/proc/PID/stat, 10 ms ticks); schedstat %.3f s = %s",
				r.ServerCPUSeconds, perDelivery(result.CPUMeasured(r.ServerCPUSeconds), r.ServerCPUPerDeliveryUs),
				r.ServerSchedCPUSeconds, perDelivery(r.ServerSchedCPUSeconds > 0, r.ServerSchedCPUPerDeliveryUs))
		}
		row("server RSS", "%s → %s (peak %s), %.2f KiB per connection", mib(r.ServerRSSBefore), mib(r.ServerRSSAfter), mib(r.ServerPeakRSS), r.RSSPerConn/1024)
	} else {
		row("server", "not measured (no --server-pid, or the hub runs in this process)")
	}
	if r.Scenario != "idle" {
		row("client CPU", "%.2f s = %s (%.1f messages per read)", r.ClientCPUSeconds, perDelivery(result.CPUMeasured(r.ClientCPUSeconds), r.ClientCPUPerDeliveryUs), r.MessagesPerRead)
		if r.WireBytesPerDelivery > 0 {
			row("wire bytes", "%.1f B per delivery (read off the subscribers' sockets, frame headers included)", r.WireBytesPerDelivery)
		}
	} else {
		row("client CPU", "%.2f s while holding", r.ClientCPUSeconds)
	}
	if r.Params.Compress {
		row("deflate", "permessage-deflate agreed with %d of %d subscribers", r.Deflated, r.Subscribers)
	}
	if s := r.Slow; s != nil {
		row("slow one", "stopped reading at %.1f s; cut off %.2f s later, close %d; %s queued for it (bound %s + kernel ≤ %s)",
			s.StallSeconds, s.CutoffSeconds, s.CloseCode, mib(s.QueuedBytes), mib(s.MaxBacklog), mib(s.KernelBuffer))
		row("hub counted", "disconnects{slow_consumer} +%.0f, dropped_messages{slow_consumer} +%.0f", s.Disconnects, s.Dropped)
		row("fast subs p99", "before %s (max %s), after %s (max %s); limit +%s (windows of %.0f s)",
			dur(s.Before.P99), dur(s.Before.Max), dur(s.After.P99), dur(s.After.Max), dur(s.MaxP99JumpUs), s.WindowSeconds)
		row("hub RSS", "%s before the stall, peak %s, %s after the cut-off (limit %s)",
			mib(int64(s.RSSBaseline)), mib(int64(s.RSSPeak)), mib(int64(s.RSSAfter)), mib(int64(s.Tolerance.RSSLimit(s.RSSBaseline))))
		row("hub heap in use", "%s before the stall, peak %s, %s after the cut-off",
			mib(int64(s.HeapBaseline)), mib(int64(s.HeapPeak)), mib(int64(s.HeapAfter)))
	}
	if s := r.Soak; s != nil {
		sample := func(h result.HubSample) string {
			return fmt.Sprintf("goroutines %.0f, files %.0f, RSS %s, connections %.0f, topics %.0f",
				h.Goroutines, h.OpenFDs, mib(int64(h.RSS)), h.Connections, h.Topics)
		}
		row("hub at start", "%s", sample(s.Start))
		row("hub at peak", "%s", sample(s.Peak))
		settled := "back within tolerance"
		if !s.Settled {
			settled = "NOT back within tolerance"
		}
		row("hub at end", "%s (%s after %.0f s)", sample(s.End), settled, s.SettleSeconds)
		row("tolerance", "goroutines ±%.0f, files ±%.0f, RSS +%s or +%.0f%%, connections and topics 0",
			s.Tolerance.Goroutines, s.Tolerance.OpenFDs, mib(int64(s.Tolerance.RSSBytes)), 100*s.Tolerance.RSSFraction)
		n, bad := 0, 0
		for _, v := range s.Clients {
			n += v
		}
		for _, v := range s.Unexpected {
			bad += v
		}
		row("short-lived", "%d clients (%s); %d answered as expected, %d not %s",
			n, result.FormatCounts(s.Clients), s.Expected, bad, paren(result.FormatCounts(s.Unexpected)))
		row("their messages", "%d published, %d delivered; %d gaps, %d duplicates, %d out of order",
			s.Published, s.Delivered, s.Gaps, s.Duplicates, s.OutOfOrder)
	}
	if c := r.Reconnect; c != nil {
		subs := fmt.Sprintf("%d with wspubsub.meta, %d without", c.MetaSubs, c.PlainSubs)
		if c.CannotResume {
			subs += " (this hub keeps no history: plain reconnects, loss expected)"
		}
		row("positions", "%s", subs)
		row("cuts", "%d planned, %d made, %d skipped; the hub closed %d %s, %d unplanned, %d muted not closed in time",
			c.Planned, c.Cuts, c.Skipped, c.HubClosed, codes(c.CloseCodes), c.Unplanned, c.HubMissed)
		row("reconnects", "%d (%d with since, %d plain, %d to another node), %d dials failed %s",
			c.Reconnects, c.Resumed, c.Plain, c.Moved, c.DialFailed, paren(result.FormatCounts(c.DialErrors)))
		row("loss", "lost silently %d, reported lost %d (%d gap notices), %d resets; %d published before their connection opened (replayed); %d gap-covered that came anyway, %d bad positions",
			r.Lost, c.ReportedLost, c.GapNotices, c.Resets, c.Replayed, c.GapDelivered, c.BadPositions)
		l := c.Recover
		row("time to recover", "p50 %s  p90 %s  p99 %s  max %s over %d outages, %d not recovered (cut to first message after the reconnect)",
			dur(l.P50), dur(l.P90), dur(l.P99), dur(l.Max), c.Recovered, c.Unrecovered)
		l = c.Reopen
		row("  of which reopen", "p50 %s  p90 %s  p99 %s  max %s (cut to the reconnect's 101: delay, connect, handshake)",
			dur(l.P50), dur(l.P90), dur(l.P99), dur(l.Max))
	}
	if c := r.Cluster; c != nil {
		row("NATS", "%.0f B received per published message over the nodes: %.2f copies of %.0f B; at most %.2f messages per node per published (%s)",
			c.BytesPerMessage, c.Copies, c.BytesPerCopy, c.CopiesMax, c.Source)
		row("  per node", "received bytes %v, messages %v; subscribers at the end %v (-1: not read at the end)", c.ReceivedBytes, c.ReceivedMessages, c.Subscribers)
		if c.Killed > 0 {
			k := fmt.Sprintf("node %d killed with SIGKILL %.1f s after the first message", c.Killed, c.KilledAt)
			if c.KillErr != "" {
				k = fmt.Sprintf("node %d not killed: %s", c.Killed, c.KillErr)
			}
			row("kill", "%s", k)
		}
	}
	if s := r.Storm; s != nil {
		row("storm", "%d dropped at once: all back (101) in %.3f s, all receiving in %.3f s; server CPU %.3f s = %.1f µs per reconnect",
			s.Subscribers, s.BackSeconds, s.ReceivingSeconds, s.ServerCPUSeconds, s.ServerCPUPerReconnectUs)
	}
	if c := r.Churn; c != nil {
		row("churn", "%d opened, %d failed, %d cut by server; %d deliveries, %d gaps, %d duplicates, %d out of order %s",
			c.Opened, c.Failed, c.Dropped, c.Delivered, c.Gaps, c.Duplicates, c.OutOfOrder, paren(result.FormatCounts(c.Errors)))
	}
	verdict := "PASS"
	if !r.Pass() {
		verdict = "FAIL"
	}
	row("result", "%s", verdict)
	tw.Flush()
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  failed: %s\n", f)
	}
}

// CompareTable writes ours against the reference, ratios last.
func CompareTable(w io.Writer, ours, ref *result.Result) {
	fmt.Fprintf(w, "== ours / reference: %s\n", Describe(ours))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  figure\tours\treference\tours/ref\t\n")
	for _, x := range result.Compare(ours, ref) {
		better := "higher is better"
		if x.LowerIsBetter {
			better = "lower is better"
		}
		ratio := "n/a"
		if x.TooShort() {
			ratio = result.TooShortToMeasure
		} else if x.Reference != 0 {
			ratio = fmt.Sprintf("%.2f", x.Ratio)
		}
		o, ref := num(x.Ours), num(x.Reference)
		if x.OursTooShort {
			o = "too short"
		}
		if x.ReferenceTooShort {
			ref = "too short"
		}
		fmt.Fprintf(tw, "  %s (%s)\t%s\t%s\t%s\t  %s\n", x.Name, x.Unit, o, ref, ratio, better)
	}
	tw.Flush()
}

// perDelivery prints a CPU time per delivery, "1.234 µs per delivery", or
// says the run was too short to measure it when the CPU time it comes from
// was not measured (see result.CPUMeasured).
func perDelivery(measured bool, us float64) string {
	if !measured {
		return result.TooShortToMeasure + " per delivery"
	}
	return fmt.Sprintf("%.3f µs per delivery", us)
}

func codes(m map[int]int) string {
	if len(m) == 0 {
		return ""
	}
	return fmt.Sprintf("(close codes %v)", m)
}

func churnDelivered(r *result.Result) int64 {
	if r.Churn == nil {
		return 0
	}
	return r.Churn.Delivered
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + s + ")"
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1e5:
		return si(v)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// dur prints microseconds as µs or ms.
func dur(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}

func mib(b int64) string {
	return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(b)/(1<<20)), ".0") + " MiB"
}
