package cluster

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wspubsub/wspubsub/topics"
)

// maxRun bounds a run of frames reassembled from parts: far more than one
// read of a publisher can complete.
const maxRun = 256 << 20

// Delivery shards. A topic's subscription is a channel subscription: the
// NATS client's reader puts its messages on the channel of the topic's
// shard, and the shard's goroutine hands them to the hub, one at a time, in
// order. A node holds thousands of topics with a few goroutines, not one
// (and its stack) per topic. A shard's channel holds shardQueue messages;
// when it is full the NATS client drops the message for that
// subscription (counted as slow_consumer) and the topic's next message
// shows the jump, which the node fetches from the owner (catchup.go).
const shardQueue = 4096

// numShards is how many delivery goroutines a node runs.
func numShards() int { return max(4, 4*runtime.GOMAXPROCS(0)) }

// interests holds the node's NATS subscriptions: one per topic with local
// subscribers.
type interests struct {
	mu sync.Mutex
	m  map[topics.Key]*interest
	// bySub finds a message's interest from its subscription; written
	// under mu, read by the shards without it.
	bySub  sync.Map // *nats.Subscription → *interest
	shards []chan *nats.Msg
}

// shardOf is the channel of k's shard.
func (in *interests) shardOf(k topics.Key) chan *nats.Msg {
	h := fnv.New32a()
	h.Write([]byte(k.Domain))
	h.Write([]byte{0})
	h.Write([]byte(k.Topic))
	return in.shards[h.Sum32()%uint32(len(in.shards))]
}

// of is the interest whose subscription is sub, nil if it left.
func (in *interests) of(sub *nats.Subscription) *interest {
	if v, ok := in.bySub.Load(sub); ok {
		return v.(*interest)
	}
	// Join stores the subscription once ChanSubscribe returned, holding
	// mu: a message that came sooner finds it once mu is free.
	in.mu.Lock()
	in.mu.Unlock()
	if v, ok := in.bySub.Load(sub); ok {
		return v.(*interest)
	}
	return nil
}

// deliver is a shard's goroutine: it hands each message on ch to its
// topic's interest until the node closes.
func (n *Node) deliver(ch chan *nats.Msg) {
	for {
		select {
		case m := <-ch:
			if in := n.interests.of(m.Sub); in != nil {
				n.receive(in, m)
			}
		case <-n.quit:
			return
		}
	}
}

// interest is one topic's subscription.
type interest struct {
	key topics.Key
	sub *nats.Subscription

	// Guarded by interests.mu.
	refs      int
	confirmed bool // a flush after the subscription came back
	dropped   int  // NATS's drops already counted

	// mu is held while runs are delivered, by the topic's shard's
	// goroutine or a catch-up (catchup.go); it guards epoch and last, the
	// position of the newest message delivered from NATS or fetched.
	mu       sync.Mutex
	epoch    string
	last     uint64
	catching atomic.Bool // a catch-up from the owner's record is pending

	// The newest owner's record heard of, for the pending check
	// (caughtUp); recGen counts them. Guarded by recMu, a leaf.
	recMu           sync.Mutex
	recEpoch        string
	recLast, recGen uint64

	// Owned by the topic's shard's goroutine.
	sender, seq uint64
	partial     []byte // the parts of a run received so far
	inRun       bool
}

func (in *interests) init() {
	in.m = make(map[topics.Key]*interest)
	in.shards = make([]chan *nats.Msg, numShards())
	for i := range in.shards {
		in.shards[i] = make(chan *nats.Msg, shardQueue)
	}
}

func (in *interests) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.m)
}

var errNoInterest = errors.New("cluster: no interest in this topic")

// Join implements server.Cluster. The first local subscriber of a topic
// subscribes the node to the topic's subject; NATS's Subscribe only queues
// the request, so this does not wait.
func (n *Node) Join(k topics.Key) bool {
	n.interests.mu.Lock()
	defer n.interests.mu.Unlock()
	in := n.interests.m[k]
	if in == nil {
		in = &interest{key: k}
		sub, err := n.nc.ChanSubscribe(subjectOf(n.cfg.Prefix, k), n.interests.shardOf(k))
		if err != nil {
			n.log.Warn("cannot subscribe to a topic on NATS", "domain", k.Domain, "topic", k.Topic, "err", err)
		} else {
			n.interests.bySub.Store(sub, in)
		}
		in.sub = sub
		n.interests.m[k] = in
	}
	in.refs++
	return in.confirmed
}

