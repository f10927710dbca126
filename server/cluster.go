package server

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// Cluster joins the hub to other hub nodes, so that a message published on
// any node reaches the subscribers of every node; package cluster implements
// it over NATS. Without one (Config.Cluster nil) the hub does no cluster work
// at all. Every method may be called from any goroutine; those documented
// as never blocking are called on the event loops, the others off them.
type Cluster interface {
	// Bind hands the cluster the hub it delivers to and the hub's grace
	// period (0: none). Start calls it once, before the hub serves.
	Bind(h ClusterHub, grace time.Duration)
	// Claim makes this node a publisher of topic k across the cluster. It
	// fails with an error wrapping topics.ErrHasPublisher when a publisher
	// on another node has the topic, and with any other error when it
	// cannot tell. It may block for a network round trip.
	Claim(ctx context.Context, k topics.Key) (ClusterTopic, error)
	// Started reports whether k has a publisher, or is in its grace period,
	// anywhere in the cluster, as the node's local view knows it. It never
	// blocks and must not call into the hub: it runs under the topic
	// table's lock.
	Started(k topics.Key) bool
	// Lookup reports whether k is started anywhere when Started does not
	// know it yet (the view lags the cluster by a moment): it reads the
	// topic's ownership and waits until Started agrees. It may block.
	Lookup(ctx context.Context, k topics.Key) (bool, error)
	// Keep is asked when k's grace period runs out on this node: it reports
	// whether the topic lives on elsewhere (a publisher took it over on
	// another node), in which case the local subscribers stay. It may block
	// briefly.
	Keep(k topics.Key) bool
	// Join records a local subscriber's interest in k, so that messages
	// published on other nodes come here. It never blocks; it reports
	// whether every message published from now on will arrive. If not,
	// Confirm waits until then.
	Join(k topics.Key) (confirmed bool)
	// Confirm waits until the interest in k that Join recorded is in force
	// across the cluster. It may block for a network round trip.
	Confirm(ctx context.Context, k topics.Key) error
	// Leave undoes one Join. It never blocks.
	Leave(k topics.Key)
	// Ready reports whether the node can reach the rest of the cluster.
	Ready() error
	// History asks the node that keeps k's history for a page of it: the
	// newest messages of epoch it keeps with offsets after after and
	// before before (0: no bound), or, if its epoch is not epoch, the
	// newest messages of its own; as many as one answer holds. That node
	// is k's owner or, on the owner itself, the node it took k over
	// from. With no such node it returns an empty page. It may block for
	// a network round trip.
	History(ctx context.Context, k topics.Key, epoch string, after, before uint64) (HistoryPage, error)
	// Forward hands an HTTP publish of k (its message as one frame of
	// payload bytes) to the node that owns k, which publishes it and
	// answers with its position. It reports forwarded false, and does
	// nothing, when this node owns k or no node does: the caller then
	// claims k and publishes here. Errors wrap topics.ErrTooManyTopics
	// (429 there), topics.ErrHasPublisher (the ownership moved: ask
	// again) or ErrTooLargeToForward. It may block for network round trips.
	Forward(ctx context.Context, k topics.Key, frame []byte, payload int) (epoch string, offset uint64, forwarded bool, err error)
}

// ErrTooLargeToForward means an HTTP publish is larger than the cluster
// carries to the topic's owner in one message.
var ErrTooLargeToForward = errors.New("server: message too large to forward to the topic's owner")

// HistoryPage is a run of a topic's kept messages as one hub node sends
// them to another.
type HistoryPage struct {
	// Epoch is the topic's epoch on the answering node; "" if it has
	// none (the topic is not live there, or nothing was published yet).
	Epoch string
	// Last is the newest offset it knows.
	Last uint64
	// Oldest is the oldest offset it could send; 0 if none.
	Oldest uint64
	// Entries are consecutive messages of Epoch, oldest first.
	Entries []history.Entry
}

