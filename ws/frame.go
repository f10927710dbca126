package ws

import (
	"encoding/binary"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Opcode is a WebSocket frame's opcode.
type Opcode byte

// The opcodes of RFC 6455, section 5.2.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// Close codes the hub sends, and the two it never sends but reports. 1000-1011
// are RFC 6455's; 4000-4005 are the hub's own, documented in the README.
const (
	CloseNormal          uint16 = 1000
	CloseGoingAway       uint16 = 1001 // the hub is shutting down
	CloseProtocolError   uint16 = 1002
	CloseNoStatus        uint16 = 1005 // never sent: a close frame that carries no code
	CloseAbnormal        uint16 = 1006 // never sent: the connection ended without a close frame
	CloseInvalidPayload  uint16 = 1007 // invalid UTF-8 in a text message
	ClosePolicyViolation uint16 = 1008 // a subscriber sent more than it may
	CloseMessageTooBig   uint16 = 1009
	CloseInternalError   uint16 = 1011
	CloseSlowConsumer    uint16 = 4000 // a subscriber's backlog passed --max-backlog
	CloseTopicClosed     uint16 = 4001 // the publisher left and the grace period ran out
	CloseKeyRevoked      uint16 = 4002 // the publisher's key was revoked or deactivated
	CloseIdleTimeout     uint16 = 4003 // the peer did not answer pings
	ClosePublishRate     uint16 = 4004 // a publisher sent faster than its topic may
	CloseTokenExpired    uint16 = 4005 // a private domain's subscriber's token reached its exp
)

// CloseError is a protocol failure: the connection must be closed with Code.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string {
	return "ws: " + e.Reason + " (close " + strconv.Itoa(int(e.Code)) + ")"
}

func protocolError(reason string) error {
	return &CloseError{Code: CloseProtocolError, Reason: reason}
}

// MaxControlPayload is the largest payload a control frame may carry.
const MaxControlPayload = 125

