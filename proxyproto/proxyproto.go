// Package proxyproto parses the PROXY protocol header (HAProxy's
// proxy-protocol.txt, versions 1 and 2) that a load balancer sends at the
// start of a TCP connection to say whom it carries the connection for.
//
// Parse is a pure function of its input: it keeps nothing, allocates
// nothing for a v2 header and one string of the line for a v1 header, and
// may be called from any goroutine. It never trusts the
// header: whether the peer may send one is the caller's decision.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
)

var (
	// ErrIncomplete means the buffer holds the start of a header and more
	// bytes are needed.
	ErrIncomplete = errors.New("proxyproto: header incomplete")
	// ErrMissing means the bytes do not start with a PROXY header at all.
	ErrMissing = errors.New("proxyproto: no PROXY protocol header")
	// ErrMalformed means the bytes start like a PROXY header but are not a
	// valid one.
	ErrMalformed = errors.New("proxyproto: malformed PROXY protocol header")
	// ErrTooLarge means a version 2 header is longer than the caller's
	// bound.
	ErrTooLarge = errors.New("proxyproto: PROXY protocol header too large")
)

// Header is what a PROXY header says.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local is true when the connection is the proxy's own (v2 LOCAL, for
	// its health checks) or of an unknown kind (v1 UNKNOWN, v2 UNSPEC):
	// it carries no client address, and Source and Dest are zero.
	Local bool
	// Source is the client's address and port, Dest the address and port
	// it connected to on the proxy. IPv4-mapped IPv6 addresses are
	// unmapped.
	Source, Dest netip.AddrPort
}

const (
	// v1Max is the longest a v1 header may be, CRLF included.
	v1Max = 107
	// v2Fixed is the length of a v2 header's fixed part.
	v2Fixed = 16
)

var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// Parse reads the PROXY header at the start of buf, of either version. It
// returns the header and its length in bytes; ErrIncomplete when buf is a
// proper prefix of a header; ErrMissing when buf cannot start one;
// ErrMalformed for an invalid header; ErrTooLarge for a v2 header longer
// than max bytes (a v1 header is at most 107 bytes, whatever max). A v2
// header's TLVs are skipped unread.
func Parse(buf []byte, max int) (Header, int, error) {
	switch {
	case len(buf) == 0:
		return Header{}, 0, ErrIncomplete
	case hasPrefix(buf, v1Sig):
		return parseV1(buf)
	case hasPrefix(buf, v2Sig):
		return parseV2(buf, max)
	}
	return Header{}, 0, ErrMissing
}

// hasPrefix reports whether buf starts with sig, and errs on the side of
// yes for a buf too short to tell: a prefix of sig is treated as if the
// rest will follow, and Parse sorts it out once it has.
func hasPrefix(buf, sig []byte) bool {
	n := min(len(buf), len(sig))
	return n > 0 && bytes.Equal(buf[:n], sig[:n])
}

// parseV1 reads "PROXY TCP4 SRC DST SPORT DPORT\r\n" (or TCP6, or
// "PROXY UNKNOWN ...\r\n").
func parseV1(buf []byte) (Header, int, error) {
	if len(buf) < len(v1Sig) {
		return Header{}, 0, ErrIncomplete
	}
	end := bytes.Index(buf[:min(len(buf), v1Max)], []byte("\r\n"))
	if end < 0 {
		if len(buf) >= v1Max {
			return Header{}, 0, ErrMalformed
		}
		if bytes.IndexByte(buf, '\n') >= 0 {
			return Header{}, 0, ErrMalformed // a bare LF: never a header
		}
		return Header{}, 0, ErrIncomplete
	}
	n := end + 2
	h := Header{Version: 1}
	if bytes.HasPrefix(buf[len(v1Sig):end], []byte("UNKNOWN")) && (end == len(v1Sig)+7 || buf[len(v1Sig)+7] == ' ') {
		h.Local = true // the rest of the line is ignored, as the spec says
		return h, n, nil
	}
	line := string(buf[len(v1Sig):end])
	var f [5]string // protocol, addresses, ports: single spaces between
	for k := 0; k < 4; k++ {
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			return Header{}, 0, ErrMalformed
		}
		f[k], line = line[:i], line[i+1:]
	}
	f[4] = line
	if strings.IndexByte(f[4], ' ') >= 0 {
		return Header{}, 0, ErrMalformed
	}
	var want4 bool
	switch f[0] {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return Header{}, 0, ErrMalformed
	}
	src, ok1 := parseV1Addr(f[1], want4)
	dst, ok2 := parseV1Addr(f[2], want4)
	sport, ok3 := parseV1Port(f[3])
	dport, ok4 := parseV1Port(f[4])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return Header{}, 0, ErrMalformed
	}
	h.Source = netip.AddrPortFrom(src.Unmap(), sport)
	h.Dest = netip.AddrPortFrom(dst.Unmap(), dport)
	return h, n, nil
}

func parseV1Addr(b string, want4 bool) (netip.Addr, bool) {
	a, err := netip.ParseAddr(b)
	if err != nil || a.Zone() != "" || a.Is4() != want4 {
		return netip.Addr{}, false
	}
	return a, true
}

// parseV1Port reads a decimal port without sign or leading zeros.
func parseV1Port(b string) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	p := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		p = p*10 + int(c-'0')
	}
	return uint16(p), p <= 0xffff
}

// parseV2 reads the binary header: the signature, version and command,
// family and protocol, the length of the rest, then the addresses and any
// TLVs.
func parseV2(buf []byte, max int) (Header, int, error) {
	if len(buf) < v2Fixed {
		return Header{}, 0, ErrIncomplete
	}
	verCmd, famProto := buf[12], buf[13]
	rest := int(binary.BigEndian.Uint16(buf[14:16]))
	n := v2Fixed + rest
	if verCmd>>4 != 2 {
		return Header{}, 0, ErrMalformed
	}
	if n > max {
		return Header{}, 0, ErrTooLarge
	}
	if len(buf) < n {
		return Header{}, 0, ErrIncomplete
	}
	h := Header{Version: 2}
	body := buf[v2Fixed:n]
	switch verCmd & 0xf {
	case 0x0: // LOCAL: the proxy's own connection; the address block is ignored
		h.Local = true
		return h, n, nil
	case 0x1: // PROXY
	default:
		return Header{}, 0, ErrMalformed
	}
	switch famProto {
	case 0x00: // UNSPEC: the proxy does not know; treat as its own
		h.Local = true
		return h, n, nil
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return Header{}, 0, ErrMalformed
		}
		src := netip.AddrFrom4([4]byte(body[0:4]))
		dst := netip.AddrFrom4([4]byte(body[4:8]))
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[8:10]))
		h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[10:12]))
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return Header{}, 0, ErrMalformed
		}
		src := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		dst := netip.AddrFrom16([16]byte(body[16:32])).Unmap()
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[32:34]))
		h.Dest = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[34:36]))
	default:
		// UDP and UNIX sockets: not what a WebSocket hub is reached over.
		return Header{}, 0, ErrMalformed
	}
	return h, n, nil
}
