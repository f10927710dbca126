// Package scenario runs the load scenarios — idle, fanout, churn and
// reconnect (subscribers cut and resumed with since; see reconnect.go) —
// against a hub, over the poller's epoll clients, in this process or split
// over worker processes, and sums up what they measured in a result.Result.
// Two robustness scenarios run in this process alone and read the hub's
// /metrics: soak (clients of every kind come and go for minutes; the hub
// must come back to where it started, see soak.go) and slowconsumer (one
// subscriber stops reading among many; see slow.go).
//
// Shape of a run: publishers connect first (one per topic), then the
// subscribers, spread over the processes and the source addresses; after a
// short settle the measured phase starts: the client CPU baseline, the
// server's CPU (/proc/PID/stat) and the time series' origin are taken, and
// the publishers send. The phase ends when every subscriber that stayed has
// everything, or when nothing moved for DrainTimeout. Every phase is bounded
// in time and the run as a whole by Options.Timeout.
//
// Concurrency contract: Run is called from one goroutine and owns
// everything it starts: client workers, worker processes and the progress
// printer, all stopped before it returns. Worker processes speak the
// Command/Reply protocol over stdin/stdout (see ServeWorker).
package scenario

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/target"
)

// Options configure a run. Zero fields take the defaults documented here.
type Options struct {
	// Scenario is "idle", "fanout", "churn", "reconnect", "soak" or
	// "slowconsumer".
	Scenario string
	// Topics (default 1) and SubsPerTopic (default 10) set the subscribers.
	Topics       int
	SubsPerTopic int
	// Size is the message size in bytes, at least 32. Default 128.
	Size int
	// Compress makes subscribers offer permessage-deflate (RFC 7692) and
	// publishers send messages of a JSON feed (bench/payload.FillJSON),
	// each different, so that the wire bytes per delivery show what
	// compression saves. Idle and fanout runs; the wire bytes are reported
	// with or without it.
	Compress bool
	// Feed names the JSON feed under Compress (bench/payload.Feeds):
	// "quotes" (market data, the default) or "scores" (live football).
	Feed string
	// Count is the number of messages per publisher. Default 200; for
	// churn, Rate × Duration when zero.
	Count int
	// Rate is messages per second per publisher; 0 sends as fast as the
	// socket takes them. Churn defaults to 50.
	Rate float64
	// Duration is how long churn lets messages flow (default 5 s), and
	// reconnect (default 10 s).
	Duration time.Duration
	// ChurnRate is new subscribers per second while messages flow (churn
	// only; default 50) and ChurnLife how long each stays (default 500 ms).
	ChurnRate float64
	ChurnLife time.Duration
	// Cuts is how many times reconnect cuts each subscriber (default 2),
	// spread over the run; CutMode how: "client" (default: the client
	// drops its connection) or "hub" (the client stops answering pings
	// until the hub closes it; the hub needs a short --ping-interval and
	// --pong-timeout, PingInterval and PongTimeout here, default 1 s each).
	// ReconnectDelay is the wait before reconnecting, jittered between
	// half and one and a half of it. Default 200 ms.
	Cuts           int
	CutMode        string
	ReconnectDelay time.Duration
	// AllowGaps accepts messages a hub reports lost in gap notices (for
	// a history shorter than the outages on purpose); by default they fail
	// the run.
	AllowGaps bool
	// KillNode, when positive, is the node of a cluster the bench started
	// (1-based, 2 or more; no publisher is placed on it) that reconnect
	// kills with SIGKILL KillAt after the first message (default: half
	// the run). Its subscribers reconnect to the other nodes with since.
	// Cuts may then be 0: the kill is the only cut.
	KillNode     int
	KillAt       time.Duration
	PingInterval time.Duration
	PongTimeout  time.Duration
	// Hold is how long idle holds the subscribers before measuring memory.
	// Default 3 s.
	Hold time.Duration
	// Procs is the number of client processes holding subscribers; above 1
	// the bench re-executes itself (Self) as workers. Default 1.
	Procs int
	// Self is the bench binary for worker processes; default os.Executable.
	Self string
	// Workers is the number of epoll workers per process. Default 2.
	Workers int
	// Sources are local addresses (127.x) to bind client sockets to, used
	// in turn; empty lets the kernel choose.
	Sources []string
	// DialConcurrency bounds handshakes in flight per worker. Default 64.
	DialConcurrency int
	// HandshakeTimeout bounds one connect plus upgrade. Default 20 s.
	HandshakeTimeout time.Duration
	// Coalesce is how long a client worker pauses after handling events,
	// so reads bring more frames each (see poller.Config.Coalesce). It adds
	// nothing to measured latency, which uses kernel receive timestamps.
	// Default 0 (the command line defaults to 300 µs).
	Coalesce time.Duration
	// Settle is the pause between the last subscriber's upgrade and the
	// first message, and before the "before" memory reading. Default 300 ms.
	Settle time.Duration
	// DrainTimeout ends the measured phase when no delivery and no send
	// happened for this long after the publishers should have finished.
	// Default 5 s.
	DrainTimeout time.Duration
	// Timeout bounds the whole run. Default 10 min.
	Timeout time.Duration
	// Progress, when set, receives a live progress line; ProgressTTY makes
	// it a single line rewritten in place.
	Progress    io.Writer
	ProgressTTY bool

	// The soak and slowconsumer scenarios read the hub's /metrics at
	// MetricsURL; default http://SERVER/metrics, where our hub serves it.
	// They run in this process alone (Procs is ignored).
	MetricsURL string
	// Tolerance is how near the start the hub's resources must come back:
	// after the soak, and (RSS only) after the slow consumer's cut-off.
	// Default result.DefaultTolerance.
	Tolerance result.Tolerance
	// SettleTimeout bounds the soak's wait for the hub to come back within
	// Tolerance once every client left. Default 60 s.
	SettleTimeout time.Duration

	// MaxBacklog is the hub's --max-backlog (slowconsumer); default 1 MiB,
	// the hub's own default.
	MaxBacklog int64
	// Stall is when the slow subscriber stops reading, counted from the
	// first message (default 5 s); Window the length of the latency
	// windows before the stall and after the cut-off (default 3 s);
	// CutoffTimeout bounds the wait for the cut-off (default 60 s);
	// SlowRcvBuf is the slow subscriber's SO_RCVBUF (default 4096);
	// MaxP99Jump is how much the fast subscribers' p99 latency may grow
	// from the window before to the window after (default 5 ms).
	Stall         time.Duration
	Window        time.Duration
	CutoffTimeout time.Duration
	SlowRcvBuf    int
	MaxP99Jump    time.Duration
}

