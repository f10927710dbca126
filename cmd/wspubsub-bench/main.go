// Command wspubsub-bench load-tests a WebSocket pub/sub hub that speaks the
// wspubsub protocol, over cheap epoll clients, and compares it with a
// reference hub written the common Go way.
//
//	wspubsub-bench idle    [flags]   hold N subscribers; connect rate, server memory per connection
//	wspubsub-bench fanout  [flags]   T topics × S subscribers; throughput, loss, order, latency, CPU per delivery
//	wspubsub-bench churn   [flags]   subscribers come and go while messages flow; no loss for those that stay
//	wspubsub-bench reconnect [flags] every subscriber is cut (--cut client|hub) --cuts times and resumes
//	                                 with since=EPOCH:OFFSET (wspubsub.meta); loss, duplicates, order,
//	                                 time to recover
//	wspubsub-bench storm   [flags]   every subscriber dropped at once reconnects at once; time until all
//	                                 are back and receiving (a message published after reaches all)
//	wspubsub-bench soak    [flags]   minutes of clients of every kind coming and going; the hub's goroutines,
//	                                 files, memory, connections and topics must come back (reads /metrics)
//	wspubsub-bench slowconsumer [flags]  one subscriber stops reading among 1,000 fast ones: it is cut off
//	                                 at --max-backlog, the others lose nothing and keep their latency
//	wspubsub-bench neighbor [flags]  100 small topics alone, then beside one of 10,000 subscribers;
//	                                 their p50/p99 in both phases and the ratio (--compare: and the reference)
//	wspubsub-bench httppub [flags]   HTTP publishes a second on 1 and on 50 keep-alive connections (ours)
//	wspubsub-bench smoke   --hub-bin BIN   tiny idle, fanout, churn, reconnect (ours and the reference),
//	                                 compressed fanout, soak and slowconsumer (ours) (CI)
//	wspubsub-bench refhub  --listen ADDR --key K --domain D   run the reference hub standalone
//
// The hub is started by the bench (--hub-bin, or the reference hub when no
// target is given) or is already running (--url ws://127.0.0.1:PORT --key K
// [--server-pid PID]). Several --url (or --hub-bin with --nodes N and
// --nats-url, or --nats-bin for a throwaway NATS) make the target a cluster
// of hub nodes: subscribers and publishers are spread over them, the server
// figures sum every node's process, and each node's NATS traffic comes from
// its /metrics. reconnect --kill-node N kills node N with SIGKILL mid-run:
// its subscribers resume on the other nodes with since. --compare runs the same scenario against ours and
// the reference in turn and prints the ratios. Traffic only ever goes to
// 127.0.0.0/8; every run is bounded by --timeout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/bench/refhub"
	"github.com/wspubsub/wspubsub/bench/report"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/scenario"
	"github.com/wspubsub/wspubsub/bench/target"
)

func main() {
	if ok, err := scenario.RunHelper(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(os.Args[1:]))
}

const usage = `usage: wspubsub-bench idle|fanout|churn|reconnect|storm|soak|slowconsumer|neighbor|httppub|smoke|refhub [flags]
       wspubsub-bench SCENARIO -h   for the flags`

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "refhub":
		if err := refhub.Main(args); err != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench refhub:", err)
			return 1
		}
		return 0
	case "httppub":
		return runHTTPPub(args)
	case "neighbor":
		return runNeighbor(args)
	case "idle", "fanout", "churn", "reconnect", "storm", "soak", "slowconsumer", "smoke":
	case "-h", "--help", "help":
		fmt.Println(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "wspubsub-bench: unknown command %q\n%s\n", cmd, usage)
		return 2
	}
	f, err := parseFlags(cmd, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "wspubsub-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench: cannot write the CPU profile:", err)
			return 2
		}
		pprof.StartCPUProfile(pf)
		defer func() {
			pprof.StopCPUProfile()
			pf.Close()
		}()
	}
	var runs []report.Run
	if cmd == "smoke" {
		runs, err = smoke(ctx, f)
	} else {
		var r report.Run
		r, err = one(ctx, f, cmd)
		if r.Ours != nil {
			runs = append(runs, r)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wspubsub-bench:", err)
	}
	if werr := output(f, cmd, runs); werr != nil {
		fmt.Fprintln(os.Stderr, "wspubsub-bench:", werr)
		return 1
	}
	if err != nil {
		return 1
	}
	for _, r := range runs {
		if !r.Ours.Pass() || (r.Reference != nil && !r.Reference.Pass()) {
			return 1
		}
	}
	return 0
}

