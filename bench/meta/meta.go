// Package meta is the client side of the wspubsub.meta subprotocol: the
// header a hub puts in front of every message it delivers to a subscriber
// that offered the subprotocol, and the gap and reset notices it sends.
//
//	id: EPOCH:OFFSET\n\n<the published bytes>   a message and its position
//	gap: EPOCH:FIRST-LAST\n\n                  offsets FIRST..LAST will not come
//	reset: EPOCH\n\n                           the topic restarted; EPOCH counts from 1
//
// EPOCH is 1 to MaxEpoch characters of [A-Za-z0-9]; offsets are decimal,
// from 1. The header ends at the first "\n\n" and is one line: anything
// else is ErrMalformed, so a load run notices a hub that gets it wrong.
//
// Concurrency contract: pure functions over caller-owned bytes; safe from
// any goroutine. Parse does not allocate: what it returns aliases its input.
package meta

import (
	"bytes"
	"errors"
	"strconv"
)

// Protocol is the subprotocol a subscriber offers in
// Sec-WebSocket-Protocol to get positions.
const Protocol = "wspubsub.meta"

// MaxEpoch bounds an epoch's length. The hub's are about 12 characters.
const MaxEpoch = 64

// Kind says what a header is.
type Kind uint8

// The kinds of header.
const (
	ID    Kind = iota + 1 // a message: Epoch, Offset
	Gap                   // a gap notice: Epoch, First, Last
	Reset                 // a reset notice: Epoch
)

func (k Kind) String() string {
	switch k {
	case ID:
		return "id"
	case Gap:
		return "gap"
	case Reset:
		return "reset"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Header is one parsed header. Epoch aliases the message it was parsed from.
type Header struct {
	Kind   Kind
	Epoch  []byte
	Offset uint64 // ID
	First  uint64 // Gap
	Last   uint64 // Gap
}

// ErrMalformed reports a message that does not start with a well-formed
// header.
var ErrMalformed = errors.New("meta: malformed header")

// Parse splits a message received under the subprotocol into its header
// and its body (the published bytes for an ID, empty for a notice).
func Parse(msg []byte) (h Header, body []byte, err error) {
	end := bytes.Index(msg, []byte("\n\n"))
	if end < 0 {
		return Header{}, nil, ErrMalformed
	}
	line, body := msg[:end], msg[end+2:]
	name, value, ok := bytes.Cut(line, []byte(": "))
	if !ok {
		return Header{}, nil, ErrMalformed
	}
	switch string(name) {
	case "id":
		h.Kind = ID
		e, off, ok := bytes.Cut(value, []byte(":"))
		if !ok {
			return Header{}, nil, ErrMalformed
		}
		h.Epoch = e
		if h.Offset, ok = offset(off); !ok {
			return Header{}, nil, ErrMalformed
		}
	case "gap":
		h.Kind = Gap
		if len(body) != 0 {
			return Header{}, nil, ErrMalformed
		}
		e, span, ok := bytes.Cut(value, []byte(":"))
		if !ok {
			return Header{}, nil, ErrMalformed
		}
		h.Epoch = e
		first, last, ok := bytes.Cut(span, []byte("-"))
		if !ok {
			return Header{}, nil, ErrMalformed
		}
		var ok1, ok2 bool
		h.First, ok1 = offset(first)
		h.Last, ok2 = offset(last)
		if !ok1 || !ok2 || h.First > h.Last {
			return Header{}, nil, ErrMalformed
		}
	case "reset":
		h.Kind = Reset
		if len(body) != 0 {
			return Header{}, nil, ErrMalformed
		}
		h.Epoch = value
	default:
		return Header{}, nil, ErrMalformed
	}
	if !epoch(h.Epoch) {
		return Header{}, nil, ErrMalformed
	}
	return h, body, nil
}

// epoch reports whether e is 1 to MaxEpoch characters of [A-Za-z0-9].
func epoch(e []byte) bool {
	if len(e) == 0 || len(e) > MaxEpoch {
		return false
	}
	for _, c := range e {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// offset parses a decimal offset: digits only, no leading zero, at least 1,
// no overflow.
func offset(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 || b[0] == '0' {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// AppendPosition appends EPOCH:OFFSET, the value of a since query, to dst.
func AppendPosition(dst, epoch []byte, offset uint64) []byte {
	dst = append(dst, epoch...)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, offset, 10)
}
