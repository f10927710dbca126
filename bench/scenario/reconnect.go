package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/wspubsub/wspubsub/bench/meta"
	"github.com/wspubsub/wspubsub/bench/poller"
	"github.com/wspubsub/wspubsub/bench/result"
)

// The reconnect scenario: subscribers offer the wspubsub.meta subprotocol,
// so every message comes with its position (EPOCH:OFFSET), and each is cut
// Cuts times while a paced stream flows. After a cut the subscriber
// reconnects, after a short jittered delay, with since=EPOCH:OFFSET of the
// last message it got; the hub must replay what it missed, or say with a
// gap notice what it cannot. A hub that does not accept the subprotocol
// (the reference) gets plain reconnects, and what its subscribers miss is
// lost.
//
// Cuts (CutPlan.Mode):
//   - client: the client drops its TCP connection without a close frame,
//     with a reset for the 1st, 3rd, ... cut and a FIN for the others;
//   - hub: the client stops answering pings (it still reads), so the hub
//     closes it with 4003 after its --ping-interval and --pong-timeout. The
//     other way for a hub to cut a subscriber, its backlog passing
//     --max-backlog (4000), takes minutes at a few messages a second: the
//     kernel's socket buffers hold hundreds of KiB before the hub's own
//     backlog grows.
//
// Per subscriber, the state machine (resumer.state):
//
//	live ──cut (client)──▶ down ──delay──▶ dialing ──101──▶ live
//	live ──cut (hub)──▶ muted ──hub closes──▶ down
//	dialing ──dial fails──▶ down (retried with a growing delay)
//
// Every transition happens on the subscriber's worker goroutine: in the
// poller's Open and Closed callbacks, or in a resumeTimer's Fire.

// CutPlan asks a Group to cut its reconnecting subscribers (see the top of
// this file).
type CutPlan struct {
	Mode string `json:"mode"` // "client" or "hub"
	Cuts int    `json:"cuts"` // per subscriber
	// The cuts are spread over [FromNs, ToNs): the k-th cut of each
	// subscriber falls at random in the first half of the k-th of Cuts
	// equal slots, so that it has half a slot to come back. None
	// starts after StopNs (a cut waits until the subscriber has a
	// position and has recovered from the one before; one that waits too
	// long is skipped).
	FromNs int64 `json:"from_ns"`
	ToNs   int64 `json:"to_ns"`
	StopNs int64 `json:"stop_ns"`
	// DelayNs is the reconnect delay: each reconnect waits between half
	// and one and a half of it (doubling, up to 2 s, after failed dials).
	DelayNs int64 `json:"delay_ns"`
	// HubWaitNs is how long a muted subscriber waits for the hub to close
	// it before it drops the connection itself (hub mode).
	HubWaitNs int64 `json:"hub_wait_ns"`
}

// Resumer states.
const (
	rsLive    = iota // open, answering pings
	rsMuted          // open, waiting for the hub to cut it
	rsDown           // gone, a reconnect scheduled
	rsDialing        // reconnecting
	rsDone           // the engine is closing
)

// resumer is the reconnect state of one subscriber: its position, its
// cuts, and what it needs to dial again. It belongs to the worker that
// owns the subscriber.
type resumer struct {
	s    *subState
	conn *poller.Conn
	spec poller.DialSpec // Path without a query

	// The position of the last message received (what since resumes
	// from); the current epoch (a reset notice changes it before any of
	// its messages comes) and its base: offset − sequence number, the same
	// for every message of one publisher's epoch.
	pos      [meta.MaxEpoch]byte
	posLen   int
	offset   uint64
	epoch    [meta.MaxEpoch]byte
	epochLen int
	base     int64
	haveBase bool
	// covered is a bitmap of the sequence numbers gap notices covered;
	// pending are gaps of an epoch whose base is not known yet.
	covered []uint64
	pending []gapSpan

	state    uint8
	plain    bool  // the hub did not accept wspubsub.meta
	got      bool  // a message arrived on this connection
	since    bool  // the current dial carries since
	openedAt int64 // when the current connection opened
	downAt   int64 // when the current outage began; 0 when none
	mutedAt  int64
	redialAt int64
	retries  int
	moved    bool // the current dial goes to another node than the last

	cuts   []int64 // when the cuts are due
	next   int     // the next cut
	gen    uint32  // bumped by arm: older timers are void
	firing bool    // inside fire: Closed must not arm
}

type gapSpan struct{ first, last uint64 }

