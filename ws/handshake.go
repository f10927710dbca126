package ws

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// ErrIncomplete means the buffer does not yet hold a whole request head.
var ErrIncomplete = errors.New("ws: request head incomplete")

// ErrHeadTooLarge means the request head is longer than the limit given.
var ErrHeadTooLarge = errors.New("ws: request head too large")

// ErrMalformed means the bytes are not an HTTP/1.1 request head.
var ErrMalformed = errors.New("ws: malformed request head")

// Request is what the hub reads from an HTTP request head. Strings are copies:
// they stay valid after the buffer they were parsed from is reused.
type Request struct {
	Method string
	Target string // the request target as sent: path, optionally ?query

	// Upgrade is true when both "Upgrade: websocket" and a Connection header
	// with the "upgrade" token are present.
	Upgrade       bool
	Key           string // Sec-WebSocket-Key
	Version       string // Sec-WebSocket-Version
	Authorization string
	Origin        string
	Host          string
	// Body is true when the request announces a body (Content-Length other
	// than 0, or Transfer-Encoding): an upgrade request has none.
	Body bool
	// Protocols is Sec-WebSocket-Protocol: the subprotocols the client
	// offers, comma-separated (several headers are joined).
	Protocols string
	// Extensions is Sec-WebSocket-Extensions: the extensions the client
	// offers (several headers are joined with commas); see AcceptDeflate.
	Extensions string
	// Accept, LastEventID and ContentType are those headers, for the
	// hub's EventSource and HTTP publish endpoints.
	Accept      string
	LastEventID string
	ContentType string
	// ContentLength is the Content-Length header's value, -1 when there
	// is none; a value that is not a decimal number is malformed.
	ContentLength int64
	// Chunked is true with "Transfer-Encoding: chunked" (or any other
	// transfer coding).
	Chunked bool
	// Close is true when the client asks to close the connection after
	// the response ("Connection: close").
	Close bool
	// ForwardedFor is X-Forwarded-For: the addresses the request came
	// through, comma-separated, oldest first (several headers are joined).
	// Only a hub behind a trusted proxy reads it.
	ForwardedFor string
}

// HasProtocol reports whether a Sec-WebSocket-Protocol list offers name
// (compared exactly, as RFC 6455 says).
func HasProtocol(list, name string) bool {
	for list != "" {
		var item string
		if i := strings.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, ""
		}
		for len(item) > 0 && (item[0] == ' ' || item[0] == '\t') {
			item = item[1:]
		}
		for len(item) > 0 && (item[len(item)-1] == ' ' || item[len(item)-1] == '\t') {
			item = item[:len(item)-1]
		}
		if item == name {
			return true
		}
	}
	return false
}

var crlfcrlf = []byte("\r\n\r\n")