// ClusterTopic is this node's claim on a topic that it has publishers of.
type ClusterTopic interface {
	// Publish sends the frames of one read of a publisher (msgs messages,
	// payload bytes, at positions epoch:first onwards) to the other nodes,
	// as they are. It is called on the publisher's event loop: it does not
	// wait for the network beyond handing the bytes to a bounded buffer. It
	// reports whether the frames went out; false means they are lost for
	// other nodes (counted; their subscribers get a gap notice).
	Publish(epoch string, first uint64, frames []byte, msgs, payload int) bool
	// Continues says where the topic's positions go on from when this
	// claim took the topic over from another node, or started it: the
	// topic's log goes on from epoch:last before the publisher's first
	// message, so that positions never repeat across the cluster. ""
	// means the topic was this node's already and its log goes on as it
	// is. It never blocks.
	Continues() (epoch string, last uint64)
	// Release gives up the claim of one publisher that left; the last one's
	// leaving starts the grace period across the cluster. It never blocks.
	Release()
	// Relay hands a publisher's read (msgs messages, payload bytes) to the
	// topic's owner when that is another node (several publishers per
	// topic): the owner gives them their positions and publishes them,
	// this node included, so the hub does neither here. false means this
	// node owns the topic and publishes as usual. It is called on the
	// publisher's event loop and never waits for the network; a run that
	// cannot go is counted, and the hub is told to close its publishers
	// (ClusterHub.OwnerUnreachable).
	Relay(frames []byte, msgs, payload int) (relayed bool)
}

type oneShotKey struct{}

// OneShot marks ctx as that of a Claim made for one HTTP publish, released
// at once: it is not counted against the publishers per topic, and on a
// node that does not own the topic it fails with topics.ErrHasPublisher
// (the publish is forwarded to the owner instead).
func OneShot(ctx context.Context) context.Context { return context.WithValue(ctx, oneShotKey{}, true) }

// IsOneShot reports whether ctx is marked by OneShot.
func IsOneShot(ctx context.Context) bool { return ctx.Value(oneShotKey{}) != nil }

// ClusterHub is what a Cluster calls in the hub.
type ClusterHub interface {
	// Deliver writes frames published on another node (msgs messages,
	// payload bytes, at positions epoch:first onwards, as the topic's
	// owner assigned them) to every local subscriber of k and keeps them
	// in k's history. Calls for one topic come one at a time, in the order
	// published; frames may be reused once it returns.
	Deliver(k topics.Key, epoch string, first uint64, frames []byte, msgs, payload int)
	// TopicEnded says that k's publisher left on another node and the
	// grace period ran out there: the local subscribers are closed with
	// 4001, as when a local topic expires.
	TopicEnded(k topics.Key)
	// ClaimLost says that this node lost its claim on k to another node
	// (it could not reach NATS long enough for its claim to lapse): its
	// local publishers of k are closed with 1001.
	ClaimLost(k topics.Key)
	// History answers another node's Cluster.History from k's log here:
	// a page of at most limit bytes, counting each entry's frame and
	// 2*binary.MaxVarintLen64. An entry larger than limit on its own
	// cannot be sent, nor any older one: Oldest says so. The entries'
	// frames are the log's, which never change. It does not block
	// beyond the log's mutex.
	History(k topics.Key, epoch string, after, before uint64, limit int) HistoryPage
	// PublishForwarded publishes an HTTP publish that another node took
	// and forwarded here, this node owning k as that node knows it: frame
	// is the message as one unmasked WebSocket frame of payload bytes. It
	// is published as an HTTP publish taken here is, and returns its
	// position. It may block for network round trips until ctx ends.
	PublishForwarded(ctx context.Context, k topics.Key, frame []byte, payload int) (epoch string, offset uint64, err error)
	// PublishRelayed publishes a run of frames (msgs messages, payload
	// bytes) that a publisher of k on another node relayed here, this
	// node owning k, through claim: as a publisher here would, in the
	// order runs come. It blocks only on the topic's locks.
	PublishRelayed(k topics.Key, frames []byte, msgs, payload int, claim ClusterTopic) error
	// OwnerUnreachable says that this node's publishers of k could not
	// relay to k's owner on another node: they are closed with 1001, to
	// reconnect and claim again.
	OwnerUnreachable(k topics.Key)
}

// clusterHub is the Server as the cluster sees it.
type clusterHub Server

var _ ClusterHub = (*clusterHub)(nil)