// resumeTimer is one scheduled wake-up of a resumer; a newer arm voids it.
type resumeTimer struct {
	rc  *resumer
	c   *client
	gen uint32
}

var _ poller.Timer = (*resumeTimer)(nil)

// Fire implements poller.Timer.
func (t *resumeTimer) Fire(now int64) int64 {
	rc := t.rc
	if t.gen != rc.gen {
		return 0
	}
	rc.firing = true
	next := rc.fire(t.c, now)
	rc.firing = false
	if t.gen != rc.gen {
		return 0
	}
	return next
}

// arm schedules the resumer's next wake-up at at (none when 0), voiding
// any earlier one.
func (rc *resumer) arm(c *client, at int64) {
	rc.gen++
	if at != 0 {
		c.w.Schedule(&resumeTimer{rc: rc, c: c, gen: rc.gen}, at)
	}
}

// due is when the resumer must next act, from its state; 0 for never.
func (rc *resumer) due(c *client) int64 {
	switch rc.state {
	case rsLive:
		if rc.next < len(rc.cuts) {
			return rc.cuts[rc.next]
		}
	case rsMuted:
		return rc.mutedAt + c.cut.HubWaitNs
	case rsDown:
		return rc.redialAt
	}
	return 0
}

// fire makes the cut or the reconnect that is due and returns when to act
// next.
func (rc *resumer) fire(c *client, now int64) int64 {
	rp := &c.part.Reconnect
	switch rc.state {
	case rsLive:
		if rc.next >= len(rc.cuts) || now < rc.cuts[rc.next] {
			return rc.due(c)
		}
		if now >= c.cut.StopNs {
			rp.Skipped += int64(len(rc.cuts) - rc.next)
			rc.next = len(rc.cuts)
			return 0
		}
		if !rc.got || rc.downAt != 0 {
			// No position yet, or still recovering from the last cut:
			// each outage is measured on its own.
			return now + int64(20*time.Millisecond)
		}
		k := rc.next
		rc.next++
		rp.Cuts++
		c.cuts.Add(1)
		if c.cut.Mode == "hub" {
			rc.state = rsMuted
			rc.mutedAt = now
			rc.conn.Mute(true)
			return rc.due(c)
		}
		rc.downAt = now
		rc.conn.Drop(k%2 == 0) // Closed makes it rsDown
		return rc.due(c)
	case rsMuted:
		if now < rc.mutedAt+c.cut.HubWaitNs {
			return rc.due(c)
		}
		rp.HubMissed++
		rc.downAt = now
		rc.conn.Drop(true)
		return rc.due(c)
	case rsDown:
		if now < rc.redialAt {
			return rc.redialAt
		}
		rc.dial(c)
		return 0
	}
	return 0
}

// dial reconnects: with since when the subscriber has a position, plainly
// otherwise.
func (rc *resumer) dial(c *client) {
	spec := rc.spec
	spec.Path, rc.since = rc.path()
	rc.state = rsDialing
	rc.conn = c.w.Dial(spec)
}

// path is the path to reconnect to: with since=EPOCH:OFFSET of the last
// message received, when the hub gives positions and one came.
func (rc *resumer) path() (path string, since bool) {
	if rc.plain || rc.posLen == 0 {
		return rc.spec.Path, false
	}
	q := make([]byte, 0, len(rc.spec.Path)+len("?since=")+rc.posLen+21)
	q = append(q, rc.spec.Path...)
	q = append(q, "?since="...)
	return string(meta.AppendPosition(q, rc.pos[:rc.posLen], rc.offset)), true
}

// jitter returns a delay between half and one and a half of d.
func jitter(w *poller.Worker, d int64) int64 {
	if d <= 1 {
		return d
	}
	return d/2 + int64(w.Rand()%uint64(d))
}

// opened handles an upgrade of a reconnecting subscriber: its first, or
// a reconnect.
func (rc *resumer) opened(c *client, conn *poller.Conn, now int64, first bool) {
	rp := &c.part.Reconnect
	rc.conn = conn
	rc.openedAt = now
	rc.got = false
	rc.retries = 0
	rc.state = rsLive
	if first {
		rc.plain = !conn.Accepted()
		if rc.plain {
			rp.PlainSubs++
		} else {
			rp.MetaSubs++
		}
		return
	}
	rp.Reconnects++
	if rc.moved {
		rp.Moved++
		rc.moved = false
	}
	c.reopened.Add(1)
	if rc.downAt != 0 {
		if rp.ReopenHist == nil {
			rp.ReopenHist = result.NewLatency()
		}
		rp.ReopenHist.Record(now - rc.downAt)
	}
	if rc.since {
		rp.Resumed++
	} else {
		rp.Plain++
	}
	if !rc.firing {
		rc.arm(c, rc.due(c))
	}
}