// AppendHeader appends the header of a final, unmasked server frame whose
// payload is n bytes long.
func AppendHeader(dst []byte, op Opcode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// AppendFrame appends a final, unmasked server frame carrying payload.
func AppendFrame(dst []byte, op Opcode, payload []byte) []byte {
	return append(AppendHeader(dst, op, len(payload)), payload...)
}

// AppendClose appends a close frame with code and reason; a reason longer
// than a control frame allows is cut at a UTF-8 boundary.
func AppendClose(dst []byte, code uint16, reason string) []byte {
	if len(reason) > MaxControlPayload-2 {
		reason = reason[:MaxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	dst = AppendHeader(dst, OpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// ValidCloseCode reports whether a peer may send code in a close frame.
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// Handler receives what a Reader parses. A non-nil error stops the Reader
// and is returned by Feed.
type Handler interface {
	// Message is called with each complete text or binary message; payload
	// is valid only during the call. In discard mode it is not called.
	Message(op Opcode, payload []byte) error
	// Control is called with each ping, pong and close frame. A close
	// frame's payload has been checked: empty, or a valid code and UTF-8.
	Control(op Opcode, payload []byte) error
}

// Reader parses the client frames of one connection, across reads, and
// reassembles fragmented messages. It keeps at most one incomplete frame
// and one incomplete message, each bounded by MaxMessage.
type Reader struct {
	// MaxMessage is the largest message accepted; a larger one fails with
	// CloseMessageTooBig as soon as a frame header announces it.
	MaxMessage int
	// Discard skips the payloads of data frames without buffering them;
	// control frames are still parsed and handed to the Handler.
	Discard bool
	// Deflate is set when the peer negotiated permessage-deflate: RSV1 on
	// a message's first frame marks it compressed, and the Handler gets it
	// inflated, cut with CloseMessageTooBig as soon as it inflates past
	// MaxMessage. Without it RSV1 is a protocol error.
	Deflate bool

	pending []byte // an incomplete frame carried over from earlier reads
	msg     []byte // fragments of the message in progress
	msgOp   Opcode // the opcode of the message in progress, 0 when none
	msgZ    bool   // the message in progress is compressed
	msgLen  int    // bytes of the message in progress (also in discard mode)
	skip    int    // discard mode: payload bytes still to skip
	closed  bool   // a close frame arrived: everything after it is ignored
}

// Closed reports whether the peer has sent a close frame.
func (r *Reader) Closed() bool { return r.closed }

// Buffered is the number of bytes the Reader holds between calls.
func (r *Reader) Buffered() int { return len(r.pending) + len(r.msg) }

// Feed parses data. It unmasks payloads in place, so data is modified. It
// returns a *CloseError for a protocol failure, or the Handler's error.
func (r *Reader) Feed(data []byte, h Handler) error {
	if r.closed {
		return nil
	}
	if r.skip > 0 {
		k := min(r.skip, len(data))
		r.skip -= k
		data = data[k:]
	}
	buf := data
	carried := len(r.pending) > 0
	if carried {
		r.pending = append(r.pending, data...)
		buf = r.pending
	}
	for len(buf) > 0 && !r.closed {
		n, err := r.frame(buf, h)
		if err != nil {
			if n == 0 {
				// A protocol error: where the next frame starts is lost.
				r.pending = nil
				return err
			}
			// The Handler's error, after a whole frame: keep the rest, so a
			// caller who goes on feeding starts at a frame boundary.
			buf = buf[n:]
			if carried {
				r.pending = r.pending[:copy(r.pending, buf)]
			} else {
				r.pending = append(r.pending[:0], buf...)
			}
			return err
		}
		if n == 0 {
			break
		}
		buf = buf[n:]
	}
	if r.closed {
		buf = nil
	}
	switch {
	case len(buf) == 0:
		if cap(r.pending) > 4096 {
			r.pending = nil // do not keep a large buffer for an idle connection
		} else {
			r.pending = r.pending[:0]
		}
	case carried:
		r.pending = r.pending[:copy(r.pending, buf)]
	default:
		r.pending = append(r.pending[:0], buf...)
	}
	return nil
}

// frame handles the frame at the start of buf and returns the bytes it took,
// or 0 when buf does not hold the whole frame yet.
func (r *Reader) frame(buf []byte, h Handler) (int, error) {
	if len(buf) < 2 {
		return 0, nil
	}
	b0, b1 := buf[0], buf[1]
	fin, op := b0&0x80 != 0, Opcode(b0&0x0f)
	compressed := b0&0x40 != 0
	switch {
	case b0&0x30 != 0, compressed && !r.Deflate:
		return 0, protocolError("reserved bits set without an extension")
	case compressed && op != OpText && op != OpBinary:
		// RFC 7692 6: only a message's first frame carries RSV1.
		return 0, protocolError("RSV1 set on a control or continuation frame")
	}
	if b1&0x80 == 0 {
		return 0, protocolError("client frame not masked")
	}
	hlen, plen := 2, uint64(b1&0x7f)
	switch plen {
	case 126:
		if len(buf) < 4 {
			return 0, nil
		}
		hlen, plen = 4, uint64(binary.BigEndian.Uint16(buf[2:]))
	case 127:
		if len(buf) < 10 {
			return 0, nil
		}
		hlen, plen = 10, binary.BigEndian.Uint64(buf[2:])
		if plen>>63 != 0 {
			return 0, protocolError("payload length has its top bit set")
		}
	}
	hlen += 4 // masking key

	control := op >= OpClose
	switch {
	case control && op > OpPong, !control && op > OpBinary:
		return 0, protocolError("reserved opcode " + strconv.Itoa(int(op)))
	case control && !fin:
		return 0, protocolError("fragmented control frame")
	case control && plen > MaxControlPayload:
		return 0, protocolError("control frame longer than 125 bytes")
	case op == OpContinuation && r.msgOp == 0:
		return 0, protocolError("continuation frame without a message to continue")
	case (op == OpText || op == OpBinary) && r.msgOp != 0:
		return 0, protocolError("new message before the fragmented one ended")
	}
	if !control {
		if plen > uint64(r.MaxMessage-r.msgLen) {
			// Skip the rest of this frame, so that a caller who goes on
			// feeding (in discard mode, waiting for the peer's close frame)
			// finds the next frame's start.
			if end := uint64(hlen) + plen; end > uint64(len(buf)) {
				r.skip = int(min(end-uint64(len(buf)), 1<<62))
			}
			r.msg, r.msgOp, r.msgLen, r.msgZ = nil, 0, 0, false
			return 0, &CloseError{Code: CloseMessageTooBig, Reason: "message larger than " + strconv.Itoa(r.MaxMessage) + " bytes"}
		}
		if r.Discard {
			return r.discard(buf, hlen, int(plen), fin, op), nil
		}
	}
	if len(buf) < hlen || uint64(len(buf)-hlen) < plen {
		return 0, nil
	}
	n := hlen + int(plen)
	payload := buf[hlen:n]
	unmask(payload, [4]byte(buf[hlen-4:hlen]))

	if control {
		if op == OpClose {
			if err := checkClosePayload(payload); err != nil {
				return 0, err
			}
			r.closed = true
		}
		return n, h.Control(op, payload)
	}
	if op != OpContinuation {
		if fin {
			return n, r.deliver(h, op, payload, compressed)
		}
		r.msgOp, r.msgLen, r.msgZ = op, len(payload), compressed
		r.msg = append(r.msg[:0], payload...)
		return n, nil
	}
	r.msg = append(r.msg, payload...)
	r.msgLen = len(r.msg)
	if !fin {
		return n, nil
	}
	err := r.deliver(h, r.msgOp, r.msg, r.msgZ)
	r.msgOp, r.msgLen, r.msgZ = 0, 0, false
	if cap(r.msg) > 64<<10 {
		r.msg = nil
	} else {
		r.msg = r.msg[:0]
	}
	return n, err
}

// discard consumes a data frame without buffering its payload.
func (r *Reader) discard(buf []byte, hlen, plen int, fin bool, op Opcode) int {
	if len(buf) < hlen {
		return 0
	}
	if op != OpContinuation {
		r.msgOp = op
	}
	r.msgLen += plen
	if fin {
		r.msgOp, r.msgLen = 0, 0
	}
	if avail := len(buf) - hlen; avail < plen {
		r.skip = plen - avail
		return len(buf)
	}
	return hlen + plen
}

// inflateBufs holds the buffers compressed messages are inflated into, for
// the length of one Handler call.
var inflateBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// deliver hands a whole message to h, inflating it first if compressed.
func (r *Reader) deliver(h Handler, op Opcode, payload []byte, compressed bool) error {
	if !compressed {
		return deliver(h, op, payload)
	}
	bp := inflateBufs.Get().(*[]byte)
	out, err := Inflate((*bp)[:0], payload, r.MaxMessage)
	if err == nil {
		err = deliver(h, op, out)
	}
	if cap(out) <= 1<<20 {
		*bp = out[:0]
		inflateBufs.Put(bp)
	}
	return err
}

func deliver(h Handler, op Opcode, payload []byte) error {
	if op == OpText && !utf8.Valid(payload) {
		return &CloseError{Code: CloseInvalidPayload, Reason: "text message is not valid UTF-8"}
	}
	return h.Message(op, payload)
}

func checkClosePayload(p []byte) error {
	switch {
	case len(p) == 0:
		return nil
	case len(p) == 1:
		return protocolError("close frame with a 1-byte payload")
	case !ValidCloseCode(binary.BigEndian.Uint16(p)):
		return protocolError("invalid close code " + strconv.Itoa(int(binary.BigEndian.Uint16(p))))
	case !utf8.Valid(p[2:]):
		return &CloseError{Code: CloseInvalidPayload, Reason: "close reason is not valid UTF-8"}
	}
	return nil
}

// unmask XORs b with the masking key, eight bytes at a time.
func unmask(b []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}
