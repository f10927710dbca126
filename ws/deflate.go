package ws

import (
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/klauspost/compress/flate"
)

// The hub speaks permessage-deflate (RFC 7692) without context takeover in
// either direction: every compressed message is a deflate stream of its
// own, so no connection keeps compression state, and one compressed frame
// serves every subscriber that negotiated the extension.

// DeflateResponse is the extension the hub answers an acceptable
// permessage-deflate offer with.
const DeflateResponse = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// AcceptDeflate reports whether a Sec-WebSocket-Extensions list (several
// headers joined with commas) holds a permessage-deflate offer the hub can
// honour, answered with DeflateResponse. Offers are tried in order; one
// with an unknown or duplicated parameter, a malformed value or a
// server_max_window_bits below 15 (the hub compresses with a 32 KiB window)
// is declined and the next one tried. A malformed list accepts nothing.
func AcceptDeflate(list string) bool {
	p := extParser{s: list}
	for !p.done() {
		name, ok := p.token()
		if !ok {
			return false
		}
		good := name == "permessage-deflate"
		var seen uint8
		for p.skipSpace(); p.peek() == ';'; p.skipSpace() {
			p.i++
			p.skipSpace()
			param, ok := p.token()
			if !ok {
				return false
			}
			var value string
			hasValue := false
			p.skipSpace()
			if p.peek() == '=' {
				p.i++
				p.skipSpace()
				if value, ok = p.value(); !ok {
					return false
				}
				hasValue = true
			}
			if !good {
				continue
			}
			bit := uint8(0)
			switch param {
			case "server_no_context_takeover":
				bit, good = 1, !hasValue
			case "client_no_context_takeover":
				bit, good = 2, !hasValue
			case "server_max_window_bits":
				// We must not use a larger window than this: only 15 is
				// what the hub's compressor does.
				bit, good = 4, hasValue && windowBits(value) == 15
			case "client_max_window_bits":
				// The client may use a window this small; any is fine
				// to inflate.
				bit, good = 8, !hasValue || windowBits(value) > 0
			default:
				good = false
			}
			if seen&bit != 0 {
				good = false
			}
			seen |= bit
		}
		switch p.peek() {
		case ',':
			p.i++
		case 0:
		default:
			return false
		}
		if good {
			return true
		}
	}
	return false
}

// windowBits parses a window size parameter: 8 to 15, or 0 if it is not.
func windowBits(v string) int {
	if len(v) == 0 || len(v) > 2 || v[0] == '0' {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 15 {
		return 0
	}
	return n
}

// extParser scans a Sec-WebSocket-Extensions value (RFC 7230 lists of
// tokens with parameters, values tokens or quoted strings).
type extParser struct {
	s string
	i int
}

func (p *extParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *extParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// done skips empty list elements and reports whether the list ended.
func (p *extParser) done() bool {
	for {
		p.skipSpace()
		if p.peek() != ',' {
			return p.i >= len(p.s)
		}
		p.i++
	}
}

func (p *extParser) token() (string, bool) {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i], p.i > start
}

// value reads a token or a quoted string, whose content must be a token
// (RFC 7692 7: a quoted value is unquoted before it is checked).
func (p *extParser) value() (string, bool) {
	if p.peek() != '"' {
		return p.token()
	}
	p.i++
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != '"' {
		if !isTokenChar(p.s[p.i]) {
			return "", false
		}
		p.i++
	}
	if p.i >= len(p.s) || p.i == start {
		return "", false
	}
	v := p.s[start:p.i]
	p.i++
	return v, true
}

func isTokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '"', '(', ')', ',', '/', ':', ';', '<', '=', '>', '?', '@', '[', '\\', ']', '{', '}':
		return false
	}
	return true
}

// deflateTail is what a sync flush ends a deflate stream with, and RFC 7692
// 7.2.1 takes off a compressed message's payload.
const deflateTail = "\x00\x00\xff\xff"

// DeflateLevel is the compression level of AppendCompressed: 1 (fastest)
// to 9 (smallest). Messages are compressed once per topic, not per
// subscriber, so a middling level costs little.
const DeflateLevel = 5

// compressor is a reusable deflate writer and the buffer it writes into.
type compressor struct {
	w   *flate.Writer
	dst []byte
}

func (c *compressor) Write(p []byte) (int, error) {
	c.dst = append(c.dst, p...)
	return len(p), nil
}

// compressors keeps a bounded number of idle compressors (each holds a few
// hundred KiB of tables): a publish takes one for the length of its
// encoding, so at most one per publish in flight exists.
var compressors = make(chan *compressor, 16)

func getCompressor() *compressor {
	select {
	case c := <-compressors:
		return c
	default:
	}
	c := new(compressor)
	c.w, _ = flate.NewWriter(c, DeflateLevel) // a valid level: no error
	return c
}

func putCompressor(c *compressor) {
	c.dst = nil
	select {
	case compressors <- c:
	default:
	}
}

