package server

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// EventSource subscribers: GET /sse/sub/{Domain}/{Topic} is answered with a
// 200 and a text/event-stream that never ends on its own. The subscriber is
// a client of kind kindSSE on the loop that accepted it, in its topic like a
// WebSocket subscriber: it joins through subscribe (replay included), gets
// the SSE variant that publish encodes once per read, and is cut by the same
// backlog bound. What differs is at the edges: the response head, the
// keepalive (a comment line, since the client cannot answer a ping) and the
// close (a last "close" event, then the end of the TCP connection, since
// there is no close handshake). The body has neither Content-Length nor
// chunking: an HTTP/1.1 response without them runs until the connection
// closes, which is what a stream is.

// sseRetryMin and sseRetrySpread bound the reconnection delay each stream
// suggests to its browser: spread so that the subscribers of a drained hub
// or an ended topic do not all come back in the same millisecond.
const (
	sseRetryMin    = time.Second
	sseRetrySpread = 2 * time.Second
)

// ssePing is the comment line that keeps a quiet stream alive.
var ssePing = []byte(": ping\n\n")

// sseKeep is an EventSource subscriber's keepalive state. Its client never
// speaks after the request, so silence is measured on what the hub sends,
// and a ping is answered by the kernel taking it, or not.
type sseKeep struct {
	queued int64 // the connection's queued byte count at the last look
	quiet  int64 // UnixNano since which it has not changed
	ping   int64 // UnixNano of a ping the kernel has not taken yet; 0 if none
	mark   int64 // the written byte count that shows the ping taken
}

// handshakeSSE answers an EventSource subscriber's request, whose method and
// path are good: refusals are plain HTTP errors, and a subscriber that
// passes every check joins its topic as subscribe does. c.mu is held.
func (c *client) handshakeSSE(k topics.Key, req ws.Request, rest []byte) {
	s := c.srv
	switch {
	case req.Body:
		c.refuse(refBadRequest, "a subscription request has no body")
		return
	case req.Host == "":
		c.refuse(refBadRequest, "missing Host header")
		return
	case !originAllowed(s.cfg.AllowedOrigins, req.Origin):
		c.refuse(refOriginForbidden, "origin not allowed: "+req.Origin)
		return
	case !acceptsEventStream(req.Accept):
		c.refuse(refNotAcceptable, "this endpoint serves text/event-stream only")
		return
	}
	if !c.admitToken(k, &req) {
		return
	}
	sr := subRequest{kind: kindSSE, origin: req.Origin}
	var err error
	if sr.from, err = parseResume(req.Target); err != nil {
		c.refuse(refBadRequest, err.Error())
		return
	}
	if req.LastEventID != "" {
		// The browser's own reconnect sends it with the URL it first
		// opened: where the stream got to wins over where it started.
		if sr.from, err = parsePosition(req.LastEventID); err != nil {
			c.refuse(refBadRequest, "Last-Event-ID: "+err.Error())
			return
		}
	}
	if s.cluster != nil {
		c.subscribeCluster(k, sr, rest)
		return
	}
	c.subscribe(k, sr, rest)
}

// drainSSE answers an EventSource request that comes while the hub drains.
// A 503 would stop a browser's EventSource for good, where a WebSocket
// client tries again: so the answer is a stream that says why and ends at
// once, and the browser comes back after the retry hint, to another node
// or to this one's successor. It counts as refused. c.mu is held.
func (c *client) drainSSE(origin string) {
	s := c.srv
	if !originAllowed(s.cfg.AllowedOrigins, origin) {
		origin = "" // its browser will not read the stream: a plain close
	}
	s.stats.Refused.add(refShuttingDown, 1)
	s.log.Info("handshake refused", "status", 200, "reason", "server shutting down (EventSource: a closed stream)", "remote", c.remoteAddr())
	c.setState(stateClosing)
	c.hs.buf = nil
	b := appendSSEHead(nil, origin, sseRetry())
	b = appendSSEClose(b, ws.CloseGoingAway, "server shutting down")
	c.conn.SendFinal(b, drainLinger)
}

// sseRetry is the reconnection delay a new stream suggests.
func sseRetry() time.Duration {
	return sseRetryMin + rand.N(sseRetrySpread)
}

