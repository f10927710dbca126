package server

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// What a subscriber is sent comes in one of these variants, each encoded
// once per message, never per subscriber.
const (
	kindPlain = iota // WebSocket frames exactly as published
	kindMeta         // WebSocket frames with an "id: EPOCH:OFFSET\n\n" header (wspubsub.meta)
	kindSSE          // text/event-stream events
	// kindPlain and kindMeta for subscribers that negotiated
	// permessage-deflate: the same frames, those of at least
	// --compress-min-size bytes compressed (see compress.go).
	kindPlainDeflate
	kindMetaDeflate
	numKinds
)

// baseKind is the variant a subscriber of kind gets its replay and its
// notices in: a deflate kind's uncompressed one (RFC 7692 lets any message
// go uncompressed).
func baseKind(kind int) int {
	if kind >= kindPlainDeflate {
		return kind - kindPlainDeflate
	}
	return kind
}

// metaProtocol is the subprotocol a WebSocket subscriber offers to see
// positions.
const metaProtocol = "wspubsub.meta"

// variants holds one encoding of the same messages per kind of subscriber;
// a kind no subscriber has is left empty.
type variants [numKinds][]byte

// resumeMode says where a subscriber starts.
type resumeMode uint8

const (
	resumeLive   resumeMode = iota // from the next message on
	resumeRewind                   // the last n kept messages first
	resumeSince                    // every kept message after a position first
)

// resume is where a subscriber asked to start.
type resume struct {
	mode   resumeMode
	n      int    // resumeRewind
	epoch  string // resumeSince
	offset uint64 // resumeSince
}

// maxRewind bounds ?rewind: no history keeps more.
const maxRewind = 1 << 20

// parseResume reads ?rewind=N and ?since=EPOCH:OFFSET from a request
// target's query; other parameters are ignored.
func parseResume(target string) (resume, error) {
	var r resume
	_, query, ok := strings.Cut(target, "?")
	if !ok {
		return r, nil
	}
	var rewind, since []string
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != "rewind" && k != "since" {
			continue // unknown parameters are ignored, however they look
		}
		v, err := url.QueryUnescape(v)
		if err != nil {
			return r, errors.New(k + ": invalid percent-encoding")
		}
		if k == "rewind" {
			rewind = append(rewind, v)
		} else {
			since = append(since, v)
		}
	}
	hasRewind, hasSince := rewind != nil, since != nil
	switch {
	case hasRewind && hasSince:
		return r, errors.New("rewind and since cannot be used together")
	case len(rewind) > 1 || len(since) > 1:
		return r, errors.New("rewind or since given more than once")
	case hasRewind:
		n, err := strconv.Atoi(rewind[0])
		if err != nil || n < 0 || n > maxRewind {
			return r, errors.New("rewind wants a number of messages from 0 to " + strconv.Itoa(maxRewind))
		}
		r.mode, r.n = resumeRewind, n
	case hasSince:
		return parsePosition(since[0])
	}
	return r, nil
}

// parsePosition reads EPOCH:OFFSET, the form of ?since and Last-Event-ID.
func parsePosition(s string) (resume, error) {
	epoch, off, ok := strings.Cut(s, ":")
	if !ok || !history.ValidEpoch(epoch) {
		return resume{}, errors.New("position wants EPOCH:OFFSET, EPOCH of 1 to 64 letters and digits")
	}
	offset, err := strconv.ParseUint(off, 10, 64)
	if err != nil || (len(off) > 1 && off[0] == '0') {
		return resume{}, errors.New("position wants EPOCH:OFFSET, OFFSET a decimal number")
	}
	return resume{mode: resumeSince, epoch: epoch, offset: offset}, nil
}

// batch is messages to publish on a topic: their plain frames, one per
// message, back to back.
type batch struct {
	frames  []byte
	starts  []int // where each message's frame starts in frames
	payload int   // payload bytes of all the messages

	// Positions assigned by another hub node (the topic's owner); "" for
	// messages published here, which get theirs from the topic's log.
	epoch string
	first uint64
}

func (b *batch) frame(i int) []byte {
	end := len(b.frames)
	if i+1 < len(b.starts) {
		end = b.starts[i+1]
	}
	return b.frames[b.starts[i]:end]
}

// split finds the frames of a run that came whole from another node.
func (b *batch) split() error {
	b.starts = b.starts[:0]
	for p := 0; p < len(b.frames); {
		f := b.frames[p:]
		if len(f) < 2 {
			return errors.New("server: truncated frame from another node")
		}
		h, n := history.HeaderLen(f), int(f[1]&0x7f)
		switch {
		case len(f) < h:
			return errors.New("server: truncated frame from another node")
		case n == 126:
			n = int(binary.BigEndian.Uint16(f[2:]))
		case n == 127:
			if v := binary.BigEndian.Uint64(f[2:]); v > uint64(len(f)) {
				return errors.New("server: truncated frame from another node")
			} else {
				n = int(v)
			}
		}
		if len(f) < h+n {
			return errors.New("server: truncated frame from another node")
		}
		b.starts = append(b.starts, p)
		p += h + n
	}
	return nil
}