// Confirm implements server.Cluster: a flush (PING, PONG) after the
// subscription tells that the NATS server has it.
func (n *Node) Confirm(ctx context.Context, k topics.Key) error {
	n.interests.mu.Lock()
	in := n.interests.m[k]
	n.interests.mu.Unlock()
	switch {
	case in == nil || in.sub == nil:
		return errNoInterest
	case !n.nc.IsConnected():
		return ErrNotConnected
	}
	n.interests.mu.Lock()
	ok := in.confirmed
	n.interests.mu.Unlock()
	if ok {
		return nil
	}
	if err := n.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("cannot confirm the subscription with NATS: %w", err)
	}
	n.interests.mu.Lock()
	in.confirmed = true
	n.interests.mu.Unlock()
	return nil
}

// Leave implements server.Cluster; the last local subscriber's leaving
// unsubscribes the node.
func (n *Node) Leave(k topics.Key) {
	n.interests.mu.Lock()
	in := n.interests.m[k]
	if in == nil {
		n.interests.mu.Unlock()
		return
	}
	in.refs--
	if in.refs > 0 {
		n.interests.mu.Unlock()
		return
	}
	delete(n.interests.m, k)
	n.interests.mu.Unlock()
	if in.sub != nil {
		n.interests.countDropped(in.sub, &n.stats)
		n.interests.bySub.Delete(in.sub) // what is still queued for it is dropped
		if err := in.sub.Unsubscribe(); err != nil {
			// NATS keeps sending the topic's messages, which this node
			// drops for want of subscribers. After Close the connection,
			// and the subscription with it, is gone anyway.
			level := slog.LevelWarn
			if errors.Is(err, nats.ErrConnectionClosed) {
				level = slog.LevelDebug
			}
			n.log.Log(context.Background(), level, "cannot unsubscribe from a topic on NATS", "domain", k.Domain, "topic", k.Topic, "err", n.redactErr(err))
		}
	}
}

// countDropped adds what NATS dropped for sub (its shard's queue was full:
// this node's delivery fell behind).
func (in *interests) countDropped(sub *nats.Subscription, st *stats) {
	d, err := sub.Dropped()
	if err != nil {
		return
	}
	v, ok := in.bySub.Load(sub)
	if !ok {
		return
	}
	i := v.(*interest)
	in.mu.Lock()
	defer in.mu.Unlock()
	if d > i.dropped {
		st.dropped[dropSlowConsumer].Add(int64(d - i.dropped))
		i.dropped = d
	}
}

// receive handles one message of a topic's subscription, on its shard's
// goroutine: messages come one at a time, in the order the publishing node
// sent them.
func (n *Node) receive(in *interest, m *nats.Msg) {
	st := &n.stats
	h, data, err := parseHeader(m.Data)
	if err != nil {
		st.dropped[dropMalformed].Add(1)
		return
	}
	st.receivedBytes.Add(int64(len(m.Data)))
	if h.sender == in.sender && h.seq != in.seq+1 {
		// Messages of this sender never came: NATS was away, or a bound
		// was reached on either side.
		if h.seq > in.seq {
			st.lostBatches.Add(int64(h.seq - in.seq - 1))
		}
		in.endRun()
	} else if h.sender != in.sender && in.inRun {
		st.lostBatches.Add(1) // the rest of the other sender's run
		in.endRun()
	}
	in.sender, in.seq = h.sender, h.seq
	switch {
	case h.cont && !in.inRun:
		return // the rest of a run whose start this node missed
	case !h.cont && in.inRun:
		st.lostBatches.Add(1)
		in.endRun()
	}
	if h.more || in.inRun {
		if len(in.partial)+len(data) > maxRun {
			st.dropped[dropMalformed].Add(1)
			in.endRun()
			return
		}
		in.partial = append(in.partial, data...)
		in.inRun = true
		if h.more {
			return
		}
		data = in.partial
		defer in.endRun()
	}
	lag := time.Now().UnixNano() - h.sent
	st.lag.Observe(float64(max(lag, 0)) / 1e9)
	st.receivedBatches.Add(1)
	st.receivedMessages.Add(int64(h.msgs))
	hub := n.theHub()
	if hub == nil {
		return
	}
	in.mu.Lock()
	if in.epoch == h.epoch && in.last > 0 && h.first > in.last+1 {
		n.catchUp(in, h.epoch, h.first) // offsets this node never got
	}
	hub.Deliver(in.key, h.epoch, h.first, data, h.msgs, h.payload)
	if last := h.first + uint64(h.msgs) - 1; h.msgs > 0 && (h.epoch != in.epoch || last > in.last) {
		in.epoch, in.last = h.epoch, last
	}
	in.mu.Unlock()
}

func (in *interest) endRun() {
	in.inRun = false
	in.partial = in.partial[:0]
	if cap(in.partial) > 4<<20 {
		in.partial = nil
	}
}