type flags struct {
	opt scenario.Options

	hubBin     string
	urls       []string
	key        string
	domain     string
	serverPIDs []int
	nodes      int
	natsURL    string
	natsBin    string
	compare    bool
	sources    string
	json       bool
	html       string
	progress   bool
	cpuProfile string
	hub        target.HubOptions
	tolRSSMiB  float64
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func parseFlags(cmd string, args []string) (*flags, error) {
	f := &flags{}
	o := &f.opt
	o.Scenario = cmd
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	// Target.
	fs.StringVar(&f.hubBin, "hub-bin", "", "our hub's binary `BIN`: the bench runs \"BIN keys add\" and \"BIN serve\" on a free 127.0.0.1 port")
	var urls, pids multi
	fs.Var(&urls, "url", "a hub that is already running, ws://127.0.0.1:PORT (needs --key); repeat it or give a comma-separated list for the nodes of a cluster: subscribers and publishers are spread over them")
	fs.StringVar(&f.key, "key", "", "publisher key for --url")
	fs.StringVar(&f.domain, "domain", "bench", "domain of the topics")
	fs.Var(&pids, "server-pid", "process id of the --url hub, to measure its CPU and memory; for several --url, one per URL in their order (repeated or comma-separated)")
	fs.IntVar(&f.nodes, "nodes", 1, "with --hub-bin: start this many hub nodes clustered over --nats-url, sharing one key file")
	fs.StringVar(&f.natsURL, "nats-url", "nats://127.0.0.1:4222", "the NATS server the nodes of --nodes cluster over")
	fs.StringVar(&f.natsBin, "nats-bin", "", "with --nodes: start a throwaway NATS server (JetStream on, a free 127.0.0.1 port), this nats-server `BIN`, instead of using --nats-url")
	fs.BoolVar(&f.compare, "compare", false, "run against --hub-bin and then against the reference hub, and print ours/reference ratios")
	var hubArgs multi
	fs.Var(&hubArgs, "hub-arg", "extra argument for our hub's serve command (repeatable)")
	fs.BoolVar(&f.hub.SubscribeWaits, "subscribe-waits", false, "start hubs with --subscribe-waits")
	fs.Int64Var(&f.hub.MaxBacklog, "max-backlog", 0, "start our hub with --max-backlog BYTES")
	fs.DurationVar(&f.hub.PingInterval, "ping-interval", 0, "start hubs with --ping-interval (reconnect --cut hub: default 1s)")
	fs.DurationVar(&f.hub.PongTimeout, "pong-timeout", 0, "start hubs with --pong-timeout (reconnect --cut hub: default 1s)")
	fs.IntVar(&f.hub.HistorySize, "history-size", 0, "start our hub with --history-size N, the messages it keeps per topic for since (0: its default)")
	fs.DurationVar(&f.hub.GracePeriod, "grace-period", 0, "start hubs with --grace-period")
	fs.StringVar(&f.hub.LogPath, "hub-log", "", "append the output of the hubs the bench starts to FILE and keep it (default: a temporary file, shown on failure)")
	// Shape.
	defTopics, defSubs, defCount, defSize, defRate := 1, 100, 200, 128, 0.0
	defDuration, defChurnRate, defChurnLife := 5*time.Second, 50.0, 500*time.Millisecond
	defDialConcurrency := 64
	switch cmd {
	case "idle":
		defSubs = 1000
	case "churn":
		defTopics, defSubs, defCount = 4, 25, 0
	case "reconnect":
		// 10,000 subscribers cut in the first half of each slot reconnect
		// at about 2,000/s; 64 handshakes in flight per worker would queue
		// them for seconds at the client (2 × 2 workers × 512 stays under
		// the kernel's somaxconn of 4096).
		defSubs, defCount, defRate, defDuration, defDialConcurrency = 1000, 0, 4, 10*time.Second, 512
	case "storm":
		// The whole storm in flight at once, as in reconnect.
		defSubs, defDialConcurrency = 19000, 512
	case "soak":
		defTopics, defSubs, defCount, defSize, defRate = 10, 50, 0, 256, 10
		defDuration, defChurnRate, defChurnLife = 2*time.Minute, 200, 4*time.Second
	case "slowconsumer":
		defSubs, defCount, defSize, defRate = 1000, 0, 8192, 100
	}
	fs.IntVar(&o.Topics, "topics", defTopics, "topics (one publisher each)")
	fs.IntVar(&o.SubsPerTopic, "subs", defSubs, "subscribers per topic")
	pubs := fs.Int("pubs", 0, "publishers; the protocol allows one per topic, so this must equal --topics (default)")
	fs.IntVar(&o.Size, "size", defSize, "message size in bytes (at least 32: publisher id, sequence, send time, trailer)")
	fs.IntVar(&o.Count, "count", defCount, "messages per publisher (churn, soak, reconnect: rate × duration when 0; slowconsumer: until the end)")
	fs.BoolVar(&o.Compress, "compress", false, "idle, fanout: subscribers offer permessage-deflate and publishers send a JSON feed (each message different), to measure wire bytes and CPU per delivery with compression; our hub only (the same run with --hub-arg=--compression=false is the uncompressed baseline)")
	fs.StringVar(&o.Feed, "feed", "quotes", "with --compress: the JSON feed publishers send, quotes (market data) or scores (live football with commentary); 1-2 KB, each message different")
	fs.Float64Var(&o.Rate, "rate", defRate, "messages per second per publisher; 0 = as fast as it goes (churn default 50)")
	fs.DurationVar(&o.Hold, "hold", 3*time.Second, "idle: how long to hold the subscribers before measuring memory")
	fs.DurationVar(&o.Duration, "duration", defDuration, "churn, soak, reconnect: how long messages flow and clients come and go (or are cut)")
	fs.Float64Var(&o.ChurnRate, "churn-rate", defChurnRate, "churn: subscribers joining per second; soak: short-lived clients of every kind per second")
	fs.DurationVar(&o.ChurnLife, "churn-life", defChurnLife, "churn: how long each joining subscriber stays; soak: their mean life (each lives up to twice it)")
	// Reconnect.
	fs.IntVar(&o.Cuts, "cuts", 2, "reconnect: how many times each subscriber is cut, spread over the run")
	fs.StringVar(&o.CutMode, "cut", "client", "reconnect: client (the client drops its TCP connection) or hub (it stops answering pings until the hub closes it, 4003)")
	fs.DurationVar(&o.ReconnectDelay, "reconnect-delay", 200*time.Millisecond, "reconnect: wait before reconnecting, jittered between half and one and a half of it")
	fs.IntVar(&o.KillNode, "kill-node", 0, "reconnect with --nodes: kill node `N` (2 or more; node 1 holds the publishers) with SIGKILL mid-run; its subscribers resume on the other nodes with since (--cuts 0: the kill is the only cut)")
	fs.DurationVar(&o.KillAt, "kill-at", 0, "reconnect --kill-node: when, after the first message (default: half the run)")
	fs.BoolVar(&o.AllowGaps, "allow-gaps", false, "reconnect: pass although the hub reported messages lost (gap notices), as with a --history-size shorter than the outages")
	// Soak and slow consumer.
	fs.StringVar(&o.MetricsURL, "metrics-url", "", "soak, slowconsumer: the hub's metrics (default http://HUB/metrics; give it for a --url hub with --metrics-listen)")
	fs.DurationVar(&o.SettleTimeout, "settle-timeout", time.Minute, "soak: how long the hub gets to come back to its start once every client left")
	fs.Float64Var(&o.Tolerance.Goroutines, "tolerance-goroutines", 5, "soak: goroutines may end this far from the start (±)")
	fs.Float64Var(&o.Tolerance.OpenFDs, "tolerance-fds", 5, "soak: open files may end this far from the start (±)")
	fs.Float64Var(&f.tolRSSMiB, "tolerance-rss-mib", 8, "soak, slowconsumer: RSS may end this many MiB above the start ...")
	fs.Float64Var(&o.Tolerance.RSSFraction, "tolerance-rss-fraction", 0.2, "... or this fraction above it, whichever is more")
	fs.DurationVar(&o.Stall, "stall", 5*time.Second, "slowconsumer: when the slow subscriber stops reading, after the first message")
	fs.DurationVar(&o.Window, "window", 3*time.Second, "slowconsumer: latency window before the stall, and after the cut-off")
	fs.DurationVar(&o.CutoffTimeout, "cutoff-timeout", time.Minute, "slowconsumer: fail if the hub has not cut the slow subscriber off by then")
	fs.IntVar(&o.SlowRcvBuf, "slow-rcvbuf", 4096, "slowconsumer: SO_RCVBUF of the slow subscriber")
	fs.DurationVar(&o.MaxP99Jump, "max-p99-jump", 5*time.Millisecond, "slowconsumer: how much the fast subscribers' p99 latency may grow from before to after")
	// Clients.
	fs.IntVar(&o.Procs, "procs", 1, "client processes holding subscribers (the bench re-executes itself)")
	fs.IntVar(&o.Workers, "workers", 2, "epoll workers per client process")
	fs.StringVar(&f.sources, "source-addrs", "auto", "local addresses for client sockets: a range 127.0.0.2-127.0.0.9, a comma list, auto (that range) or none")
	fs.IntVar(&o.DialConcurrency, "dial-concurrency", defDialConcurrency, "handshakes in flight per worker (reconnect: 512, so that the client's bound does not make the time to recover)")
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 20*time.Second, "bound on one connect plus upgrade")
	fs.DurationVar(&o.Coalesce, "coalesce", 300*time.Microsecond, "client workers pause this long after handling events so each read brings more frames (latency uses kernel receive timestamps, so this does not inflate it)")
	fs.DurationVar(&o.Settle, "settle", 300*time.Millisecond, "pause after the last subscriber connects before publishing")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", 5*time.Second, "end the run when nothing arrived for this long after publishing")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "bound on the whole run (each target)")
	// Output.
	fs.BoolVar(&f.json, "json", false, "print results as JSON on stdout instead of tables")
	fs.StringVar(&f.html, "html", "", "write a self-contained HTML report with charts to FILE")
	fs.BoolVar(&f.progress, "progress", false, "print progress lines on stderr even when it is not a terminal")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this (coordinating) process to FILE")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	f.hub.Domain = f.domain
	f.hub.ExtraArgs = hubArgs
	o.Tolerance.RSSBytes = f.tolRSSMiB * (1 << 20)
	o.MaxBacklog = f.hub.MaxBacklog
	if cmd == "reconnect" && o.CutMode == "hub" {
		if f.hub.PingInterval == 0 {
			f.hub.PingInterval = time.Second
		}
		if f.hub.PongTimeout == 0 {
			f.hub.PongTimeout = time.Second
		}
	}
	o.PingInterval, o.PongTimeout = f.hub.PingInterval, f.hub.PongTimeout
	if cmd == "soak" || cmd == "slowconsumer" {
		if f.compare {
			return nil, fmt.Errorf("%s reads our hub's /metrics: the reference hub has none, so --compare does not apply", cmd)
		}
		if f.hubBin == "" && len(f.urls) == 0 {
			return nil, fmt.Errorf("%s reads our hub's /metrics: give --hub-bin or --url", cmd)
		}
	}
	for _, u := range urls {
		for _, part := range strings.Split(u, ",") {
			if part = strings.TrimSpace(part); part != "" {
				f.urls = append(f.urls, part)
			}
		}
	}
	for _, p := range pids {
		for _, part := range strings.Split(p, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(part))
			if err != nil || pid <= 0 {
				return nil, fmt.Errorf("bad --server-pid %q: want process ids", part)
			}
			f.serverPIDs = append(f.serverPIDs, pid)
		}
	}
	if len(f.serverPIDs) > 0 && len(f.serverPIDs) != len(f.urls) {
		return nil, fmt.Errorf("cannot match %d --server-pid to %d --url", len(f.serverPIDs), len(f.urls))
	}
	if f.nodes < 1 || (f.nodes > 1 && f.hubBin == "") {
		return nil, errors.New("--nodes takes a count of at least 1, and --hub-bin")
	}
	if o.KillNode > 0 && (f.nodes < 2 || o.KillNode > f.nodes) {
		return nil, fmt.Errorf("cannot kill node %d: --kill-node takes a node the bench starts with --hub-bin and --nodes (2 to --nodes)", o.KillNode)
	}
	if f.nodes > 1 && f.compare {
		return nil, errors.New("--nodes cannot --compare: the reference hub has no cluster")
	}
	if *pubs != 0 && *pubs != o.Topics {
		return nil, fmt.Errorf("cannot use %d publishers for %d topics: a topic takes one publisher (a second gets 409)", *pubs, o.Topics)
	}
	if f.hubBin != "" && len(f.urls) > 0 {
		return nil, errors.New("use either --hub-bin or --url")
	}
	if o := f.opt; o.Compress && (f.compare || (cmd != "idle" && cmd != "fanout")) {
		return nil, errors.New("--compress runs idle and fanout against our hub only: compare with the same run without it")
	}
	if o := f.opt; o.Feed != "quotes" && (!o.Compress || payload.Feeds[o.Feed] == nil) {
		return nil, fmt.Errorf("--feed %q: use quotes or scores, with --compress", o.Feed)
	}
	if f.compare && f.hubBin == "" {
		return nil, errors.New("--compare needs --hub-bin for our hub")
	}
	if len(f.urls) > 0 && f.key == "" {
		return nil, errors.New("--url needs --key")
	}
	srcs, err := parseSources(f.sources)
	if err != nil {
		return nil, err
	}
	o.Sources = srcs
	if f.progress || isTerminal(2) {
		o.Progress = os.Stderr
		o.ProgressTTY = isTerminal(2)
	}
	return f, nil
}

