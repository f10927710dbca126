// Package payload is the layout of the messages the load generator publishes:
// a header with the publisher id, the sequence number and the send time, then
// padding up to the requested size, ending in a trailer that repeats the
// sequence number so a truncated or altered message is noticed.
//
// Concurrency contract: pure functions over caller-owned buffers; safe from
// any goroutine, no allocation.
package payload

import (
	"encoding/binary"
	"errors"
)

// Layout, little endian:
//
//	0..4    magic "WSPB"
//	4..8    publisher id (uint32)
//	8..16   sequence number (uint64), counting from 0
//	16..24  send time, CLOCK_REALTIME nanoseconds (int64)
//	24..n-8 padding 0x5A
//	n-8..n  sequence number xor trailerMix
const (
	// MinSize is the smallest message the layout fits in.
	MinSize    = 32
	magic      = 0x42505357 // "WSPB"
	trailerMix = 0xA5A5A5A5A5A5A5A5
	padByte    = 0x5A
)

// ErrCorrupt reports a message that is not one this package wrote, or was
// altered on the way.
var ErrCorrupt = errors.New("payload: message is not intact")

// Fill writes a message of len(b) bytes into b, which must be at least
// MinSize long.
func Fill(b []byte, pub uint32, seq uint64, sentNs int64) {
	binary.LittleEndian.PutUint32(b[0:], magic)
	binary.LittleEndian.PutUint32(b[4:], pub)
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(sentNs))
	n := len(b)
	pad := b[24 : n-8]
	for i := range pad {
		pad[i] = padByte
	}
	binary.LittleEndian.PutUint64(b[n-8:], seq^trailerMix)
}

// Stamp rewrites only the sequence number, send time and trailer of a
// message Fill made earlier with the same size and publisher: the cheap path
// for a publisher that reuses one buffer.
func Stamp(b []byte, seq uint64, sentNs int64) {
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(sentNs))
	binary.LittleEndian.PutUint64(b[len(b)-8:], seq^trailerMix)
}

// Parse reads the header of a message and checks its magic, its size against
// want (0 skips that check) and its trailer. The padding is not read, so
// checking costs the same for every size.
func Parse(b []byte, want int) (pub uint32, seq uint64, sentNs int64, err error) {
	n := len(b)
	if n < MinSize || (want > 0 && n != want) || binary.LittleEndian.Uint32(b) != magic {
		return 0, 0, 0, ErrCorrupt
	}
	pub = binary.LittleEndian.Uint32(b[4:])
	seq = binary.LittleEndian.Uint64(b[8:])
	sentNs = int64(binary.LittleEndian.Uint64(b[16:]))
	if binary.LittleEndian.Uint64(b[n-8:]) != seq^trailerMix || b[24] != padByte && n > 32 || b[n-9] != padByte && n > 32 {
		return 0, 0, 0, ErrCorrupt
	}
	return pub, seq, sentNs, nil
}
