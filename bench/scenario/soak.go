package scenario

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/wspubsub/wspubsub/bench/frame"
	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/bench/poller"
	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/scrape"
	"github.com/wspubsub/wspubsub/bench/target"
)

// The soak: for Duration, Topics stable topics each have a publisher
// sending at Rate and SubsPerTopic subscribers that stay (every message must
// reach them), while short-lived clients of every kind come and go,
// ChurnRate a second, each for a random time of up to twice ChurnLife:
// subscribers of the stable topics; publishers of topics of their own, with
// a few subscribers each; and hostile ones — handshakes the hub must refuse
// (404, 401, 409, 400), handshakes left halfway, a publisher sending
// invalid UTF-8 (1007). Upgraded clients leave by a close frame, by closing
// the socket, or by a reset. The hub's /metrics are read before the run
// (after a warm-up, see warmUp), every second during it and after it: once
// every client has left, its
// goroutines, open files, memory, connections and topics must come back
// within Tolerance of the start before SettleTimeout.

// Kinds of short-lived client, and their share of the churn in percent.
const (
	kindSub     = iota // subscriber of a stable topic
	kindOwnPub         // publisher of a topic of its own
	kindOwnSub         // subscriber of such a topic, dialed by its publisher
	kindNoTopic        // subscriber of a topic nobody started: 404
	kindBadKey         // publisher with a key for another domain: 401
	kindTaken          // publisher of a stable topic, which has one: 409
	kindGarbage        // a request that is not HTTP: 400
	kindHalf           // half a request, then gone
	kindRude           // publisher sending invalid UTF-8: 1007
	numKinds
)

var kindNames = [numKinds]string{"subscriber", "own publisher", "own subscriber", "no topic (404)", "bad key (401)",
	"topic taken (409)", "garbage (400)", "half handshake", "invalid UTF-8 (1007)"}

// kindShare is the percentage of each kind the spawner picks (own
// subscribers come with their publisher).
var kindShare = [numKinds]int{kindSub: 45, kindOwnPub: 15, kindNoTopic: 10, kindBadKey: 5, kindTaken: 5, kindGarbage: 5, kindHalf: 10, kindRude: 5}

// Ways an upgraded client leaves.
const (
	leaveClose = iota // close frame, then close the socket
	leaveFIN          // close the socket without a close frame
	leaveRST          // reset the connection
)

// soakPlan is what the short-lived clients of every worker do.
type soakPlan struct {
	domain, key  string
	stableTopics int
	stableCount  int // messages each stable publisher sends
	size         int
	rate         float64 // new clients a second, all workers
	meanLife     int64   // ns
	pubRate      float64 // messages a second of an own publisher
	start, stop  int64
	sources      []netip.Addr
}

// soakStats is what one worker's short-lived clients saw; plain fields,
// read on the worker's goroutine.
type soakStats struct {
	clients    map[string]int
	expected   int
	unexpected map[string]int
	delivered  int64
	gaps       int64
	duplicates int64
	outOfOrder int64
	published  int64
}

func (s *soakStats) bad(kind int, why string) {
	if s.unexpected == nil {
		s.unexpected = map[string]int{}
	}
	s.unexpected[kindNames[kind]+": "+why]++
}

// soakWorker is the poller.Handler of one worker of the churn engine, and
// the Timer that spawns its clients.
type soakWorker struct {
	plan     *soakPlan
	idx      int
	w        *poller.Worker
	server   netip.AddrPort
	interval int64
	next     int64
	n        int
	stats    soakStats
}

var _ poller.Handler = (*soakWorker)(nil)
var _ poller.Timer = (*soakWorker)(nil)

// actor is one short-lived client; its Timer ends it and paces its
// messages.
type actor struct {
	sw      *soakWorker
	kind    int
	conn    *poller.Conn
	closeAt int64
	leave   int
	opened  bool
	closed  bool
	owner   *actor // an own subscriber's publisher

	// Subscribers: the publisher id their messages carry, and what
	// arrived.
	pubID uint32
	seqTrack

	// Own publishers.
	msg      []byte
	sent     uint64
	max      uint64
	interval int64
	nextSend int64
}

