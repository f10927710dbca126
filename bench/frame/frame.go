// Package frame is the client side of the WebSocket wire format (RFC 6455)
// that the load generator needs, and nothing more: the opening handshake,
// masked client frames, and an incremental parser for the unmasked frames a
// server sends.
//
// Concurrency contract: the functions are pure; a Decoder belongs to one
// connection and must only be used by the goroutine that reads that
// connection. Nothing here allocates per frame once a Decoder's buffers have
// grown to the largest frame seen.
package frame

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/wspubsub/wspubsub/ws"
)

// Opcodes of RFC 6455 section 5.2.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Close codes the hubs use (RFC 6455 section 7.4 plus the protocol's own),
// as ints, the type the load generator counts them in; package ws has them all.
const (
	CloseNormal         = int(ws.CloseNormal)
	CloseGoingAway      = int(ws.CloseGoingAway)
	CloseNoStatus       = int(ws.CloseNoStatus)
	CloseAbnormal       = int(ws.CloseAbnormal)
	CloseInvalidPayload = int(ws.CloseInvalidPayload)
	CloseSlowConsumer   = int(ws.CloseSlowConsumer)
	CloseTopicClosed    = int(ws.CloseTopicClosed)
)

// MaxHeaderLen is the longest frame header a client writes: 2 bytes, 8 bytes
// of extended length and the 4-byte mask key.
const MaxHeaderLen = 14

// Errors of the parser; they name the violation.
var (
	ErrMaskedServerFrame = errors.New("frame: server sent a masked frame")
	ErrReservedBits      = errors.New("frame: reserved bits set without an extension")
	ErrBadControlFrame   = errors.New("frame: control frame fragmented or longer than 125 bytes")
	ErrTooLarge          = errors.New("frame: message exceeds the size limit")
	ErrUnexpectedCont    = errors.New("frame: continuation frame without a message to continue")
	ErrExpectedCont      = errors.New("frame: new data frame while a fragmented message is open")
	ErrBadHandshake      = errors.New("frame: handshake response is not a valid 101 upgrade")
)

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey returns the Sec-WebSocket-Accept value a server must answer for
// the given Sec-WebSocket-Key.
func AcceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// AppendRequest appends an HTTP/1.1 upgrade request for path on host to dst.
// key is the base64 of 16 random bytes (see NewKey).
func AppendRequest(dst []byte, host, path, key string) []byte {
	return AppendRequestProtocol(dst, host, path, key, "")
}

// AppendRequestProtocol is AppendRequest offering the subprotocol protocol
// in Sec-WebSocket-Protocol; "" offers none.
func AppendRequestProtocol(dst []byte, host, path, key, protocol string) []byte {
	return AppendRequestOffers(dst, host, path, key, protocol, "")
}

// DeflateOffer is the permessage-deflate offer browsers send.
const DeflateOffer = "permessage-deflate; client_max_window_bits"

// AppendRequestOffers is AppendRequestProtocol also offering extensions in
// Sec-WebSocket-Extensions; "" offers none.
func AppendRequestOffers(dst []byte, host, path, key, protocol, extensions string) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	dst = append(dst, key...)
	if protocol != "" {
		dst = append(dst, "\r\nSec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
	}
	if extensions != "" {
		dst = append(dst, "\r\nSec-WebSocket-Extensions: "...)
		dst = append(dst, extensions...)
	}
	dst = append(dst, "\r\n\r\n"...)
	return dst
}

// NewKey returns a Sec-WebSocket-Key built from the 16 bytes of seed material.
func NewKey(seed [16]byte) string {
	return base64.StdEncoding.EncodeToString(seed[:])
}

// HandshakeError is returned by ParseResponse when the server answered with a
// status other than 101; Status lets callers count 401, 404 and 409 apart.
type HandshakeError struct {
	Status int
	Line   string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("frame: server refused the upgrade: %s", e.Line)
}

