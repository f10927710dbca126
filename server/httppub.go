package server

// HTTP publish: POST /api/pub/{Domain}/{Topic} with Authorization: Bearer
// KEY, whose body is one message.
//
// A connection making HTTP publishes lives on its event loop like any
// other, in these states (client.state, under client.mu):
//
//	stateHandshake   reading a request head (shared with WebSocket handshakes)
//	stateAPIBody     reading the body, on the loop, into apiConn.frame
//	stateAPIPublish  apiRun, off the loop, checks the key and publishes;
//	                 bytes that arrive meanwhile (pipelined requests) wait
//	                 in client.buf, up to apiMaxPending bytes
//	stateAPIIdle     keep-alive: between requests
//
// The body is read into the message's frame (its header first, since
// Content-Length gives its size), so publishing copies nothing more. One
// goroutine per connection runs while a request is being published, and
// goes on to the next pipelined request if it is there; it holds no
// client's lock while it checks the key or publishes, so the loop never
// waits on it. Every message goes through Server.publish, the one path
// that gives positions and keeps history, ordered with the topic's
// WebSocket publisher by the topic's Publishing mutex.

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// apiResult is how an HTTP publish request ended; each has its status.
type apiResult uint8

const (
	apiPublished apiResult = iota
	apiBadRequest
	apiUnauthorized
	apiOriginForbidden
	apiMethodNotAllowed
	apiLengthRequired
	apiTooLarge
	apiUnsupportedMediaType
	apiPublishRate
	apiTooManyTopics
	apiKeyStoreUnavailable
	apiKeyChecksBusy
	apiShuttingDown
	apiClusterUnavailable
	apiAbandoned // the client left (or timed out) before the answer
	numAPIResults
)

var apiResults = [numAPIResults]struct {
	status int
	label  string
	extra  string // header lines of the answer
}{
	apiPublished:            {200, "published", ""},
	apiBadRequest:           {400, "bad_request", ""},
	apiUnauthorized:         {401, "unauthorized", "WWW-Authenticate: Bearer\r\n"},
	apiOriginForbidden:      {403, "origin_forbidden", ""},
	apiMethodNotAllowed:     {405, "method_not_allowed", "Allow: POST\r\n"},
	apiLengthRequired:       {411, "length_required", ""},
	apiTooLarge:             {413, "too_large", ""},
	apiUnsupportedMediaType: {415, "unsupported_media_type", ""},
	apiPublishRate:          {429, "publish_rate", "Retry-After: 1\r\n"},
	apiTooManyTopics:        {429, "too_many_topics", ""},
	apiKeyStoreUnavailable:  {503, "key_store_unavailable", ""},
	apiKeyChecksBusy:        {503, "key_checks_busy", ""},
	apiShuttingDown:         {503, "shutting_down", ""},
	apiClusterUnavailable:   {503, "cluster_unavailable", ""},
	apiAbandoned:            {0, "abandoned", ""},
}

const (
	// apiIdleTimeout is how long a keep-alive connection may wait between
	// requests.
	apiIdleTimeout = 60 * time.Second
	// apiLinger is how long a connection closed after an answer stays open
	// (reading and dropping what comes) for the client to read the answer:
	// a close with a body still arriving would reset the connection and
	// could lose it.
	apiLinger = time.Second
	// apiKeepFrame bounds the body buffer a connection keeps between
	// requests; a larger one goes back to the heap.
	apiKeepFrame = 64 << 10
)

// apiConn is the state of a connection making HTTP publishes.
type apiConn struct {
	req   apiRequest
	frame []byte // the message as one plain WebSocket frame: header, then the body read so far
	want  int    // len(frame) once the whole body is in

	running    bool // apiRun's goroutine is live
	next       bool // an answer went out and client.buf holds more: parse it
	closeAfter bool // close the connection after answering the request being published

	resp []byte // the answer being sent, reused

	hashed string   // the key whose hash is hash
	hash   [32]byte // keys.Hash(hashed), for the per-key rate
}