func (sw *soakWorker) rand(n int) int { return int(sw.w.Rand() % uint64(n)) }

// Fire implements poller.Timer: spawn the clients that are due.
func (sw *soakWorker) Fire(now int64) int64 {
	for sw.next <= now && sw.next < sw.plan.stop {
		sw.spawn(now)
		sw.next += sw.interval
	}
	if sw.next >= sw.plan.stop {
		return 0
	}
	return sw.next
}

func (sw *soakWorker) pick() int {
	r := sw.rand(100)
	for k, share := range kindShare {
		if r < share {
			return k
		}
		r -= share
	}
	return kindSub
}

func (sw *soakWorker) spawn(now int64) {
	p := sw.plan
	kind := sw.pick()
	sw.n++
	life := p.meanLife/10 + int64(sw.w.Rand()%uint64(2*p.meanLife))
	// Clients the hub must refuse or close wait for its answer (the
	// deadline only catches a hub that never gives one).
	answer := now + int64(10*time.Second)
	a := &actor{sw: sw, kind: kind, closeAt: now + life, leave: sw.rand(3)}
	stableID := sw.rand(p.stableTopics)
	stable := topicName(stableID)
	own := "e" + strconv.Itoa(sw.idx) + "-" + strconv.Itoa(sw.n)
	spec := poller.DialSpec{Server: sw.server, Data: a}
	switch kind {
	case kindSub:
		a.pubID = uint32(stableID)
		a.seen = make([]uint64, (p.stableCount+63)/64)
		spec.Path = "/ws/sub/" + p.domain + "/" + stable
	case kindOwnPub:
		a.pubID = 1<<31 | uint32(sw.idx)<<24 | uint32(sw.n)
		a.interval = int64(1e9 / p.pubRate)
		a.max = uint64(2*p.meanLife/a.interval) + 2
		a.msg = make([]byte, p.size)
		payload.Fill(a.msg, a.pubID, 0, 0)
		spec.Path = "/ws/pub/" + p.key + "/" + p.domain + "/" + own
	case kindNoTopic:
		a.closeAt = answer
		spec.Path = "/ws/sub/" + p.domain + "/never-" + own
	case kindBadKey:
		a.closeAt = answer
		spec.Path = "/ws/pub/" + p.key + "/not-" + p.domain + "/" + own
	case kindTaken:
		a.closeAt = answer
		spec.Path = "/ws/pub/" + p.key + "/" + p.domain + "/" + stable
	case kindGarbage:
		a.closeAt = answer
		spec.Request = []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
	case kindHalf:
		// Gone before the hub's --handshake-timeout (10 s by default)
		// would drop it.
		a.closeAt = min(a.closeAt, now+int64(5*time.Second))
		spec.Request = []byte("GET /ws/sub/" + p.domain + "/" + stable + " HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n")
	case kindRude:
		a.closeAt = answer
		spec.Path = "/ws/pub/" + p.key + "/" + p.domain + "/" + own
	}
	sw.dial(a, spec)
}

func (sw *soakWorker) dial(a *actor, spec poller.DialSpec) {
	if len(sw.plan.sources) > 0 {
		spec.Source = sw.plan.sources[sw.n%len(sw.plan.sources)]
	}
	if sw.stats.clients == nil {
		sw.stats.clients = map[string]int{}
	}
	sw.stats.clients[kindNames[a.kind]]++
	a.conn = sw.w.Dial(spec)
	sw.w.Schedule(a, a.closeAt)
}