// Deliver implements ClusterHub.
func (h *clusterHub) Deliver(k topics.Key, epoch string, first uint64, frames []byte, msgs, payload int) {
	s := (*Server)(h)
	t := s.topics.Lookup(k)
	if t == nil {
		s.stats.dropped.add(dropNoSubscribers, int64(msgs))
		return
	}
	sc := scratchPool.Get().(*scratch)
	b := batch{frames: frames, starts: sc.starts[:0], payload: payload, epoch: epoch, first: first}
	if err := b.split(); err != nil || len(b.starts) != msgs {
		s.log.Warn("dropped a malformed run of frames from another node", "domain", k.Domain, "topic", k.Topic)
		s.stats.dropped.add(dropMalformed, int64(msgs))
	} else {
		s.publish(sc, t, &b, nil)
		sc.fan.slow.cut()
	}
	sc.starts = b.starts[:0]
	scratchPool.Put(sc)
}

// History implements ClusterHub.
func (h *clusterHub) History(k topics.Key, epoch string, after, before uint64, limit int) HistoryPage {
	s := (*Server)(h)
	t := s.topics.Lookup(k)
	if t == nil {
		return HistoryPage{}
	}
	t.Log.Lock()
	p := HistoryPage{Epoch: t.Log.Epoch(), Last: t.Log.Last()}
	all := t.Log.Rewind(t.Log.Len(), time.Now().UnixNano()).Entries
	t.Log.Unlock()
	if epoch != p.Epoch {
		after, before = 0, 0
	}
	for i := len(all) - 1; i >= 0; i-- {
		if pageCost(&all[i]) > limit {
			all = all[i+1:] // it and older ones can never be sent
			break
		}
	}
	if len(all) > 0 {
		p.Oldest = all[0].Offset
	}
	hi := len(all)
	for hi > 0 && before != 0 && all[hi-1].Offset >= before {
		hi--
	}
	lo, size := hi, 0
	for lo > 0 && all[lo-1].Offset > after {
		if size += pageCost(&all[lo-1]); size > limit {
			break
		}
		lo--
	}
	p.Entries = all[lo:hi]
	return p
}

// pageCost is what an entry counts against a page's limit.
func pageCost(e *history.Entry) int { return len(e.Frame) + 2*binary.MaxVarintLen64 }

// errBadForward means another node forwarded what is not one message.
var errBadForward = errors.New("server: a forwarded publish is not one text or binary message")

// PublishForwarded implements ClusterHub.
func (h *clusterHub) PublishForwarded(ctx context.Context, k topics.Key, frame []byte, payload int) (string, uint64, error) {
	s := (*Server)(h)
	b := batch{frames: frame}
	if err := b.split(); err != nil || len(b.starts) != 1 || len(frame)-history.HeaderLen(frame) != payload ||
		frame[0] != 0x80|byte(ws.OpText) && frame[0] != 0x80|byte(ws.OpBinary) {
		return "", 0, errBadForward
	}
	return s.publishHere(ctx, k, frame, payload)
}

// publishHere publishes an HTTP publish on this node, which owns k or
// becomes its owner: it claims k as a WebSocket publisher would (on the
// owner, without a round trip while the topic has a publisher here),
// publishes through the claim, ordered with the topic's other publishes,
// and releases the claim at once, so that the grace period runs from this
// message across the cluster.
func (s *Server) publishHere(ctx context.Context, k topics.Key, frame []byte, payload int) (epoch string, offset uint64, err error) {
	claim, err := s.cluster.Claim(OneShot(ctx), k)
	if err != nil {
		return "", 0, err
	}
	defer claim.Release()
	t, err := s.topics.Touch(k)
	if err != nil {
		return "", 0, err
	}
	var slow slowSubs
	s.claimed(t, claim, &slow)
	slow.cut()
	epoch, offset = s.publishFrame(t, frame, payload, claim)
	return epoch, offset, nil
}

// PublishRelayed implements ClusterHub.
func (h *clusterHub) PublishRelayed(k topics.Key, frames []byte, msgs, payload int, claim ClusterTopic) error {
	s := (*Server)(h)
	t, err := s.topics.Touch(k)
	if err != nil {
		return err
	}
	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	b := batch{frames: frames, starts: sc.starts[:0], payload: payload}
	err = b.split()
	if err == nil && len(b.starts) != msgs {
		err = errBadForward
	}
	if err == nil {
		s.publish(sc, t, &b, claim)
		sc.fan.slow.cut()
	} else {
		s.stats.dropped.add(dropMalformed, int64(msgs))
	}
	sc.starts = b.starts[:0]
	return err
}

// OwnerUnreachable implements ClusterHub.
func (h *clusterHub) OwnerUnreachable(k topics.Key) {
	(*Server)(h).closePublishers(k, "cannot reach the hub node that owns the topic: reconnect")
}

