package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

// A node that lacks older messages of a topic (it joined the topic's
// stream late, or lost part of it) asks the node that keeps them with a
// NATS request on that node's subject, PREFIX.h.NODE (the node's ID,
// base64url-encoded). The request:
//
//	version  1 byte (1)
//	domain   uvarint length, bytes
//	topic    uvarint length, bytes
//	epoch    1 byte of length, bytes (may be empty)
//	after    uvarint
//	before   uvarint (0: no bound)
//
// and the reply, one page of the answering node's history (see
// server.HistoryPage), no larger than the NATS server's max_payload:
//
//	version  1 byte (1)
//	epoch    1 byte of length, bytes (empty: no history there)
//	last     uvarint
//	oldest   uvarint
//	count    uvarint: entries
//	first    uvarint: the first entry's offset (the others follow it)
//	entries  count times: age in milliseconds (uvarint), frame length
//	         (uvarint), the frame

const (
	historyVersion = 1
	// replyHeader bounds a reply's bytes besides its entries.
	replyHeader = 2 + maxEpoch + 4*binary.MaxVarintLen64
	// maxName bounds a domain or topic name in a request.
	maxName = 64 << 10
)

// historySubject is the subject node id answers history requests on.
func historySubject(prefix, id string) string {
	return prefix + ".h." + b64.EncodeToString([]byte(id))
}

// historyRequest is a decoded request.
type historyRequest struct {
	key           topics.Key
	epoch         string
	after, before uint64
}

func appendHistoryRequest(b []byte, q historyRequest) []byte {
	b = appendTopicKey(append(b, historyVersion), q.key)
	b = append(b, byte(len(q.epoch)))
	b = append(b, q.epoch...)
	b = binary.AppendUvarint(b, q.after)
	return binary.AppendUvarint(b, q.before)
}

// appendTopicKey appends a topic's domain and name, each behind its
// length, as the requests between nodes carry them.
func appendTopicKey(b []byte, k topics.Key) []byte {
	b = binary.AppendUvarint(b, uint64(len(k.Domain)))
	b = append(b, k.Domain...)
	b = binary.AppendUvarint(b, uint64(len(k.Topic)))
	return append(b, k.Topic...)
}

// reader reads the fields of a request or reply; a malformed one sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) epoch() string {
	if r.bad || len(r.b) == 0 {
		r.bad = true
		return ""
	}
	n := int(r.b[0])
	r.b = r.b[1:]
	e := string(r.bytes(uint64(n)))
	if n > maxEpoch || e != "" && !history.ValidEpoch(e) {
		r.bad = true
	}
	return e
}

// topicKey reads what appendTopicKey wrote.
func (r *reader) topicKey() topics.Key {
	var k topics.Key
	for _, name := range []*string{&k.Domain, &k.Topic} {
		if n := r.uvarint(); n <= maxName {
			*name = string(r.bytes(n))
		} else {
			r.bad = true
		}
	}
	return k
}

func parseHistoryRequest(b []byte) (historyRequest, error) {
	var q historyRequest
	if len(b) == 0 || b[0] != historyVersion {
		return q, errMalformed
	}
	r := reader{b: b[1:]}
	q.key = r.topicKey()
	q.epoch = r.epoch()
	q.after = r.uvarint()
	q.before = r.uvarint()
	if r.bad || len(r.b) != 0 || q.key.Domain == "" || q.key.Topic == "" {
		return historyRequest{}, errMalformed
	}
	return q, nil
}

func appendHistoryReply(b []byte, p server.HistoryPage, now int64) []byte {
	b = append(b, historyVersion, byte(len(p.Epoch)))
	b = append(b, p.Epoch...)
	b = binary.AppendUvarint(b, p.Last)
	b = binary.AppendUvarint(b, p.Oldest)
	b = binary.AppendUvarint(b, uint64(len(p.Entries)))
	if len(p.Entries) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, p.Entries[0].Offset)
	for i := range p.Entries {
		e := &p.Entries[i]
		b = binary.AppendUvarint(b, uint64(max(now-e.At, 0)/int64(time.Millisecond)))
		b = binary.AppendUvarint(b, uint64(len(e.Frame)))
		b = append(b, e.Frame...)
	}
	return b
}