func (o *Options) defaults() error {
	switch o.Scenario {
	case "idle", "fanout", "churn", "reconnect", "storm", "soak", "slowconsumer":
	default:
		return fmt.Errorf("cannot run scenario %q: want idle, fanout, churn, reconnect, storm, soak or slowconsumer", o.Scenario)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Topics, 1)
	def(&o.SubsPerTopic, 10)
	def(&o.Size, 128)
	def(&o.Procs, 1)
	def(&o.Workers, 2)
	def(&o.DialConcurrency, 64)
	defD(&o.HandshakeTimeout, 20*time.Second)
	defD(&o.Settle, 300*time.Millisecond)
	defD(&o.DrainTimeout, 5*time.Second)
	defD(&o.Timeout, 10*time.Minute)
	defD(&o.Hold, 3*time.Second)
	switch o.Scenario {
	case "idle":
		o.Count = 0
	case "fanout":
		def(&o.Count, 200)
	case "churn":
		if o.Rate <= 0 {
			o.Rate = 50
		}
		defD(&o.Duration, 5*time.Second)
		if o.Count <= 0 {
			o.Count = max(1, int(o.Rate*o.Duration.Seconds()))
		}
		if o.ChurnRate <= 0 {
			o.ChurnRate = 50
		}
		defD(&o.ChurnLife, 500*time.Millisecond)
	case "reconnect":
		if o.Rate <= 0 {
			o.Rate = 4
		}
		defD(&o.Duration, 10*time.Second)
		if o.Count <= 0 {
			o.Count = max(1, int(o.Rate*o.Duration.Seconds()))
		}
		if o.KillNode == 0 {
			def(&o.Cuts, 2)
		}
		if o.Cuts < 0 {
			return errors.New("cannot cut subscribers a negative number of times")
		}
		defD(&o.ReconnectDelay, 200*time.Millisecond)
		switch o.CutMode {
		case "":
			o.CutMode = "client"
		case "client":
		case "hub":
			defD(&o.PingInterval, time.Second)
			defD(&o.PongTimeout, time.Second)
		default:
			return fmt.Errorf("cannot cut subscribers by %q: want --cut client or --cut hub", o.CutMode)
		}
	case "storm":
		// One message before the storm, one after (storm.go).
		o.Count, o.Rate, o.Cuts, o.CutMode = 2, 0, 1, "client"
	case "soak":
		defD(&o.Duration, 2*time.Minute)
		if o.Rate <= 0 {
			o.Rate = 10
		}
		o.Count = max(1, int(o.Rate*o.Duration.Seconds()))
		if o.ChurnRate <= 0 {
			o.ChurnRate = 100
		}
		defD(&o.ChurnLife, 2*time.Second)
		o.Procs = 1
	case "slowconsumer":
		o.Topics = 1
		if o.Rate <= 0 {
			o.Rate = 100
		}
		if o.MaxBacklog <= 0 {
			o.MaxBacklog = 1 << 20
		}
		defD(&o.Stall, 5*time.Second)
		defD(&o.Window, 3*time.Second)
		defD(&o.CutoffTimeout, time.Minute)
		def(&o.SlowRcvBuf, 4096)
		defD(&o.MaxP99Jump, 5*time.Millisecond)
		o.Procs = 1
		if o.Stall < o.Window {
			return fmt.Errorf("cannot stall the slow subscriber after %v: the window before the stall is %v", o.Stall, o.Window)
		}
	}
	if o.Scenario == "soak" || o.Scenario == "slowconsumer" {
		if o.Tolerance == (result.Tolerance{}) {
			o.Tolerance = result.DefaultTolerance
		}
		defD(&o.SettleTimeout, time.Minute)
	}
	if o.Rate < 0 {
		return errors.New("cannot publish at a negative rate")
	}
	if err := o.killDefaults(); err != nil {
		return err
	}
	if o.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cannot find the bench binary for worker processes: %w", err)
		}
		o.Self = self
	}
	return nil
}

