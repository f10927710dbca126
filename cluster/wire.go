package cluster

import (
	"encoding/binary"
	"errors"

	"github.com/wspubsub/wspubsub/history"
)

// A NATS message between nodes is a small header followed by a part of a
// run of complete server WebSocket frames, exactly as the publishing node
// encoded them for its own subscribers:
//
//	version  1 byte (1)
//	flags    1 byte (bit 0: more parts of this run follow; bit 1: this is
//	         not the run's first part)
//	sender   8 bytes, big endian: the publishing claim, random
//	seq      8 bytes, big endian: 1, 2, 3… per sender, one per NATS message
//	sent     8 bytes, big endian: publish time, Unix nanoseconds
//	msgs     uvarint: messages in the whole run
//	payload  uvarint: their payload bytes
//	first    uvarint: the offset of the run's first message
//	epoch    1 byte of length, then the topic's epoch (history.ValidEpoch)
//	data     the frames (or the part of them)
//
// The positions are the publishing node's: it owns the topic, so every node
// keeps the topic's history under the same epoch and offsets.
//
// A run larger than the NATS server's max_payload is sent in parts, in
// order, under one lock, so that they reach each receiver contiguously.

const (
	wireVersion   = 2
	flagMore      = 1
	flagCont      = 2
	fixedHeader   = 26
	maxHeaderSize = fixedHeader + 3*binary.MaxVarintLen64 + 1 + maxEpoch
	maxEpoch      = 64
)

// header is a decoded message header.
type header struct {
	more, cont    bool
	sender, seq   uint64
	sent          int64
	msgs, payload int
	first         uint64
	epoch         string
}

func appendHeader(b []byte, h header) []byte {
	flags := byte(0)
	if h.more {
		flags |= flagMore
	}
	if h.cont {
		flags |= flagCont
	}
	b = append(b, wireVersion, flags)
	b = binary.BigEndian.AppendUint64(b, h.sender)
	b = binary.BigEndian.AppendUint64(b, h.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(h.sent))
	b = binary.AppendUvarint(b, uint64(h.msgs))
	b = binary.AppendUvarint(b, uint64(h.payload))
	b = binary.AppendUvarint(b, h.first)
	b = append(b, byte(len(h.epoch)))
	return append(b, h.epoch...)
}

var errMalformed = errors.New("cluster: malformed message from another node")

// parseHeader splits a message into its header and data.
func parseHeader(b []byte) (header, []byte, error) {
	var h header
	if len(b) < fixedHeader || b[0] != wireVersion || b[1]&^(flagMore|flagCont) != 0 {
		return h, nil, errMalformed
	}
	h.more, h.cont = b[1]&flagMore != 0, b[1]&flagCont != 0
	h.sender = binary.BigEndian.Uint64(b[2:])
	h.seq = binary.BigEndian.Uint64(b[10:])
	h.sent = int64(binary.BigEndian.Uint64(b[18:]))
	b = b[fixedHeader:]
	msgs, n := binary.Uvarint(b)
	if n <= 0 || msgs > 1<<31 {
		return h, nil, errMalformed
	}
	b = b[n:]
	payload, n := binary.Uvarint(b)
	if n <= 0 || payload > 1<<40 {
		return h, nil, errMalformed
	}
	h.msgs, h.payload = int(msgs), int(payload)
	b = b[n:]
	first, n := binary.Uvarint(b)
	if n <= 0 || first == 0 || len(b) < n+1 {
		return h, nil, errMalformed
	}
	b = b[n:]
	el := int(b[0])
	if el > maxEpoch || len(b) < 1+el || !history.ValidEpoch(string(b[1:1+el])) {
		return h, nil, errMalformed
	}
	h.first, h.epoch = first, string(b[1:1+el])
	return h, b[1+el:], nil
}
