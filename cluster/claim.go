package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

// record is a topic's ownership record in the bucket.
type record struct {
	// Node is the owning node's ID.
	Node string `json:"node"`
	// Pubs is how many publishers it has there; 0 while in grace.
	Pubs int `json:"pubs"`
	// GraceUntil is when the grace period ends, Unix milliseconds, once
	// Pubs is 0.
	GraceUntil int64 `json:"grace_until,omitempty"`
	// Epoch and Last are the topic's position as the owner last published
	// (the owner assigns positions): a publisher that takes the topic
	// over on another node within the grace period goes on from them.
	// Written when the grace period starts, they are final then, since
	// nothing is published without a publisher.
	Epoch string `json:"epoch,omitempty"`
	Last  uint64 `json:"last,omitempty"`
	// Remote counts the topic's publishers on other nodes, by node, with
	// --publishers-per-topic above 1 (see relay.go): each node writes its
	// own entry, and an entry not refreshed by Until lapses.
	Remote map[string]remoteClaim `json:"remote,omitempty"`
	// OwnerUntil is when the owner's claim lapses unless it writes the
	// record again, Unix milliseconds, with several publishers per topic:
	// the other nodes' writes of their Remote entries keep the record,
	// not the owner, alive. An owner that closes writes it as now.
	OwnerUntil int64 `json:"owner_until,omitempty"`
	// Beats says the owner's claim lives as long as its heartbeat (see
	// liveness.go), not OwnerUntil: the record is not rewritten to stay
	// alive. Set with one publisher per topic.
	Beats bool `json:"beats,omitempty"`
}

// remoteClaim is one non-owner node's publishers of a topic.
type remoteClaim struct {
	Pubs  int   `json:"pubs"`
	Until int64 `json:"until"` // Unix milliseconds
}

// liveRemote is how many publishers other nodes have, counting only the
// entries that have not lapsed at now (Unix milliseconds).
func (r record) liveRemote(now int64) int {
	sum := 0
	for _, e := range r.Remote {
		if e.Until > now && e.Pubs > 0 {
			sum += e.Pubs
		}
	}
	return sum
}

// encode is l's record: n.mu is held.
func (n *Node) encode(l *lease) []byte {
	now := time.Now()
	r := record{Node: n.id, Pubs: l.pubs, Remote: l.remote}
	if n.multi() {
		r.OwnerUntil = now.Add(n.cfg.ClaimTTL).UnixMilli()
	} else {
		r.Beats = true
	}
	closing := n.closing.Load()
	if l.pubs == 0 && (len(l.remote) == 0 || closing) {
		r.GraceUntil = l.graceUntil.UnixMilli()
	}
	if closing {
		// Final: nothing more is published here. Other nodes'
		// publishers take the topic over at once, going on from its
		// position, as in a grace period.
		r.OwnerUntil = now.UnixMilli()
	}
	r.Epoch, r.Last = l.position()
	b, _ := json.Marshal(r)
	return b
}

func decodeRecord(b []byte) (record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Node == "" || r.Pubs < 0 {
		return record{}, fmt.Errorf("cluster: bad ownership record %.60q", b)
	}
	return r, nil
}

// owned reports whether the record, written at created, holds a live
// publisher (on its owner or, with several publishers per topic, on
// another node) that a claim must not take over.
func (n *Node) owned(r record, created time.Time) bool {
	now := time.Now().UnixMilli()
	return (r.Pubs > 0 || r.liveRemote(now) > 0) && n.ownerAlive(r, created)
}

// ownerAlive reports whether the record's owner is alive: its heartbeat is
// (Beats), or it wrote the record recently enough.
func (n *Node) ownerAlive(r record, created time.Time) bool {
	if r.Beats {
		return n.alive(r.Node)
	}
	return time.Since(created) < n.cfg.ClaimTTL && (r.OwnerUntil == 0 || time.Now().UnixMilli() < r.OwnerUntil)
}

type leaseState uint8

const (
	leaseClaiming leaseState = iota // the first claim's round trips are in progress
	leaseOwned                      // this node owns the topic (live, or in grace)
	leaseGone                       // released, expired or lost
	leaseRemote                     // another node owns the topic; this node's publishers relay to it
)