// scratch is the buffers one publish encodes its variants into; a
// publisher keeps its own, others take one from scratchPool.
type scratch struct {
	out    batch // a publisher's read being handled
	fan    fanoutState
	v      variants
	meta   []byte
	sse    []byte
	zplain []byte // the deflate variants
	zmeta  []byte
	starts []int

	// For a publisher's own scratch: whether its last publish handed its
	// fan-out over (see fanoutState.async), and the read buffer its frames
	// are in, kept until that fan-out is done.
	handedOff bool
	held      *[]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// publish gives the messages of b their positions, keeps them in the
// topic's history and writes them to every subscriber of t, in each
// subscriber's variant. A cluster claim, if any, sends them on to the other
// nodes with their positions. It returns the position of the first message.
//
// The positions, the history and the snapshot of subscribers are taken in
// one step under the log's mutex, the step a joining subscriber takes to
// read its replay: a message is either in its replay or in its live stream,
// never both, never neither. The topic's Publishing mutex, held to the end
// of the fan-out, keeps every subscriber's messages in offset order. With
// sc.fan.async set, a large fan-out may still be going on when publish
// returns (see fanoutState.async): sc.fan.done.Wait() before sc is used
// again; b's frames must stay as they are until then.
//
// Subscribers too slow for the fan-out are marked, and get nothing more,
// but are not closed here: the caller cuts sc.fan.slow once it holds no
// lock (a publisher's client.mu above all), and a detached fan-out's
// finish cuts those it found. No client.mu is taken under the topic's
// Publishing mutex.
func (s *Server) publish(sc *scratch, t *topics.Topic[*client], b *batch, claim ClusterTopic) (epoch string, first uint64) {
	n := len(b.starts)
	sc.handedOff = false
	if claim != nil && b.epoch == "" && claim.Relay(b.frames, n, b.payload) {
		// Another node owns the topic: it gives the positions and
		// publishes, to the subscribers here too.
		return "", 0
	}
	t.Publishing.Lock()
	log := t.Log
	now := time.Now().UnixNano()
	var reset bool
	var gapFirst, gapLast uint64
	log.Lock()
	if b.epoch == "" {
		first = log.Assign(n)
	} else {
		var skip int
		reset, gapFirst, gapLast, skip = log.Adopt(b.epoch, b.first, n)
		if skip > 0 { // came twice: keep the stream free of duplicates
			if skip == n {
				log.Unlock()
				t.Publishing.Unlock()
				return b.epoch, b.first
			}
			base := b.starts[skip]
			b.frames, b.starts = b.frames[base:], b.starts[skip:]
			for i := range b.starts {
				b.starts[i] -= base
			}
			n -= skip
		}
		first = b.first + uint64(skip)
	}
	epoch = log.Epoch()
	// A topic taken just before it ended (a cluster delivery after its
	// Lookup, an HTTP publish after its Touch) keeps nothing: its log was
	// or will be dropped, and entries added after that would be held by
	// nobody but the budget.
	if log.Keeps() && !t.Gone() {
		for i := range n {
			log.Add(first+uint64(i), b.frame(i), now)
		}
	}
	subs := t.Subscribers()
	withZPlain, withZMeta := t.Count(kindPlainDeflate) > 0, t.Count(kindMetaDeflate) > 0
	withMeta, withSSE := withZMeta || t.Count(kindMeta) > 0, t.Count(kindSSE) > 0
	log.Unlock()
	if s.budget.Over() {
		s.budget.Trim()
	}
	sent := claim != nil && claim.Publish(epoch, first, b.frames, n, b.payload)

	v := &sc.v
	*v = variants{kindPlain: b.frames}
	if withMeta {
		sc.meta = appendVariant(sc.meta[:0], kindMeta, epoch, first, b, reset, gapFirst, gapLast)
		v[kindMeta] = sc.meta
	}
	if withSSE {
		sc.sse = appendVariant(sc.sse[:0], kindSSE, epoch, first, b, reset, gapFirst, gapLast)
		v[kindSSE] = sc.sse
	}
	z := &sc.fan.z
	*z = [numKinds]zcount{}
	if withZPlain {
		v[kindPlainDeflate], sc.zplain, z[kindPlainDeflate] = s.compressed(sc.zplain, b.frames)
	}
	if withZMeta {
		v[kindMetaDeflate], sc.zmeta, z[kindMetaDeflate] = s.compressed(sc.zmeta, sc.meta)
	}
	sc.handedOff = s.fanout(&sc.fan, sc, t, subs, v, n, b.payload, sent)
	if !sc.handedOff {
		sc.release()
		t.Publishing.Unlock()
	}
	return epoch, first
}

// release lets go of a publish's variants once its fan-out is written.
func (sc *scratch) release() {
	sc.v = variants{} // keep no frames alive
	for _, buf := range []*[]byte{&sc.meta, &sc.sse, &sc.zplain, &sc.zmeta} {
		if cap(*buf) > 4<<20 {
			*buf = nil
		}
	}
}

// publishFrame publishes one message, given as its plain frame, on t (with
// claim, if any, sending it on to the other nodes): the publish of an HTTP
// request, forwarded or not.
func (s *Server) publishFrame(t *topics.Topic[*client], frame []byte, payload int, claim ClusterTopic) (epoch string, offset uint64) {
	sc := scratchPool.Get().(*scratch)
	b := batch{frames: frame, starts: append(sc.starts[:0], 0), payload: payload}
	epoch, offset = s.publish(sc, t, &b, claim)
	sc.fan.slow.cut()
	sc.starts = b.starts[:0]
	scratchPool.Put(sc)
	return epoch, offset
}

// appendVariant appends b's messages, at offsets first onwards of epoch,
// in kind's variant, behind the notices the log reported for them.
func appendVariant(dst []byte, kind int, epoch string, first uint64, b *batch, reset bool, gapFirst, gapLast uint64) []byte {
	dst = appendNotice(dst, kind, epoch, reset, gapFirst, gapLast)
	for i := range b.starts {
		f := b.frame(i)
		dst = appendMessage(dst, kind, epoch, first+uint64(i), f)
	}
	return dst
}

// appendMessage appends one message, given as its plain frame, in kind's
// variant.
func appendMessage(dst []byte, kind int, epoch string, offset uint64, frame []byte) []byte {
	op, payload := ws.Opcode(frame[0]&0x0f), frame[history.HeaderLen(frame):]
	switch kind {
	case kindMeta:
		return appendMeta(dst, epoch, offset, op, payload)
	case kindSSE:
		return appendSSE(dst, epoch, offset, op, payload)
	}
	return append(dst, frame...)
}

// appendPosition appends EPOCH:OFFSET.
func appendPosition(dst []byte, epoch string, offset uint64) []byte {
	dst = append(dst, epoch...)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, offset, 10)
}

