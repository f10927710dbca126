package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

// With --publishers-per-topic above 1, a topic's publishers may be on
// several nodes. One node owns the topic and assigns its positions; a
// publisher on another node relays each read to the owner, pipelined on the
// node's NATS connection, to the owner's subject PREFIX.r.NODE:
//
//	version  1 byte (1)
//	sender   8 bytes, big endian: the relaying lease, random
//	seq      8 bytes, big endian: 1, 2, 3… per sender
//	sent     8 bytes, big endian: when it was relayed, Unix nanoseconds
//	msgs     uvarint: messages in the run
//	payload  uvarint: their payload bytes
//	domain   uvarint length, bytes
//	topic    uvarint length, bytes
//	frames   the rest: the run of frames, as the relaying node encoded them
//
// with a reply subject, PREFIX.a.NODE.SENDER of the relaying node (SENDER
// in hex), that the owner acknowledges each run on, once published (or
// refused), without anyone waiting for it:
//
//	version  1 byte (1)
//	status   1 byte: 0 published, 1 refused (this node does not own the topic)
//	sender   8 bytes, big endian
//	seq      8 bytes, big endian
//
// If the owner has no relay subscription (its connection closed), the
// NATS server says so at once on the reply subject (no responders), and
// the relaying node gives up as when acknowledgements stop.
//
// The owner refuses a run relayed longer than relayTimeout ago (it waited
// in the NATS client's reconnect buffer): its sender has given up on it,
// counted it lost and closed its publisher, which may send it again.
//
// The owner publishes a relayed run as its own: it gets the next positions
// and goes out on the topic's subject, so every node, the relaying one
// included, gets it from the owner in the one order the owner gave. A
// relaying node whose runs go unacknowledged for relayTimeout (the owner
// died, or NATS is away), or refused, or that cannot hand one to the NATS
// client, counts them lost and closes its publishers of the topic with 1001
// (they reconnect and claim again) rather than lose more silently.

const (
	relayVersion = 1

	relayPublished = 0
	relayRefused   = 1

	relayFixed = 1 + 8 + 8 + 8
	ackSize    = 1 + 1 + 8 + 8
)

// relayRun is a decoded relayed run.
type relayRun struct {
	sender, seq   uint64
	sent          int64
	msgs, payload int
	key           topics.Key
	frames        []byte
}

func appendRelay(b []byte, r relayRun) []byte {
	b = append(b, relayVersion)
	b = binary.BigEndian.AppendUint64(b, r.sender)
	b = binary.BigEndian.AppendUint64(b, r.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.sent))
	b = binary.AppendUvarint(b, uint64(r.msgs))
	b = binary.AppendUvarint(b, uint64(r.payload))
	b = appendTopicKey(b, r.key)
	return append(b, r.frames...)
}

// parseRelay decodes a relayed run; its frames are part of b.
func parseRelay(b []byte) (relayRun, error) {
	var q relayRun
	if len(b) < relayFixed || b[0] != relayVersion {
		return q, errMalformed
	}
	q.sender, q.seq = binary.BigEndian.Uint64(b[1:]), binary.BigEndian.Uint64(b[9:])
	q.sent = int64(binary.BigEndian.Uint64(b[17:]))
	r := reader{b: b[relayFixed:]}
	msgs, payload := r.uvarint(), r.uvarint()
	q.key = r.topicKey()
	if r.bad || msgs == 0 || msgs > 1<<31 || payload > uint64(len(r.b)) || len(r.b) < 2 || q.key.Domain == "" || q.key.Topic == "" {
		return relayRun{}, errMalformed
	}
	q.msgs, q.payload, q.frames = int(msgs), int(payload), r.b
	return q, nil
}

func relaySubject(prefix, id string) string {
	return prefix + ".r." + b64.EncodeToString([]byte(id))
}

func ackSubject(prefix, id string) string {
	return prefix + ".a." + b64.EncodeToString([]byte(id))
}

// relayState is a leaseRemote's relaying.
type relayState struct {
	subject, ack string
	// seq is the last run sent, acked the last acknowledged; waiting is
	// when the wait for the oldest unacknowledged one (or the last
	// progress) began, Unix nanoseconds, 0 when none is waited for.
	seq, acked atomic.Uint64
	waiting    atomic.Int64
	failed     atomic.Bool
}