// ParseRequest parses the request head at the start of buf. It returns the
// request and the number of bytes the head took, ErrIncomplete when more bytes
// are needed, ErrHeadTooLarge when the head is (or must be) longer than max
// bytes, and ErrMalformed for anything that is not an HTTP/1.1 request head.
func ParseRequest(buf []byte, max int) (Request, int, error) {
	req := Request{ContentLength: -1}
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		if len(buf) >= max {
			return req, 0, ErrHeadTooLarge
		}
		return req, 0, ErrIncomplete
	}
	n := end + 4
	if n > max {
		return req, 0, ErrHeadTooLarge
	}
	head := buf[:end]

	line, rest := cutLine(head)
	// Request line: METHOD SP TARGET SP HTTP/1.1
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return req, 0, ErrMalformed
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return req, 0, ErrMalformed
	}
	sp2 += sp1 + 1
	method, target, proto := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	if !isToken(method) || !validTarget(target) || !bytes.Equal(proto, []byte("HTTP/1.1")) {
		return req, 0, ErrMalformed
	}
	req.Method = string(method)
	req.Target = string(target)

	var upgrade, connUpgrade bool
	var seen uint8 // headers that may appear once
	once := func(bit uint8) bool {
		dup := seen&bit != 0
		seen |= bit
		return !dup
	}
	for len(rest) > 0 {
		line, rest = cutLine(rest)
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return req, 0, ErrMalformed
		}
		name := line[:colon]
		value := bytes.Trim(line[colon+1:], " \t")
		for _, c := range value {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				return req, 0, ErrMalformed
			}
		}
		switch {
		case equalFold(name, "upgrade"):
			upgrade = upgrade || hasToken(value, "websocket")
		case equalFold(name, "connection"):
			connUpgrade = connUpgrade || hasToken(value, "upgrade")
			req.Close = req.Close || hasToken(value, "close")
		case equalFold(name, "sec-websocket-key"):
			if !once(1) {
				return req, 0, ErrMalformed
			}
			req.Key = string(value)
		case equalFold(name, "sec-websocket-version"):
			if !once(2) {
				return req, 0, ErrMalformed
			}
			req.Version = string(value)
		case equalFold(name, "authorization"):
			if !once(4) {
				return req, 0, ErrMalformed
			}
			req.Authorization = string(value)
		case equalFold(name, "origin"):
			if !once(8) {
				return req, 0, ErrMalformed
			}
			req.Origin = string(value)
		case equalFold(name, "host"):
			if !once(16) { // RFC 9112 3.2: more than one Host is a 400
				return req, 0, ErrMalformed
			}
			req.Host = string(value)
		case equalFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || !once(32) {
				return req, 0, ErrMalformed // RFC 9112 6.3: an invalid length is unrecoverable
			}
			req.ContentLength = n
			req.Body = req.Body || n != 0
		case equalFold(name, "transfer-encoding"):
			req.Body, req.Chunked = true, true
		case equalFold(name, "sec-websocket-protocol"):
			if req.Protocols != "" {
				req.Protocols += ", "
			}
			req.Protocols += string(value)
		case equalFold(name, "sec-websocket-extensions"):
			if req.Extensions != "" {
				req.Extensions += ", "
			}
			req.Extensions += string(value)
		case equalFold(name, "accept"):
			if req.Accept != "" { // RFC 9110 5.3: several make one list
				req.Accept += ", "
			}
			req.Accept += string(value)
		case equalFold(name, "last-event-id"):
			if !once(64) {
				return req, 0, ErrMalformed
			}
			req.LastEventID = string(value)
		case equalFold(name, "content-type"):
			if !once(128) {
				return req, 0, ErrMalformed
			}
			req.ContentType = string(value)
		case equalFold(name, "x-forwarded-for"):
			if req.ForwardedFor != "" { // RFC 9110 5.3: several make one list
				req.ForwardedFor += ", "
			}
			req.ForwardedFor += string(value)
		}
	}
	req.Upgrade = upgrade && connUpgrade
	return req, n, nil
}

// ValidKey reports whether a Sec-WebSocket-Key is the base64 form of 16 bytes.
func ValidKey(key string) bool {
	if len(key) != 24 {
		return false
	}
	var dst [18]byte
	n, err := base64.StdEncoding.Decode(dst[:], []byte(key))
	return err == nil && n == 16
}

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AppendAccept appends the Sec-WebSocket-Accept value for key.
func AppendAccept(dst []byte, key string) []byte {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(dst, h.Sum(sum[:0]))
}

// AppendUpgradeResponse appends the 101 response that completes a handshake,
// naming the subprotocol chosen unless protocol is "" and the extensions
// accepted unless extensions is "".
func AppendUpgradeResponse(dst []byte, key, protocol, extensions string) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = AppendAccept(dst, key)
	if protocol != "" {
		dst = append(dst, "\r\nSec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
	}
	if extensions != "" {
		dst = append(dst, "\r\nSec-WebSocket-Extensions: "...)
		dst = append(dst, extensions...)
	}
	return append(dst, "\r\n\r\n"...)
}

// AppendErrorResponse appends a complete HTTP response refusing a request:
// the status, a one-line plain-text body and "Connection: close". Extra header
// lines (each ending in "\r\n") go in extra.
func AppendErrorResponse(dst []byte, status int, body, extra string) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, StatusText(status)...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)+1), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, extra...)
	dst = append(dst, "\r\n"...)
	dst = append(dst, body...)
	return append(dst, '\n')
}

// StatusText is the reason phrase of the statuses the hub answers with.
func StatusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 409:
		return "Conflict"
	case 413:
		return "Content Too Large"
	case 415:
		return "Unsupported Media Type"
	case 406:
		return "Not Acceptable"
	case 411:
		return "Length Required"
	case 426:
		return "Upgrade Required"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 503:
		return "Service Unavailable"
	}
	return "Status " + strconv.Itoa(status)
}

func cutLine(b []byte) (line, rest []byte) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+2:]
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}

// validTarget accepts an origin-form target: "/" followed by visible ASCII.
func validTarget(b []byte) bool {
	if len(b) == 0 || b[0] != '/' {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// hasToken reports whether a comma-separated header value holds token,
// compared without regard to case.
func hasToken(value []byte, token string) bool {
	for len(value) > 0 {
		var item []byte
		if i := bytes.IndexByte(value, ','); i >= 0 {
			item, value = value[:i], value[i+1:]
		} else {
			item, value = value, nil
		}
		if equalFold(bytes.Trim(item, " \t"), token) {
			return true
		}
	}
	return false
}

// equalFold compares ASCII b with lower-case s without regard to case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