// lease is this node's ownership of one topic.
type lease struct {
	n       *Node
	key     topics.Key
	kvKey   string
	subject string
	io      sync.Mutex // held while the record is written, by a claim or the worker

	// Guarded by n.mu.
	state      leaseState
	pubs       int
	graceUntil time.Time
	rev        uint64    // the record's revision as this node last wrote it
	written    time.Time // when this node last wrote it
	dirty      bool
	claimed    chan struct{} // closed when the first claim ends
	// remote is the owner's copy of the record's Remote entries, as last
	// read (several publishers per topic only).
	remote map[string]remoteClaim

	// owner is the owning node of a leaseRemote, set before the lease is
	// remote, read-only then; rl is its relay state (relay.go).
	owner string
	rl    relayState

	lost atomic.Bool

	// prev is the node that owned the topic before this one took it over
	// in its grace period, "" if none: it may still keep older messages.
	// Set before the lease is owned, read-only then.
	prev string

	// The topic's position as this node last published it, or as it took
	// the topic over: what its record says. Guarded by posMu.
	posMu sync.Mutex
	epoch string
	last  uint64

	// The publishing side, guarded by pub: publishers of the topic on
	// several event loops take turns, so a run's parts stay together and the
	// sequence is the publishing order.
	pub    sync.Mutex
	sender uint64
	seq    uint64
	buf    []byte
}

// claim is one publisher's share of a lease.
type claim struct {
	l        *lease
	oneShot  bool // an HTTP publish's, not written to the record (several publishers per topic)
	released atomic.Bool
	// Where the topic's positions go on from, for the claim that took it
	// over (or started it); "" for a topic this node owned already.
	epoch string
	last  uint64
}

var _ server.ClusterTopic = (*claim)(nil)

// Publish implements server.ClusterTopic.
func (c *claim) Publish(epoch string, first uint64, frames []byte, msgs, payload int) bool {
	return c.l.publish(epoch, first, frames, msgs, payload)
}

// Continues implements server.ClusterTopic.
func (c *claim) Continues() (epoch string, last uint64) { return c.epoch, c.last }

// Release implements server.ClusterTopic.
func (c *claim) Release() {
	if c.released.CompareAndSwap(false, true) {
		c.l.n.release(c.l, c.oneShot)
	}
}

func (n *Node) newLease(k topics.Key) *lease {
	var b [8]byte
	rand.Read(b[:])
	return &lease{
		n: n, key: k, kvKey: kvKeyOf(k), subject: subjectOf(n.cfg.Prefix, k),
		state: leaseClaiming, claimed: make(chan struct{}),
		sender: binary.BigEndian.Uint64(b[:]),
	}
}