func (rs *relayState) init(n *Node, l *lease) {
	rs.subject = relaySubject(n.cfg.Prefix, l.owner)
	rs.ack = n.ackSubj + "." + strconv.FormatUint(l.sender, 16)
	n.relays.Store(l.sender, l)
}

// multi reports whether a topic may have several publishers, which the
// record then counts across the nodes.
func (n *Node) multi() bool { return n.cfg.PublishersPerTopic > 1 }

// relayTimeout is how long a relaying node waits for the owner's
// acknowledgement before giving up on the owner.
func (n *Node) relayTimeout() time.Duration { return max(n.cfg.ClaimTTL/2, time.Second) }

// liveRemote is the publishers of the entries of m that have not lapsed.
func liveRemote(m map[string]remoteClaim) int {
	return record{Remote: m}.liveRemote(time.Now().UnixMilli())
}

// pruned is m without its lapsed and empty entries, nil if none is left.
func pruned(m map[string]remoteClaim, now int64) map[string]remoteClaim {
	var out map[string]remoteClaim
	for id, e := range m {
		if e.Until > now && e.Pubs > 0 {
			if out == nil {
				out = make(map[string]remoteClaim, len(m))
			}
			out[id] = e
		}
	}
	return out
}

// joinRemote counts this node's first publisher of a topic another node
// owns live in the topic's record (revision rev, read as r), if the topic's
// publishers across the cluster are fewer than the limit.
func (n *Node) joinRemote(ctx context.Context, kv jetstream.KeyValue, l *lease, rev uint64, r record) (uint64, error) {
	now := time.Now().UnixMilli()
	r.Remote = pruned(r.Remote, now)
	delete(r.Remote, n.id) // a leftover of a lease this node forgot
	if total := r.Pubs + r.liveRemote(now); total >= n.cfg.PublishersPerTopic {
		return 0, fmt.Errorf("cluster: topic has %d publishers across the nodes: %w", total, topics.ErrHasPublisher)
	}
	n.setRemote(&r, 1, now)
	b, _ := json.Marshal(r)
	return kv.Update(ctx, l.kvKey, b, rev)
}

// addPublisher counts one more publisher of a topic this node owns or
// relays, with a compare-and-set on its record that checks the limit
// across the nodes; false means the lease was lost meanwhile.
func (n *Node) addPublisher(ctx context.Context, l *lease) (bool, error) {
	l.io.Lock()
	defer l.io.Unlock()
	kv := n.bucket()
	if kv == nil || !n.nc.IsConnected() {
		return false, ErrNotConnected
	}
	for range 8 {
		n.mu.Lock()
		state, pubs := l.state, l.pubs
		n.mu.Unlock()
		if state != leaseOwned && state != leaseRemote {
			return false, nil
		}
		if state == leaseRemote && l.rl.failed.Load() {
			n.drop(l) // its publishers are closing: start afresh
			return false, nil
		}
		e, err := kv.Get(ctx, l.kvKey)
		var r record
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if state == leaseRemote {
				n.lose(l) // the owner is gone: claim afresh
				return false, nil
			}
			r = record{Node: n.id}
		case err != nil:
			return false, fmt.Errorf("cannot read the topic's ownership record: %w", err)
		default:
			if r, err = decodeRecord(e.Value()); err != nil {
				r = record{Node: "?"}
			}
		}
		want := n.id
		if state == leaseRemote {
			want = l.owner
		}
		if r.Node != want {
			n.lose(l)
			return false, nil
		}
		now := time.Now().UnixMilli()
		r.Remote = pruned(r.Remote, now)
		own := 0
		if state == leaseOwned {
			own = pubs
		} else {
			own = r.Pubs + pubs
			delete(r.Remote, n.id)
		}
		if total := own + r.liveRemote(now); total >= n.cfg.PublishersPerTopic {
			return false, fmt.Errorf("cluster: topic has %d publishers across the nodes: %w", total, topics.ErrHasPublisher)
		}
		if state == leaseRemote && !n.ownerAlive(r, e.Created()) {
			n.lose(l) // the owner died or closed: claim afresh
			return false, nil
		}
		if state == leaseOwned {
			r.Pubs, r.GraceUntil = pubs+1, 0
			r.Epoch, r.Last = l.position()
			r.OwnerUntil = time.Now().Add(n.cfg.ClaimTTL).UnixMilli()
		} else {
			n.setRemote(&r, pubs+1, now)
		}
		b, _ := json.Marshal(r)
		rev, err := writeOver(ctx, kv, l.kvKey, e, b)
		if isConflict(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("cannot write the topic's ownership record: %w", err)
		}
		n.mu.Lock()
		ok := l.state == state
		if ok {
			l.pubs++
			if state == leaseOwned {
				l.rev, l.graceUntil, l.remote = rev, time.Time{}, r.Remote
			}
		}
		n.mu.Unlock()
		return ok, nil
	}
	return false, errContention
}