// body is the message's payload.
func (a *apiConn) body() []byte { return a.frame[len(a.frame)-a.req.length:] }

// keyHash is the SHA-256 of the request's key, computed once for a run of
// requests with the same key.
func (a *apiConn) keyHash() [32]byte {
	if a.hashed != a.req.key {
		a.hashed, a.hash = a.req.key, keys.Hash(a.req.key)
	}
	return a.hash
}

// apiRequest is what an HTTP publish's head asks for.
type apiRequest struct {
	topic  topics.Key
	key    string
	op     ws.Opcode // ws.OpText or ws.OpBinary
	length int       // Content-Length: the message's size
	close  bool      // Connection: close
	expect bool      // Expect: 100-continue
}

// parseAPIRequest checks the head of an HTTP publish: req is the parsed
// head, head its bytes, r and routeErr what parseTarget made of its
// target. It returns the request, or the result and reason of its refusal;
// every refusal here is answered before the body is read.
func parseAPIRequest(req ws.Request, head []byte, r route, routeErr error, maxBody int, origins []string) (a apiRequest, res apiResult, reason string) {
	switch {
	case req.Method != "POST":
		return a, apiMethodNotAllowed, "only POST is served on /api/pub"
	case routeErr != nil:
		return a, apiBadRequest, "bad path: " + routeErr.Error()
	case req.Host == "":
		return a, apiBadRequest, "missing Host header"
	case !originAllowed(origins, req.Origin):
		return a, apiOriginForbidden, "origin not allowed: " + strconv.Quote(req.Origin)
	}
	scheme, key, _ := strings.Cut(req.Authorization, " ")
	key = strings.TrimSpace(key)
	switch {
	case !strings.EqualFold(scheme, "Bearer") || key == "":
		return a, apiUnauthorized, "missing API key: send it in an Authorization: Bearer header"
	case !keys.WellFormed(key):
		return a, apiUnauthorized, "API key refused for this domain"
	case req.Chunked:
		return a, apiLengthRequired, "chunked bodies are not read: send the message with a Content-Length"
	case req.ContentLength < 0:
		return a, apiLengthRequired, "missing Content-Length"
	case req.ContentLength > int64(maxBody):
		return a, apiTooLarge, "body larger than --max-message-size (" + strconv.Itoa(maxBody) + " bytes)"
	}
	op, why := bodyOpcode(req.ContentType)
	if why != "" {
		return a, apiUnsupportedMediaType, why
	}
	a = apiRequest{topic: r.topic, key: key, op: op, length: int(req.ContentLength), close: req.Close, expect: expectsContinue(head)}
	return a, apiPublished, ""
}

// bodyOpcode is the frame type a body of Content-Type ct is published as:
// text for text/* and application/json, binary for anything else or no
// Content-Type. Forms and multipart bodies are refused with the reason: they
// are almost always a client's mistake (curl -d without -H sends a form),
// and a text body in another charset than UTF-8 cannot be a text message.
func bodyOpcode(ct string) (op ws.Opcode, refusal string) {
	mt, params, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.Trim(mt, " \t"))
	if mt == "" && strings.Trim(params, " \t") == "" {
		return ws.OpBinary, ""
	}
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || !isToken(typ) || !isToken(sub) {
		return 0, "Content-Type " + strconv.Quote(ct) + " is not a media type"
	}
	switch {
	case mt == "application/x-www-form-urlencoded":
		return 0, "a form is not a message (curl -d sends one): send the message with --data-binary and its own Content-Type"
	case typ == "multipart":
		return 0, "a multipart body is not a message: send the message itself as the body"
	case typ != "text" && mt != "application/json":
		return ws.OpBinary, ""
	}
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		if strings.Trim(p, " \t") == "" {
			continue // RFC 9110 allows empty parameters: "text/plain;"
		}
		name, value, ok := strings.Cut(p, "=")
		name = strings.Trim(name, " \t")
		if !ok || !isToken(name) {
			return 0, "Content-Type " + strconv.Quote(ct) + " is not a media type: a parameter is not NAME=VALUE"
		}
		if !strings.EqualFold(name, "charset") {
			continue
		}
		value = strings.Trim(strings.Trim(value, " \t"), `"`)
		if !strings.EqualFold(value, "utf-8") && !strings.EqualFold(value, "utf8") && !strings.EqualFold(value, "us-ascii") {
			return 0, "a text message is UTF-8: charset " + strconv.Quote(value) + " is not served"
		}
	}
	return ws.OpText, ""
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// expectsContinue reports whether a request head holds "Expect:
// 100-continue": the client waits (curl for a second) for a 100 before it
// sends the body.
func expectsContinue(head []byte) bool {
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("expect")) && bytes.EqualFold(bytes.Trim(value, " \t"), []byte("100-continue")) {
			return true
		}
	}
	return false
}