// Fire implements poller.Timer: an own publisher's next message, and the
// end of the actor's life.
func (a *actor) Fire(now int64) int64 {
	if a.closed {
		return 0
	}
	if now >= a.closeAt {
		a.end()
		return 0
	}
	next := a.closeAt
	if a.kind == kindOwnPub && a.opened {
		for a.nextSend <= now && a.sent < a.max {
			payload.Stamp(a.msg, a.sent, time.Now().UnixNano())
			if err := a.conn.WriteMessage(frame.OpBinary, a.msg); err != nil {
				break
			}
			a.sent++
			a.sw.stats.published++
			a.nextSend += a.interval
		}
		a.conn.Flush()
		if a.closed {
			return 0
		}
		if a.sent < a.max {
			next = min(next, a.nextSend)
		}
	}
	return max(next, now+1)
}

// end makes the actor leave, in its way.
func (a *actor) end() {
	if a.closed {
		return
	}
	if !a.conn.IsOpen() {
		a.conn.Drop(a.leave == leaveRST)
		return
	}
	switch a.leave {
	case leaveClose:
		a.conn.Close(frame.CloseNormal)
	default:
		a.conn.Drop(a.leave == leaveRST)
	}
}

// Open implements poller.Handler.
func (sw *soakWorker) Open(c *poller.Conn, now int64) {
	a := c.Data.(*actor)
	a.opened = true
	switch a.kind {
	case kindOwnPub:
		a.nextSend = now
		sw.w.Schedule(a, now)
		// A few subscribers of its topic, each for a while.
		own := pathTopic(c.Spec().Path)
		for range sw.rand(5) {
			life := sw.plan.meanLife/10 + int64(sw.w.Rand()%uint64(2*sw.plan.meanLife))
			s := &actor{sw: sw, kind: kindOwnSub, owner: a, pubID: a.pubID, closeAt: now + life, leave: sw.rand(3),
				seqTrack: seqTrack{seen: make([]uint64, (a.max+63)/64)}}
			sw.dial(s, poller.DialSpec{Server: sw.server, Path: "/ws/sub/" + sw.plan.domain + "/" + own, Data: s})
		}
	case kindRude:
		c.WriteMessage(frame.OpText, []byte("not UTF-8: \xff\xfe"))
		c.Flush()
	case kindNoTopic, kindBadKey, kindTaken, kindGarbage, kindHalf:
		sw.stats.bad(a.kind, "upgraded")
		a.conn.Close(frame.CloseNormal)
	}
}

// pathTopic is the last segment of a path.
func pathTopic(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[i+1:]
		}
	}
	return path
}

// Message implements poller.Handler: subscribers check their stream.
func (sw *soakWorker) Message(c *poller.Conn, op byte, p []byte, now int64) {
	a := c.Data.(*actor)
	if a.kind != kindSub && a.kind != kindOwnSub {
		sw.stats.bad(a.kind, "sent a message")
		return
	}
	pub, seq, _, err := payload.Parse(p, sw.plan.size)
	if err != nil || op != frame.OpBinary || pub != a.pubID || seq >= uint64(len(a.seen))*64 {
		sw.stats.bad(a.kind, "corrupt message")
		return
	}
	sw.stats.delivered++
	dup, late := a.record(seq)
	if dup {
		sw.stats.duplicates++
		return
	}
	if late {
		sw.stats.outOfOrder++
	}
}

// Drained implements poller.Handler.
func (sw *soakWorker) Drained(*poller.Conn, int64) {}