// syncMulti writes l's count into its record (read, changed, written with
// a compare-and-set, so that the entries of other nodes stay): a relaying
// node its own entry (and forgets the lease once its last publisher left),
// the owner its publishers and position. An owner whose last publisher
// left starts the grace period only when no other node has publishers
// left: until then it stays the owner and goes on publishing what they
// relay.
func (n *Node) syncMulti(l *lease) {
	l.io.Lock()
	defer l.io.Unlock()
	kv := n.bucket()
	if kv == nil || !n.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for range 4 {
		n.mu.Lock()
		state, pubs := l.state, l.pubs
		n.mu.Unlock()
		if state != leaseOwned && state != leaseRemote {
			return
		}
		e, err := kv.Get(ctx, l.kvKey)
		var r record
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			e = nil
		case err != nil:
			n.stats.kvErrors.Add(1)
			return
		default:
			if r, err = decodeRecord(e.Value()); err != nil {
				r = record{Node: "?"}
			}
		}
		now := time.Now()
		ms := now.UnixMilli()
		var b []byte
		startGrace := false
		if state == leaseRemote {
			if e == nil || r.Node != l.owner || !n.ownerAlive(r, e.Created()) {
				n.lose(l) // the owner died, closed, or lost the record: reconnect and claim afresh
				return
			}
			r.Remote = pruned(r.Remote, ms)
			if pubs == 0 {
				delete(r.Remote, n.id)
			} else {
				n.setRemote(&r, pubs, ms)
			}
			b, _ = json.Marshal(r)
		} else {
			if e != nil && r.Node != n.id {
				n.lose(l)
				return
			}
			n.mu.Lock()
			l.remote = pruned(r.Remote, ms)
			if l.pubs == 0 && (len(l.remote) == 0 || n.closing.Load()) {
				if l.graceUntil.IsZero() {
					l.graceUntil, startGrace = now.Add(n.graceFor()), true
				}
			} else {
				l.graceUntil = time.Time{}
			}
			b = n.encode(l)
			n.mu.Unlock()
		}
		rev, err := writeOver(ctx, kv, l.kvKey, e, b)
		if isConflict(err) {
			continue
		}
		if err != nil {
			n.stats.kvErrors.Add(1)
			n.log.Debug("cannot write a topic's ownership record; retrying", "domain", l.key.Domain, "topic", l.key.Topic, "err", err)
			return
		}
		n.mu.Lock()
		switch {
		case state == leaseOwned && l.state == leaseOwned:
			l.rev = rev
		case state == leaseRemote && l.state == leaseRemote && l.pubs == 0:
			l.state = leaseGone
			if n.leases[l.key] == l {
				delete(n.leases, l.key)
			}
			n.relays.Delete(l.sender)
		}
		n.mu.Unlock()
		if startGrace {
			k := l.key
			time.AfterFunc(n.graceFor(), func() { n.graceOver(k, l) })
		}
		return
	}
}

// graceOver ends the grace period that an owner started when the last
// publisher on another node left (no local topic timer asks Keep then).
func (n *Node) graceOver(k topics.Key, l *lease) {
	n.mu.Lock()
	cur := n.leases[k]
	n.mu.Unlock()
	if cur == l {
		n.Keep(k) // deletes the record if it is still in grace; the view then ends the topic here
	}
}