// TopicEnded implements ClusterHub.
func (h *clusterHub) TopicEnded(k topics.Key) {
	s := (*Server)(h)
	if subs, ok := s.topics.End(k); ok {
		s.closeTopic(k, subs)
	}
}

// ClaimLost implements ClusterHub.
func (h *clusterHub) ClaimLost(k topics.Key) {
	(*Server)(h).closePublishers(k, "topic taken over by a publisher on another hub node")
}

// closePublishers closes this node's publishers of k with 1001.
func (s *Server) closePublishers(k topics.Key, reason string) {
	for _, c := range s.keyUsers.all() {
		c.mu.Lock()
		if c.pub != nil && c.topic != nil && c.topic.Key() == k {
			s.log.Warn("publisher closed", "domain", k.Domain, "topic", k.Topic, "reason", reason)
			c.closeLocked(ws.CloseGoingAway, reason)
		}
		c.mu.Unlock()
	}
}

// subscribeCluster is subscribe on a cluster node: the subscriber's
// interest in the topic is recorded across the cluster before its 101, so
// that it gets every message published after the 101 on any node. When
// that takes a network round trip, the node's view of the cluster does
// not know the topic yet, or the subscriber resumes from older messages
// than this node has, the handshake waits off the loop. c.mu is held.
func (c *client) subscribeCluster(k topics.Key, sr subRequest, rest []byte) {
	s := c.srv
	known := s.cfg.SubscribeWaits || s.topics.Has(k) || s.cluster.Started(k)
	if known {
		c.sub.interest, c.sub.joined = k, true
		if s.cluster.Join(k) && !s.mayLack(k, sr.from) {
			c.subscribe(k, sr, rest)
			return
		}
	}
	if !known {
		// A lookup reads the bucket: bounded like key checks, since any
		// name can be asked for.
		select {
		case s.checks <- struct{}{}:
		default:
			c.refuse(refKeyChecksBusy, "too many handshakes waiting on the cluster")
			return
		}
	}
	c.setState(stateKeyCheck)
	c.hs.buf = append(c.hs.buf[:0:0], rest...)
	go c.awaitCluster(k, sr, known)
}