// parseHistoryReply decodes a reply; the entries' frames are parts of b.
func parseHistoryReply(b []byte, now int64) (server.HistoryPage, error) {
	var p server.HistoryPage
	if len(b) == 0 || b[0] != historyVersion {
		return p, errMalformed
	}
	r := reader{b: b[1:]}
	p.Epoch = r.epoch()
	p.Last = r.uvarint()
	p.Oldest = r.uvarint()
	count := r.uvarint()
	if r.bad || count > uint64(len(r.b))/3 || p.Epoch == "" && count > 0 {
		return server.HistoryPage{}, errMalformed
	}
	if count > 0 {
		first := r.uvarint()
		if first == 0 || first > p.Last || p.Last-first < count-1 {
			return server.HistoryPage{}, errMalformed
		}
		p.Entries = make([]history.Entry, 0, count)
		for i := range count {
			age := r.uvarint()
			frame := r.bytes(r.uvarint())
			if r.bad || len(frame) < 2 || age > 1<<40 {
				return server.HistoryPage{}, errMalformed
			}
			p.Entries = append(p.Entries, history.Entry{Offset: first + i, At: now - int64(age)*int64(time.Millisecond), Frame: frame})
		}
	}
	if r.bad || len(r.b) != 0 {
		return server.HistoryPage{}, errMalformed
	}
	return p, nil
}

// answerHistory answers another node's history request, on the goroutine
// of this node's history subscription.
func (n *Node) answerHistory(m *nats.Msg) {
	q, err := parseHistoryRequest(m.Data)
	if err != nil || m.Reply == "" {
		n.stats.dropped[dropMalformed].Add(1)
		return
	}
	var p server.HistoryPage
	if h := n.theHub(); h != nil {
		p = h.History(q.key, q.epoch, q.after, q.before, n.pageLimit())
	}
	now := time.Now().UnixNano()
	n.replyBuf = appendHistoryReply(n.replyBuf[:0], p, now)
	if err := m.Respond(n.replyBuf); err != nil {
		n.log.Debug("cannot answer a history request", "err", err)
	}
	n.stats.historyServed.Add(1)
	if cap(n.replyBuf) > 4<<20 {
		n.replyBuf = nil
	}
}

// pageLimit is the bytes of entries one reply may hold.
func (n *Node) pageLimit() int {
	return max(int(n.nc.MaxPayload())-replyHeader, 1<<10)
}

var errHistoryReply = errors.New("cluster: malformed history reply")

// History implements server.Cluster.
func (n *Node) History(ctx context.Context, k topics.Key, epoch string, after, before uint64) (server.HistoryPage, error) {
	from := n.historySource(k)
	if from == "" {
		return server.HistoryPage{}, nil
	}
	if !n.nc.IsConnected() {
		n.stats.historyFetches[fetchError].Add(1)
		return server.HistoryPage{}, ErrNotConnected
	}
	req := appendHistoryRequest(nil, historyRequest{key: k, epoch: epoch, after: after, before: before})
	m, err := n.nc.RequestWithContext(ctx, historySubject(n.cfg.Prefix, from), req)
	if err != nil {
		n.stats.historyFetches[fetchError].Add(1)
		return server.HistoryPage{}, fmt.Errorf("cannot ask node %s for the topic's history: %w", from, err)
	}
	p, err := parseHistoryReply(m.Data, time.Now().UnixNano())
	if err != nil {
		n.stats.historyFetches[fetchError].Add(1)
		return server.HistoryPage{}, fmt.Errorf("node %s: %w", from, errHistoryReply)
	}
	n.stats.historyFetches[fetchOK].Add(1)
	n.stats.historyEntries.Add(int64(len(p.Entries)))
	return p, nil
}

// historySource is the node that keeps k's history, "" if none: the
// owner, or for the owner itself the node it took k over from.
func (n *Node) historySource(k topics.Key) string {
	n.mu.Lock()
	l := n.leases[k]
	if l != nil && l.state == leaseOwned {
		prev := l.prev
		n.mu.Unlock()
		return prev
	}
	n.mu.Unlock()
	n.view.mu.RLock()
	defer n.view.mu.RUnlock()
	if e := n.view.m[k]; e != nil && e.node != n.id {
		return e.node
	}
	return ""
}
