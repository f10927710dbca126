package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/wspubsub/wspubsub/topics"
)

// endSlack is how long after a grace period's end a node waits for the
// owner's deletion (or a takeover it has not heard of yet) before it ends
// the topic by itself.
const endSlack = time.Second

// view is the node's copy of the ownership bucket, fed by a watch. It
// answers Started without a network round trip, and ends topics whose
// owner's grace ran out. While NATS is away it stops ageing: it answers from
// what it last knew, and ends nothing.
type view struct {
	mu       sync.RWMutex
	m        map[topics.Key]*viewEntry
	gen      uint64 // the current watch
	isSynced atomic.Bool
	// nextSweep is when the first entry can end, as of the last sweep:
	// heartbeats only move ends later, so until then, or a change
	// (reset), a sweep has nothing to do. Unix nanoseconds.
	nextSweep atomic.Int64
}

// reset has the next sweep look at every entry.
func (v *view) reset() { v.nextSweep.Store(0) }

type viewEntry struct {
	node       string
	pubs       int
	graceUntil time.Time // once pubs is 0
	seen       time.Time // when this node last heard of the record
	gen        uint64    // the watch that last reported it
}

func (v *view) init() { v.m = make(map[topics.Key]*viewEntry) }

func (v *view) synced() bool { return v.isSynced.Load() }

func (v *view) unsync() { v.isSynced.Store(false) }

// endsAt is when the topic ends if nothing more is heard of it: a live
// record whose owner died (its heartbeat, or its refreshes of the record
// with several publishers per topic, stopped) is treated as that owner's
// publisher leaving when the record lapsed.
func (e *viewEntry) endsAt(n *Node) time.Time {
	return e.end(n.cfg.ClaimTTL, n.graceFor(), n.aliveUntil)
}

// end is endsAt with ownerUntil telling until when a node is alive.
func (e *viewEntry) end(ttl, grace time.Duration, ownerUntil func(node string) time.Time) time.Time {
	if e.pubs > 0 {
		return later(e.seen.Add(ttl), ownerUntil(e.node)).Add(grace)
	}
	return e.graceUntil.Add(endSlack)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// started implements Node.Started.
func (v *view) started(n *Node, k topics.Key) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e := v.m[k]
	return e != nil && (!v.synced() || time.Now().Before(e.endsAt(n)))
}

// heldElsewhere reports whether another node has k, live or in grace.
func (v *view) heldElsewhere(n *Node, k topics.Key) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e := v.m[k]
	return e != nil && e.node != n.id && (!v.synced() || time.Now().Before(e.endsAt(n)))
}

// beginSync starts a new watch's generation.
func (v *view) beginSync() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	v.isSynced.Store(false)
	return v.gen
}

// endSync ends a watch's initial values: records the view had and the
// watch no longer reported vanished while NATS was away. Whether deleted or
// lapsed, they are treated as in grace from now, so that a publisher who
// reconnects can still take its topic over.
func (v *view) endSync(n *Node, gen uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if gen != v.gen {
		return
	}
	now := time.Now()
	for _, e := range v.m {
		if e.gen != gen {
			e.pubs, e.graceUntil, e.seen, e.gen = 0, now.Add(n.graceFor()), now, gen
		}
	}
	v.reset()
	v.isSynced.Store(true)
}

// apply takes one update from the watch.
func (v *view) apply(n *Node, e jetstream.KeyValueEntry, gen uint64) {
	k, err := topicOfKVKey(e.Key())
	if err != nil {
		return
	}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		r, err := decodeRecord(e.Value())
		if err != nil {
			return
		}
		v.mu.Lock()
		if gen != v.gen {
			v.mu.Unlock()
			return
		}
		// Publishers on other nodes (several per topic) keep it live too.
		pubs := r.Pubs + r.liveRemote(time.Now().UnixMilli())
		v.m[k] = &viewEntry{node: r.Node, pubs: pubs, graceUntil: time.UnixMilli(r.GraceUntil), seen: time.Now(), gen: gen}
		v.reset()
		v.mu.Unlock()
		switch {
		case n.multi():
			n.checkMulti(k, r)
		case r.Node != n.id:
			n.verify(k) // if this node thinks it owns k, it checks
		}
		n.caughtUp(k, r)
	default: // deleted or purged: the owner's grace ran out
		v.mu.Lock()
		if gen != v.gen {
			v.mu.Unlock()
			return
		}
		_, had := v.m[k]
		delete(v.m, k)
		v.mu.Unlock()
		if had {
			n.topicEnded(k)
		}
	}
}

// sweep ends the topics whose records were not refreshed or deleted in
// time: their owner died, or its deletion was lost.
func (v *view) sweep(n *Node) {
	if !v.synced() {
		return
	}
	now := time.Now()
	if now.UnixNano() < v.nextSweep.Load() {
		return
	}
	ttl, grace := n.cfg.ClaimTTL, n.graceFor()
	alive := n.aliveNodes() // looked up once, not per topic
	ownerUntil := func(node string) time.Time { return alive[node] }
	var ended []topics.Key
	next := now.Add(ttl) // and at least once a ClaimTTL
	v.mu.Lock()
	for k, e := range v.m {
		end := e.end(ttl, grace, ownerUntil)
		if !now.Before(end) {
			delete(v.m, k)
			ended = append(ended, k)
		} else if end.Before(next) {
			next = end
		}
	}
	v.nextSweep.Store(next.UnixNano())
	v.mu.Unlock()
	for _, k := range ended {
		n.topicEnded(k)
	}
}

func (v *view) len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.m)
}

// Started implements server.Cluster.
func (n *Node) Started(k topics.Key) bool { return n.view.started(n, k) }

// Lookup implements server.Cluster: it reads k's record and, if it is
// started, waits (up to a second) for the watch to bring it into the view.
func (n *Node) Lookup(ctx context.Context, k topics.Key) (bool, error) {
	if n.Started(k) {
		return true, nil
	}
	if !n.nc.IsConnected() {
		return false, ErrNotConnected
	}
	kv := n.bucket()
	if kv == nil {
		return false, ErrNotReady
	}
	e, err := kv.Get(ctx, kvKeyOf(k))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("cannot read the topic's ownership record: %w", err)
	}
	r, err := decodeRecord(e.Value())
	if err != nil || (r.Pubs == 0 && time.Now().UnixMilli() >= r.GraceUntil) {
		return false, nil
	}
	deadline := time.Now().Add(time.Second)
	for !n.Started(k) {
		if time.Now().After(deadline) || !sleep(ctx, 2*time.Millisecond) {
			return false, nil
		}
	}
	return true, nil
}