// awaitCluster completes a subscriber's handshake off the loop (one
// goroutine per handshake, for as long as a round trip to NATS): it asks
// the cluster whether a topic this node's view does not know is started
// (404 if not), waits until the cluster carries the topic's messages
// here, then, for a subscriber resuming from older messages than this
// node's log has, fetches them from the node that keeps them (see fill).
// When NATS cannot be reached, only a topic with a local publisher can be
// served; the others get 503. When the history cannot be fetched, the
// subscriber gets what this node has, with a gap notice for the rest; if
// this node knows nothing of the topic's positions, a resuming subscriber
// gets 503.
func (c *client) awaitCluster(k topics.Key, sr subRequest, known bool) {
	s := c.srv
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	defer cancel()
	var err error
	if !known {
		var started bool
		started, err = s.cluster.Lookup(ctx, k)
		<-s.checks
		c.mu.Lock()
		switch {
		case c.state != stateKeyCheck:
			c.mu.Unlock()
			return // the client left while we asked
		case err != nil:
			s.log.Warn("cannot look a topic up across the cluster", "domain", k.Domain, "topic", k.Topic, "err", err)
			c.refuse(refClusterUnavailable, "cluster unavailable, try again")
			c.mu.Unlock()
			return
		case !started:
			c.refuse(refTopicNotStarted, "topic not started: no publisher")
			c.mu.Unlock()
			return
		}
		c.sub.interest, c.sub.joined = k, true
		confirmed := s.cluster.Join(k)
		c.mu.Unlock()
		if !confirmed {
			err = s.cluster.Confirm(ctx, k)
		}
	} else {
		err = s.cluster.Confirm(ctx, k)
	}
	// A subscriber resuming here may need older messages than this node
	// has: now that its interest is in force, and the topic held so that
	// what arrives goes on into its log, they are asked for.
	var held *topics.Topic[*client]
	var fillErr error
	if err == nil && s.resumes(sr.from) {
		if t, herr := s.topics.Hold(k); herr == nil {
			held = t
			fctx, fcancel := context.WithTimeout(ctx, min(s.cfg.HandshakeTimeout/2, maxFillWait))
			fillErr = s.fill(fctx, t, sr.from)
			fcancel()
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if held != nil {
		defer s.topics.Unhold(held) // once the subscriber joined, or gave up
	}
	if c.state != stateKeyCheck {
		return
	}
	if err != nil && !s.topics.HasPublisher(k) {
		s.log.Warn("cannot subscribe across the cluster", "domain", k.Domain, "topic", k.Topic, "err", err)
		c.refuse(refClusterUnavailable, "cluster unavailable, try again")
		return
	}
	if fillErr != nil && sr.from.mode == resumeSince && epochOf(held) == "" {
		// This node knows nothing of the topic's positions: it cannot
		// even tell the subscriber what it missed.
		c.refuse(refClusterUnavailable, "cannot reach the hub node that keeps the topic's history, try again")
		return
	}
	c.setState(stateHandshake)
	early := c.hs.buf
	c.hs.buf = nil
	c.subscribe(k, sr, early)
}

// claimed sets topic t up for a claim on it before anything is published
// through the claim: a claim that took the topic over from another node,
// or started it, says where the positions go on from, and the history the
// previous owner keeps is brought in. Subscribers too slow for the notice
// of that are added to slow, for the caller to cut once it holds no lock.
func (s *Server) claimed(t *topics.Topic[*client], claim ClusterTopic, slow *slowSubs) {
	epoch, last := claim.Continues()
	if epoch == "" {
		return
	}
	s.continueAt(t, epoch, last, slow)
	if last > 0 && s.cfg.HistorySize > 0 {
		go s.fillTakenOver(t)
	}
}

// continueAt makes t's log go on from epoch:last, where the topic's
// previous owner (another hub node) stopped, before a publisher that took
// the topic over here publishes. Its live subscribers that see positions
// are told of a new epoch, or of offsets they will not get, as when a
// message from another node says so; those too slow for it are added to
// slow.
func (s *Server) continueAt(t *topics.Topic[*client], epoch string, last uint64, slow *slowSubs) {
	t.Publishing.Lock()
	defer t.Publishing.Unlock()
	t.Log.Lock()
	reset, gapFirst, gapLast := t.Log.Continue(epoch, last)
	subs := t.Subscribers()
	t.Log.Unlock()
	if reset || gapFirst > 0 {
		s.notify(subs, epoch, reset, gapFirst, gapLast, slow)
	}
}

// notify sends a reset or gap notice to those of subs that see positions.
// The caller holds the topic's Publishing mutex, so that the notice comes
// in its place among the messages: a subscriber too slow for it is marked
// and added to slow, as in a fan-out.
func (s *Server) notify(subs []*client, epoch string, reset bool, gapFirst, gapLast uint64, slow *slowSubs) {
	var v variants
	for kind := kindMeta; kind < numKinds; kind++ {
		v[kind] = appendNotice(nil, kind, epoch, reset, gapFirst, gapLast)
	}
	for _, c := range subs {
		if f := v[c.sub.kind]; len(f) > 0 && !c.slow.Load() {
			if err := c.conn.Send(f); errors.Is(err, loop.ErrBacklogFull) && c.markSlow() {
				slow.add(c)
			}
		}
	}
}

// maxFillWait bounds how long a handshake waits for a topic's history from
// another node.
const maxFillWait = 2 * time.Second

// maxFillPages bounds the answers one fill asks for.
const maxFillPages = 64

// resumes reports whether a subscriber asking r is sent older messages.
func (s *Server) resumes(r resume) bool {
	return r.mode != resumeLive && s.cfg.HistorySize > 0
}

// mayLack reports whether a subscriber asking r may need older messages
// than this node's log of k has, which must be fetched off the loop.
func (s *Server) mayLack(k topics.Key, r resume) bool {
	if !s.resumes(r) {
		return false
	}
	t := s.topics.Lookup(k)
	if t == nil {
		return true
	}
	t.Log.Lock()
	_, lacks := lacking(t.Log, r)
	t.Log.Unlock()
	return lacks
}

// lacking reports whether a subscriber asking r would need offsets that
// log never had (other nodes may keep them), and from which offset it
// wants messages. log's mutex is held.
func lacking(log *history.Log, r resume) (want uint64, lacks bool) {
	if r.mode == resumeLive || !log.Keeps() {
		return 0, false
	}
	if log.Epoch() == "" {
		return 1, true // it knows nothing: the topic may have a history elsewhere
	}
	last := log.Last()
	want = 1
	switch {
	case r.mode == resumeRewind && r.n == 0:
		return 0, false
	case r.mode == resumeRewind && last > uint64(r.n):
		want = last - uint64(r.n) + 1
	case r.mode == resumeSince && r.epoch == log.Epoch():
		want = r.offset + 1
	}
	if want > last {
		return 0, false
	}
	return want, want < log.From()
}

// fills are the fills in progress, one per topic.
type fills struct {
	mu sync.Mutex
	m  map[*topics.Topic[*client]]*fillCall
}

type fillCall struct {
	done chan struct{}
	err  error
}

// fill brings into t's log, from the node that keeps the topic's history,
// the older messages this node never had, when a subscriber asking r needs
// some of them: as many as the log's limits hold, page by page, newest
// first, each page reaching the oldest entry the log
// has, so that what the log keeps stays a run of consecutive offsets. The
// caller has the subscriber's interest in force and t held: every message
// published after a page was read on the other node arrives here too, so
// the pages and the live stream overlap (Backfill leaves out what
// overlaps) and leave no hole. One fill per topic runs at a time: a
// subscriber that comes meanwhile waits for it, then fills what it still
// lacks, unless that one failed (it then fails too, rather than wait as
// long again).
func (s *Server) fill(ctx context.Context, t *topics.Topic[*client], r resume) error {
	for {
		s.fills.mu.Lock()
		f := s.fills.m[t]
		if f == nil {
			f = &fillCall{done: make(chan struct{})}
			s.fills.m[t] = f
			s.fills.mu.Unlock()
			f.err = s.fillPages(ctx, t, r)
			s.fills.mu.Lock()
			delete(s.fills.m, t)
			s.fills.mu.Unlock()
			close(f.done)
			return f.err
		}
		s.fills.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.err != nil {
			return f.err
		}
	}
}

func (s *Server) fillPages(ctx context.Context, t *topics.Topic[*client], r resume) error {
	k, log := t.Key(), t.Log
	for range maxFillPages {
		log.Lock()
		_, lacks := lacking(log, r)
		epoch, before := log.Epoch(), log.Oldest()
		switch {
		case epoch == "":
			before = 0
		case before == 0:
			before = log.Last() + 1
		}
		log.Unlock()
		if !lacks {
			return nil
		}
		// All the other node keeps, not just what this subscriber
		// needs: the next ones, resuming from anywhere, need not ask.
		p, err := s.cluster.History(ctx, k, epoch, 0, before)
		if err != nil {
			s.log.Warn("cannot fetch a topic's history from the hub node that keeps it; resuming subscribers get what this node has",
				"domain", k.Domain, "topic", k.Topic, "err", err)
			return err
		}
		es := p.Entries
		for i := len(es) - 1; i >= 0; i-- {
			if b := (batch{frames: es[i].Frame}); b.split() != nil || len(b.starts) != 1 {
				es = es[i+1:] // keep the newest run of well-formed frames
				break
			}
		}
		log.Lock()
		if log.Epoch() == "" && p.Epoch != "" {
			// No subscriber here saw a position yet: no notice.
			log.Continue(p.Epoch, p.Last)
		}
		n := log.Backfill(p.Epoch, es, p.Oldest, time.Now().UnixNano())
		log.Unlock()
		if n == 0 {
			return nil
		}
	}
	return nil
}

// fillTakenOver brings in the history that the node a topic was taken
// over from keeps, so that it outlives that node's copy, which ends with
// that node's grace period.
func (s *Server) fillTakenOver(t *topics.Topic[*client]) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*maxFillWait)
	defer cancel()
	s.fill(ctx, t, resume{mode: resumeRewind, n: maxRewind})
}

// epochOf is the epoch of t's log.
func epochOf(t *topics.Topic[*client]) string {
	t.Log.Lock()
	defer t.Log.Unlock()
	return t.Log.Epoch()
}

// closeTopic closes the subscribers of topic k, which ended, with 4001.
func (s *Server) closeTopic(k topics.Key, subs []*client) {
	s.stats.TopicsExpired.Add(1)
	s.log.Debug("topic closed", "domain", k.Domain, "topic", k.Topic, "subscribers", len(subs))
	for _, c := range subs {
		c.closeWith(ws.CloseTopicClosed, "topic closed: its publisher left")
	}
}
