package scenario

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/bench/frame"
	"github.com/wspubsub/wspubsub/bench/meta"
	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/bench/poller"
	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
)

// maxTrackedBits bounds the memory of the per-subscriber bitmaps that catch
// duplicates: subscribers × messages per publisher, in bits (1 GiB).
const maxTrackedBits = 8 << 30

// maxSeriesBuckets bounds a time series; later deliveries land in the last
// bucket.
const maxSeriesBuckets = 4000

// Setup configures a Group: where the hub is and what the messages are.
type Setup struct {
	Server  string   `json:"server"`            // 127.x.x.x:port: the publishers' hub
	Servers []string `json:"servers,omitempty"` // the hubs subscribers are spread over; default Server
	// PubServers are the hubs the publishers are spread over (publisher i
	// to PubServers[i mod len]); default Server.
	PubServers      []string `json:"pub_servers,omitempty"`
	Size            int      `json:"size"`
	Count           int      `json:"count"` // messages per publisher
	Workers         int      `json:"workers"`
	DialConcurrency int      `json:"dial_concurrency"`
	HandshakeMs     int64    `json:"handshake_ms"`
	CoalesceUs      int64    `json:"coalesce_us"`
	// Compress makes subscribers offer permessage-deflate and publishers
	// send messages of the JSON feed, each one different.
	Compress bool `json:"compress,omitempty"`
	// Feed names the JSON feed (bench/payload.Feeds) under Compress;
	// "" is "quotes".
	Feed string `json:"feed,omitempty"`
}

// Group is the client connections of one process: an engine of epoll
// workers, the subscribers and publishers on it, and what they measured.
// Its methods are called from one coordinating goroutine; the per-worker
// state is only touched on the workers' goroutines (through Engine.Do).
type Group struct {
	setup   Setup
	server  netip.AddrPort
	subTo   []netip.AddrPort // subscriber i goes to subTo[nodeOf(i, ...)]
	pubTo   []netip.AddrPort // publisher i goes to pubTo[i % len]
	eng     *poller.Engine
	clients []*client
	cpuMark time.Duration
	marked  bool
	feed    payload.Feed // Setup.Feed's, under Setup.Compress
}

// subState is one subscriber's view of its topic's message stream.
type subState struct {
	topic   uint32
	churner bool
	opened  bool
	closed  bool // ended before the group finished
	code    int  // close code the server sent
	seqTrack
	rc *resumer // reconnect scenario only
}

// pubState is one publisher: it sends count messages, paced or as fast as
// the socket takes them, as a Timer on its worker.
type pubState struct {
	cl       *client
	c        *poller.Conn
	id       uint32
	count    uint64
	sent     uint64
	interval int64 // ns between messages; 0 = as fast as possible
	start    int64
	msg      []byte
	feed     payload.Feed // each message carries this JSON feed (Setup.Compress); nil: none
	waiting  bool         // blocked on a full socket, resumed by Drained
	done     bool
	opened   bool
	err      error
}

// client is the poller.Handler of one worker. Plain fields belong to the
// worker goroutine; the atomics are what other goroutines may read.
type client struct {
	g       *Group
	idx     int
	w       *poller.Worker
	size    int
	count   uint64
	subs    []*subState
	pubs    []*pubState
	latency *result.Hist

	part        result.Part
	seriesStart int64
	seriesWidth int64
	churn       *churner
	cut         CutPlan // reconnect scenario

	// Progress, read by the progress reporter.
	opened    atomic.Int64 // subscribers open (stayed ones)
	deflated  atomic.Int64 // of those, with permessage-deflate agreed
	failed    atomic.Int64 // subscriber dials that failed
	received  atomic.Int64 // distinct deliveries to stayed subscribers
	delivered atomic.Int64 // all deliveries
	sent      atomic.Int64
	pubsOpen  atomic.Int64
	pubsDone  atomic.Int64
	pubsErr   atomic.Int64
	churned   atomic.Int64
	cuts      atomic.Int64 // reconnect: cuts made
	reopened  atomic.Int64 // reconnect: reconnects that upgraded
}

var _ poller.Handler = (*client)(nil)
var _ poller.Timer = (*pubState)(nil)

