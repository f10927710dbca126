package cluster

import (
	"context"
	"time"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/topics"
)

// Catching up. A node that misses offsets of a topic's stream (NATS was
// away, or a bound dropped some) sees it in the positions: the next run it
// gets starts past the offset after its last, or the owner's record names
// a later offset than the node has: the owner rewrites its records with
// their last positions when it comes back to NATS, when a node that came
// back asks for them (resync, liveness.go), and every recordTTL/3. It then
// fetches the missed offsets from the owner's history (the history request
// of fetch.go), on the topic's delivery shard's goroutine, never on an
// event loop, and delivers them in order before anything newer; what comes
// meanwhile, for this topic and the others of its shard, waits in the
// shard's queue, bounded at shardQueue messages (past it NATS drops,
// counted as slow_consumer, and the next run's jump is fetched in turn). Only offsets the owner no longer has (or that do not arrive
// within catchUpWait, or past maxCatchUpBytes) reach the subscribers as one
// gap notice, from the hub's log, covering exactly what is missing.

const (
	// catchUpWait bounds one catch-up's fetches.
	catchUpWait = 3 * time.Second
	// maxCatchUpBytes bounds the frames one catch-up brings in.
	maxCatchUpBytes = 64 << 20
	// maxCatchUpPages bounds the requests one catch-up makes.
	maxCatchUpPages = 256
	// recordSettle is how long a node waits, when the owner's record names
	// a later position than it has, for the messages in flight to come
	// before it fetches what is still missing.
	recordSettle = 300 * time.Millisecond
)

// catchUp fetches the offsets after in.last and before before, of epoch,
// from the topic's owner and delivers them in order. in.mu is held.
func (n *Node) catchUp(in *interest, epoch string, before uint64) {
	h := n.theHub()
	if h == nil {
		return
	}
	after := in.last
	ctx, cancel := context.WithTimeout(context.Background(), catchUpWait)
	defer cancel()
	var pages [][]history.Entry // newest first
	size := 0
	for range maxCatchUpPages {
		p, err := n.History(ctx, in.key, epoch, after, before)
		if err != nil {
			n.stats.catchUps[fetchError].Add(1)
			n.log.Warn("cannot fetch offsets a topic's stream skipped from its owner; its subscribers here get a gap notice",
				"domain", in.key.Domain, "topic", in.key.Topic, "after", after, "before", before, "err", err)
			break
		}
		n.stats.catchUps[fetchOK].Add(1)
		es := p.Entries
		if p.Epoch != epoch || len(es) == 0 || es[len(es)-1].Offset >= before || es[0].Offset <= after {
			break // the owner has nothing more of these
		}
		pages = append(pages, es)
		for i := range es {
			size += len(es[i].Frame)
		}
		if es[0].Offset == after+1 || size > maxCatchUpBytes {
			break
		}
		before = es[0].Offset
	}
	for i := len(pages) - 1; i >= 0; i-- {
		for _, e := range pages[i] {
			if e.Offset <= in.last {
				continue
			}
			h.Deliver(in.key, epoch, e.Offset, e.Frame, 1, len(e.Frame)-history.HeaderLen(e.Frame))
			in.last = e.Offset
			n.stats.catchUpEntries.Add(1)
		}
	}
}

// caughtUp hears of the owner's record of k: if it names a later position
// of the epoch this node's stream of k is at, the offsets in between are
// fetched (after recordSettle, for those still in flight). One check runs
// at a time per topic, and it goes by the newest record heard of, however
// many came while it waited: a record is written once now, not every few
// seconds, so one dropped here would not come again.
func (n *Node) caughtUp(k topics.Key, r record) {
	if r.Node == n.id || r.Epoch == "" || r.Last == 0 {
		return
	}
	n.interests.mu.Lock()
	in := n.interests.m[k]
	n.interests.mu.Unlock()
	if in == nil {
		return
	}
	in.recMu.Lock()
	in.recEpoch, in.recLast = r.Epoch, r.Last
	in.recGen++
	in.recMu.Unlock()
	if !in.catching.CompareAndSwap(false, true) {
		return // the pending check will read it
	}
	go func() {
		for {
			time.Sleep(recordSettle)
			in.recMu.Lock()
			epoch, last, gen := in.recEpoch, in.recLast, in.recGen
			in.recMu.Unlock()
			in.mu.Lock()
			if in.epoch == epoch && in.last > 0 && in.last < last {
				n.catchUp(in, epoch, last+1)
			}
			in.mu.Unlock()
			in.catching.Store(false)
			in.recMu.Lock()
			newer := in.recGen != gen
			in.recMu.Unlock()
			if !newer || !in.catching.CompareAndSwap(false, true) {
				return // nothing came meanwhile, or another check took it
			}
		}
	}()
}