// parseSources reads "127.0.0.2-127.0.0.9", "a,b,c", "auto" or "none".
func parseSources(s string) ([]string, error) {
	switch s {
	case "", "none":
		return nil, nil
	case "auto":
		s = "127.0.0.2-127.0.0.9"
	}
	var out []string
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := netip.ParseAddr(lo)
		if err != nil || !a.Is4() || !a.IsLoopback() {
			return nil, fmt.Errorf("cannot use source address %q: it must be IPv4 in 127.0.0.0/8", lo)
		}
		if !isRange {
			out = append(out, a.String())
			continue
		}
		b, err := netip.ParseAddr(hi)
		if err != nil || !b.Is4() || !b.IsLoopback() || b.Less(a) {
			return nil, fmt.Errorf("cannot use source range %q: want 127.x.y.z-127.x.y.w, low to high", part)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x.String())
			if x == b || len(out) > 1024 {
				break
			}
		}
	}
	return out, nil
}

// one runs a scenario against the chosen target, or against ours and the
// reference with --compare.
func one(ctx context.Context, f *flags, cmd string) (report.Run, error) {
	var run report.Run
	switch {
	case f.compare:
		ours, err := against(ctx, f, f.opt, "ours")
		run.Ours = ours
		if err != nil {
			return run, err
		}
		ref, err := against(ctx, f, f.opt, "reference")
		run.Reference = ref
		return run, err
	case len(f.urls) > 0:
		r, err := against(ctx, f, f.opt, "url")
		run.Ours = r
		return run, err
	case f.hubBin != "":
		r, err := against(ctx, f, f.opt, "ours")
		run.Ours = r
		return run, err
	default:
		r, err := against(ctx, f, f.opt, "reference")
		run.Ours = r
		return run, err
	}
}

