package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Liveness. Whether a topic's owner is alive is not written in the topic's
// record but in one heartbeat per node: every node puts its key into a
// second bucket (Bucket + "_nodes", MaxAge ClaimTTL) every ClaimTTL/3, and
// watches the bucket. A node whose heartbeat was not heard for ClaimTTL is
// dead, and its topics' records lapse with it. So the cost of liveness is a
// write per node per ClaimTTL/3 and not, as when each owner rewrote each of
// its records, a write per topic (10,000 topics: 5,000 writes a second,
// each sent to every node's watch).
//
// A topic's record is written when it changes (a claim, a grace period, a
// takeover, a publisher count with several per topic), when the owner comes
// back after NATS was away, when another node asks for it (resync, below),
// and every recordTTL/3 otherwise, so that the records of a node that died
// leave the bucket (MaxAge recordTTL) and a record's position is never
// older than that. A node that comes back to NATS with subscribers asks the
// others, on PREFIX.resync, to rewrite their records, so that it learns the
// last position of every topic it missed messages of (see catchup.go).
//
// With several publishers per topic, records are still rewritten every
// ClaimTTL/3 (relay.go): each node's count in them lapses on its own.

// recordTTL is the ownership bucket's MaxAge: how long the record of a
// topic outlives the node that owned it. The owner rewrites its records
// every recordTTL/3.
func recordTTL(claimTTL time.Duration) time.Duration { return max(100*claimTTL, 10*time.Minute) }

// liveness is the node's copy of the heartbeat bucket, fed by a watch. Its
// mu is a leaf: taken under the view's, never the other way.
type liveness struct {
	mu    sync.RWMutex
	until map[string]time.Time // node ID → when it is dead unless heard of again
}

func (lv *liveness) init() { lv.until = make(map[string]time.Time) }

// aliveUntil is when node id is dead unless its heartbeat is heard of
// again; this node is always alive a ttl from now.
func (n *Node) aliveUntil(id string) time.Time {
	if id == n.id {
		return time.Now().Add(n.cfg.ClaimTTL)
	}
	n.live.mu.RLock()
	defer n.live.mu.RUnlock()
	return n.live.until[id]
}

// aliveNodes is aliveUntil of every node heard of.
func (n *Node) aliveNodes() map[string]time.Time {
	n.live.mu.RLock()
	defer n.live.mu.RUnlock()
	m := make(map[string]time.Time, len(n.live.until)+1)
	for id, t := range n.live.until {
		m[id] = t
	}
	m[n.id] = time.Now().Add(n.cfg.ClaimTTL)
	return m
}

// alive reports whether node id's heartbeat was heard of within ClaimTTL.
func (n *Node) alive(id string) bool { return time.Now().Before(n.aliveUntil(id)) }

// heard takes one update of the heartbeat watch: a put means the node was
// alive when it wrote it (initial values are as old as their write, later
// ones are taken as written now), a deletion that it closed.
func (n *Node) heard(e jetstream.KeyValueEntry, initial bool) {
	id, err := b64.DecodeString(e.Key())
	if err != nil {
		return
	}
	n.live.mu.Lock()
	defer n.live.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(n.live.until, string(id))
		n.view.reset() // its topics end sooner than the last sweep thought
		return
	}
	at := time.Now()
	if initial && e.Created().Before(at) {
		at = e.Created()
	}
	n.live.until[string(id)] = at.Add(n.cfg.ClaimTTL)
}

// forgetDead drops the nodes dead for longer than a ClaimTTL, so the map
// holds only the live nodes and the recently dead.
func (n *Node) forgetDead() {
	cutoff := time.Now().Add(-n.cfg.ClaimTTL)
	n.live.mu.Lock()
	defer n.live.mu.Unlock()
	for id, t := range n.live.until {
		if t.Before(cutoff) {
			delete(n.live.until, id)
			n.view.reset() // its topics' ends fall back on when their records were seen
		}
	}
}

// setupLiveness creates (or adopts) the heartbeat bucket, writes this
// node's heartbeat and loads the others' before it returns, so that no
// claim is judged before the node knows who is alive; the watch goes on in
// the background until stopped.
func (n *Node) setupLiveness(ctx context.Context) (jetstream.KeyValue, jetstream.KeyWatcher, error) {
	kv, err := n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      n.cfg.Bucket + "_nodes",
		Description: "wspubsub node heartbeats: a node's topics are its own while its key is here",
		History:     1,
		TTL:         n.cfg.ClaimTTL,
		Storage:     jetstream.MemoryStorage,
		Replicas:    n.cfg.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot create the heartbeat bucket: %w", err)
	}
	if err := n.beat(ctx, kv); err != nil {
		return nil, nil, err
	}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		return nil, nil, fmt.Errorf("cannot watch the heartbeat bucket: %w", err)
	}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				go func() {
					for e := range w.Updates() {
						if e != nil {
							n.heard(e, false)
						}
					}
				}()
				return kv, w, nil
			}
			n.heard(e, true)
		case <-ctx.Done():
			w.Stop()
			return nil, nil, fmt.Errorf("cannot load the heartbeat bucket: %w", ctx.Err())
		}
	}
}

// beat writes this node's heartbeat.
func (n *Node) beat(ctx context.Context, kv jetstream.KeyValue) error {
	if _, err := kv.PutString(ctx, b64.EncodeToString([]byte(n.id)), n.id); err != nil {
		return fmt.Errorf("cannot write the node's heartbeat: %w", err)
	}
	return nil
}

// resyncSubject is where a node that came back asks the others to rewrite
// their records.
func resyncSubject(prefix string) string { return prefix + ".resync" }