// Claim implements server.Cluster. A topic this node already owns takes
// another publisher (the hub's table enforces the limit) or, in its grace
// period, is taken back with one compare-and-set; any other topic is read
// from the bucket and created or taken over (when in grace, or lapsed) with
// a compare-and-set. A live record of another node is waited on for up to
// ClaimWait before the claim is refused.
func (n *Node) Claim(ctx context.Context, k topics.Key) (server.ClusterTopic, error) {
	deadline := time.Now().Add(n.cfg.ClaimWait)
	oneShot := server.IsOneShot(ctx)
	for attempt := 0; ; attempt++ {
		if attempt == 16 {
			n.stats.claims[claimError].Add(1)
			return nil, errContention
		}
		n.mu.Lock()
		l := n.leases[k]
		switch {
		case l == nil:
			l = n.newLease(k)
			n.leases[k] = l
			n.mu.Unlock()
			rev, owner, err := n.acquire(ctx, l, oneShot)
			n.mu.Lock()
			if err != nil {
				l.state = leaseGone
				if n.leases[k] == l {
					delete(n.leases, k)
				}
				close(l.claimed)
				n.mu.Unlock()
				if errors.Is(err, topics.ErrHasPublisher) {
					if time.Now().Before(deadline) && sleep(ctx, 50*time.Millisecond) {
						attempt--
						continue
					}
					n.stats.claims[claimConflict].Add(1)
				} else {
					n.stats.claims[claimError].Add(1)
				}
				return nil, err
			}
			if owner != "" {
				// Another node owns it: this node's publishers relay to it.
				l.state, l.pubs, l.owner = leaseRemote, 1, owner
				l.rl.init(n, l)
				close(l.claimed)
				n.mu.Unlock()
				n.stats.claims[claimWon].Add(1)
				return &claim{l: l}, nil
			}
			l.state, l.pubs, l.rev, l.written = leaseOwned, 1, rev, time.Now()
			close(l.claimed)
			n.mu.Unlock()
			n.stats.claims[claimWon].Add(1)
			epoch, last := l.position()
			return &claim{l: l, epoch: epoch, last: last}, nil
		case l.state == leaseClaiming:
			ch := l.claimed
			n.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				n.stats.claims[claimError].Add(1)
				return nil, ctx.Err()
			}
		case n.multi() && oneShot && l.state == leaseRemote:
			// An HTTP publish goes to the owner (Forward), not through a relay.
			n.mu.Unlock()
			n.stats.claims[claimConflict].Add(1)
			return nil, fmt.Errorf("cluster: topic owned by node %s: %w", l.owner, topics.ErrHasPublisher)
		case n.multi() && oneShot && l.state == leaseOwned && l.graceUntil.IsZero():
			// Not counted against the limit, nor written: released at once.
			l.pubs++
			n.mu.Unlock()
			n.stats.claims[claimWon].Add(1)
			return &claim{l: l, oneShot: true}, nil
		case n.multi() && (l.state == leaseRemote || l.state == leaseOwned):
			// Several publishers per topic: every one is counted in the
			// record, whichever node it is on.
			n.mu.Unlock()
			ok, err := n.addPublisher(ctx, l)
			if errors.Is(err, topics.ErrHasPublisher) && time.Now().Before(deadline) && sleep(ctx, 50*time.Millisecond) {
				attempt--
				continue
			}
			if err != nil {
				if errors.Is(err, topics.ErrHasPublisher) {
					n.stats.claims[claimConflict].Add(1)
				} else {
					n.stats.claims[claimError].Add(1)
				}
				return nil, err
			}
			if ok {
				n.stats.claims[claimWon].Add(1)
				return &claim{l: l}, nil
			}
			// Lost meanwhile: claim afresh.
		case l.pubs > 0:
			l.pubs++
			n.mu.Unlock()
			n.stats.claims[claimWon].Add(1)
			return &claim{l: l}, nil
		default: // ours, in grace
			n.mu.Unlock()
			ok, err := n.reclaim(ctx, l)
			if err != nil {
				n.stats.claims[claimError].Add(1)
				return nil, err
			}
			if ok {
				n.stats.claims[claimWon].Add(1)
				return &claim{l: l}, nil
			}
			// Lost meanwhile: claim afresh.
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// acquire claims a topic this node has no lease on, returning the record's
// revision. It sets the lease's position: a topic taken over in its grace
// period goes on from its record's; any other starts a new epoch, since it
// starts from nothing or its owner died without saying where it stopped
// (going on from an older record could assign a position twice).
//
// With several publishers per topic, a topic another node owns live is
// joined instead, if its publishers across the cluster are fewer than the
// limit: this node's entry in the record's Remote counts one, and owner
// names the node to relay to.
func (n *Node) acquire(ctx context.Context, l *lease, oneShot bool) (rev uint64, owner string, err error) {
	if !n.nc.IsConnected() {
		return 0, "", ErrNotConnected
	}
	kv := n.bucket()
	if kv == nil {
		return 0, "", ErrNotReady
	}
	fresh := history.NewEpoch()
	for range 4 {
		l.prev = ""
		l.setPosition(fresh, 0)
		e, err := kv.Get(ctx, l.kvKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			rev, err := kv.Create(ctx, l.kvKey, n.encodeClaim(l))
			if err == nil {
				return rev, "", nil
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // claimed at the same moment: look again
			}
			return 0, "", fmt.Errorf("cannot create the topic's ownership record: %w", err)
		case err != nil:
			return 0, "", fmt.Errorf("cannot read the topic's ownership record: %w", err)
		}
		r, err := decodeRecord(e.Value())
		if err == nil && r.Node != n.id && n.owned(r, e.Created()) && !n.ownerGone(r.Node) {
			if !n.multi() || oneShot {
				return 0, "", fmt.Errorf("cluster: topic owned by node %s: %w", r.Node, topics.ErrHasPublisher)
			}
			rev, err := n.joinRemote(ctx, kv, l, e.Revision(), r)
			if isConflict(err) {
				continue
			}
			if err != nil {
				return 0, "", err
			}
			return rev, r.Node, nil
		}
		// In grace, lapsed, unreadable or ours: take it over.
		// (A record without publishers on its owner but with some on other
		// nodes is not final: its owner may have published past it.)
		if err == nil && (r.Pubs == 0 && (r.GraceUntil > 0 || len(r.Remote) == 0) || r.Node == n.id) && history.ValidEpoch(r.Epoch) {
			l.setPosition(r.Epoch, r.Last)
			if r.Node != n.id {
				l.prev = r.Node
			}
		}
		rev, err := kv.Update(ctx, l.kvKey, n.encodeClaim(l), e.Revision())
		if err == nil {
			return rev, "", nil
		}
		if !isConflict(err) {
			return 0, "", fmt.Errorf("cannot take the topic's ownership record over: %w", err)
		}
	}
	return 0, "", errContention
}

// reclaim takes back a topic this node owns in its grace period; false
// means the lease was lost meanwhile.
func (n *Node) reclaim(ctx context.Context, l *lease) (bool, error) {
	l.io.Lock()
	defer l.io.Unlock()
	n.mu.Lock()
	if l.state != leaseOwned {
		n.mu.Unlock()
		return false, nil
	}
	if l.pubs > 0 {
		l.pubs++
		n.mu.Unlock()
		return true, nil
	}
	rev := l.rev
	n.mu.Unlock()
	kv := n.bucket()
	if kv == nil || !n.nc.IsConnected() {
		return false, ErrNotConnected
	}
	newRev, err := kv.Update(ctx, l.kvKey, n.encodeClaim(l), rev)
	if isConflict(err) {
		n.drop(l) // another node wrote the record: claim afresh
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot take the topic's ownership record back: %w", err)
	}
	n.mu.Lock()
	l.rev, l.written, l.pubs, l.graceUntil = newRev, time.Now(), 1, time.Time{}
	n.mu.Unlock()
	return true, nil
}

// release records that one publisher of l left; the last one's leaving
// starts the grace period, which the worker writes.
func (n *Node) release(l *lease, oneShot bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.state != leaseOwned && l.state != leaseRemote || l.pubs == 0 {
		return
	}
	l.pubs--
	if n.multi() {
		// The worker writes the count; an owner with publishers left on
		// other nodes starts no grace period (see syncMulti). A one-shot
		// claim was never written: only a grace period to start is.
		if !oneShot || l.pubs == 0 && liveRemote(l.remote) == 0 {
			n.markDirty(l)
		}
		return
	}
	if l.pubs == 0 {
		l.graceUntil = time.Now().Add(n.graceFor())
		n.markDirty(l)
	}
}

// Keep implements server.Cluster: the topic's grace period ran out here. If
// this node still owns it, its record is deleted with a compare-and-set, so
// that either a takeover on another node or the deletion wins; a takeover
// means the topic lives on there and the local subscribers stay.
func (n *Node) Keep(k topics.Key) bool {
	n.mu.Lock()
	l := n.leases[k]
	n.mu.Unlock()
	if l == nil {
		return n.view.heldElsewhere(n, k)
	}
	l.io.Lock()
	defer l.io.Unlock()
	n.mu.Lock()
	switch {
	case l.state != leaseOwned:
		n.mu.Unlock()
		return n.view.heldElsewhere(n, k)
	case l.pubs > 0 || len(l.remote) > 0 && liveRemote(l.remote) > 0:
		n.mu.Unlock()
		return true // a publisher came back here meanwhile, or other nodes have some
	}
	rev := l.rev
	n.mu.Unlock()
	n.drop(l)
	kv := n.bucket()
	if kv == nil || !n.nc.IsConnected() {
		return n.view.heldElsewhere(n, k) // the record lapses by itself
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := kv.Delete(ctx, l.kvKey, jetstream.LastRevision(rev))
	switch {
	case err == nil:
		return false
	case isConflict(err):
		e, err := kv.Get(ctx, l.kvKey)
		if err != nil {
			return false
		}
		r, err := decodeRecord(e.Value())
		return err == nil && r.Node != n.id && (r.Pubs > 0 || time.Now().UnixMilli() < r.GraceUntil)
	default:
		n.stats.kvErrors.Add(1)
		n.log.Warn("cannot delete an expired topic's ownership record", "domain", k.Domain, "topic", k.Topic, "err", err)
		return n.view.heldElsewhere(n, k)
	}
}

// drop forgets a lease that has no publishers.
func (n *Node) drop(l *lease) {
	n.relays.Delete(l.sender)
	n.mu.Lock()
	l.state = leaseGone
	if n.leases[l.key] == l {
		delete(n.leases, l.key)
	}
	n.mu.Unlock()
}

// lose forgets a lease that another node took over, and has the hub close
// the publishers it still had.
func (n *Node) lose(l *lease) {
	n.relays.Delete(l.sender)
	if l.owner != "" && l.rl.failed.CompareAndSwap(false, true) {
		// Runs relayed to an owner that is gone may never be published:
		// counted lost (some may have been, their answers not here yet).
		n.stats.dropped[dropRelay].Add(int64(l.rl.seq.Load() - l.rl.acked.Load()))
	}
	n.mu.Lock()
	l.state = leaseGone
	if n.leases[l.key] == l {
		delete(n.leases, l.key)
	}
	pubs := l.pubs
	n.mu.Unlock()
	l.lost.Store(true)
	if pubs == 0 {
		return // in grace: a publisher took it over elsewhere, as it may
	}
	n.stats.claimsLost.Add(1)
	n.log.Warn("lost a topic to another node while NATS was away; closing its publishers here", "domain", l.key.Domain, "topic", l.key.Topic)
	if h := n.theHub(); h != nil {
		h.ClaimLost(l.key)
	}
}

// markDirty queues l's record to be written. n.mu is held.
func (n *Node) markDirty(l *lease) {
	if !l.dirty {
		l.dirty = true
		n.dirty = append(n.dirty, l)
	}
	n.wake(n.kick)
}

// markAllDirty queues every lease's record to be written.
func (n *Node) markAllDirty() { n.markWrittenBefore(time.Time{}) }

// markWrittenBefore queues the records of the leases last written before t
// (the zero time: all of them).
func (n *Node) markWrittenBefore(t time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, l := range n.leases {
		if (l.state == leaseOwned || l.state == leaseRemote) && (t.IsZero() || l.written.Before(t)) {
			n.markDirty(l)
		}
	}
}

// syncDirty writes the records of the leases marked dirty; while NATS is
// away they wait for the reconnection, which marks every lease again.
func (n *Node) syncDirty() {
	n.mu.Lock()
	list := n.dirty
	n.dirty = nil
	for _, l := range list {
		l.dirty = false
	}
	n.mu.Unlock()
	for _, l := range list {
		if !n.nc.IsConnected() || n.bucket() == nil {
			return
		}
		n.sync(l)
	}
}

// flushLeases writes what is dirty, for at most d.
func (n *Node) flushLeases(d time.Duration) {
	done := make(chan struct{})
	go func() { n.syncDirty(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

var errLost = errors.New("cluster: topic owned by another node now")

// sync writes l's record: a refresh, a grace period starting, or a record
// that lapsed while NATS was away.
func (n *Node) sync(l *lease) {
	if n.multi() {
		n.syncMulti(l)
		return
	}
	l.io.Lock()
	defer l.io.Unlock()
	n.mu.Lock()
	if l.state != leaseOwned {
		n.mu.Unlock()
		return
	}
	rec, rev := n.encode(l), l.rev
	n.mu.Unlock()
	kv := n.bucket()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	newRev, err := kv.Update(ctx, l.kvKey, rec, rev)
	if isConflict(err) {
		newRev, err = n.rewrite(ctx, kv, l, rec)
	}
	switch {
	case err == nil:
		n.mu.Lock()
		if l.state == leaseOwned {
			l.rev, l.written = newRev, time.Now()
		}
		n.mu.Unlock()
	case errors.Is(err, errLost):
		n.lose(l)
	default:
		n.stats.kvErrors.Add(1)
		n.log.Debug("cannot write a topic's ownership record; retrying", "domain", l.key.Domain, "topic", l.key.Topic, "err", err)
	}
}

// rewrite writes a record whose revision moved: it lapsed (write it anew),
// this node's last write landed though its answer did not (adopt it), or
// another node took it (lost).
func (n *Node) rewrite(ctx context.Context, kv jetstream.KeyValue, l *lease, rec []byte) (uint64, error) {
	e, err := kv.Get(ctx, l.kvKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := kv.Create(ctx, l.kvKey, rec)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, errLost
		}
		return rev, err
	case err != nil:
		return 0, err
	}
	if r, err := decodeRecord(e.Value()); err == nil && r.Node == n.id {
		rev, err := kv.Update(ctx, l.kvKey, rec, e.Revision())
		if isConflict(err) {
			return 0, errLost
		}
		return rev, err
	}
	return 0, errLost
}

// verify has the worker check l's record soon: the view saw another node
// write it.
func (n *Node) verify(k topics.Key) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.leases[k]; l != nil && (l.state == leaseOwned || l.state == leaseRemote) {
		n.markDirty(l)
	}
}

// isConflict reports whether a compare-and-set failed on the revision.
func isConflict(err error) bool {
	return err != nil && (errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists))
}

// publish sends one run of frames to the other nodes, in parts no larger
// than the NATS server takes.
func (l *lease) publish(epoch string, first uint64, frames []byte, msgs, payload int) bool {
	n := l.n
	if msgs > 0 {
		l.setPosition(epoch, first+uint64(msgs)-1)
	}
	if l.lost.Load() {
		n.stats.dropped[dropPublishError].Add(1)
		return false
	}
	limit := int(n.nc.MaxPayload()) - maxHeaderSize
	if limit <= 0 {
		limit = 1<<20 - maxHeaderSize
	}
	l.pub.Lock()
	defer l.pub.Unlock()
	h := header{sender: l.sender, sent: time.Now().UnixNano(), msgs: msgs, payload: payload, first: first, epoch: epoch}
	rest := frames
	for {
		part := rest
		h.more = len(part) > limit
		if h.more {
			part = part[:limit]
		}
		l.seq++
		h.seq = l.seq
		l.buf = appendHeader(l.buf[:0], h)
		l.buf = append(l.buf, part...)
		if !n.out.push(l.subject, "", l.buf, nil, !h.more, msgs) {
			n.stats.dropped[dropPublishError].Add(1)
			n.publishFailed(errOutboxFull)
			return false
		}
		n.stats.sentBytes.Add(int64(len(l.buf)))
		rest = rest[len(part):]
		if !h.more {
			break
		}
		h.cont = true
	}
	if cap(l.buf) > 4<<20 {
		l.buf = nil
	}
	n.stats.sentBatches.Add(1)
	n.stats.sentMessages.Add(int64(msgs))
	return true
}

// encodeClaim is the record of a claim: one publisher, l's position.
func (n *Node) encodeClaim(l *lease) []byte {
	epoch, last := l.position()
	r := record{Node: n.id, Pubs: 1, Epoch: epoch, Last: last}
	if n.multi() {
		r.OwnerUntil = time.Now().Add(n.cfg.ClaimTTL).UnixMilli()
	} else {
		r.Beats = true
	}
	b, _ := json.Marshal(r)
	return b
}

func (l *lease) position() (epoch string, last uint64) {
	l.posMu.Lock()
	defer l.posMu.Unlock()
	return l.epoch, l.last
}

func (l *lease) setPosition(epoch string, last uint64) {
	l.posMu.Lock()
	l.epoch, l.last = epoch, last
	l.posMu.Unlock()
}

// publishFailed logs a failed publish, at most once a second.
// errOutboxFull: the node's outbox (see outbox) holds its bound already.
var errOutboxFull = errors.New("the queue for NATS is full (" + strconv.Itoa(outboxBytes>>20) + " MiB): NATS takes less than this node publishes")

func (n *Node) publishFailed(err error) {
	now := time.Now().UnixNano()
	last := n.stats.lastPublishLog.Load()
	if now-last > int64(time.Second) && n.stats.lastPublishLog.CompareAndSwap(last, now) {
		n.log.Warn("cannot publish to other nodes; messages for them are dropped", "err", err)
	}
}