// against starts (or attaches to) one target, runs o on it and stops it.
func against(ctx context.Context, f *flags, o scenario.Options, which string) (*result.Result, error) {
	var t *target.Target
	var err error
	hub := hubOptions(f.hub, o)
	switch which {
	case "ours":
		if f.nodes > 1 {
			natsURL := f.natsURL
			if f.natsBin != "" {
				u, stop, nerr := target.StartNATS(ctx, f.natsBin)
				if nerr != nil {
					return nil, nerr
				}
				defer stop()
				natsURL = u
			}
			t, err = target.StartCluster(ctx, f.hubBin, f.nodes, natsURL, hub)
		} else {
			t, err = target.StartOurs(ctx, f.hubBin, hub)
		}
	case "reference":
		self, serr := os.Executable()
		if serr != nil {
			return nil, fmt.Errorf("cannot find the bench binary to start the reference hub: %w", serr)
		}
		t, err = target.StartReference(ctx, self, hub)
	case "url":
		t, err = target.AttachCluster(f.urls, f.domain, f.key, f.serverPIDs)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := t.Stop(); serr != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench:", serr)
		}
	}()
	if o.Progress != nil && !o.ProgressTTY {
		fmt.Fprintf(o.Progress, "running %s against %s (%v, pids %v)\n", o.Scenario, t.Name, t.Servers(), t.Processes())
	}
	return scenario.Run(ctx, t, o)
}