// AppendCompressed appends a final, unmasked server frame carrying payload
// compressed with permessage-deflate (RSV1 set), as a stream of its own.
// It allocates nothing once the hub's compressors are warm and dst has
// room.
func AppendCompressed(dst []byte, op Opcode, payload []byte) []byte {
	c := getCompressor()
	// The header's length is not known before the payload is compressed:
	// leave room for the longest header and move the payload down after.
	at := len(dst)
	c.dst = append(dst, make([]byte, 10)...)
	c.w.Reset(c)
	c.w.Write(payload) // writes to c cannot fail
	c.w.Flush()
	out := c.dst
	putCompressor(c)
	if len(out) < at+10+len(deflateTail) || string(out[len(out)-len(deflateTail):]) != deflateTail {
		return AppendFrame(out[:at], op, payload) // never so after a sync flush
	}
	out = out[:len(out)-len(deflateTail)]
	n := len(out) - at - 10
	var hdr [10]byte
	h := AppendHeader(hdr[:0], op, n)
	h[0] |= 0x40 // RSV1: compressed
	copy(out[at:], h)
	copy(out[at+len(h):], out[at+10:])
	return out[:at+len(h)+n]
}

var errTruncated = errors.New("ws: truncated frame")

// FrameLen returns the length of the server frame at the start of b (header
// and payload) and where its payload starts, or an error if b does not hold
// it whole.
func FrameLen(b []byte) (n, hlen int, err error) {
	if len(b) < 2 {
		return 0, 0, errTruncated
	}
	hlen, plen := 2, uint64(b[1]&0x7f)
	switch plen {
	case 126:
		if len(b) < 4 {
			return 0, 0, errTruncated
		}
		hlen, plen = 4, uint64(b[2])<<8|uint64(b[3])
	case 127:
		if len(b) < 10 {
			return 0, 0, errTruncated
		}
		hlen = 10
		plen = 0
		for _, c := range b[2:10] {
			plen = plen<<8 | uint64(c)
		}
	}
	if plen > uint64(len(b)-hlen) {
		return 0, 0, errTruncated
	}
	return hlen + int(plen), hlen, nil
}

// inflater is a reusable deflate reader and the input it reads: a
// message's compressed payload, then the tail RFC 7692 7.2.2 appends and
// an empty final block, so the stream ends.
type inflater struct {
	r    io.ReadCloser
	in   []byte
	tail string
}

const inflateTail = deflateTail + "\x01\x00\x00\xff\xff"

func (f *inflater) Read(p []byte) (int, error) {
	if len(f.in) > 0 {
		n := copy(p, f.in)
		f.in = f.in[n:]
		return n, nil
	}
	if f.tail == "" {
		return 0, io.EOF
	}
	n := copy(p, f.tail)
	f.tail = f.tail[n:]
	return n, nil
}

func (f *inflater) ReadByte() (byte, error) {
	if len(f.in) > 0 {
		c := f.in[0]
		f.in = f.in[1:]
		return c, nil
	}
	if f.tail == "" {
		return 0, io.EOF
	}
	c := f.tail[0]
	f.tail = f.tail[1:]
	return c, nil
}

// inflaters holds idle inflaters; one is taken for one message only.
var inflaters = sync.Pool{New: func() any {
	f := new(inflater)
	f.r = flate.NewReader(f)
	return f
}}

// Inflate appends to dst the payload of a permessage-deflate message
// (without context takeover) compressed in z, failing with
// CloseMessageTooBig as soon as it would pass limit bytes: a message that
// inflates past the limit is never inflated in full. A payload that is not
// deflate data fails with CloseInvalidPayload. Inflaters are pooled: it
// allocates nothing once warm, but for growing dst.
func Inflate(dst, z []byte, limit int) ([]byte, error) {
	f := inflaters.Get().(*inflater)
	f.in, f.tail = z, inflateTail
	defer func() {
		f.in = nil
		inflaters.Put(f)
	}()
	if err := f.r.(flate.Resetter).Reset(f, nil); err != nil {
		return dst, &CloseError{Code: CloseInvalidPayload, Reason: "compressed message is not valid deflate data"}
	}
	base := len(dst)
	for {
		room := limit + 1 - (len(dst) - base) // one byte past the limit tells
		if len(dst) == cap(dst) {
			grow := min(max(len(dst)-base, 4096), room)
			dst = append(dst, make([]byte, grow)...)[:len(dst)]
		}
		n, err := f.r.Read(dst[len(dst):min(cap(dst), len(dst)+room)])
		dst = dst[:len(dst)+n]
		switch {
		case len(dst)-base > limit:
			return dst[:base], &CloseError{Code: CloseMessageTooBig, Reason: "message inflates to more than " + strconv.Itoa(limit) + " bytes"}
		case err == io.EOF:
			return dst, nil
		case err != nil:
			return dst[:base], &CloseError{Code: CloseInvalidPayload, Reason: "compressed message is not valid deflate data"}
		}
	}
}