func (o *Options) params() result.Params {
	p := result.Params{
		Topics: o.Topics, SubsPerTopic: o.SubsPerTopic, Publishers: o.Topics,
		Size: o.Size, Count: o.Count, Rate: o.Rate,
		Procs: o.Procs, Workers: o.Workers, SourceAddrs: len(o.Sources), Compress: o.Compress,
	}
	if o.Compress {
		p.Feed = cmp.Or(o.Feed, "quotes")
	}
	switch o.Scenario {
	case "idle":
		p.Hold = o.Hold.String()
		p.Count, p.Size, p.Rate = 0, 0, 0
	case "churn":
		p.ChurnRate = o.ChurnRate
		p.ChurnLife = o.ChurnLife.String()
	case "reconnect":
		p.Cuts, p.CutMode = o.Cuts, o.CutMode
		p.KillNode = o.KillNode
		if o.KillNode > 0 {
			p.KillAt = o.KillAt.String()
		}
	case "storm":
		p.Cuts, p.CutMode = 1, "client"
	case "soak":
		p.ChurnRate = o.ChurnRate
		p.ChurnLife = o.ChurnLife.String()
		p.Duration = o.Duration.String()
	}
	return p
}

// Run runs one scenario against t. The Result carries what went wrong in
// Errors; the error return is for runs that could not start at all.
func Run(ctx context.Context, t *target.Target, o Options) (*result.Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if _, err := procfs.RaiseNoFile(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	r := &result.Result{
		Scenario: o.Scenario, Target: t.Name, Started: time.Now(), Params: o.params(),
		Publishers: o.Topics, ServerMeasured: len(t.Processes()) > 0 && !t.InProcess,
	}
	if o.Scenario == "soak" || o.Scenario == "slowconsumer" {
		if o.MetricsURL == "" {
			o.MetricsURL = "http://" + t.Server.String() + "/metrics"
		}
		run := runSlow
		if o.Scenario == "soak" {
			run = runSoak
		}
		if err := run(ctx, t, o, r); err != nil {
			r.Errors = append(r.Errors, err.Error())
		}
		if t.Exited() {
			r.Errors = append(r.Errors, "hub exited during the run: "+t.LogTail(1024))
		}
		r.Check()
		return r, nil
	}
	setup := Setup{
		Server: t.Server.String(), Servers: addrs(t.Servers()), Size: o.Size, Count: o.Count, Workers: o.Workers,
		DialConcurrency: o.DialConcurrency, HandshakeMs: o.HandshakeTimeout.Milliseconds(),
		CoalesceUs: o.Coalesce.Microseconds(), Compress: o.Compress, Feed: o.Feed,
		PubServers: addrs(pubServers(t.Servers(), o.KillNode)),
	}
	pg, err := NewGroup(setup)
	if err != nil {
		return nil, err
	}
	defer pg.Close()
	members, err := startMembers(pg, setup, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range members {
			m.close()
		}
	}()
	ru := &runner{o: o, t: t, r: r, pg: pg, members: members}
	ru.progressStart()
	err = ru.run(ctx)
	ru.progressStop()
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	if t.Exited() {
		r.Errors = append(r.Errors, "hub exited during the run: "+t.LogTail(1024))
	}
	r.Check()
	return r, nil
}

func startMembers(pg *Group, setup Setup, o Options) ([]member, error) {
	if o.Procs <= 1 {
		return []member{localMember{pg}}, nil
	}
	var members []member
	for range o.Procs {
		m, err := spawnWorker(o.Self, setup)
		if err != nil {
			for _, m := range members {
				m.close()
			}
			return nil, err
		}
		members = append(members, m)
	}
	return members, nil
}

type runner struct {
	o       Options
	t       *target.Target
	r       *result.Result
	pg      *Group
	members []member

	phase     string
	expected  int64
	killedRSS int64 // the RSS before the run of the node the run kills
	stopProg  chan struct{}
	progDone  chan struct{}
	mu        sync.Mutex
}

// total sums the progress of every process.
func (ru *runner) total() Progress {
	var p Progress
	for _, m := range ru.members {
		p.add(m.progress())
	}
	if len(ru.members) > 1 {
		p.add(ru.pg.Progress()) // the publishers live in this process
	}
	return p
}

// each calls fn for every member concurrently and returns the first error.
func (ru *runner) each(fn func(i int, m member) error) error {
	errs := make([]error, len(ru.members))
	var wg sync.WaitGroup
	for i, m := range ru.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i, m)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sourcesFor gives member i of n its share of the source addresses.
func sourcesFor(src []string, i, n int) []string {
	if len(src) == 0 {
		return nil
	}
	if len(src) < n {
		return []string{src[i%len(src)]}
	}
	var out []string
	for j := i; j < len(src); j += n {
		out = append(out, src[j])
	}
	return out
}

func (ru *runner) setPhase(p string) {
	ru.mu.Lock()
	ru.phase = p
	ru.mu.Unlock()
}

func (ru *runner) run(ctx context.Context) error {
	o, r, t := ru.o, ru.r, ru.t
	ru.setPhase("publishers")
	if err := ru.pg.ConnectPublishers(ctx, t.Domain, t.Key, o.Topics, o.Sources); err != nil {
		return err
	}
	if err := sleep(ctx, o.Settle); err != nil {
		return err
	}
	if r.ServerMeasured {
		r.ServerRSSBefore, _ = serverRSS(t)
		if o.KillNode > 0 && o.KillNode <= len(t.Processes()) {
			// Left out of the "after" figures once killed.
			ru.killedRSS, _ = procfs.RSS(t.Processes()[o.KillNode-1])
		}
	}

	ru.setPhase("connect")
	total := o.Topics * o.SubsPerTopic
	n := len(ru.members)
	var mu sync.Mutex
	var firstDial, lastOpen int64
	_, sched0, _ := ru.serverCPU()
	err := ru.each(func(i int, m member) error {
		first, last := i*total/n, (i+1)*total/n
		rep, err := m.call(ctx, Command{Op: "subscribe", Subscribe: &SubscribePlan{
			Domain: t.Domain, Topics: o.Topics, First: first, N: last - first,
			Sources: sourcesFor(o.Sources, i, n), Reconnect: o.Scenario == "reconnect" || o.Scenario == "storm",
		}})
		if err != nil {
			return err
		}
		s := rep.Subscribe
		mu.Lock()
		defer mu.Unlock()
		r.Subscribers += s.Opened
		r.Deflated += s.Deflated
		r.DialFailed += s.Failed
		for k, v := range s.Errors {
			if r.DialErrors == nil {
				r.DialErrors = map[string]int{}
			}
			r.DialErrors[k] += v
		}
		firstDial = minNonZero(firstDial, s.FirstDial)
		lastOpen = max(lastOpen, s.LastOpen)
		return nil
	})
	if err != nil {
		return err
	}
	if r.Subscribers == 0 {
		return fmt.Errorf("cannot connect any of %d subscribers (%s)", total, result.FormatCounts(r.DialErrors))
	}
	r.ConnectSeconds = float64(lastOpen-firstDial) / 1e9
	if r.ConnectSeconds > 0 {
		r.ConnectRate = float64(r.Subscribers) / r.ConnectSeconds
	}
	if _, sched1, err := ru.serverCPU(); err == nil && r.ServerMeasured {
		r.ConnectServerCPUSeconds = (sched1 - sched0).Seconds()
		r.ServerCPUPerHandshakeUs = r.ConnectServerCPUSeconds * 1e6 / float64(r.Subscribers)
	}

	switch o.Scenario {
	case "idle":
		return ru.idle(ctx)
	case "storm":
		return ru.storm(ctx)
	}
	return ru.flow(ctx)
}

func (ru *runner) idle(ctx context.Context) error {
	o, r, t := ru.o, ru.r, ru.t
	ru.setPhase("hold")
	cpu0, sched0, _ := ru.serverCPU()
	self0 := procfs.SelfCPU()
	if err := ru.mark(ctx, time.Now().UnixNano(), int64(time.Second)); err != nil {
		return err
	}
	if err := sleep(ctx, o.Hold); err != nil {
		return err
	}
	if r.ServerMeasured {
		r.ServerRSSAfter, _ = serverRSS(t)
		r.ServerPeakRSS, _ = serverPeakRSS(t)
		r.RSSPerConn = float64(r.ServerRSSAfter-r.ServerRSSBefore) / float64(r.Subscribers)
		cpu1, sched1, _ := ru.serverCPU()
		r.ServerCPUSeconds = (cpu1 - cpu0).Seconds()
		r.ServerSchedCPUSeconds = (sched1 - sched0).Seconds()
	}
	r.ClientCPUSeconds = (procfs.SelfCPU() - self0).Seconds()
	part, err := ru.finish(ctx)
	if err != nil {
		return err
	}
	r.ClientCPUSeconds += float64(part.ClientCPU) / 1e9
	r.Dropped = part.Dropped
	r.CloseCodes = part.CloseCodes
	r.Corrupt = part.Corrupt
	return nil
}

// serverCPU reads the hub's CPU time from /proc/PID/stat and, finer, from
// its threads' schedstat.
func (ru *runner) serverCPU() (stat, sched time.Duration, err error) {
	if !ru.r.ServerMeasured {
		return 0, 0, nil
	}
	for _, pid := range ru.t.Processes() {
		sc, _ := procfs.SchedCPU(pid)
		st, e := procfs.CPU(pid)
		sched, stat, err = sched+sc, stat+st, errors.Join(err, e)
	}
	return stat, sched, err
}

// serverRSS is the resident memory of the hub's processes (every node of
// a cluster), summed.
func serverRSS(t *target.Target) (int64, error) {
	var sum int64
	var err error
	for _, pid := range t.Processes() {
		n, e := procfs.RSS(pid)
		sum, err = sum+n, errors.Join(err, e)
	}
	return sum, err
}

// serverPeakRSS sums the processes' peaks.
func serverPeakRSS(t *target.Target) (int64, error) {
	var sum int64
	var err error
	for _, pid := range t.Processes() {
		n, e := procfs.PeakRSS(pid)
		sum, err = sum+n, errors.Join(err, e)
	}
	return sum, err
}

func addrs(aps []netip.AddrPort) []string {
	out := make([]string, len(aps))
	for i, a := range aps {
		out[i] = a.String()
	}
	return out
}

func (ru *runner) mark(ctx context.Context, start, width int64) error {
	mp := &MarkPlan{Start: start, Width: width}
	if len(ru.members) > 1 {
		if err := ru.pg.Mark(ctx, start, width); err != nil {
			return err
		}
	}
	return ru.each(func(_ int, m member) error {
		_, err := m.call(ctx, Command{Op: "mark", Mark: mp})
		return err
	})
}

func (ru *runner) finish(ctx context.Context) (result.Part, error) {
	parts := make([]result.Part, len(ru.members))
	err := ru.each(func(i int, m member) error {
		rep, err := m.call(ctx, Command{Op: "finish"})
		if err != nil {
			return err
		}
		parts[i] = *rep.Part
		return nil
	})
	var total result.Part
	for i := range parts {
		result.Merge(&total, &parts[i])
	}
	return total, err
}

// seriesWidth picks a bucket width that gives a chart of about 100 to 150
// points for a run of the expected length: a multiple of the publishing
// interval when paced (so every bucket holds as many messages), else 10 ms
// (result.Points merges buckets of long runs).
func seriesWidth(d time.Duration, interval int64) int64 {
	step := 10 * time.Millisecond
	if interval > 0 {
		step = time.Duration(interval)
		for step < 10*time.Millisecond {
			step *= 2
		}
	}
	w := d / 150
	w = (w + step - 1) / step * step
	return int64(max(w, step))
}

func (ru *runner) flow(ctx context.Context) error {
	o, r, t := ru.o, ru.r, ru.t
	if err := sleep(ctx, o.Settle); err != nil {
		return err
	}
	interval := int64(0)
	var pubDur time.Duration
	if o.Rate > 0 {
		interval = int64(1e9 / o.Rate)
		pubDur = time.Duration(interval * int64(o.Count))
	}
	ru.expected = int64(r.Subscribers) * int64(o.Count)
	natsBefore, err := ru.scrapeNodes(ctx)
	if err != nil {
		return err
	}
	start := time.Now().Add(50 * time.Millisecond).UnixNano()
	if err := ru.mark(ctx, start, seriesWidth(pubDur, interval)); err != nil {
		return err
	}
	self0 := procfs.SelfCPU()
	cpu0, sched0, err := ru.serverCPU()
	if err != nil {
		return err
	}
	if o.Scenario == "churn" {
		n := len(ru.members)
		err := ru.each(func(i int, m member) error {
			_, err := m.call(ctx, Command{Op: "churn", Churn: &ChurnPlan{
				Domain: t.Domain, Topics: o.Topics, Rate: o.ChurnRate / float64(n),
				LifeNs: int64(o.ChurnLife), StartNs: start, StopNs: start + int64(pubDur),
				Sources: sourcesFor(o.Sources, i, n), Seed: i * 7919,
			}})
			return err
		})
		if err != nil {
			return err
		}
	}
	if o.Scenario == "reconnect" && o.Cuts > 0 {
		from, to, stop, err := cutWindow(o, start, interval, pubDur)
		if err != nil {
			return err
		}
		plan := &CutPlan{
			Mode: o.CutMode, Cuts: o.Cuts, FromNs: from, ToNs: to, StopNs: stop,
			DelayNs: int64(o.ReconnectDelay), HubWaitNs: hubWait(o),
		}
		err = ru.each(func(_ int, m member) error {
			_, err := m.call(ctx, Command{Op: "cuts", Cuts: plan})
			return err
		})
		if err != nil {
			return err
		}
	}
	ru.setPhase("publish")
	if err := ru.pg.StartPublishing(ctx, start, interval, o.Topics); err != nil {
		return err
	}
	killed := ru.killLater(ctx, start)
	waitErr := ru.drain(ctx, start, pubDur)
	kill := <-killed
	if err := ru.pg.PublisherError(ctx); err != nil {
		// What it did not send shows as loss; this says why.
		waitErr = errors.Join(waitErr, fmt.Errorf("a publisher ended mid-run: %w", err))
	}
	cpu1, sched1, _ := ru.serverCPU()
	self1 := procfs.SelfCPU()
	if kill.node > 0 && kill.err == nil {
		// The killed node cannot be read now: its CPU up to the kill,
		// read just before it, stands in; its memory is left out of
		// before and after.
		cpu1, sched1 = cpu1+kill.cpu, sched1+kill.sched
		r.ServerRSSBefore -= ru.killedRSS
	}
	if r.ServerMeasured {
		r.ServerRSSAfter, _ = serverRSS(t)
		r.ServerPeakRSS, _ = serverPeakRSS(t)
		if r.Subscribers > 0 {
			r.RSSPerConn = float64(r.ServerRSSAfter-r.ServerRSSBefore) / float64(r.Subscribers)
		}
	}
	natsAfter, _ := ru.scrapeNodes(ctx) // a killed node cannot be read
	ru.setPhase("finish")
	part, err := ru.finish(ctx)
	if err != nil {
		return errors.Join(waitErr, err)
	}
	r.Published = ru.total().Sent
	r.Cluster = clusterStats(natsBefore, natsAfter, r.Published, kill)
	fillFlow(r, &part, start)
	if r.ServerMeasured {
		r.ServerCPUSeconds = (cpu1 - cpu0).Seconds()
		r.ServerSchedCPUSeconds = (sched1 - sched0).Seconds()
	}
	r.ClientCPUSeconds = (self1 - self0).Seconds() + float64(part.ClientCPU)/1e9
	if part.Delivered > 0 {
		r.ServerCPUPerDeliveryUs = r.ServerCPUSeconds * 1e6 / float64(part.Delivered)
		r.ServerSchedCPUPerDeliveryUs = r.ServerSchedCPUSeconds * 1e6 / float64(part.Delivered)
		r.ClientCPUPerDeliveryUs = r.ClientCPUSeconds * 1e6 / float64(part.Delivered)
		r.WireBytesPerDelivery = float64(part.WireBytes) / float64(part.Delivered)
	}
	if o.Scenario == "churn" {
		c := part.Churn
		r.Churn = &c
	}
	if o.Scenario == "reconnect" {
		rc := part.Reconnect
		rc.Mode = o.CutMode
		// The reference keeps no history: what its subscribers miss
		// while cut is reported, not failed.
		rc.CannotResume = t.Name == "reference"
		rc.AllowGaps = o.AllowGaps
		r.Reconnect = &rc
		if o.KillNode > 0 && kill.err == nil && rc.Moved == 0 {
			waitErr = errors.Join(waitErr, fmt.Errorf("node %d was killed but no subscriber reconnected to another node", o.KillNode))
		}
	}
	return waitErr
}

// drain waits until every stayed subscriber has every message, or until
// nothing moved for DrainTimeout once the publishers should be done.
func (ru *runner) drain(ctx context.Context, start int64, pubDur time.Duration) error {
	o := ru.o
	dueEnd := time.Unix(0, start).Add(pubDur)
	var last Progress
	lastMove := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot finish publishing: %w", ctx.Err())
		case <-tick.C:
		}
		p := ru.total()
		pubsDone := p.PubsDone >= int64(o.Topics)
		if pubsDone && p.Received >= ru.expected {
			return nil
		}
		now := time.Now()
		if p.Sent != last.Sent || p.Delivered != last.Delivered {
			last = p
			lastMove = now
			continue
		}
		if now.After(dueEnd) && now.Sub(lastMove) > o.DrainTimeout {
			if !pubsDone {
				return fmt.Errorf("publishers stalled: %d of %d messages sent, nothing moved for %v", p.Sent, int64(o.Topics)*int64(o.Count), o.DrainTimeout)
			}
			return nil // what is missing is counted as lost
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