// hubOptions adapts the options of a hub the bench starts to scenario o:
// the soak and the slow consumer want topics to end soon after their
// publisher (--grace-period 1s unless given), and the slow consumer's
// --max-backlog; reconnect --cut hub wants the pings it counts on.
func hubOptions(h target.HubOptions, o scenario.Options) target.HubOptions {
	switch o.Scenario {
	case "reconnect":
		if o.PingInterval > 0 {
			h.PingInterval = o.PingInterval
		}
		if o.PongTimeout > 0 {
			h.PongTimeout = o.PongTimeout
		}
	case "soak", "slowconsumer":
		if h.GracePeriod == 0 {
			h.GracePeriod = time.Second
		}
		if o.MaxBacklog > 0 {
			h.MaxBacklog = o.MaxBacklog
		}
	}
	return h
}

// smoke runs idle, fanout and churn, tiny, against ours and the reference,
// then a short soak and slow consumer against ours.
func smoke(ctx context.Context, f *flags) ([]report.Run, error) {
	base := f.opt
	base.Workers = 2
	base.Timeout = 2 * time.Minute
	base.Settle = 100 * time.Millisecond
	base.DrainTimeout = 3 * time.Second
	shapes := []scenario.Options{
		{Scenario: "idle", Topics: 2, SubsPerTopic: 100, Hold: 500 * time.Millisecond},
		{Scenario: "fanout", Topics: 2, SubsPerTopic: 50, Count: 100, Size: 128},
		{Scenario: "fanout", Topics: 4, SubsPerTopic: 10, Count: 40, Size: 256, Rate: 100},
		{Scenario: "churn", Topics: 2, SubsPerTopic: 10, Rate: 100, Duration: 2 * time.Second, ChurnRate: 40, ChurnLife: 300 * time.Millisecond},
		// Every subscriber cut twice and resumed: by dropping its
		// connection (ours and the reference), and by the hub for
		// answering no ping (ours).
		{Scenario: "reconnect", Topics: 2, SubsPerTopic: 25, Rate: 20, Duration: 1500 * time.Millisecond, Cuts: 2, CutMode: "client",
			ReconnectDelay: 50 * time.Millisecond, DrainTimeout: 500 * time.Millisecond},
		// Every subscriber dropped at once and back at once.
		{Scenario: "storm", Topics: 2, SubsPerTopic: 500},
		{Scenario: "reconnect", Topics: 2, SubsPerTopic: 25, Rate: 20, Duration: 2 * time.Second, Cuts: 2, CutMode: "hub",
			ReconnectDelay: 50 * time.Millisecond, DrainTimeout: 500 * time.Millisecond,
			PingInterval: 200 * time.Millisecond, PongTimeout: 200 * time.Millisecond},
	}
	var runs []report.Run
	var errs []error
	for _, s := range shapes {
		o := base
		o.Scenario, o.Topics, o.SubsPerTopic, o.Count, o.Size, o.Rate = s.Scenario, s.Topics, s.SubsPerTopic, s.Count, s.Size, s.Rate
		o.Hold, o.Duration, o.ChurnRate, o.ChurnLife = s.Hold, s.Duration, s.ChurnRate, s.ChurnLife
		o.Cuts, o.CutMode, o.ReconnectDelay, o.PingInterval, o.PongTimeout = s.Cuts, s.CutMode, s.ReconnectDelay, s.PingInterval, s.PongTimeout
		if s.DrainTimeout > 0 {
			o.DrainTimeout = s.DrainTimeout
		}
		if o.Size == 0 {
			o.Size = 128
		}
		var run report.Run
		if f.hubBin != "" {
			r, err := against(ctx, f, o, "ours")
			if err != nil {
				errs = append(errs, fmt.Errorf("%s against ours: %w", o.Scenario, err))
				continue
			}
			run.Ours = r
			if o.Scenario == "reconnect" && o.CutMode == "hub" {
				runs = append(runs, run) // the client cut already compares
				continue
			}
			r, err = against(ctx, f, o, "reference")
			if err != nil {
				errs = append(errs, fmt.Errorf("%s against the reference: %w", o.Scenario, err))
				continue
			}
			run.Reference = r
		} else {
			r, err := against(ctx, f, o, "reference")
			if err != nil {
				errs = append(errs, fmt.Errorf("%s against the reference: %w", o.Scenario, err))
				continue
			}
			run.Ours = r
		}
		runs = append(runs, run)
		if ctx.Err() != nil {
			break
		}
	}
	if f.hubBin != "" && ctx.Err() == nil {
		soak := base
		soak.Scenario, soak.Topics, soak.SubsPerTopic, soak.Size, soak.Rate = "soak", 2, 20, 256, 20
		soak.Count, soak.Duration, soak.ChurnRate, soak.ChurnLife = 0, 10*time.Second, 50, 500*time.Millisecond
		soak.SettleTimeout = 30 * time.Second
		slow := base
		slow.Scenario, slow.Topics, slow.SubsPerTopic, slow.Size, slow.Rate, slow.Count = "slowconsumer", 1, 100, 8192, 100, 0
		slow.MaxBacklog, slow.Stall, slow.Window, slow.CutoffTimeout = 256<<10, 2*time.Second, time.Second, 30*time.Second
		// One-second windows on a shared CI machine: the smoke checks the
		// cut-off, the loss and the memory; the latency claim is the full
		// run's (5 ms over 3-second windows).
		slow.MaxP99Jump = 50 * time.Millisecond
		// permessage-deflate: a JSON feed compressed once for every
		// subscriber; each must have agreed it and the bytes on the wire
		// must have shrunk.
		z := base
		z.Scenario, z.Topics, z.SubsPerTopic, z.Count, z.Size, z.Rate, z.Compress = "fanout", 1, 100, 100, 1536, 0, true
		if r, err := against(ctx, f, z, "ours"); err != nil {
			errs = append(errs, fmt.Errorf("compressed fanout against ours: %w", err))
		} else {
			if r.Deflated != r.Subscribers || r.WireBytesPerDelivery == 0 || r.WireBytesPerDelivery > float64(z.Size)/2 {
				r.Errors = append(r.Errors, fmt.Sprintf("permessage-deflate agreed with %d of %d subscribers, %.0f bytes on the wire per %d-byte delivery",
					r.Deflated, r.Subscribers, r.WireBytesPerDelivery, z.Size))
			}
			runs = append(runs, report.Run{Ours: r})
		}
		for _, o := range []scenario.Options{soak, slow} {
			r, err := against(ctx, f, o, "ours")
			if err != nil {
				errs = append(errs, fmt.Errorf("%s against ours: %w", o.Scenario, err))
				continue
			}
			runs = append(runs, report.Run{Ours: r})
		}
	}
	if f.hubBin == "" {
		errs = append(errs, errors.New("smoke ran against the reference hub only: give --hub-bin for ours"))
	}
	return runs, errors.Join(errs...)
}