// NewGroup starts the epoll workers of one process.
func NewGroup(s Setup) (*Group, error) {
	ap, err := netip.ParseAddrPort(s.Server)
	if err != nil {
		return nil, fmt.Errorf("cannot parse server address %q: %w", s.Server, err)
	}
	if s.Size < payload.MinSize {
		return nil, fmt.Errorf("cannot publish %d-byte messages: the smallest is %d", s.Size, payload.MinSize)
	}
	g := &Group{setup: s, server: ap, subTo: []netip.AddrPort{ap}, pubTo: []netip.AddrPort{ap}}
	if s.Compress {
		name := cmp.Or(s.Feed, "quotes")
		if g.feed = payload.Feeds[name]; g.feed == nil {
			return nil, fmt.Errorf("cannot publish the JSON feed %q: there are quotes and scores", name)
		}
	}
	for _, l := range []struct {
		to  *[]netip.AddrPort
		src []string
	}{{&g.subTo, s.Servers}, {&g.pubTo, s.PubServers}} {
		if len(l.src) == 0 {
			continue
		}
		*l.to = nil
		for _, srv := range l.src {
			a, err := netip.ParseAddrPort(srv)
			if err != nil {
				return nil, fmt.Errorf("cannot parse server address %q: %w", srv, err)
			}
			*l.to = append(*l.to, a)
		}
	}
	g.clients = make([]*client, max(1, s.Workers))
	for i := range g.clients {
		g.clients[i] = &client{g: g, idx: i, size: s.Size, count: uint64(s.Count), latency: result.NewLatency()}
	}
	eng, err := poller.New(poller.Config{
		Workers:          len(g.clients),
		MaxMessage:       max(s.Size+64, 64<<10),
		DialConcurrency:  s.DialConcurrency,
		HandshakeTimeout: time.Duration(s.HandshakeMs) * time.Millisecond,
		Coalesce:         time.Duration(s.CoalesceUs) * time.Microsecond,
		NewHandler:       func(i int) poller.Handler { return g.clients[i] },
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start the client engine: %w", err)
	}
	g.eng = eng
	for i, c := range g.clients {
		g.eng.Do(i, func(w *poller.Worker) { c.w = w })
	}
	return g, nil
}

// Close closes every connection and stops the workers.
func (g *Group) Close() { g.eng.Close() }

// each runs fn on every worker and waits for all of them. The calls run
// concurrently, one per worker goroutine: fn may only write to its client or
// to slots indexed by c.idx.
func (g *Group) each(ctx context.Context, fn func(c *client)) error {
	return onEveryWorker(ctx, g.eng, len(g.clients), func(i int, _ *poller.Worker) { fn(g.clients[i]) })
}

// onEveryWorker runs fn(i, w) on the goroutine of each of eng's first n
// workers and waits until all have returned, or ctx ends.
func onEveryWorker(ctx context.Context, eng *poller.Engine, n int, fn func(i int, w *poller.Worker)) error {
	done := make(chan struct{}, n)
	for i := range n {
		if err := eng.Do(i, func(w *poller.Worker) { fn(i, w); done <- struct{}{} }); err != nil {
			return err
		}
	}
	for range n {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// SubscribePlan asks a Group for subscribers First..First+N-1 of a run;
// subscriber i goes to topic i mod Topics.
type SubscribePlan struct {
	Domain  string   `json:"domain"`
	Topics  int      `json:"topics"`
	First   int      `json:"first"`
	N       int      `json:"n"`
	Sources []string `json:"sources,omitempty"`
	// Reconnect makes subscribers that offer wspubsub.meta and reconnect
	// after a cut (see StartCuts).
	Reconnect bool `json:"reconnect,omitempty"`
}

// SubscribeReply says how the connects went.
type SubscribeReply struct {
	Opened    int            `json:"opened"`
	Deflated  int            `json:"deflated,omitempty"` // of those, with permessage-deflate agreed
	Failed    int            `json:"failed"`
	Errors    map[string]int `json:"errors,omitempty"`
	FirstDial int64          `json:"first_dial_ns"`
	LastOpen  int64          `json:"last_open_ns"`
}

func parseSources(src []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(src))
	for _, s := range src {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || !a.IsLoopback() {
			return nil, fmt.Errorf("cannot bind to source address %q: it must be in 127.0.0.0/8", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// Subscribe connects the planned subscribers and waits until each is open
// or has failed.
func (g *Group) Subscribe(ctx context.Context, p SubscribePlan) (SubscribeReply, error) {
	srcs, err := parseSources(p.Sources)
	if err != nil {
		return SubscribeReply{}, err
	}
	bitmaps := uint64(1)
	if p.Reconnect {
		bitmaps = 2 // what arrived, and what gap notices covered
	}
	if bitmaps*uint64(p.N)*uint64(g.setup.Count) > maxTrackedBits {
		return SubscribeReply{}, fmt.Errorf("cannot track %d subscribers × %d messages: more than %d bits", p.N, g.setup.Count, uint64(maxTrackedBits))
	}
	before := g.resolved()
	first := time.Now().UnixNano()
	W := len(g.clients)
	for wi, c := range g.clients {
		err := g.eng.Do(wi, func(w *poller.Worker) {
			for i := p.First + wi; i < p.First+p.N; i += W {
				s := &subState{topic: uint32(i % p.Topics), seqTrack: seqTrack{seen: make([]uint64, (g.setup.Count+63)/64)}}
				c.subs = append(c.subs, s)
				spec := poller.DialSpec{
					Server: g.subTo[nodeOf(i, p.Topics, len(g.subTo))],
					Path:   "/ws/sub/" + p.Domain + "/" + topicName(int(s.topic)),
					Data:   s,
				}
				if g.setup.Compress {
					// One subscriber in verifyEvery inflates and checks
					// every message; the others count them as they come:
					// inflating them all would take the cores the hub is
					// measured on (about 5 µs a message).
					spec.Extensions, spec.Raw = frame.DeflateOffer, i%verifyEvery != 0
				}
				if len(srcs) > 0 {
					spec.Source = srcs[i%len(srcs)]
				}
				if p.Reconnect {
					spec.Protocol = meta.Protocol
					s.rc = &resumer{s: s, spec: spec, state: rsDialing, covered: make([]uint64, len(s.seen))}
					s.rc.conn = w.Dial(spec)
					continue
				}
				w.Dial(spec)
			}
		})
		if err != nil {
			return SubscribeReply{}, err
		}
	}
	for g.resolved()-before < int64(p.N) {
		select {
		case <-ctx.Done():
			return SubscribeReply{}, fmt.Errorf("cannot connect %d subscribers: %w", p.N, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	var rep SubscribeReply
	errs := make([]map[string]int, len(g.clients))
	last := make([]int64, len(g.clients))
	err = g.each(ctx, func(c *client) {
		errs[c.idx] = cloneCounts(c.part.DialErrors)
		last[c.idx] = c.part.LastOpen
	})
	if err != nil {
		return rep, err
	}
	for i, c := range g.clients {
		for k, v := range errs[i] {
			if rep.Errors == nil {
				rep.Errors = map[string]int{}
			}
			rep.Errors[k] += v
		}
		rep.LastOpen = max(rep.LastOpen, last[i])
		rep.Opened += int(c.opened.Load())
		rep.Deflated += int(c.deflated.Load())
		rep.Failed += int(c.failed.Load())
	}
	rep.FirstDial = first
	return rep, nil
}

// nodeOf is the node subscriber i of a run with topics topics goes to,
// of n: in turn, shifted by one for each round of the topics, so that the
// subscribers of every topic are spread over the nodes (subscriber i is of
// topic i mod topics; i mod n alone would put all of a topic's on one
// node when n divides topics).
func nodeOf(i, topics, n int) int {
	return (i%topics + i/topics) % n
}

func (g *Group) resolved() int64 {
	var n int64
	for _, c := range g.clients {
		n += c.opened.Load() + c.failed.Load()
	}
	return n
}

func topicName(i int) string { return "t" + strconv.Itoa(i) }

// ConnectPublishers connects one publisher per topic and waits until all
// are open; any failure (401, 409, ...) is an error.
func (g *Group) ConnectPublishers(ctx context.Context, domain, key string, topics int, sources []string) error {
	srcs, err := parseSources(sources)
	if err != nil {
		return err
	}
	W := len(g.clients)
	for wi, c := range g.clients {
		err := g.eng.Do(wi, func(w *poller.Worker) {
			for i := wi; i < topics; i += W {
				p := &pubState{cl: c, id: uint32(i), count: uint64(g.setup.Count), msg: make([]byte, g.setup.Size), feed: g.feed}
				payload.Fill(p.msg, p.id, 0, 0)
				c.pubs = append(c.pubs, p)
				spec := poller.DialSpec{
					Server: g.pubTo[i%len(g.pubTo)],
					Path:   "/ws/pub/" + key + "/" + domain + "/" + topicName(i),
					Data:   p,
				}
				if len(srcs) > 0 {
					spec.Source = srcs[i%len(srcs)]
				}
				p.c = w.Dial(spec)
			}
		})
		if err != nil {
			return err
		}
	}
	for {
		var open, bad int64
		for _, c := range g.clients {
			open += c.pubsOpen.Load()
			bad += c.pubsErr.Load()
		}
		if bad > 0 {
			return fmt.Errorf("cannot connect %d of %d publishers: %w", bad, topics, g.PublisherError(ctx))
		}
		if open == int64(topics) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot connect %d publishers: %w", topics, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// PublisherError says why the first publisher that failed (to connect,
// or mid-run) did, or returns nil when none did.
func (g *Group) PublisherError(ctx context.Context) error {
	var bad int64
	for _, c := range g.clients {
		bad += c.pubsErr.Load()
	}
	if bad == 0 {
		return nil
	}
	msgs := make([]string, len(g.clients))
	g.each(ctx, func(c *client) {
		for _, p := range c.pubs {
			if p.err != nil && msgs[c.idx] == "" {
				msgs[c.idx] = fmt.Sprintf("publisher of %s: %v", topicName(int(p.id)), p.err)
			}
		}
	})
	for _, m := range msgs {
		if m != "" {
			return errors.New(m)
		}
	}
	return fmt.Errorf("%d publishers failed", bad)
}

// Mark starts the measured phase: the client CPU baseline and the time
// series' origin and bucket width.
func (g *Group) Mark(ctx context.Context, start, width int64) error {
	g.cpuMark = procfs.SelfCPU()
	g.marked = true
	return g.each(ctx, func(c *client) {
		c.seriesStart, c.seriesWidth = start, width
		c.part.Series = nil
	})
}

// StartPublishing schedules every publisher: the first message at start,
// then one every interval ns (0 = as fast as possible), staggered so that
// paced publishers do not all fire in the same millisecond.
func (g *Group) StartPublishing(ctx context.Context, start, interval int64, publishers int) error {
	return g.each(ctx, func(c *client) {
		for _, p := range c.pubs {
			p.interval = interval
			p.start = start
			if interval > 0 && publishers > 1 {
				p.start += interval * int64(p.id) / int64(publishers)
			}
			c.w.Schedule(p, p.start)
		}
	})
}

// StopPublishing ends every publisher after what it has sent so far, and
// makes that what each subscriber is owed. Every publisher must have sent
// the same number of messages (one topic, or the same schedule), which it
// returns.
func (g *Group) StopPublishing(ctx context.Context) (uint64, error) {
	sent := make([][]uint64, len(g.clients))
	err := g.each(ctx, func(c *client) {
		for _, p := range c.pubs {
			if !p.done {
				p.count = p.sent
				p.done = true
				c.pubsDone.Add(1)
			}
			sent[c.idx] = append(sent[c.idx], p.sent)
		}
	})
	if err != nil {
		return 0, err
	}
	var n uint64
	first := true
	for _, s := range sent {
		for _, v := range s {
			if !first && v != n {
				return 0, fmt.Errorf("cannot stop publishers that sent different counts (%d and %d)", n, v)
			}
			n, first = v, false
		}
	}
	err = g.each(ctx, func(c *client) { c.count = n })
	return n, err
}

// Finish computes what each worker measured and merges it; connections stay
// open. Subscribers that stayed owe Count messages each. remote adds this
// process's CPU time since Mark (a group in the coordinator's own process
// leaves that to the coordinator).
func (g *Group) Finish(ctx context.Context, remote bool) (result.Part, error) {
	var total result.Part
	parts := make([]result.Part, len(g.clients))
	done := make(chan struct{}, len(g.clients))
	for wi, c := range g.clients {
		err := g.eng.Do(wi, func(*poller.Worker) {
			parts[wi] = c.finish()
			done <- struct{}{}
		})
		if err != nil {
			return total, err
		}
	}
	for range g.clients {
		select {
		case <-done:
		case <-ctx.Done():
			return total, ctx.Err()
		}
	}
	for i := range parts {
		result.Merge(&total, &parts[i])
	}
	if remote && g.marked {
		total.ClientCPU = int64(procfs.SelfCPU() - g.cpuMark)
	}
	return total, nil
}

// Progress sums the live counters of the workers.
func (g *Group) Progress() Progress {
	var p Progress
	for _, c := range g.clients {
		p.Opened += c.opened.Load()
		p.Failed += c.failed.Load()
		p.Received += c.received.Load()
		p.Delivered += c.delivered.Load()
		p.Sent += c.sent.Load()
		p.PubsDone += c.pubsDone.Load()
		p.Churned += c.churned.Load()
		p.Cuts += c.cuts.Load()
		p.Reconnects += c.reopened.Load()
	}
	return p
}

// Progress is a snapshot of a run's counters.
type Progress struct {
	Opened    int64 `json:"opened"`
	Failed    int64 `json:"failed"`
	Received  int64 `json:"received"`
	Delivered int64 `json:"delivered"`
	Sent      int64 `json:"sent"`
	PubsDone  int64 `json:"pubs_done"`
	Churned   int64 `json:"churned"`
	// Cuts and Reconnects count the reconnect scenario's cuts made and
	// reconnects that upgraded.
	Cuts       int64 `json:"cuts,omitempty"`
	Reconnects int64 `json:"reconnects,omitempty"`
}

func (p *Progress) add(q Progress) {
	p.Opened += q.Opened
	p.Failed += q.Failed
	p.Received += q.Received
	p.Delivered += q.Delivered
	p.Sent += q.Sent
	p.PubsDone += q.PubsDone
	p.Churned += q.Churned
	p.Cuts += q.Cuts
	p.Reconnects += q.Reconnects
}

// finish runs on the worker goroutine and returns what it measured.
func (c *client) finish() result.Part {
	p := c.part
	p.DialErrors = cloneCounts(p.DialErrors)
	p.Churn.Errors = cloneCounts(p.Churn.Errors)
	p.CloseCodes = cloneCodes(p.CloseCodes)
	for _, s := range c.subs {
		if !s.opened {
			continue
		}
		var covered uint64
		if s.rc != nil {
			covered = s.rc.account(&p, s.seen)
		}
		p.Expected += int64(c.count)
		p.Unique += int64(s.recv)
		p.Lost += int64(c.count - s.recv - covered)
	}
	p.Reconnect.CloseCodes = cloneCodes(p.Reconnect.CloseCodes)
	p.Reconnect.DialErrors = cloneCounts(p.Reconnect.DialErrors)
	for _, h := range []**result.Hist{&p.Reconnect.RecoverHist, &p.Reconnect.ReopenHist} {
		if *h != nil { // a copy: the worker goes on recording
			cp := result.NewLatency()
			cp.Merge(*h)
			*h = cp
		}
	}
	st := c.w.Stats()
	p.Reads, p.Wakeups, p.WireBytes = int64(st.Reads), int64(st.Waits), int64(st.WireBytes)
	p.Latency = result.NewLatency()
	p.Latency.Merge(c.latency)
	p.SeriesStart, p.SeriesWidth = c.seriesStart, c.seriesWidth
	p.Series = make([]result.Bucket, len(c.part.Series))
	for i, b := range c.part.Series {
		p.Series[i] = result.Bucket{Deliveries: b.Deliveries, Bytes: b.Bytes}
		if b.Latency != nil {
			p.Series[i].Latency = result.NewSeriesLatency()
			p.Series[i].Latency.Merge(b.Latency)
		}
	}
	return p
}

func cloneCodes(m map[int]int) map[int]int {
	if m == nil {
		return nil
	}
	out := make(map[int]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneCounts(m map[string]int) map[string]int {
	if m == nil {
		return nil
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Open implements poller.Handler.
func (c *client) Open(conn *poller.Conn, now int64) {
	switch s := conn.Data.(type) {
	case *subState:
		first := !s.opened
		s.opened = true
		if s.churner {
			c.part.Churn.Opened++
			c.churned.Add(1)
			return
		}
		if s.rc != nil {
			s.rc.opened(c, conn, now, first)
			if !first {
				return
			}
		}
		c.part.Subscribers++
		if conn.Deflate() {
			c.deflated.Add(1)
		}
		c.part.LastOpen = max(c.part.LastOpen, now)
		c.opened.Add(1)
	case *pubState:
		s.opened = true
		c.pubsOpen.Add(1)
	}
}

// Message implements poller.Handler: the hot path, no allocation.
func (c *client) Message(conn *poller.Conn, op byte, p []byte, now int64) {
	s, ok := conn.Data.(*subState)
	if !ok {
		return // publishers are not sent data
	}
	if conn.Compressed() {
		c.countCompressed(s, now)
		return
	}
	var h meta.Header
	if s.rc != nil && !s.rc.plain {
		if p, ok = s.rc.message(c, p, &h); !ok {
			return
		}
	}
	pub, seq, sent, err := payload.Parse(p, c.size)
	if err != nil || op != frame.OpBinary || pub != s.topic || seq >= c.count {
		c.part.Corrupt++
		return
	}
	live := s.rc == nil || s.rc.delivered(c, &h, seq, sent, now)
	lat := now - sent
	if live {
		c.latency.Record(lat)
	}
	c.part.Delivered++
	c.part.Bytes += int64(len(p))
	c.delivered.Add(1)
	c.part.FirstRecv = minNonZero(c.part.FirstRecv, now)
	c.part.LastRecv = max(c.part.LastRecv, now)
	if c.seriesWidth > 0 {
		i := int((now - c.seriesStart) / c.seriesWidth)
		if i < 0 {
			i = 0
		}
		if i >= maxSeriesBuckets {
			i = maxSeriesBuckets - 1
		}
		for len(c.part.Series) <= i {
			c.part.Series = append(c.part.Series, result.Bucket{})
		}
		b := &c.part.Series[i]
		b.Deliveries++
		b.Bytes += int64(len(p))
		if live {
			if b.Latency == nil {
				b.Latency = result.NewSeriesLatency()
			}
			b.Latency.Record(lat / 1000)
		}
	}
	dup, late := s.record(seq)
	switch {
	case dup && s.churner:
		c.part.Churn.Duplicates++
		return
	case dup:
		c.part.Duplicates++
		return
	case late && s.churner:
		c.part.Churn.OutOfOrder++
	case late:
		c.part.OutOfOrder++
	}
	if s.churner {
		c.part.Churn.Delivered++
	} else {
		c.received.Add(1)
	}
}

func minNonZero(a, b int64) int64 {
	if a == 0 {
		return b
	}
	return min(a, b)
}

// Drained implements poller.Handler: a publisher blocked on a full socket
// goes on.
func (c *client) Drained(conn *poller.Conn, now int64) {
	if p, ok := conn.Data.(*pubState); ok && p.waiting {
		p.waiting = false
		c.w.Schedule(p, now)
	}
}

// Closed implements poller.Handler.
func (c *client) Closed(conn *poller.Conn, code int, err error) {
	switch s := conn.Data.(type) {
	case *subState:
		if s.churner {
			c.churnClosed(s, err)
			return
		}
		if s.rc != nil && s.opened {
			s.rc.closed(c, conn, code, err)
			return
		}
		if !s.opened {
			c.failed.Add(1)
			c.part.DialFailed++
			c.part.DialErrors = countErr(c.part.DialErrors, err)
			return
		}
		if err != nil && !errors.Is(err, poller.ErrEngineClosed) {
			s.closed = true
			s.code = code
			c.part.Dropped++
			if code == 0 {
				code = frame.CloseAbnormal
			}
			if c.part.CloseCodes == nil {
				c.part.CloseCodes = map[int]int{}
			}
			c.part.CloseCodes[code]++
			c.opened.Add(-1)
		}
	case *pubState:
		if !s.done && err != nil && !errors.Is(err, poller.ErrEngineClosed) {
			s.err = err
			c.pubsErr.Add(1)
			if s.opened {
				// A publisher that dies mid-run counts as done so that
				// the run ends; what it did not send shows up as loss.
				s.done = true
				c.pubsDone.Add(1)
			}
		}
	}
}

func (c *client) churnClosed(s *subState, err error) {
	ch := &c.part.Churn
	if !s.opened {
		if err == nil {
			return // closed by us while still connecting
		}
		ch.Failed++
		ch.Errors = countErr(ch.Errors, err)
		return
	}
	if err != nil && !errors.Is(err, poller.ErrEngineClosed) {
		ch.Dropped++
		ch.Errors = countErr(ch.Errors, err)
	}
	ch.Gaps += s.gaps()
	s.seen = nil
}

// countErr groups errors by a short reason: "HTTP 404", "timeout", or the
// errno's text.
func countErr(m map[string]int, err error) map[string]int {
	if m == nil {
		m = map[string]int{}
	}
	if len(m) >= 32 {
		m["other"]++
		return m
	}
	m[reason(err)]++
	return m
}

func reason(err error) string {
	var he *frame.HandshakeError
	var errno syscall.Errno
	switch {
	case err == nil:
		return "closed"
	case errors.As(err, &he):
		return "HTTP " + strconv.Itoa(he.Status)
	case errors.Is(err, poller.ErrHandshakeTimeout):
		return "handshake timeout"
	case errors.Is(err, poller.ErrClosedByPeer):
		return "closed by server"
	case errors.As(err, &errno):
		return errno.Error()
	}
	return err.Error()
}

// Fire implements poller.Timer: send what is due, as much as the socket
// takes.
func (p *pubState) Fire(now int64) int64 {
	if p.done || !p.c.IsOpen() {
		return 0
	}
	due := p.count
	if p.interval > 0 {
		due = min(p.count, uint64((now-p.start)/p.interval)+1)
	}
	const batch = 256 << 10
	n := int64(0)
	for p.sent < due && p.c.Buffered() < batch {
		if p.feed != nil {
			payload.FillFeed(p.msg, p.feed, p.id, p.sent, time.Now().UnixNano())
		} else {
			payload.Stamp(p.msg, p.sent, time.Now().UnixNano())
		}
		if err := p.c.WriteMessage(frame.OpBinary, p.msg); err != nil {
			break
		}
		p.sent++
		n++
	}
	p.cl.sent.Add(n)
	p.c.Flush()
	if !p.c.IsOpen() {
		return 0
	}
	if p.c.Buffered() > 0 {
		p.waiting = true
		return 0
	}
	if p.sent >= p.count {
		p.done = true
		p.cl.pubsDone.Add(1)
		return 0
	}
	if p.interval == 0 {
		return now + 1 // let the loop poll once, then go on
	}
	return p.start + int64(p.sent)*p.interval
}

// verifyEvery is how many compressing subscribers share one that inflates
// and checks every message (Setup.Compress).
const verifyEvery = 16

// countCompressed counts a message a subscriber left compressed: the hub
// sends a topic's messages in order, so it is the next one; whether the
// hub keeps that order, and the bytes, are checked by the subscribers
// that inflate (one in verifyEvery). No latency is recorded for it.
func (c *client) countCompressed(s *subState, now int64) {
	if s.next >= c.count {
		c.part.Corrupt++ // more messages than were published
		return
	}
	s.record(s.next)
	c.received.Add(1)
	c.part.Delivered++
	c.part.Bytes += int64(c.size)
	c.delivered.Add(1)
	c.part.FirstRecv = minNonZero(c.part.FirstRecv, now)
	c.part.LastRecv = max(c.part.LastRecv, now)
}