// checkMulti is the view's word on record r of k, written by another
// node (or, for the owner, by itself): a relaying lease whose owner
// changed, or whose entry is gone, is checked; an owner learns that the
// other nodes' publishers all left and starts the grace period.
func (n *Node) checkMulti(k topics.Key, r record) {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := n.leases[k]
	if l == nil {
		return
	}
	now := time.Now().UnixMilli()
	switch l.state {
	case leaseRemote:
		if _, ok := r.Remote[n.id]; r.Node != l.owner || !ok && l.pubs > 0 || r.OwnerUntil != 0 && r.OwnerUntil <= now {
			n.markDirty(l)
		}
	case leaseOwned:
		if r.Node != n.id {
			n.markDirty(l)
			return
		}
		l.remote = pruned(r.Remote, now)
		if l.pubs == 0 && len(l.remote) == 0 && l.graceUntil.IsZero() {
			n.markDirty(l)
		}
	}
}

// Relay implements server.ClusterTopic: on a node that does not own the
// topic, the run goes to the owner (see above). It never waits for the
// network.
func (c *claim) Relay(frames []byte, msgs, payload int) bool {
	l := c.l
	if l.owner == "" {
		return false
	}
	n := l.n
	rs := &l.rl
	if rs.failed.Load() {
		n.stats.dropped[dropRelay].Add(1)
		return true
	}
	l.pub.Lock()
	defer l.pub.Unlock()
	seq := rs.seq.Load() + 1
	b := appendRelay(l.buf[:0], relayRun{sender: l.sender, seq: seq, sent: time.Now().UnixNano(),
		msgs: msgs, payload: payload, key: l.key, frames: frames})
	l.buf = b
	if int64(len(b)) > n.nc.MaxPayload() {
		n.relayFailed(l, fmt.Errorf("a read of %d bytes is more than NATS carries in one message (%d)", len(b), n.nc.MaxPayload()), 1, false)
		return true
	}
	if rs.seq.Load() == rs.acked.Load() {
		rs.waiting.Store(time.Now().UnixNano())
	}
	if !n.out.push(rs.subject, rs.ack, b, l, true, msgs) {
		n.relayFailed(l, errOutboxFull, 1, false)
		return true
	}
	rs.seq.Store(seq)
	n.stats.relayed.Add(int64(msgs))
	if cap(l.buf) > 4<<20 {
		l.buf = nil
	}
	return true
}

// relayFailed gives up relaying l's runs: the unacknowledged ones and
// extra are counted lost, and the hub closes this node's publishers of
// the topic (off the caller's goroutine: it may be a publisher's loop).
//
// gone says the owner itself is gone (no answer, or NATS says it has no
// relay subscription), not that one run could not go.
func (n *Node) relayFailed(l *lease, err error, extra int64, gone bool) {
	rs := &l.rl
	if !rs.failed.CompareAndSwap(false, true) {
		n.stats.dropped[dropRelay].Add(extra)
		return
	}
	if gone {
		// Claims here take its topics over rather than relay to it again
		// until its records lapse.
		n.goneOwners.Store(l.owner, time.Now().Add(n.cfg.ClaimTTL).UnixNano())
	}
	lost := int64(rs.seq.Load()-rs.acked.Load()) + extra
	n.stats.dropped[dropRelay].Add(lost)
	n.log.Warn("cannot relay a topic's messages to the node that owns it; closing its publishers here",
		"domain", l.key.Domain, "topic", l.key.Topic, "owner", l.owner, "lost_runs", lost, "err", err)
	if h := n.theHub(); h != nil {
		go h.OwnerUnreachable(l.key)
	}
}

// ownerGone reports whether this node found owner gone (its relays went
// unanswered) less than ClaimTTL ago.
func (n *Node) ownerGone(owner string) bool {
	v, ok := n.goneOwners.Load(owner)
	if ok && time.Now().UnixNano() >= v.(int64) {
		n.goneOwners.Delete(owner)
		return false
	}
	return ok
}