type jsonRun struct {
	Ours      *result.Result `json:"ours"`
	Reference *result.Result `json:"reference,omitempty"`
	Ratios    []result.Ratio `json:"ratios,omitempty"`
}

func output(f *flags, cmd string, runs []report.Run) error {
	if f.json {
		out := struct {
			Command string    `json:"command"`
			Runs    []jsonRun `json:"runs"`
		}{Command: cmd}
		for _, r := range runs {
			j := jsonRun{Ours: r.Ours, Reference: r.Reference}
			if r.Reference != nil {
				j.Ratios = result.Compare(r.Ours, r.Reference)
			}
			out.Runs = append(out.Runs, j)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("cannot write JSON: %w", err)
		}
	} else {
		for i, r := range runs {
			if i > 0 {
				fmt.Println()
			}
			report.Table(os.Stdout, r.Ours)
			if r.Reference != nil {
				fmt.Println()
				report.Table(os.Stdout, r.Reference)
				fmt.Println()
				report.CompareTable(os.Stdout, r.Ours, r.Reference)
			}
		}
		if cmd == "smoke" {
			fmt.Println()
			smokeSummary(runs)
		}
	}
	if f.html != "" && len(runs) > 0 {
		fh, err := os.Create(f.html)
		if err != nil {
			return fmt.Errorf("cannot write the HTML report: %w", err)
		}
		title := "wspubsub load report: " + cmd
		if err := report.HTML(fh, title, runs); err != nil {
			fh.Close()
			return err
		}
		if err := fh.Close(); err != nil {
			return fmt.Errorf("cannot write the HTML report: %w", err)
		}
		fmt.Fprintln(os.Stderr, "wrote", f.html)
	}
	return nil
}

func smokeSummary(runs []report.Run) {
	for _, run := range runs {
		for _, r := range []*result.Result{run.Ours, run.Reference} {
			if r == nil {
				continue
			}
			v := "PASS"
			if !r.Pass() {
				v = "FAIL " + strings.Join(append(append([]string{}, r.Errors...), r.Failures...), "; ")
			}
			what := r.Scenario
			if rc := r.Reconnect; rc != nil && r.Storm == nil { // a storm publishes nothing while it lasts
				what += " (" + rc.Mode + ")"
				if rc.CannotResume {
					v += " (no resume: loss expected)"
				}
			}
			fmt.Printf("smoke %-18s %-10s subs %-5d delivered %-7d lost %-4d %s\n", what, r.Target, r.Subscribers, r.Delivered, r.Lost, v)
		}
	}
}

// isTerminal reports whether fd is a terminal (TCGETS succeeds).
func isTerminal(fd int) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}
