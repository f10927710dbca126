package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

// A node that takes an HTTP publish of a topic another node owns forwards
// it to that node with a NATS request on that node's subject, PREFIX.p.NODE
// (the node's ID, base64url-encoded):
//
//	version  1 byte (1)
//	domain   uvarint length, bytes
//	topic    uvarint length, bytes
//	payload  uvarint: the message's payload bytes
//	frame    the rest: the message as one unmasked WebSocket frame
//
// The owner publishes it as it publishes its own HTTP publishes (ordered
// with the topic's WebSocket publisher, if any) and answers:
//
//	version  1 byte (1)
//	status   1 byte: see the forward* constants
//	epoch    1 byte of length, bytes
//	offset   uvarint

const (
	forwardVersion = 1

	forwardPublished   = 0 // published at epoch:offset
	forwardTooMany     = 1 // the domain has too many topics there
	forwardHasOwner    = 2 // another node has the topic's publisher: ask again
	forwardUnavailable = 3 // anything else; also when the owner is too busy

	// maxForwards bounds the forwarded publishes a node handles at once.
	maxForwards = 256
	// forwardWait bounds how long the owner takes over one.
	forwardWait = 5 * time.Second
)

// forwardSubject is the subject node id takes forwarded publishes on.
func forwardSubject(prefix, id string) string {
	return prefix + ".p." + b64.EncodeToString([]byte(id))
}

type forwardRequest struct {
	key     topics.Key
	payload int
	frame   []byte
}

func appendForwardRequest(b []byte, q forwardRequest) []byte {
	b = appendTopicKey(append(b, forwardVersion), q.key)
	b = binary.AppendUvarint(b, uint64(q.payload))
	return append(b, q.frame...)
}

func parseForwardRequest(b []byte) (forwardRequest, error) {
	var q forwardRequest
	if len(b) == 0 || b[0] != forwardVersion {
		return q, errMalformed
	}
	r := reader{b: b[1:]}
	q.key = r.topicKey()
	payload := r.uvarint()
	if r.bad || q.key.Domain == "" || q.key.Topic == "" || payload > uint64(len(r.b)) || len(r.b) < 2 {
		return forwardRequest{}, errMalformed
	}
	q.payload, q.frame = int(payload), r.b
	return q, nil
}

func appendForwardReply(b []byte, status byte, epoch string, offset uint64) []byte {
	b = append(b, forwardVersion, status, byte(len(epoch)))
	b = append(b, epoch...)
	return binary.AppendUvarint(b, offset)
}

func parseForwardReply(b []byte) (status byte, epoch string, offset uint64, err error) {
	if len(b) < 2 || b[0] != forwardVersion || b[1] > forwardUnavailable {
		return 0, "", 0, errMalformed
	}
	status = b[1]
	r := reader{b: b[2:]}
	epoch = r.epoch()
	offset = r.uvarint()
	if r.bad || len(r.b) != 0 || status == forwardPublished && (epoch == "" || offset == 0) {
		return 0, "", 0, errMalformed
	}
	return status, epoch, offset, nil
}