// appendMeta appends a message as a wspubsub.meta subscriber gets it: the
// same frame type, the payload behind an "id: EPOCH:OFFSET\n\n" header.
func appendMeta(dst []byte, epoch string, offset uint64, op ws.Opcode, payload []byte) []byte {
	var hdr [4 + 64 + 1 + 20 + 2]byte
	h := append(hdr[:0], "id: "...)
	h = appendPosition(h, epoch, offset)
	h = append(h, "\n\n"...)
	dst = ws.AppendHeader(dst, op, len(h)+len(payload))
	dst = append(dst, h...)
	return append(dst, payload...)
}

// appendNotice appends, in kind's variant, a reset notice if reset and a
// gap notice for offsets gapFirst..gapLast of epoch if gapFirst > 0.
// Plain subscribers cannot see positions and get neither.
func appendNotice(dst []byte, kind int, epoch string, reset bool, gapFirst, gapLast uint64) []byte {
	kind = baseKind(kind)
	if kind == kindPlain {
		return dst
	}
	var b [8 + 64 + 2*21 + 2]byte
	if reset {
		p := append(b[:0], epoch...)
		dst = appendNoticeOf(dst, kind, "reset", p)
	}
	if gapFirst > 0 {
		p := appendPosition(b[:0], epoch, gapFirst)
		p = append(p, '-')
		p = strconv.AppendUint(p, gapLast, 10)
		dst = appendNoticeOf(dst, kind, "gap", p)
	}
	return dst
}

// appendNoticeOf appends one notice: for wspubsub.meta a text message
// "NAME: VALUE\n\n", for EventSource an event NAME with data VALUE.
func appendNoticeOf(dst []byte, kind int, name string, value []byte) []byte {
	if kind == kindSSE {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, "\ndata: "...)
		dst = append(dst, value...)
		return append(dst, "\n\n"...)
	}
	dst = ws.AppendHeader(dst, ws.OpText, len(name)+2+len(value)+2)
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\n\n"...)
}