// appendSSEHead appends the 200 that starts an event stream, and its retry
// hint. A browser's cross-origin EventSource reads the stream only if the
// response allows its Origin (which the handshake checked already).
func appendSSEHead(dst []byte, origin string, retry time.Duration) []byte {
	dst = append(dst, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"...)
	if origin != "" {
		dst = append(dst, "Access-Control-Allow-Origin: "...)
		dst = append(dst, origin...)
		dst = append(dst, "\r\nVary: Origin\r\n"...)
	}
	dst = append(dst, "\r\nretry: "...)
	dst = strconv.AppendInt(dst, retry.Milliseconds(), 10)
	return append(dst, "\n\n"...)
}

// appendSSEClose appends the last event of a stream the hub ends: an event
// "close" whose data is the close code a WebSocket would get and the
// reason, on one line.
func appendSSEClose(dst []byte, code uint16, reason string) []byte {
	dst = append(dst, "event: close\ndata: "...)
	dst = strconv.AppendUint(dst, uint64(code), 10)
	dst = append(dst, ' ')
	for i := 0; i < len(reason); i++ {
		if b := reason[i]; b == '\n' || b == '\r' {
			dst = append(dst, ' ')
		} else {
			dst = append(dst, b)
		}
	}
	return append(dst, "\n\n"...)
}

// keepaliveSSE pings an EventSource subscriber with a comment line after
// PingInterval in which the hub sent it nothing, so that proxies and the
// browser see a live stream and a dead peer shows as a write error. The
// client cannot answer, but a reading client's kernel takes the ping: one
// that is still not taken PongTimeout later means the client stopped
// reading, and the stream is closed with 4003 as a WebSocket that does not
// answer its ping. c.mu is held.
func (c *client) keepaliveSSE(now int64) {
	cfg := &c.srv.cfg
	k := &c.sub.sse
	queued, written := c.conn.Counts()
	if k.ping != 0 {
		if written < k.mark {
			if now-k.ping >= int64(cfg.PongTimeout) {
				c.closeLocked(ws.CloseIdleTimeout, "idle timeout: keepalive not read")
			}
			return
		}
		k.ping = 0
	}
	if queued != k.queued {
		k.queued, k.quiet = queued, now
		return
	}
	if now-k.quiet < int64(cfg.PingInterval) {
		return
	}
	err := c.conn.Send(ssePing)
	switch {
	case errors.Is(err, loop.ErrBacklogFull):
		c.cutSlowLocked(slowReason)
	case err == nil:
		k.queued, _ = c.conn.Counts()
		k.quiet, k.ping, k.mark = now, now, k.queued
	}
}

// acceptsEventStream reports whether an Accept header admits
// text/event-stream: as RFC 9110 12.5.1 reads it, the most specific media
// range that matches (text/event-stream, then text/*, then */*) decides,
// and a weight of 0 refuses. No Accept, or an empty one, admits anything.
// Ranges that do not parse are ignored.
func acceptsEventStream(accept string) bool {
	if strings.Trim(accept, " \t") == "" {
		return true
	}
	best, weight := 0, 0 // specificity of the best match so far, and its weight
	for accept != "" {
		var item string
		item, accept, _ = strings.Cut(accept, ",")
		rng, params, _ := strings.Cut(item, ";")
		rng = strings.Trim(rng, " \t")
		spec := 0
		switch {
		case strings.EqualFold(rng, "text/event-stream"):
			spec = 3
		case strings.EqualFold(rng, "text/*"):
			spec = 2
		case rng == "*/*":
			spec = 1
		default:
			continue
		}
		q, ok := qvalue(params)
		switch {
		case !ok:
		case spec > best:
			best, weight = spec, q
		case spec == best:
			weight = max(weight, q)
		}
	}
	return best > 0 && weight > 0
}

// qvalue reads the weight among a media range's parameters ("q=0.5;
// level=1"), in thousandths: 1000 when there is none. It reports false when
// the weight is malformed.
func qvalue(params string) (int, bool) {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.Trim(name, " \t"), "q") {
			continue
		}
		// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
		v = strings.Trim(v, " \t")
		if v == "" || (v[0] != '0' && v[0] != '1') {
			return 0, false
		}
		whole, frac, dot := strings.Cut(v, ".")
		if len(whole) != 1 || dot && len(frac) > 3 {
			return 0, false
		}
		q := int(whole[0]-'0') * 1000
		for i, scale := 0, 100; i < len(frac); i, scale = i+1, scale/10 {
			d := frac[i]
			if d < '0' || d > '9' || q == 1000 && d != '0' {
				return 0, false
			}
			q += int(d-'0') * scale
		}
		return q, true
	}
	return 1000, true
}