// apiRequestHead takes an HTTP publish whose head was just read: r and
// routeErr are what parseTarget made of its target, rest the bytes after
// the head, owned whether rest is part of c.hs.buf (not the loop's buffer).
// c.mu is held.
func (c *client) apiRequestHead(req ws.Request, head []byte, r route, routeErr error, rest []byte, owned bool) {
	s := c.srv
	if c.api == nil {
		c.api = new(apiConn)
	}
	a := c.api
	if s.draining.Load() {
		a.req = apiRequest{}
		c.apiAnswer(apiShuttingDown, "server shutting down", true)
		return
	}
	req2, res, reason := parseAPIRequest(req, head, r, routeErr, s.cfg.MaxMessageSize, s.cfg.AllowedOrigins)
	a.req = req2
	if res != apiPublished {
		c.apiAnswer(res, reason, true) // the body, if any, is not read
		return
	}
	n := a.req.length
	if a.frame == nil {
		// Grown as the body comes, so that a client announcing a large
		// body and sending little makes the hub hold little.
		a.frame = make([]byte, 0, 14+min(n, apiKeepFrame))
	}
	a.frame = ws.AppendHeader(a.frame[:0], a.req.op, n)
	a.want = len(a.frame) + n
	take := min(n, len(rest))
	a.frame = append(a.frame, rest[:take]...)
	if len(a.frame) < a.want {
		c.hs.buf = nil
		c.setState(stateAPIBody)
		if a.req.expect {
			c.conn.Send(continue100)
		}
		return
	}
	c.apiBodyRead(rest[take:], owned)
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// apiBody reads more of an HTTP publish's body. c.mu is held.
func (c *client) apiBody(data []byte) {
	a := c.api
	take := min(a.want-len(a.frame), len(data))
	a.frame = append(a.frame, data[:take]...)
	if len(a.frame) == a.want {
		c.apiBodyRead(data[take:], false)
	}
}

// apiBodyRead takes a request whose body is all in, rest the bytes that
// came after it (part of c.hs.buf if owned), and hands it to apiRun, which
// checks the key and publishes off the loop. c.mu is held.
func (c *client) apiBodyRead(rest []byte, owned bool) {
	s := c.srv
	a := c.api
	switch {
	case owned && len(rest) > 0:
		c.hs.buf = rest // the tail of c.hs.buf: no copy
	case owned:
		c.hs.buf = nil
	default:
		c.hs.buf = append(c.hs.buf[:0], rest...)
	}
	if a.req.op == ws.OpText && !utf8.Valid(a.body()) {
		c.apiAnswer(apiBadRequest, "the body is not valid UTF-8: a text message must be (send other bytes with another Content-Type)", false)
		return
	}
	select {
	case s.checks <- struct{}{}:
	default:
		c.apiAnswer(apiKeyChecksBusy, "too many key checks in progress, try again", false)
		return
	}
	// The deadline set when the request began (HandshakeTimeout) bounds
	// its key check and publish too, as a WebSocket handshake's bounds its
	// key check.
	c.setState(stateAPIPublish)
	if !a.running {
		a.running = true
		go c.apiRun()
	}
}

// apiMaxPending bounds the bytes a client may send while its request is
// being published (its next requests, pipelined): one more request of
// the largest size. Past it the rest is dropped and the connection closes
// after the answer; the client sends the unanswered requests again.
func (c *client) apiMaxPending() int { return c.srv.cfg.MaxHeaderBytes + c.srv.cfg.MaxMessageSize }

// apiPipelined keeps what comes while a request is being published. c.mu
// is held.
func (c *client) apiPipelined(data []byte) {
	if c.api.closeAfter {
		return
	}
	if len(c.hs.buf)+len(data) > c.apiMaxPending() {
		c.api.closeAfter = true
		c.hs.buf = nil
		return
	}
	c.hs.buf = append(c.hs.buf, data...)
}

// apiNext parses the requests that waited behind an answer, as long as
// each is answered at once, without recursion however many there are.
// c.mu is held.
func (c *client) apiNext() {
	for c.api != nil && c.api.next && c.hs != nil { // hs: nil once the connection is gone
		c.api.next = false
		c.handshake(nil)
	}
}

// apiRun publishes the connection's requests off the loop: the one that
// was handed over, then each pipelined one that is whole by the time the
// previous is answered. It holds c.mu only to answer.
func (c *client) apiRun() {
	s := c.srv
	for {
		res, reason, epoch, offset := c.apiPublish()
		c.mu.Lock()
		a := c.api
		if c.state != stateAPIPublish { // the client left: nobody to answer
			s.stats.httpPublishes.add(res, 1)
			a.running = false
			c.mu.Unlock()
			return
		}
		if res == apiPublished {
			c.apiPublished(epoch, offset)
		} else {
			c.apiAnswer(res, reason, false)
		}
		c.apiNext()
		again := c.state == stateAPIPublish
		a.running = again
		c.mu.Unlock()
		if !again {
			return
		}
	}
}

// apiPublish checks the request's key, its rate, and publishes its
// message. It runs on apiRun's goroutine without c.mu: in stateAPIPublish
// nothing else touches c.api's request and frame.
func (c *client) apiPublish() (res apiResult, reason, epoch string, offset uint64) {
	s := c.srv
	a := c.api
	r := &a.req
	ctx := &checkCtx{deadline: time.Now().Add(s.cfg.HandshakeTimeout)}
	defer ctx.stop()
	err := s.cfg.Keys.Check(ctx, r.key, r.topic.Domain)
	<-s.checks
	switch {
	case err == nil:
		s.stats.keyChecks[keyAccepted].Add(1)
	case errors.Is(err, keys.ErrRefused):
		s.stats.keyChecks[keyRefused].Add(1)
		return apiUnauthorized, "API key refused for this domain", "", 0
	default:
		s.stats.keyChecks[keyError].Add(1)
		s.log.Warn("cannot check a publisher's API key", "domain", r.topic.Domain, "key", keys.Redact(r.key), "err", err)
		return apiKeyStoreUnavailable, "key store unavailable, try again", "", 0
	}
	if rate := int64(s.cfg.MaxPublishRate); rate > 0 && !s.keyRates.take(a.keyHash(), rate, time.Now().UnixNano()) {
		return apiPublishRate, "publishing faster than " + strconv.Itoa(int(rate)) + " messages a second with this API key", "", 0
	}
	epoch, offset, err = s.publishHTTP(ctx, r.topic, a.frame, r.length)
	switch {
	case errors.Is(err, topics.ErrTooManyTopics):
		return apiTooManyTopics, "domain has too many topics", "", 0
	case errors.Is(err, ErrTooLargeToForward):
		return apiTooLarge, "message larger than the cluster carries to the topic's owner (NATS max_payload)", "", 0
	case err != nil:
		s.log.Warn("cannot publish an HTTP publish across the cluster", "domain", r.topic.Domain, "topic", r.topic.Topic, "err", err)
		return apiClusterUnavailable, "cluster unavailable, try again", "", 0
	}
	s.stats.MessagesIn.Add(1)
	s.stats.BytesIn.Add(int64(r.length))
	return apiPublished, "", epoch, offset
}

// checkCtx is the context of an HTTP publish's key check and publish: a
// deadline whose timer starts only when the key store asks for Done or Err.
// A store answering from memory never does, and a timer per request (what
// context.WithTimeout makes) was 7% of the hub's CPU at 50 connections.
// stop ends it, as a CancelFunc does.
type checkCtx struct {
	deadline time.Time
	once     sync.Once
	done     chan struct{}
	timer    *time.Timer
	err      atomic.Pointer[error]
}

var _ context.Context = (*checkCtx)(nil)

func (c *checkCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *checkCtx) Value(any) any               { return nil }

func (c *checkCtx) Done() <-chan struct{} {
	c.once.Do(func() {
		c.done = make(chan struct{})
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
	})
	return c.done
}

func (c *checkCtx) Err() error {
	c.Done()
	if err := c.err.Load(); err != nil {
		return *err
	}
	return nil
}

// end closes Done with err, once.
func (c *checkCtx) end(err error) {
	if c.err.CompareAndSwap(nil, &err) {
		close(c.done)
	}
}

// stop ends the context with context.Canceled, unless it ended already.
// A context whose Done was never asked for ends without a timer.
func (c *checkCtx) stop() {
	started := true
	c.once.Do(func() {
		started = false
		c.done = closedDone
		c.err.Store(&errCanceled)
	})
	if started && c.timer.Stop() {
		c.end(context.Canceled)
	}
}

var (
	closedDone  = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()
	errCanceled = context.Canceled
)

// publishHTTP publishes an HTTP publish's message on topic k, frame being
// the message as one plain WebSocket frame of payload bytes, and returns
// its position. A topic without a publisher is started, or kept, for the
// grace period from now. It runs off the event loops, holding no client's
// lock; frame is reused once it returns.
func (s *Server) publishHTTP(ctx context.Context, k topics.Key, frame []byte, payload int) (epoch string, offset uint64, err error) {
	if s.cluster != nil {
		return s.publishHTTPCluster(ctx, k, frame, payload)
	}
	t, err := s.topics.Touch(k)
	if err != nil {
		return "", 0, err
	}
	epoch, offset = s.publishFrame(t, frame, payload, nil)
	return epoch, offset, nil
}

// publishHTTPCluster is publishHTTP on a cluster node. There the topic's
// owner assigns positions, and the topic's lifetime and grace period hold
// across the nodes, so the message must reach the owner (or this node
// become it) and come back with its position; Touch and the local log
// alone would give positions no other node knows. A topic another node
// owns gets the message forwarded there; one this node owns, or that no
// node does, is claimed here as a publisher would, and released at once
// (publishHere). When the ownership moves meanwhile, it asks again. It may
// block for network round trips until ctx ends. It returns an error
// wrapping topics.ErrTooManyTopics for a 429, ErrTooLargeToForward for a
// 413; any other error is a 503.
func (s *Server) publishHTTPCluster(ctx context.Context, k topics.Key, frame []byte, payload int) (epoch string, offset uint64, err error) {
	for attempt := 1; ; attempt++ {
		var forwarded bool
		epoch, offset, forwarded, err = s.cluster.Forward(ctx, k, frame, payload)
		if err == nil && !forwarded {
			epoch, offset, err = s.publishHere(ctx, k, frame, payload)
		}
		if !errors.Is(err, topics.ErrHasPublisher) || attempt == 3 || ctx.Err() != nil {
			return epoch, offset, err
		}
	}
}

// apiPublished answers a published request with its position. c.mu is
// held.
func (c *client) apiPublished(epoch string, offset uint64) {
	var b [64 + 64]byte
	body := append(b[:0], `{"epoch":"`...)
	body = append(body, epoch...) // letters and digits: nothing to escape
	body = append(body, `","offset":`...)
	body = strconv.AppendUint(body, offset, 10)
	body = append(body, "}\n"...)
	c.apiRespond(apiPublished, "application/json", body, false)
}

// apiAnswer refuses the request just read with reason; with mustClose the
// connection closes after the answer. c.mu is held.
func (c *client) apiAnswer(res apiResult, reason string, mustClose bool) {
	s := c.srv
	level := s.log.Info
	if res == apiPublishRate {
		level = s.log.Debug // a client over its rate would flood the log
	}
	args := []any{"status", apiResults[res].status, "reason", reason, "remote", c.remoteAddr()}
	if c.api.req.key != "" {
		args = append(args, "domain", c.api.req.topic.Domain, "key", keys.Redact(c.api.req.key))
	}
	level("HTTP publish refused", args...)
	c.apiRespond(res, "text/plain; charset=utf-8", append([]byte(reason), '\n'), mustClose)
}

// apiRespond sends the answer to the request just read, then closes the
// connection (when asked, when the client asked, when the hub drains) or
// gets ready for the next request. c.mu is held.
func (c *client) apiRespond(res apiResult, contentType string, body []byte, mustClose bool) {
	s := c.srv
	a := c.api
	s.stats.httpPublishes.add(res, 1)
	closing := mustClose || a.req.close || a.closeAfter || s.draining.Load()
	a.resp = appendAPIResponse(a.resp[:0], apiResults[res].status, contentType, body, apiResults[res].extra, closing)
	resp := a.resp
	if cap(a.frame) > apiKeepFrame {
		a.frame = nil
	}
	if closing {
		c.setState(stateClosing)
		c.hs.buf, c.lost = nil, true // drop whatever comes during the linger
		c.conn.SendLast(resp, apiLinger)
		return
	}
	if err := c.conn.Send(resp); err != nil {
		// Its backlog is full: it pipelines without reading the answers.
		c.setState(stateClosing)
		c.hs.buf = nil
		c.conn.Close()
		return
	}
	if len(c.hs.buf) == 0 {
		c.hs.buf = nil
		c.setState(stateAPIIdle)
		c.conn.SetDeadline(time.Now().Add(apiIdleTimeout))
		return
	}
	c.setState(stateHandshake)
	c.conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	a.next = true
}

// apiWake starts the next request on a keep-alive connection. c.mu is held.
func (c *client) apiWake(data []byte) {
	c.setState(stateHandshake)
	c.conn.SetDeadline(time.Now().Add(c.srv.cfg.HandshakeTimeout))
	c.handshake(data)
}

// appendAPIResponse appends an HTTP publish's answer.
func appendAPIResponse(dst []byte, status int, contentType string, body []byte, extra string, close bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, ws.StatusText(status)...)
	dst = append(dst, "\r\nContent-Type: "...)
	dst = append(dst, contentType...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n"...)
	if close {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, extra...)
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// maxRateKeys bounds the per-key rate table. Only keys the store accepted
// get an entry, so that many is that many real keys publishing within a
// second; past it, new keys are not limited until the sweep makes room.
const maxRateKeys = 1 << 16

// keyRates holds the token buckets of --max-publish-rate for HTTP
// publish: one per API key (by its SHA-256), shared by every connection
// that presents it. Sharded; an entry goes once its bucket is full again,
// which is the same as having none.
type keyRates struct {
	shards [16]struct {
		mu sync.Mutex
		m  map[[32]byte]*bucket
	}
}

// take takes a token of rate for the key whose hash is h.
func (k *keyRates) take(h [32]byte, rate, now int64) bool {
	sh := &k.shards[h[0]%uint8(len(k.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[h]
	if b == nil {
		if sh.m == nil {
			sh.m = make(map[[32]byte]*bucket)
		}
		if len(sh.m) >= maxRateKeys/len(k.shards) {
			return true
		}
		b = new(bucket)
		b.fill(rate, now)
		sh.m[h] = b
	}
	return b.take(1, rate, now)
}

// sweep drops the entries of keys unused for a second: their buckets are
// full again.
func (k *keyRates) sweep(now int64) {
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		for h, b := range sh.m {
			if now-b.last >= int64(time.Second) {
				delete(sh.m, h)
			}
		}
		sh.mu.Unlock()
	}
}