// checkRelays gives up on the leases whose owner did not acknowledge in
// time; the worker calls it.
func (n *Node) checkRelays() {
	limit := time.Now().Add(-n.relayTimeout()).UnixNano()
	n.relays.Range(func(_, v any) bool {
		l := v.(*lease)
		rs := &l.rl
		if w := rs.waiting.Load(); w != 0 && w < limit && rs.seq.Load() > rs.acked.Load() && !rs.failed.Load() {
			n.relayFailed(l, errors.New("no acknowledgement from the owner"), 0, n.nc.IsConnected())
		}
		return true
	})
}

// answerRelay publishes a run another node relayed, on the goroutine of
// this node's relay subscription (in the order sent), and acknowledges it.
func (n *Node) answerRelay(m *nats.Msg) {
	q, err := parseRelay(m.Data)
	if err != nil || m.Reply == "" {
		n.stats.dropped[dropMalformed].Add(1)
		return
	}
	k, sender, seq, sent := q.key, q.sender, q.seq, q.sent
	status := byte(relayRefused)
	n.mu.Lock()
	l := n.leases[k]
	owned := l != nil && l.state == leaseOwned
	n.mu.Unlock()
	// A closing node publishes nothing after its final records: Close
	// waits for a run being published, and later ones are refused.
	n.relayMu.RLock()
	defer n.relayMu.RUnlock()
	fresh := time.Now().UnixNano()-sent <= int64(n.relayTimeout())
	if h := n.theHub(); owned && fresh && h != nil && !n.closing.Load() {
		if err := h.PublishRelayed(k, q.frames, q.msgs, q.payload, &claim{l: l}); err == nil {
			status = relayPublished
			n.stats.relaysServed.Add(int64(q.msgs))
		} else {
			n.log.Warn("cannot publish messages relayed by another node", "domain", k.Domain, "topic", k.Topic, "err", err)
		}
	}
	var ack [ackSize]byte
	ack[0], ack[1] = relayVersion, status
	binary.BigEndian.PutUint64(ack[2:], sender)
	binary.BigEndian.PutUint64(ack[10:], seq)
	n.nc.Publish(m.Reply, ack[:])
}

// answerAck takes the owner's acknowledgement of a relayed run.
func (n *Node) answerAck(m *nats.Msg) {
	b := m.Data
	if len(b) == 0 && m.Header.Get("Status") == "503" {
		// No responders: the owner's relay subscription is gone.
		i := strings.LastIndexByte(m.Subject, '.')
		sender, err := strconv.ParseUint(m.Subject[i+1:], 16, 64)
		if v, ok := n.relays.Load(sender); ok && err == nil {
			n.relayFailed(v.(*lease), errors.New("the owner is gone: no responders"), 0, true)
		}
		return
	}
	if len(b) != ackSize || b[0] != relayVersion {
		n.stats.dropped[dropMalformed].Add(1)
		return
	}
	v, ok := n.relays.Load(binary.BigEndian.Uint64(b[2:]))
	if !ok {
		return
	}
	l := v.(*lease)
	rs := &l.rl
	seq := binary.BigEndian.Uint64(b[10:])
	if b[1] != relayPublished {
		n.relayFailed(l, errors.New("the node no longer owns the topic"), 0, false)
		return
	}
	if seq > rs.acked.Load() {
		rs.acked.Store(seq)
	}
	if rs.acked.Load() >= rs.seq.Load() {
		rs.waiting.Store(0)
	} else {
		rs.waiting.Store(time.Now().UnixNano())
	}
}

var _ server.ClusterTopic = (*claim)(nil)

// setRemote sets this node's entry in r's Remote: pubs publishers, until a
// ClaimTTL after now (Unix milliseconds).
func (n *Node) setRemote(r *record, pubs int, now int64) {
	if r.Remote == nil {
		r.Remote = make(map[string]remoteClaim, 1)
	}
	r.Remote[n.id] = remoteClaim{Pubs: pubs, Until: now + n.cfg.ClaimTTL.Milliseconds()}
}

// writeOver writes b as key's record, with a compare-and-set on e, the
// record as read (nil: there was none).
func writeOver(ctx context.Context, kv jetstream.KeyValue, key string, e jetstream.KeyValueEntry, b []byte) (uint64, error) {
	if e == nil {
		return kv.Create(ctx, key, b)
	}
	return kv.Update(ctx, key, b, e.Revision())
}