// closed handles the end of a connection or a reconnect of a subscriber
// that was open once (the first dial's failure is counted as for any
// subscriber).
func (rc *resumer) closed(c *client, conn *poller.Conn, code int, err error) {
	if conn != rc.conn || rc.state == rsDone {
		return
	}
	if errors.Is(err, poller.ErrEngineClosed) {
		rc.state = rsDone
		return
	}
	rp := &c.part.Reconnect
	now := time.Now().UnixNano()
	switch rc.state {
	case rsDialing:
		rp.DialFailed++
		rp.DialErrors = countErr(rp.DialErrors, err)
		rc.move(c)
		rc.retries++
		rc.state = rsDown
		rc.redialAt = now + jitter(c.w, min(c.cut.DelayNs<<min(rc.retries, 10), int64(2*time.Second)))
	case rsLive, rsMuted:
		if err != nil {
			// The hub ended it.
			rp.HubClosed++
			if code == 0 {
				code = 1006
			}
			if rp.CloseCodes == nil {
				rp.CloseCodes = map[int]int{}
			}
			rp.CloseCodes[code]++
			if rc.state != rsMuted {
				rp.Unplanned++
				rc.move(c)
			}
			if rc.downAt == 0 {
				rc.downAt = now
			}
		}
		rc.state = rsDown
		rc.redialAt = now + jitter(c.w, c.cut.DelayNs)
	default:
		return
	}
	if !rc.firing {
		rc.arm(c, rc.due(c))
	}
}

// move points the subscriber's next dial at another node of a cluster,
// chosen at random, after its node closed it unasked or refused a dial (a
// node that died: its subscribers spread over the others). A cut the run
// made (client or hub) reconnects to the same node.
func (rc *resumer) move(c *client) {
	nodes := c.g.subTo
	if len(nodes) < 2 {
		return
	}
	cur := 0
	for i, a := range nodes {
		if a == rc.spec.Server {
			cur = i
		}
	}
	next := (cur + 1 + int(c.w.Rand()%uint64(len(nodes)-1))) % len(nodes)
	rc.spec.Server = nodes[next]
	rc.moved = true
}

// message reads the position of a message under wspubsub.meta, or
// handles a notice. It returns the published bytes, and false when there
// are none (a notice, or a malformed header, counted as corrupt).
func (rc *resumer) message(c *client, p []byte, h *meta.Header) ([]byte, bool) {
	var err error
	*h, p, err = meta.Parse(p)
	if err != nil {
		c.part.Corrupt++
		return nil, false
	}
	rp := &c.part.Reconnect
	switch h.Kind {
	case meta.Gap:
		rp.GapNotices++
		rp.ReportedLost += int64(h.Last - h.First + 1)
		if rc.haveBase && bytes.Equal(h.Epoch, rc.epoch[:rc.epochLen]) {
			rc.cover(h.First, h.Last)
		} else {
			// After a reset, the gap of the new epoch comes before its
			// first message, which tells the base.
			rc.setEpoch(h.Epoch)
			rc.pending = append(rc.pending, gapSpan{h.First, h.Last})
		}
		return nil, false
	case meta.Reset:
		rp.Resets++
		rc.setEpoch(h.Epoch)
		return nil, false
	}
	return p, true
}

// setEpoch makes e the current epoch; a new one has no base yet.
func (rc *resumer) setEpoch(e []byte) {
	if bytes.Equal(e, rc.epoch[:rc.epochLen]) {
		return
	}
	rc.epochLen = copy(rc.epoch[:], e)
	rc.haveBase = false
}

// cover marks the sequence numbers of offsets first..last as covered by a
// gap notice.
func (rc *resumer) cover(first, last uint64) {
	n := int64(len(rc.covered)) * 64
	lo := max(int64(first)-rc.base, 0)
	hi := min(int64(last)-rc.base, n-1)
	for seq := lo; seq <= hi; seq++ {
		rc.covered[seq>>6] |= 1 << (seq & 63)
	}
}