// appendSSE appends a message as an EventSource event: its id is the
// position; a text message's lines are data lines (CR and CRLF arrive as
// LF, as EventSource reads them); a binary message is an event "binary"
// whose data is the payload in standard base64.
func appendSSE(dst []byte, epoch string, offset uint64, op ws.Opcode, payload []byte) []byte {
	if op == ws.OpBinary {
		dst = append(dst, "event: binary\n"...)
	}
	dst = append(dst, "id: "...)
	dst = appendPosition(dst, epoch, offset)
	dst = append(dst, '\n')
	if op == ws.OpBinary {
		dst = append(dst, "data: "...)
		dst = base64.StdEncoding.AppendEncode(dst, payload)
		return append(dst, "\n\n"...)
	}
	for {
		i := 0
		for i < len(payload) && payload[i] != '\n' && payload[i] != '\r' {
			i++
		}
		dst = append(dst, "data: "...)
		dst = append(dst, payload[:i]...)
		dst = append(dst, '\n')
		if i == len(payload) {
			break
		}
		if payload[i] == '\r' && i+1 < len(payload) && payload[i+1] == '\n' {
			i++
		}
		payload = payload[i+1:]
	}
	return append(dst, '\n')
}

// encodedLen is how many bytes e takes in kind's variant, at most (an
// offset is counted as 20 digits).
func encodedLen(kind int, epoch string, e *history.Entry) int {
	switch baseKind(kind) {
	case kindMeta:
		return len(e.Frame) + 8 + 4 + len(epoch) + 1 + 20 + 2
	case kindSSE:
		return sseLen(epoch, ws.Opcode(e.Opcode()), e.Payload())
	}
	return len(e.Frame)
}

// sseLen is what appendSSE appends for a message, at most: a text
// message's every line break costs a "data: " line of its own, so a
// payload of newlines takes seven times its size.
func sseLen(epoch string, op ws.Opcode, payload []byte) int {
	n := len("id: ") + len(epoch) + 1 + 20 + 1
	if op == ws.OpBinary {
		return n + len("event: binary\n") + len("data: ") + base64.StdEncoding.EncodedLen(len(payload)) + 2
	}
	lf, cr := bytes.Count(payload, []byte{'\n'}), bytes.Count(payload, []byte{'\r'})
	lines := lf + cr - bytes.Count(payload, []byte("\r\n")) + 1
	return n + lines*len("data: \n") + len(payload) - lf - cr + 1
}

// replayFor reads what a subscriber asking r is sent before the live
// stream; log's mutex is held. Entries that would take the replay past
// limit bytes are left out (at least one is kept): complete is false then,
// and the subscriber must not join, or it would miss them. With own, the
// hub assigns the topic's positions (it is no cluster node that follows
// an owner elsewhere).
func replayFor(log *history.Log, r resume, kind, limit int, now int64, own bool) (rp history.Replay, complete bool) {
	switch r.mode {
	case resumeRewind:
		rp = log.Rewind(r.n, now)
	case resumeSince:
		if own && log.Epoch() == "" {
			// No message yet: fix the epoch now, so that a client
			// resuming from an older one is told of the reset and the
			// messages to come carry this epoch from offset 1.
			log.Assign(0)
		}
		rp = log.Since(r.epoch, r.offset, now)
	default:
		return rp, true
	}
	size := 0
	for i := range rp.Entries {
		size += encodedLen(kind, log.Epoch(), &rp.Entries[i])
		if size > limit && i > 0 {
			rp.Entries = rp.Entries[:i]
			return rp, false
		}
	}
	return rp, true
}

// appendReplay appends a replay in kind's variant.
func appendReplay(dst []byte, kind int, epoch string, rp history.Replay) []byte {
	kind = baseKind(kind)
	dst = appendNotice(dst, kind, epoch, rp.Reset, rp.GapFirst, rp.GapLast)
	for i := range rp.Entries {
		dst = appendMessage(dst, kind, epoch, rp.Entries[i].Offset, rp.Entries[i].Frame)
	}
	return dst
}

// countReplay counts a replay in the metrics.
func (s *Server) countReplay(rp history.Replay, cut bool) {
	st := &s.stats
	st.Replayed.Add(int64(len(rp.Entries)))
	notices := 0
	if rp.Reset {
		notices++
	}
	if rp.GapFirst > 0 {
		notices++
	}
	st.GapNotices.Add(int64(notices))
	switch {
	case cut:
		st.replays[replayTruncated].Add(1)
	case notices > 0:
		st.replays[replayGap].Add(1)
	default:
		st.replays[replayComplete].Add(1)
	}
}

// sweepHistory drops every topic's entries older than the history TTL.
func (s *Server) sweepHistory(now int64) {
	if s.cfg.HistorySize <= 0 || s.cfg.HistoryTTL <= 0 {
		return
	}
	s.topics.Range(func(t *topics.Topic[*client]) {
		t.Log.Lock()
		t.Log.Expire(now)
		t.Log.Unlock()
	})
}