// ParseResponse looks for a complete HTTP response head in buf. It returns
// n == 0 while the head is incomplete, otherwise the length of the head. A
// head that is not a valid 101 answer for key yields an error; a non-101
// status yields a *HandshakeError.
func ParseResponse(buf []byte, key string) (n int, err error) {
	n, _, err = ParseResponseProtocol(buf, key, "")
	return n, err
}

// ParseResponseProtocol is ParseResponse for a request that offered the
// subprotocol offered (see AppendRequestProtocol): accepted reports whether
// the server chose it. A server that answers with another subprotocol than
// the one offered fails the handshake (RFC 6455 section 4.1); when none
// was offered, the header is not looked at.
func ParseResponseProtocol(buf []byte, key, offered string) (n int, accepted bool, err error) {
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		if len(buf) > 16<<10 {
			return 0, false, fmt.Errorf("%w: head longer than 16 KiB", ErrBadHandshake)
		}
		return 0, false, nil
	}
	head := buf[:end]
	n = end + 4
	lineEnd := bytes.IndexByte(head, '\r')
	if lineEnd < 0 {
		lineEnd = len(head)
	}
	line := head[:lineEnd]
	// "HTTP/1.1 101 Switching Protocols"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return n, false, fmt.Errorf("%w: status line %q", ErrBadHandshake, line)
	}
	status, perr := strconv.Atoi(string(line[9:12]))
	if perr != nil {
		return n, false, fmt.Errorf("%w: status line %q", ErrBadHandshake, line)
	}
	if status != 101 {
		return n, false, &HandshakeError{Status: status, Line: string(line)}
	}
	want := AcceptKey(key)
	found := false
	var chosen []byte
	rest := head[lineEnd:]
	for len(rest) > 0 {
		rest = bytes.TrimPrefix(rest, []byte("\r\n"))
		i := bytes.Index(rest, []byte("\r\n"))
		var h []byte
		if i < 0 {
			h, rest = rest, nil
		} else {
			h, rest = rest[:i], rest[i:]
		}
		colon := bytes.IndexByte(h, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimSpace(h[:colon])
		switch {
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			found = string(bytes.TrimSpace(h[colon+1:])) == want
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			chosen = bytes.TrimSpace(h[colon+1:])
		}
	}
	if !found {
		return n, false, fmt.Errorf("%w: missing or wrong Sec-WebSocket-Accept", ErrBadHandshake)
	}
	if offered != "" && chosen != nil {
		if string(chosen) != offered {
			return n, false, fmt.Errorf("%w: server chose subprotocol %q, not the one offered (%q)", ErrBadHandshake, chosen, offered)
		}
		accepted = true
	}
	return n, accepted, nil
}

// AppendClientFrame appends one final, masked frame with opcode op and the
// given payload to dst, masking with mask. The payload is copied, not
// modified.
func AppendClientFrame(dst []byte, op byte, payload []byte, mask uint32) []byte {
	n := len(payload)
	dst = append(dst, 0x80|op)
	switch {
	case n <= 125:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var mk [4]byte
	binary.LittleEndian.PutUint32(mk[:], mask)
	dst = append(dst, mk[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	MaskBytes(dst[start:], mk)
	return dst
}

// AppendServerFrame appends one unmasked frame as a server would send it. The
// load generator never sends these; tests and fuzzing use them as input.
func AppendServerFrame(dst []byte, fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	n := len(payload)
	dst = append(dst, b0)
	switch {
	case n <= 125:
		dst = append(dst, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// MaskBytes XORs b in place with the 4-byte mask key, starting at key
// position 0.
func MaskBytes(b []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i:])
		binary.LittleEndian.PutUint64(b[i:], v^k64)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}

// ClosePayload builds the payload of a close frame: a 2-byte code and an
// optional reason.
func ClosePayload(dst []byte, code int, reason string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}

// CloseCode extracts the status code of a close frame payload;
// CloseNoStatus (1005) when the payload is empty.
func CloseCode(payload []byte) int {
	if len(payload) < 2 {
		return CloseNoStatus
	}
	return int(binary.BigEndian.Uint16(payload))
}