// delivered checks a message's position against its sequence number,
// ends the subscriber's outage, and reports whether the message is live
// (published after its connection opened) rather than replayed.
func (rc *resumer) delivered(c *client, h *meta.Header, seq uint64, sent, now int64) bool {
	rp := &c.part.Reconnect
	if h.Kind == meta.ID {
		if rc.epochLen > 0 && !bytes.Equal(h.Epoch, rc.epoch[:rc.epochLen]) {
			rp.BadPositions++ // a new epoch without a reset notice
		}
		rc.setEpoch(h.Epoch)
		base := int64(h.Offset) - int64(seq)
		switch {
		case !rc.haveBase:
			rc.base, rc.haveBase = base, true
			for _, g := range rc.pending {
				rc.cover(g.first, g.last)
			}
			rc.pending = rc.pending[:0]
		case base != rc.base:
			rp.BadPositions++
		}
		// Resume after the newest message: a duplicate or a late one
		// does not move the position back.
		if !bytes.Equal(h.Epoch, rc.pos[:rc.posLen]) || h.Offset > rc.offset {
			rc.posLen = copy(rc.pos[:], h.Epoch)
			rc.offset = h.Offset
		}
	}
	rc.got = true
	if rc.downAt != 0 {
		if rp.RecoverHist == nil {
			rp.RecoverHist = result.NewLatency()
		}
		rp.RecoverHist.Record(now - rc.downAt)
		rp.Recovered++
		rc.downAt = 0
	}
	if sent < rc.openedAt {
		rp.Replayed++
		return false
	}
	return true
}

// account adds a reconnecting subscriber's totals to p at the end of the
// run: covered is what gap notices accounted for, and not silent loss.
func (rc *resumer) account(p *result.Part, seen []uint64) (covered uint64) {
	for i, w := range rc.covered {
		covered += uint64(bits.OnesCount64(w &^ seen[i]))
		p.Reconnect.GapDelivered += int64(bits.OnesCount64(w & seen[i]))
	}
	if rc.downAt != 0 {
		p.Reconnect.Unrecovered++
	}
	return covered
}

// StartCuts plans the cuts of every reconnecting subscriber of the group.
func (g *Group) StartCuts(ctx context.Context, p CutPlan) error {
	switch p.Mode {
	case "client", "hub":
	default:
		return fmt.Errorf("cannot cut subscribers by %q: want client or hub", p.Mode)
	}
	if p.Cuts <= 0 || p.ToNs <= p.FromNs {
		return fmt.Errorf("cannot spread %d cuts over [%d, %d)", p.Cuts, p.FromNs, p.ToNs)
	}
	return g.each(ctx, func(c *client) {
		c.cut = p
		c.part.Reconnect.Mode = p.Mode
		slot := (p.ToNs - p.FromNs) / int64(p.Cuts)
		for _, s := range c.subs {
			rc := s.rc
			if rc == nil || !s.opened {
				continue
			}
			rc.cuts = make([]int64, p.Cuts)
			for k := range rc.cuts {
				rc.cuts[k] = p.FromNs + int64(k)*slot + int64(c.w.Rand()%uint64(max(slot/2, 1)))
			}
			c.part.Reconnect.Planned += int64(p.Cuts)
			if rc.state == rsLive {
				rc.arm(c, rc.cuts[0])
			} // else its reconnect arms it
		}
	})
}

// cutWindow returns the window the cuts of a run are spread over and the
// time after which none starts: from a lead after the first message, to
// a tail before the last that leaves time to reconnect and recover.
func cutWindow(o Options, start, interval int64, pubDur time.Duration) (from, to, stop int64, err error) {
	lead := 2*interval + int64(100*time.Millisecond)
	tail := int64(o.ReconnectDelay)*3/2 + int64(500*time.Millisecond) + 2*interval
	if o.CutMode == "hub" {
		tail += int64(o.PingInterval + o.PongTimeout)
	}
	from, to = start+lead, start+int64(pubDur)-tail
	if to-from < int64(o.Cuts)*int64(100*time.Millisecond) {
		return 0, 0, 0, fmt.Errorf("cannot make %d cuts in a %v run: it needs %v before the first and %v after the last (a longer --duration or --count)",
			o.Cuts, pubDur, time.Duration(lead), time.Duration(tail))
	}
	return from, to, to, nil
}

// hubWait is how long a muted subscriber waits for the hub to cut it: a
// ping interval, the pong timeout, and slack for the hub's scan.
func hubWait(o Options) int64 {
	return int64(o.PingInterval + o.PongTimeout + 5*time.Second)
}