// Forward implements server.Cluster.
func (n *Node) Forward(ctx context.Context, k topics.Key, frame []byte, payload int) (epoch string, offset uint64, forwarded bool, err error) {
	owner, here := n.ownerOf(k)
	if owner == "" && !here {
		// The view may not know a topic that started a moment ago.
		if started, err := n.Lookup(ctx, k); err != nil {
			return "", 0, false, err
		} else if started {
			owner, _ = n.ownerOf(k)
		}
	}
	if owner == "" {
		return "", 0, false, nil // this node owns it, or nobody does: publish here
	}
	if !n.nc.IsConnected() {
		return "", 0, true, ErrNotConnected
	}
	req := appendForwardRequest(make([]byte, 0, 2*binary.MaxVarintLen64+len(k.Domain)+len(k.Topic)+8+len(frame)),
		forwardRequest{key: k, payload: payload, frame: frame})
	if int64(len(req)) > n.nc.MaxPayload() {
		n.stats.forwards[fetchError].Add(1)
		return "", 0, true, fmt.Errorf("cluster: %d bytes to forward to node %s, NATS takes %d: %w", len(req), owner, n.nc.MaxPayload(), server.ErrTooLargeToForward)
	}
	m, err := n.nc.RequestWithContext(ctx, forwardSubject(n.cfg.Prefix, owner), req)
	if err != nil {
		n.stats.forwards[fetchError].Add(1)
		if errors.Is(err, nats.ErrNoResponders) {
			// The owner is gone: its record lapses, and the caller may
			// ask again later.
			return "", 0, true, fmt.Errorf("cannot reach node %s, the topic's owner: %w", owner, err)
		}
		return "", 0, true, fmt.Errorf("cannot forward an HTTP publish to node %s, the topic's owner: %w", owner, err)
	}
	status, epoch, offset, err := parseForwardReply(m.Data)
	if err != nil {
		n.stats.forwards[fetchError].Add(1)
		return "", 0, true, fmt.Errorf("node %s: %w", owner, err)
	}
	switch status {
	case forwardPublished:
		n.stats.forwards[fetchOK].Add(1)
		return epoch, offset, true, nil
	case forwardTooMany:
		n.stats.forwards[fetchError].Add(1)
		return "", 0, true, fmt.Errorf("node %s: %w", owner, topics.ErrTooManyTopics)
	case forwardHasOwner:
		n.stats.forwards[fetchError].Add(1)
		return "", 0, true, fmt.Errorf("node %s no longer owns the topic: %w", owner, topics.ErrHasPublisher)
	}
	n.stats.forwards[fetchError].Add(1)
	return "", 0, true, fmt.Errorf("node %s could not publish a forwarded HTTP publish", owner)
}

// ownerOf is the node that owns k as this node knows it: here (this node
// holds its lease), another node, or none.
func (n *Node) ownerOf(k topics.Key) (other string, here bool) {
	n.mu.Lock()
	l := n.leases[k]
	owned := l != nil && l.state != leaseGone && l.state != leaseRemote
	n.mu.Unlock()
	if owned {
		return "", true
	}
	v := &n.view
	v.mu.RLock()
	defer v.mu.RUnlock()
	e := v.m[k]
	if e == nil || e.node == n.id || v.synced() && !time.Now().Before(e.endsAt(n)) {
		return "", false
	}
	return e.node, false
}

// answerForward takes a forwarded HTTP publish, on the goroutine of the
// node's forward subscription: it publishes on a goroutine of its own (it
// may write the topic's record), at most maxForwards at once.
func (n *Node) answerForward(m *nats.Msg) {
	q, err := parseForwardRequest(m.Data)
	if err != nil || m.Reply == "" {
		n.stats.dropped[dropMalformed].Add(1)
		return
	}
	select {
	case n.forwarding <- struct{}{}:
	default:
		m.Respond(appendForwardReply(nil, forwardUnavailable, "", 0))
		return
	}
	go func() {
		defer func() { <-n.forwarding }()
		status, epoch, offset := byte(forwardUnavailable), "", uint64(0)
		if h := n.theHub(); h != nil {
			ctx, cancel := context.WithTimeout(context.Background(), forwardWait)
			e, o, err := h.PublishForwarded(ctx, q.key, q.frame, q.payload)
			cancel()
			switch {
			case err == nil:
				status, epoch, offset = forwardPublished, e, o
			case errors.Is(err, topics.ErrTooManyTopics):
				status = forwardTooMany
			case errors.Is(err, topics.ErrHasPublisher):
				status = forwardHasOwner
			default:
				n.log.Warn("cannot publish an HTTP publish forwarded by another node", "domain", q.key.Domain, "topic", q.key.Topic, "err", err)
			}
		}
		n.stats.forwardsServed.Add(1)
		if err := m.Respond(appendForwardReply(nil, status, epoch, offset)); err != nil {
			n.log.Debug("cannot answer a forwarded HTTP publish", "err", err)
		}
	}()
}