// Closed implements poller.Handler: judge how the actor's connection
// ended.
func (sw *soakWorker) Closed(c *poller.Conn, code int, err error) {
	a := c.Data.(*actor)
	a.closed = true
	sw.stats.gaps += a.gaps()
	a.seen = nil
	var he *frame.HandshakeError
	refused := 0
	if errors.As(err, &he) {
		refused = he.Status
	}
	ok := false
	switch a.kind {
	case kindSub, kindOwnPub:
		ok = err == nil // we closed it, maybe before its 101
	case kindOwnSub:
		// Its topic may end under it: the publisher left and the grace ran
		// out (4001), or before it even got in (404).
		gone := a.owner.closed
		ok = err == nil || (gone && (code == frame.CloseTopicClosed || refused == 404))
	case kindNoTopic:
		ok = refused == 404
	case kindBadKey:
		ok = refused == 401
	case kindTaken:
		ok = refused == 409
	case kindGarbage:
		ok = refused == 400
	case kindHalf:
		ok = !a.opened && err == nil
	case kindRude:
		ok = code == frame.CloseInvalidPayload
	}
	if ok {
		sw.stats.expected++
		return
	}
	why := reason(err)
	if code != 0 {
		why = fmt.Sprintf("closed by the hub with %d", code)
	}
	sw.stats.bad(a.kind, why)
}

// soakEngine runs the short-lived clients.
type soakEngine struct {
	eng     *poller.Engine
	workers []*soakWorker
}

