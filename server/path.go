package server

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/wspubsub/wspubsub/topics"
)

// Limits on the names in a path, in bytes after percent-decoding.
const (
	maxDomainLen = 64
	maxTopicLen  = 255
	maxKeyLen    = 128
)

// errNoEndpoint means the path names no endpoint of the hub (HTTP 404).
var errNoEndpoint = errors.New("no such endpoint")

// route is what a subscriber's or publisher's path asks for.
type route struct {
	publisher bool
	sse       bool   // an EventSource subscriber (/sse/sub/)
	http      bool   // POST /api/pub/{Domain}/{Topic}: an HTTP publish (publisher too)
	key       string // the API key in the path; "" when it travels in a header
	topic     topics.Key
}

// parseTarget parses a request target: /ws/pub/{ApiKey}/{Domain}/{Topic},
// /ws/pub/{Domain}/{Topic} (key in an Authorization header),
// /ws/sub/{Domain}/{Topic}, /sse/sub/{Domain}/{Topic} or
// /api/pub/{Domain}/{Topic} (HTTP publish), each segment percent-decoded.
// It returns errNoEndpoint for a path outside those endpoints and another
// error, saying what is wrong, for a malformed one; the route's http is set
// for any path under /api/pub, malformed or not.
func parseTarget(target string) (route, error) {
	var r route
	path, _, _ := strings.Cut(target, "?")
	if rest, ok := strings.CutPrefix(path, "/api/pub"); ok && (rest == "" || rest[0] == '/') {
		r.publisher, r.http = true, true
		segs := strings.Split(strings.TrimPrefix(rest, "/"), "/")
		if len(segs) != 2 {
			return r, errors.New("want /api/pub/{Domain}/{Topic}")
		}
		return r.named(segs)
	}
	rest, ok := strings.CutPrefix(path, "/ws/")
	if !ok {
		if rest, ok = strings.CutPrefix(path, "/sse/"); !ok {
			return r, errNoEndpoint
		}
		r.sse = true
	}
	kind, rest, _ := strings.Cut(rest, "/")
	switch {
	case kind == "pub" && !r.sse:
		r.publisher = true
	case kind == "sub":
	default:
		return r, errNoEndpoint
	}
	segs := strings.Split(rest, "/")
	switch {
	case r.publisher && len(segs) == 3:
		key, err := unescape(segs[0])
		if err != nil {
			return r, fmt.Errorf("API key: %w", err)
		}
		if key == "" || len(key) > maxKeyLen {
			return r, errors.New("API key segment is empty or too long")
		}
		r.key, segs = key, segs[1:]
	case len(segs) == 2:
	case r.publisher:
		return r, errors.New("want /ws/pub/{ApiKey}/{Domain}/{Topic} or /ws/pub/{Domain}/{Topic}")
	case r.sse:
		return r, errors.New("want /sse/sub/{Domain}/{Topic}")
	default:
		return r, errors.New("want /ws/sub/{Domain}/{Topic}")
	}
	return r.named(segs)
}

// named completes r with the domain and topic of segs, its last two path
// segments.
func (r route) named(segs []string) (route, error) {
	domain, err := name("domain", segs[0], maxDomainLen)
	if err != nil {
		return r, err
	}
	topic, err := name("topic", segs[1], maxTopicLen)
	if err != nil {
		return r, err
	}
	r.topic = topics.Key{Domain: domain, Topic: topic}
	return r, nil
}

// name decodes a domain or topic segment and checks it: 1 to max bytes of
// valid UTF-8 without '/'.
func name(what, seg string, max int) (string, error) {
	s, err := unescape(seg)
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %w", what, err)
	case s == "":
		return "", fmt.Errorf("%s is empty", what)
	case len(s) > max:
		return "", fmt.Errorf("%s is %d bytes, more than %d", what, len(s), max)
	case !utf8.ValidString(s):
		return "", fmt.Errorf("%s is not valid UTF-8", what)
	case strings.IndexByte(s, '/') >= 0:
		return "", fmt.Errorf("%s contains '/'", what)
	}
	return s, nil
}

// unescape percent-decodes a path segment; '+' stays '+'.
func unescape(s string) (string, error) {
	n := strings.Count(s, "%")
	if n == 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s)) // a '%' without its two digits is refused below
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
			return "", errors.New("invalid percent-encoding")
		}
		b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	return string(b), nil
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
