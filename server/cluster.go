package server

import (
	"context"
	"errors"
	"time"

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
}

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
	}
	sc.starts = b.starts[:0]
	scratchPool.Put(sc)
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
	s := (*Server)(h)
	for _, c := range s.keyUsers.all() {
		c.mu.Lock()
		if c.wasPublisher && c.topic != nil && c.topic.Key() == k {
			s.log.Warn("publisher closed: its topic was taken over on another node", "domain", k.Domain, "topic", k.Topic)
			c.closeLocked(ws.CloseGoingAway, "topic taken over by a publisher on another hub node")
		}
		c.mu.Unlock()
	}
}

// subscribeCluster is subscribe on a cluster node: the subscriber's
// interest in the topic is recorded across the cluster before its 101, so
// that it gets every message published after the 101 on any node. When
// that takes a network round trip, or the node's view of the cluster does
// not know the topic yet, the handshake waits off the loop. c.mu is held.
func (c *client) subscribeCluster(k topics.Key, sr subRequest, rest []byte) {
	s := c.srv
	known := s.cfg.SubscribeWaits || s.topics.Has(k) || s.cluster.Started(k)
	if known {
		c.interest, c.joined = k, true
		if s.cluster.Join(k) {
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
	c.buf = append(c.buf[:0:0], rest...)
	go c.awaitCluster(k, sr, known)
}

// awaitCluster completes a subscriber's handshake off the loop (one
// goroutine per handshake, for as long as a round trip to NATS): it asks
// the cluster whether a topic this node's view does not know is started
// (404 if not), then waits until the cluster carries the topic's messages
// here. When NATS cannot be reached, only a topic with a local publisher
// can be served; the others get 503.
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
		c.interest, c.joined = k, true
		confirmed := s.cluster.Join(k)
		c.mu.Unlock()
		if !confirmed {
			err = s.cluster.Confirm(ctx, k)
		}
	} else {
		err = s.cluster.Confirm(ctx, k)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateKeyCheck {
		return
	}
	if err != nil && !s.topics.HasPublisher(k) {
		s.log.Warn("cannot subscribe across the cluster", "domain", k.Domain, "topic", k.Topic, "err", err)
		c.refuse(refClusterUnavailable, "cluster unavailable, try again")
		return
	}
	c.setState(stateHandshake)
	early := c.buf
	c.buf = nil
	c.subscribe(k, sr, early)
}

// continueAt makes t's log go on from epoch:last, where the topic's
// previous owner (another hub node) stopped, before a publisher that took
// the topic over here publishes. Its live subscribers that see positions
// are told of a new epoch, or of offsets they will not get, as when a
// message from another node says so.
func (s *Server) continueAt(t *topics.Topic[*client], epoch string, last uint64) {
	t.Publishing.Lock()
	defer t.Publishing.Unlock()
	t.Log.Lock()
	reset, gapFirst, gapLast := t.Log.Continue(epoch, last)
	subs := t.Subscribers()
	t.Log.Unlock()
	if reset || gapFirst > 0 {
		s.notify(subs, epoch, reset, gapFirst, gapLast)
	}
}

// notify sends a reset or gap notice to those of subs that see positions.
// The caller holds the topic's Publishing mutex, so that the notice comes
// in its place among the messages.
func (s *Server) notify(subs []*client, epoch string, reset bool, gapFirst, gapLast uint64) {
	var v variants
	for kind := kindMeta; kind < numKinds; kind++ {
		v[kind] = appendNotice(nil, kind, epoch, reset, gapFirst, gapLast)
	}
	for _, c := range subs {
		if f := v[c.kind]; len(f) > 0 {
			if err := c.conn.Send(f); errors.Is(err, loop.ErrBacklogFull) {
				s.stats.SlowConsumers.Add(1)
				c.cutSlow()
			}
		}
	}
}

// closeTopic closes the subscribers of topic k, which ended, with 4001.
func (s *Server) closeTopic(k topics.Key, subs []*client) {
	s.stats.TopicsExpired.Add(1)
	s.log.Debug("topic closed", "domain", k.Domain, "topic", k.Topic, "subscribers", len(subs))
	for _, c := range subs {
		c.closeWith(ws.CloseTopicClosed, "topic closed: its publisher left")
	}
}