func startSoakEngine(plan *soakPlan, server netip.AddrPort, workers int) (*soakEngine, error) {
	se := &soakEngine{}
	for i := range max(1, workers) {
		se.workers = append(se.workers, &soakWorker{plan: plan, idx: i, server: server})
	}
	eng, err := poller.New(poller.Config{
		Workers:         len(se.workers),
		MaxMessage:      max(plan.size+64, 64<<10),
		DialConcurrency: 1024, // half handshakes hold their slot for their life
		NewHandler:      func(i int) poller.Handler { return se.workers[i] },
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start the churn engine: %w", err)
	}
	se.eng = eng
	W := int64(len(se.workers))
	interval := int64(float64(W) * 1e9 / plan.rate)
	err = se.each(context.Background(), func(sw *soakWorker, w *poller.Worker) {
		sw.w = w
		sw.interval = interval
		sw.next = plan.start + int64(sw.idx)*interval/W
		w.Schedule(sw, sw.next)
	})
	if err != nil {
		eng.Close()
		return nil, err
	}
	return se, nil
}

// each runs fn on every worker's goroutine and waits for all.
func (se *soakEngine) each(ctx context.Context, fn func(sw *soakWorker, w *poller.Worker)) error {
	return onEveryWorker(ctx, se.eng, len(se.workers), func(i int, w *poller.Worker) { fn(se.workers[i], w) })
}

// live is the number of short-lived clients still connected or dialing.
func (se *soakEngine) live(ctx context.Context) int {
	var mu sync.Mutex
	n := 0
	se.each(ctx, func(_ *soakWorker, w *poller.Worker) {
		mu.Lock()
		n += w.Live()
		mu.Unlock()
	})
	return n
}

// stats sums up the workers' findings.
func (se *soakEngine) stats(ctx context.Context, s *result.Soak) error {
	parts := make([]soakStats, len(se.workers))
	err := se.each(ctx, func(sw *soakWorker, _ *poller.Worker) {
		st := sw.stats
		st.clients = cloneCounts(st.clients)
		st.unexpected = cloneCounts(st.unexpected)
		parts[sw.idx] = st
	})
	for _, p := range parts {
		for k, v := range p.clients {
			if s.Clients == nil {
				s.Clients = map[string]int{}
			}
			s.Clients[k] += v
		}
		for k, v := range p.unexpected {
			if s.Unexpected == nil {
				s.Unexpected = map[string]int{}
			}
			s.Unexpected[k] += v
		}
		s.Expected += p.expected
		s.Delivered += p.delivered
		s.Gaps += p.gaps
		s.Duplicates += p.duplicates
		s.OutOfOrder += p.outOfOrder
		s.Published += p.published
	}
	return err
}

// hubSample reads a HubSample from a scrape taken at Unix ns at.
func hubSample(m scrape.Metrics, at, start int64) result.HubSample {
	return result.HubSample{
		T:           float64(at-start) / 1e9,
		Goroutines:  m.Value("go_goroutines"),
		OpenFDs:     m.Value("process_open_fds"),
		RSS:         m.Value("process_resident_memory_bytes"),
		Connections: m.Sum("wspubsub_connections"),
		Topics:      m.Value("wspubsub_topics"),
	}
}

// warmUp runs a publisher and 50 subscribers through 20 messages and lets
// them go, then waits until the hub holds nothing again: what a hub
// allocates once, for its first connections (buffers, pools, the metrics
// handler), is then in the soak's start, not counted as growth.
func warmUp(ctx context.Context, t *target.Target, o Options, scr *scrape.Scraper) error {
	g, err := NewGroup(Setup{
		Server: t.Server.String(), Size: o.Size, Count: 20, Workers: 1,
		DialConcurrency: o.DialConcurrency, HandshakeMs: o.HandshakeTimeout.Milliseconds(),
	})
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.ConnectPublishers(ctx, t.Domain, t.Key, 1, o.Sources); err != nil {
		return fmt.Errorf("cannot warm the hub up: %w", err)
	}
	rep, err := g.Subscribe(ctx, SubscribePlan{Domain: t.Domain, Topics: 1, N: 50, Sources: o.Sources})
	if err != nil {
		return fmt.Errorf("cannot warm the hub up: %w", err)
	}
	if err := g.StartPublishing(ctx, time.Now().UnixNano(), int64(5*time.Millisecond), 1); err != nil {
		return err
	}
	waitFor(ctx, 5*time.Second, func() bool { return g.Progress().Received >= int64(20*rep.Opened) })
	g.Close()
	var m scrape.Metrics
	if !waitFor(ctx, 30*time.Second, func() bool {
		m, err = scr.Scrape(ctx)
		return err == nil && m.Sum("wspubsub_connections") == 0 && m.Value("wspubsub_topics") == 0
	}) {
		if err != nil {
			return err
		}
		return fmt.Errorf("the hub still holds %v connections and %v topics 30 s after the warm-up: is --grace-period short?",
			m.Sum("wspubsub_connections"), m.Value("wspubsub_topics"))
	}
	return nil
}

func runSoak(ctx context.Context, t *target.Target, o Options, r *result.Result) error {
	scr := scrape.New(o.MetricsURL)
	m, err := scr.Scrape(ctx)
	if err != nil {
		return err
	}
	if _, ok := m.Get("go_goroutines"); !ok {
		return fmt.Errorf("%s has no go_goroutines: the soak needs our hub's metrics", o.MetricsURL)
	}
	if m.Sum("wspubsub_connections") != 0 || m.Value("wspubsub_topics") != 0 {
		return fmt.Errorf("the hub already holds %v connections and %v topics: the soak needs a hub of its own",
			m.Sum("wspubsub_connections"), m.Value("wspubsub_topics"))
	}
	if err := warmUp(ctx, t, o, scr); err != nil {
		return err
	}
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	if m, err = scr.Scrape(ctx); err != nil {
		return err
	}
	t0 := time.Now().UnixNano()
	if r.ServerMeasured {
		r.ServerRSSBefore, _ = procfs.RSS(t.PID)
	}
	s := &result.Soak{DurationSeconds: o.Duration.Seconds(), Tolerance: o.Tolerance}
	s.Start = hubSample(m, t0, t0)
	s.Peak = s.Start
	r.Soak = s

	// The stable topics: their subscribers stay and must get everything.
	setup := Setup{
		Server: t.Server.String(), Size: o.Size, Count: o.Count, Workers: o.Workers,
		DialConcurrency: o.DialConcurrency, HandshakeMs: o.HandshakeTimeout.Milliseconds(),
		CoalesceUs: o.Coalesce.Microseconds(),
	}
	g, err := NewGroup(setup)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.ConnectPublishers(ctx, t.Domain, t.Key, o.Topics, o.Sources); err != nil {
		return err
	}
	total := o.Topics * o.SubsPerTopic
	rep, err := g.Subscribe(ctx, SubscribePlan{Domain: t.Domain, Topics: o.Topics, N: total, Sources: o.Sources})
	if err != nil {
		return err
	}
	r.Subscribers, r.DialFailed, r.DialErrors = rep.Opened, rep.Failed, rep.Errors
	r.ConnectSeconds = float64(rep.LastOpen-rep.FirstDial) / 1e9
	if r.ConnectSeconds > 0 {
		r.ConnectRate = float64(rep.Opened) / r.ConnectSeconds
	}

	srcs, err := parseSources(o.Sources)
	if err != nil {
		return err
	}
	interval := int64(1e9 / o.Rate)
	start := time.Now().Add(100 * time.Millisecond).UnixNano()
	stop := start + int64(o.Duration)
	plan := &soakPlan{
		domain: t.Domain, key: t.Key, stableTopics: o.Topics, stableCount: o.Count, size: o.Size,
		rate: o.ChurnRate, meanLife: int64(o.ChurnLife), pubRate: o.Rate, start: start, stop: stop, sources: srcs,
	}
	se, err := startSoakEngine(plan, t.Server, o.Workers)
	if err != nil {
		return err
	}
	defer se.eng.Close()
	if err := g.Mark(ctx, start, seriesWidth(o.Duration, interval)); err != nil {
		return err
	}
	cpu := startCPU(r, t)
	if err := g.StartPublishing(ctx, start, interval, o.Topics); err != nil {
		return err
	}

	// Read the hub every second while the clients come and go, and until
	// the last of them has gone.
	lastLife := stop + 2*int64(o.ChurnLife) + int64(o.ChurnLife)/10
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastPrint := time.Now()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot finish the soak: %w", ctx.Err())
		case <-tick.C:
		}
		now := time.Now()
		if m, err := scr.Scrape(ctx); err == nil {
			hs := hubSample(m, now.UnixNano(), t0)
			s.Samples = append(s.Samples, hs)
			s.Peak.Max(hs)
			if o.Progress != nil && now.Sub(lastPrint) >= 10*time.Second {
				lastPrint = now
				fmt.Fprintf(o.Progress, "[soak %s] %3.0f s: hub connections %.0f, topics %.0f, goroutines %.0f, files %.0f, RSS %.1f MiB\n",
					t.Name, hs.T, hs.Connections, hs.Topics, hs.Goroutines, hs.OpenFDs, hs.RSS/(1<<20))
			}
		} else {
			r.Errors = append(r.Errors, err.Error())
		}
		if now.UnixNano() >= lastLife {
			break
		}
	}
	// Every stable subscriber has every message, or the drain timed out.
	want := int64(o.Count) * int64(rep.Opened)
	waitFor(ctx, o.DrainTimeout, func() bool { return g.Progress().Received >= want && g.Progress().PubsDone >= int64(o.Topics) })
	if !waitFor(ctx, 10*time.Second, func() bool { return se.live(ctx) == 0 }) {
		r.Errors = append(r.Errors, fmt.Sprintf("%d short-lived clients still open 10 s after their life", se.live(ctx)))
	}
	if err := se.stats(ctx, s); err != nil {
		return err
	}
	part, err := g.Finish(ctx, false)
	if err != nil {
		return err
	}
	cpu.stop()
	r.Published = int64(o.Count) * int64(r.Publishers)
	fillFlow(r, &part, start)
	se.eng.Close()
	g.Close()

	// Settle: the hub must come back near the start.
	left := time.Now()
	for {
		m, err := scr.Scrape(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		s.End = hubSample(m, now.UnixNano(), t0)
		s.SettleSeconds = now.Sub(left).Seconds()
		if len(o.Tolerance.Leaks(s.Start, s.End)) == 0 {
			s.Settled = true
			break
		}
		if now.Sub(left) >= o.SettleTimeout {
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	cpu.fill(r, part.Delivered+s.Delivered)
	return nil
}
