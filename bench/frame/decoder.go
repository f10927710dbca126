package frame

import (
	"encoding/binary"
	"fmt"

	"github.com/wspubsub/wspubsub/ws"
)

// DefaultMaxMessage is the message size limit of a zero Decoder.
const DefaultMaxMessage = 16 << 20

// Decoder parses the frames a server sends from a byte stream that arrives in
// reads of any size. The caller reads into a scratch buffer shared by all its
// connections:
//
//	head := d.Prepare(scratch)          // carry over an incomplete frame
//	n, _ := read(fd, scratch[head:])
//	d.Start(scratch[:head+n])
//	for {
//		op, payload, ok, err := d.Next()
//		if err != nil || !ok { break }
//		// payload is valid until the next call of Next or Finish
//	}
//	d.Finish()                          // keep the incomplete tail
//
// Fragmented data messages are reassembled; control frames that arrive in
// the middle of one are returned at once.
type Decoder struct {
	// MaxMessage bounds a message's size; 0 means DefaultMaxMessage.
	MaxMessage int
	// Inflate is set once permessage-deflate is agreed: a data message
	// whose first frame has RSV1 set is inflated (no context takeover) and
	// returned inflated.
	Inflate bool
	// Raw, with Inflate, returns compressed messages as they came, not
	// inflated (Compressed then reports true): for a load generator that
	// counts messages on most connections and checks them on a few, so
	// that inflating does not take the cores the server is measured on.
	Raw bool

	pending []byte // bytes of an incomplete frame carried between reads
	buf     []byte // the bytes of the current read, pending included
	off     int    // parse position in buf
	frag    []byte // payload of a fragmented message being assembled
	fragOp  byte   // opcode of that message; 0 when none is open
	fragZ   bool   // that message is compressed
	z       []byte // the last inflated message
	raw     bool   // the last message was returned compressed (Raw)
}

// Prepare copies the incomplete frame left by the previous read to the front
// of scratch and returns its length: the next read goes to scratch[head:].
// scratch must be longer than the largest frame plus one read.
func (d *Decoder) Prepare(scratch []byte) (head int) {
	head = copy(scratch, d.pending)
	d.pending = d.pending[:0]
	return head
}

// Need reports how many bytes the incomplete frame kept by the last Finish
// needs in total, or 0 when it is not known yet. Callers use it to size the
// scratch buffer for frames larger than usual.
func (d *Decoder) Need() int {
	size, _, ok := frameSize(d.pending)
	if !ok {
		return 0
	}
	return size
}

// Pending returns the number of bytes kept between reads.
func (d *Decoder) Pending() int { return len(d.pending) }

// Start begins parsing buf, which must start with the bytes Prepare put back.
func (d *Decoder) Start(buf []byte) {
	d.buf = buf
	d.off = 0
}

// frameSize returns the total length of the frame starting at b and the
// length of its header; ok is false while the header itself is incomplete.
func frameSize(b []byte) (total, header int, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	l := int(b[1] & 0x7f)
	header = 2
	switch l {
	case 126:
		if len(b) < 4 {
			return 0, 0, false
		}
		l = int(binary.BigEndian.Uint16(b[2:]))
		header = 4
	case 127:
		if len(b) < 10 {
			return 0, 0, false
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u > 1<<40 {
			u = 1 << 40
		}
		l = int(u)
		header = 10
	}
	if b[1]&0x80 != 0 {
		header += 4
	}
	return header + l, header, true
}

// Next returns the next complete message or control frame. ok is false when
// the buffer holds no further complete frame; call Finish then. An error means
// the stream is broken and the connection must be dropped.
func (d *Decoder) Next() (op byte, payload []byte, ok bool, err error) {
	max := d.MaxMessage
	if max <= 0 {
		max = DefaultMaxMessage
	}
	d.raw = false
	for {
		b := d.buf[d.off:]
		total, header, complete := frameSize(b)
		if !complete {
			return 0, nil, false, nil
		}
		if b[1]&0x80 != 0 {
			return 0, nil, false, ErrMaskedServerFrame
		}
		fop := b[0] & 0x0f
		z := b[0]&0x40 != 0
		if b[0]&0x30 != 0 || z && (!d.Inflate || (fop != OpText && fop != OpBinary)) {
			return 0, nil, false, ErrReservedBits
		}
		if total-header > max {
			return 0, nil, false, ErrTooLarge
		}
		if len(b) < total {
			return 0, nil, false, nil
		}
		d.off += total
		fin := b[0]&0x80 != 0
		p := b[header:total]
		if fop >= OpClose {
			if !fin || len(p) > 125 {
				return 0, nil, false, ErrBadControlFrame
			}
			return fop, p, true, nil
		}
		if fop == OpContinuation {
			if d.fragOp == 0 {
				return 0, nil, false, ErrUnexpectedCont
			}
			if len(d.frag)+len(p) > max {
				return 0, nil, false, ErrTooLarge
			}
			d.frag = append(d.frag, p...)
			if !fin {
				continue
			}
			op = d.fragOp
			d.fragOp = 0
			payload = d.frag
			d.frag = d.frag[:0]
			if d.fragZ {
				return d.inflate(op, payload, max)
			}
			return op, payload, true, nil
		}
		if d.fragOp != 0 {
			return 0, nil, false, ErrExpectedCont
		}
		if fin {
			if z {
				return d.inflate(fop, p, max)
			}
			return fop, p, true, nil
		}
		d.fragOp, d.fragZ = fop, z
		d.frag = append(d.frag[:0], p...)
	}
}

// inflate returns a compressed message's payload inflated.
func (d *Decoder) inflate(op byte, z []byte, max int) (byte, []byte, bool, error) {
	if d.Raw {
		d.raw = true
		return op, z, true, nil
	}
	out, err := ws.Inflate(d.z[:0], z, max)
	if err != nil {
		return 0, nil, false, fmt.Errorf("frame: cannot inflate a message: %w", err)
	}
	if cap(out) <= 1<<20 {
		d.z = out
	}
	return op, out, true, nil
}

// Compressed reports whether the message Next returned last came
// compressed and was left so (Raw).
func (d *Decoder) Compressed() bool { return d.raw }

// Finish keeps the unparsed tail of the current read for the next one.
func (d *Decoder) Finish() {
	tail := d.buf[d.off:]
	d.pending = append(d.pending[:0], tail...)
	d.buf = nil
	d.off = 0
}
