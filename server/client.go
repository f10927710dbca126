package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

type state uint8

const (
	stateHandshake  state = iota // reading the request head
	stateKeyCheck                // off the loop: a publisher's key is being checked, or a subscriber waits for the cluster
	statePublisher               // upgraded publisher
	stateSubscriber              // upgraded subscriber
	stateHTTP                    // a plain HTTP request is being answered
	stateAPIBody                 // reading an HTTP publish's body (see httppub.go)
	stateAPIPublish              // off the loop: an HTTP publish's key is checked and its message published
	stateAPIIdle                 // keep-alive, between HTTP publishes
	stateClosing                 // our close frame or refusal is out
	stateClosed                  // the socket is gone
)

var clientIDs atomic.Uint64

// client is one connection's protocol state: what every connection has,
// whatever its role, and a part per role. The state machine reads from the
// parts: hs is set from the accept until the 101 (and for the life of an
// HTTP connection, each of whose requests has a head), pub once the
// connection is a publisher, and sub means something once it asked to
// subscribe.
type client struct {
	// What a fan-out reads for each subscriber comes first, so that it
	// touches one cache line per subscriber: conn, slow and sub.kind.
	srv  *Server
	conn *loop.Conn
	// slow is set, without c.mu, by the first Send that found the backlog
	// full (markSlow): nothing more is sent to c, which is being cut.
	slow atomic.Bool
	// A subscriber's part (zero for others), guarded by mu; its kind is
	// set before it joins its topic, and the fan-out reads it unlocked.
	sub subscriber

	id     uint64
	opened int64 // UnixNano of the accept

	mu        sync.Mutex // guards everything below, and what the parts hold
	state     state
	upgraded  bool
	lost      bool   // closing, and its input can no longer be parsed
	drop      bool   // closing without waiting for the peer's close (dropLocked)
	closeCode uint16 // the code of the close frame the hub sent, if any
	rd        ws.Reader
	close     []byte // the close frame to answer with, once the read is handled
	topic     *topics.Topic[*client]
	lastRead  int64      // UnixNano of the last read, for keepalive
	pingSent  int64      // UnixNano of the unanswered ping, 0 if none
	addr      netip.Addr // the address admitted by the per-address limits, if any

	// Behind a trusted proxy, the client it named (with its port when a
	// PROXY header gave one); nil for a direct client and for the proxy's
	// own connections (proxy.go).
	proxied *netip.AddrPort

	hs  *handshake // until the 101; nil after it
	pub *publisher // a publisher's (from its 101 on); nil for others
	api *apiConn   // an HTTP publishing connection's requests; nil for others
}

// handshake is what a connection needs until its 101: taken from
// handshakes at the accept, put back (endHandshake) once the connection is
// upgraded or gone, so that an idle subscriber holds none of it.
type handshake struct {
	buf     []byte  // the request head so far, then bytes that came before the 101
	via     via     // how the client's address is learnt (proxy.go)
	refusal refusal // a limit the connection broke at accept (or once its proxy named the client), answered at its request
}

var handshakes = sync.Pool{New: func() any { return new(handshake) }}

// endHandshake lets go of c's handshake part. c.mu is held.
func (c *client) endHandshake() {
	if h := c.hs; h != nil {
		c.hs = nil
		*h = handshake{}
		handshakes.Put(h)
	}
}

// publisher is a publisher's part of its client, allocated at its 101.
type publisher struct {
	sc    scratch      // its reads' encoding and fan-out scratch
	claim ClusterTopic // a cluster node's claim for it; nil on a single hub
	rate  bucket       // MaxPublishRate messages a second
}

// subscriber is a subscriber's part of its client. It is kept in the
// client, not behind a pointer: subscribers are nearly every connection,
// and the fan-out reads kind for each of them (kind comes first, on the
// client's first cache line).
type subscriber struct {
	kind     uint8      // its variant: kindPlain, kindMeta, kindSSE or a deflate kind
	joined   bool       // it holds the cluster's interest in interest
	interest topics.Key // its topic, whose cluster interest it holds if joined
	input    bucket     // SubscriberInputLimit bytes a second
	sse      sseKeep    // an EventSource subscriber's keepalive
	// A private domain's subscriber: the key that verified its token and
	// the token's exp; nil for everyone else (token.go).
	tok *tokenGrant
}

// OnOpen implements loop.Handler.
func (s *Server) OnOpen(conn *loop.Conn) {
	c := &client{srv: s, conn: conn, id: clientIDs.Add(1), opened: time.Now().UnixNano()}
	c.hs = handshakes.Get().(*handshake)
	conn.Value = c
	// Once in s.clients, c is reachable from other goroutines (Shutdown
	// closes it, reading what openAddr sets): fill it in under its lock.
	c.mu.Lock()
	defer c.mu.Unlock()
	s.clients.add(c)
	s.stats.handshaking.Add(1) // stateHandshake
	if s.clients.len() > s.cfg.MaxConnections {
		c.hs.refusal = refTooManyConnections
	}
	c.openAddr() // per-address limits: now, or once a trusted proxy names the client

	timeout := s.cfg.HandshakeTimeout
	if s.draining.Load() || c.hs.refusal != 0 {
		timeout = min(timeout, time.Second) // it must not hold the shutdown up
	}
	conn.SetDeadline(time.Now().Add(timeout))
}

// OnClose implements loop.Handler.
func (s *Server) OnClose(conn *loop.Conn, _ error) {
	c := conn.Value.(*client)
	defer s.clients.remove(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.upgraded:
		s.stats.disconnects.add(disconnectOf(c.closeCode), 1)
	case c.api != nil && (c.state == stateHandshake || c.state == stateAPIBody):
		s.stats.httpPublishes.add(apiAbandoned, 1) // between requests it is no loss
	case c.state == stateHandshake || c.state == stateKeyCheck:
		if time.Now().UnixNano()-c.opened >= int64(s.cfg.HandshakeTimeout) {
			s.stats.Refused.add(refHandshakeTimeout, 1)
		} else {
			s.stats.Refused.add(refAbandoned, 1)
		}
	}
	c.setState(stateClosed)
	c.leaveTopic()
	if c.sub.joined {
		s.cluster.Leave(c.sub.interest)
		c.sub.joined = false
	}
	if c.addr.IsValid() {
		s.limits.close(c.addr)
	}
	if c.sub.tok != nil {
		s.tokenClients.Add(-1)
		c.sub.tok = nil
	}
	c.endHandshake()
}

// OnData implements loop.Handler.
func (s *Server) OnData(conn *loop.Conn, data []byte) {
	c := conn.Value.(*client)
	c.mu.Lock()
	var slow *slowSubs // a publisher's: cut once c.mu is released
	defer func() {
		c.mu.Unlock()
		if slow != nil {
			slow.cut()
		}
	}()
	c.lastRead, c.pingSent = time.Now().UnixNano(), 0
	switch c.state {
	case stateHandshake:
		c.handshake(data)
	case stateKeyCheck:
		if len(c.hs.buf)+len(data) > s.cfg.MaxMessageSize {
			c.refuse(refBadRequest, "data sent before the handshake completed")
			return
		}
		c.hs.buf = append(c.hs.buf, data...)
	case statePublisher:
		slow = &c.pub.sc.fan.slow
		c.publish(data)
	case stateHTTP:
		// One request per connection: anything more is dropped.
	case stateAPIBody:
		c.apiBody(data)
	case stateAPIPublish:
		c.apiPipelined(data)
	case stateAPIIdle:
		c.apiWake(data)
	case stateSubscriber:
		c.subscriberInput(data)
	case stateClosing:
		// Wait for the peer's close frame; everything else is dropped. When
		// it comes, or the framing is lost (RFC 6455 7.1.7: fail the
		// connection), close once our own bytes are out: closing with a
		// backlog would discard the close frame queued behind it. A backlog
		// that does not drain is ended by the close timeout.
		if c.lost || c.sub.kind == kindSSE {
			return // an EventSource client has no close frame to send
		}
		c.rd.Discard = true
		if err := c.rd.Feed(data, c); err != nil || c.rd.Closed() {
			c.lost = err != nil
			c.conn.CloseFlushed()
		}
	}
	c.apiNext()
}

// setState moves the client to st, keeping the count of connections in
// their handshake exact. c.mu is held.
func (c *client) setState(st state) {
	was := c.state == stateHandshake || c.state == stateKeyCheck
	is := st == stateHandshake || st == stateKeyCheck
	switch {
	case was && !is:
		c.srv.stats.handshaking.Add(-1)
	case is && !was:
		c.srv.stats.handshaking.Add(1)
	}
	c.state = st
}

func (c *client) isPublisher() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pub != nil
}

// handshake reads the request head and answers it.
func (c *client) handshake(data []byte) {
	s := c.srv
	if c.hs.via == viaHeader {
		rest, ok := c.readProxyHeader(data)
		if !ok || len(rest) == 0 {
			return
		}
		data = rest
	}
	buf, owned := data, false
	if len(c.hs.buf) > 0 {
		c.hs.buf = append(c.hs.buf, data...)
		buf, owned = c.hs.buf, true
	}
	req, n, err := ws.ParseRequest(buf, s.cfg.MaxHeaderBytes)
	switch {
	case errors.Is(err, ws.ErrIncomplete):
		if s.draining.Load() && strings.HasPrefix(requestTarget(buf), "/ws/") {
			c.drainRefuse() // no need to wait for the rest of a WebSocket request
			return
		}
		if len(c.hs.buf) == 0 {
			c.hs.buf = append(c.hs.buf, data...)
		}
		return
	case errors.Is(err, ws.ErrHeadTooLarge):
		c.refuse(refHeaderTooLarge, "request head larger than "+strconv.Itoa(s.cfg.MaxHeaderBytes)+" bytes")
		return
	case err != nil:
		c.refuse(refBadRequest, "malformed HTTP request")
		return
	}
	if c.hs.via == viaForwarded && !c.forwarded(req.ForwardedFor) {
		return
	}
	rest := buf[n:]
	r, err := parseTarget(req.Target)
	if errors.Is(err, errNoEndpoint) && s.cfg.HTTP != nil {
		c.serveHTTP(req) // health, metrics, also while draining: the handler decides
		return
	}
	if r.http && c.hs.refusal == 0 {
		c.apiRequestHead(req, buf[:n], r, err, rest, owned)
		return
	}
	if s.draining.Load() {
		if err == nil && r.sse && req.Method == "GET" && acceptsEventStream(req.Accept) {
			c.drainSSE(req.Origin)
			return
		}
		c.drainRefuse()
		return
	}
	if c.hs.refusal != 0 {
		c.refuseWith(c.hs.refusal, limitReason[c.hs.refusal], "", drainLinger)
		return
	}
	if req.Method != "GET" {
		c.refuseWith(refMethodNotAllowed, "only GET is served", "Allow: GET\r\n", 0)
		return
	}
	switch {
	case errors.Is(err, errNoEndpoint):
		c.refuse(refNoEndpoint, "no such endpoint: use /ws/pub/{ApiKey}/{Domain}/{Topic}, /ws/sub/{Domain}/{Topic}, /sse/sub/{Domain}/{Topic} or POST /api/pub/{Domain}/{Topic}")
		return
	case err != nil:
		c.refuse(refBadRequest, "bad path: "+err.Error())
		return
	case r.sse:
		c.handshakeSSE(r.topic, req, rest)
		return
	case !req.Upgrade:
		c.refuseWith(refUpgradeRequired, "this endpoint speaks WebSocket only", "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n", 0)
		return
	case req.Version != "13":
		c.refuseWith(refUpgradeRequired, "unsupported WebSocket version: want 13", "Sec-WebSocket-Version: 13\r\n", 0)
		return
	case req.Body:
		c.refuse(refBadRequest, "an upgrade request has no body")
		return
	case !ws.ValidKey(req.Key):
		c.refuse(refBadRequest, "missing or invalid Sec-WebSocket-Key")
		return
	case req.Host == "":
		c.refuse(refBadRequest, "missing Host header")
		return
	case !originAllowed(s.cfg.AllowedOrigins, req.Origin):
		c.refuse(refOriginForbidden, "origin not allowed: "+req.Origin)
		return
	}
	deflate := !s.cfg.DisableCompression && ws.AcceptDeflate(req.Extensions)
	if !r.publisher {
		if !c.admitToken(r.topic, &req) {
			return
		}
		sr := subRequest{wsKey: req.Key, deflate: deflate}
		if sr.from, err = parseResume(req.Target); err != nil {
			c.refuse(refBadRequest, err.Error())
			return
		}
		if ws.HasProtocol(req.Protocols, metaProtocol) {
			sr.kind = kindMeta
		}
		if s.cluster != nil {
			c.subscribeCluster(r.topic, sr, rest)
			return
		}
		c.subscribe(r.topic, sr, rest)
		return
	}
	key := r.key
	if key == "" {
		scheme, bearer, _ := strings.Cut(req.Authorization, " ")
		bearer = strings.TrimSpace(bearer)
		if !strings.EqualFold(scheme, "Bearer") || bearer == "" {
			c.refuseWith(refUnauthorized, "missing API key: put it in the path or an Authorization: Bearer header", "WWW-Authenticate: Bearer\r\n", 0)
			return
		}
		key = bearer
	}
	if !keys.WellFormed(key) {
		c.refuseKey(r.topic, key, "malformed")
		return
	}
	select {
	case s.checks <- struct{}{}:
	default:
		c.refuse(refKeyChecksBusy, "too many publisher handshakes in progress")
		return
	}
	c.setState(stateKeyCheck)
	c.hs.buf = append(c.hs.buf[:0:0], rest...)
	go c.checkKey(r.topic, key, req.Key, deflate)
}

// checkKey asks the key store about a publisher's key off the event loop,
// and on a cluster node claims the topic across the cluster, then completes
// or refuses the handshake.
func (c *client) checkKey(k topics.Key, key, wsKey string, deflate bool) {
	s := c.srv
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
	err := s.cfg.Keys.Check(ctx, key, k.Domain)
	var claim ClusterTopic
	var claimErr error
	if err == nil && s.cluster != nil {
		claim, claimErr = s.cluster.Claim(ctx, k)
	}
	cancel()
	<-s.checks

	// Subscribers too slow for what this handshake sends them (a
	// notice, the early messages) are cut once c.mu is released.
	var slow slowSubs
	var sc *scratch
	defer func() {
		slow.cut()
		if sc != nil {
			sc.fan.slow.cut()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateKeyCheck {
		if claim != nil {
			claim.Release()
		}
		return // the client left while we asked
	}
	switch {
	case err == nil:
		s.stats.keyChecks[keyAccepted].Add(1)
	case errors.Is(err, keys.ErrRefused):
		s.stats.keyChecks[keyRefused].Add(1)
	default:
		s.stats.keyChecks[keyError].Add(1)
	}
	switch {
	case errors.Is(err, keys.ErrRefused):
		c.refuseKey(k, key, "refused")
		return
	case err != nil:
		s.log.Warn("cannot check a publisher's API key", "domain", k.Domain, "key", keys.Redact(key), "err", err)
		c.refuse(refKeyStoreUnavailable, "key store unavailable, try again")
		return
	case errors.Is(claimErr, topics.ErrHasPublisher):
		c.refuse(refConflict, "topic already has its publisher (on another hub node)")
		return
	case claimErr != nil:
		s.log.Warn("cannot claim a topic across the cluster", "domain", k.Domain, "topic", k.Topic, "err", claimErr)
		c.refuse(refClusterUnavailable, "cluster unavailable, try again")
		return
	}
	t, err := s.topics.AddPublisher(k)
	switch {
	case errors.Is(err, topics.ErrTooManyTopics):
		if claim != nil {
			claim.Release()
		}
		c.refuse(refTooManyTopics, "domain has too many topics")
		return
	case err != nil:
		if claim != nil {
			claim.Release()
		}
		c.refuse(refConflict, "topic already has its publisher")
		return
	}
	if claim != nil {
		s.claimed(t, claim, &slow)
	}
	s.stats.Publishers.Add(1) // counted before the 101 is out
	if err := c.conn.Send(ws.AppendUpgradeResponse(make([]byte, 0, upgradeResponseSize), wsKey, "", extensions(deflate))); err != nil {
		s.stats.Publishers.Add(-1)
		s.topics.RemovePublisher(t)
		if claim != nil {
			claim.Release()
		}
		c.upgradeFailed(err)
		return
	}
	s.stats.accepted[rolePublisher].Add(1)
	s.metrics.handshake.Observe(since(c.opened))
	s.keyUsers.add(c, keys.Hash(key))
	c.setState(statePublisher)
	c.topic, c.upgraded = t, true
	c.pub = &publisher{claim: claim}
	c.pub.rate.fill(int64(s.cfg.MaxPublishRate), time.Now().UnixNano())
	c.rd = ws.Reader{MaxMessage: s.cfg.MaxMessageSize, Deflate: deflate}
	c.conn.SetDeadline(time.Time{})
	early := c.hs.buf
	c.endHandshake()
	if len(early) > 0 {
		sc = &c.pub.sc
		c.publish(early)
	}
}

// subRequest is what a subscriber's handshake asks for.
type subRequest struct {
	wsKey  string // Sec-WebSocket-Key; "" for EventSource
	kind   int    // kindPlain, kindMeta or kindSSE
	from   resume // where its stream starts
	origin string // EventSource: the Origin its response allows, if any
	// deflate: it negotiated permessage-deflate, and gets kind's deflate
	// variant live (its replay is kind's, uncompressed).
	deflate bool
}

// upgradeResponseSize holds the longest 101 the hub sends, with
// wspubsub.meta and permessage-deflate (270 bytes).
const upgradeResponseSize = 288

// upgradeBufs holds the buffers subscribers' 101 responses are written in:
// none is kept past its Send, so a storm of handshakes reuses a few.
var upgradeBufs = sync.Pool{New: func() any { return new([upgradeResponseSize]byte) }}

// extensions is the Sec-WebSocket-Extensions a 101 answers with.
func extensions(deflate bool) string {
	if deflate {
		return ws.DeflateResponse
	}
	return ""
}

// subscribe joins the topic and sends the 101 (an EventSource subscriber's
// 200), with the replay the subscriber asked for, as one step: no message
// can reach the client before them, and every message published after the
// replay's last is in its live stream. A replay larger than the backlog
// bound is cut short and followed by a 4000 close, without joining: the
// client resumes from what it got.
func (c *client) subscribe(k topics.Key, sr subRequest, rest []byte) {
	s := c.srv
	c.sub.kind = uint8(sr.kind)
	if sr.deflate {
		c.sub.kind += kindPlainDeflate // kindPlainDeflate or kindMetaDeflate
	}
	protocol := ""
	if sr.kind == kindMeta {
		protocol = metaProtocol
	}
	cut := false
	var rb *[upgradeResponseSize]byte
	err := c.conn.SendFirst(func() ([]byte, error) {
		var rp history.Replay
		var epoch string
		t, err := s.topics.Join(k, c, func(t *topics.Topic[*client]) bool {
			var complete bool
			rp, complete = replayFor(t.Log, sr.from, sr.kind, s.cfg.MaxBacklog, time.Now().UnixNano(), s.cluster == nil)
			epoch = t.Log.Epoch()
			cut = !complete
			return complete
		})
		if err != nil {
			return nil, err
		}
		if !cut {
			// Counted before the 101 is out: a client that has it sees itself.
			c.topic = t
			s.stats.Subscribers.Add(1)
		}
		s.stats.accepted[roleSubscriber].Add(1)
		if sr.from.mode != resumeLive {
			s.countReplay(rp, cut)
		}
		var b []byte
		if sr.kind == kindSSE {
			b = appendSSEHead(nil, sr.origin, sseRetry())
		} else {
			// Sized for the longest 101 (subprotocol and extension), from
			// a pool: Send copies what the kernel does not take at once.
			rb = upgradeBufs.Get().(*[upgradeResponseSize]byte)
			b = ws.AppendUpgradeResponse(rb[:0], sr.wsKey, protocol, extensions(sr.deflate))
		}
		return appendReplay(b, sr.kind, epoch, rp), nil
	})
	if rb != nil {
		upgradeBufs.Put(rb) // a replay past its size went to a new array
	}
	switch {
	case errors.Is(err, topics.ErrNotStarted):
		c.refuse(refTopicNotStarted, "topic not started: no publisher")
		return
	case errors.Is(err, topics.ErrTooManyTopics):
		c.refuse(refTooManyTopics, "domain has too many topics")
		return
	case err != nil:
		if c.topic != nil {
			s.topics.Unsubscribe(c.topic, c)
			s.stats.Subscribers.Add(-1)
			c.topic = nil
		}
		c.upgradeFailed(err)
		return
	}
	s.metrics.handshake.Observe(since(c.opened))
	c.setState(stateSubscriber)
	c.upgraded = true
	c.sub.input.fill(int64(s.cfg.SubscriberInputLimit), time.Now().UnixNano())
	c.endHandshake()
	c.rd = ws.Reader{MaxMessage: s.cfg.MaxMessageSize, Discard: true, Deflate: sr.deflate}
	c.sub.sse = sseKeep{}
	c.conn.SetDeadline(time.Time{})
	if cut {
		c.cutSlowLocked("slow consumer: replay larger than --max-backlog, resume from the last position")
		return
	}
	if len(rest) > 0 {
		c.subscriberInput(rest)
	}
}

// upgradeFailed ends a connection whose 101 (or EventSource 200) could not
// be written: the client left, or its socket failed, after it asked. What
// the handshake set up is undone by the caller; the connection is closed
// now rather than at the handshake timeout, and OnClose counts it as
// abandoned. Logged at debug: a reconnect storm has many of these.
func (c *client) upgradeFailed(err error) {
	c.srv.log.Debug("cannot send the handshake's response; closing", "remote", c.remoteAddr(), "err", err)
	c.conn.Close()
}

// batchPool holds the buffers a publisher's read is encoded into. They are
// used on one goroutine for the length of one OnData.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 80<<10); return &b }}

// publish parses a read of a publisher's socket, encodes its messages once
// into one run of frames, and hands that run to every subscriber.
//
// A fan-out too large for the event loop goes on after publish returns,
// written by the pool (see fanoutState.async): the connection's reads are
// paused until it is done, so the loop serves its other connections
// meanwhile and this publisher's next read comes after it. The read's
// buffer is held until then.
func (c *client) publish(data []byte) {
	sc := &c.pub.sc
	if sc.fan.async == nil {
		conn := c.conn
		sc.fan.async = &asyncHooks{pause: func() { conn.PauseRead() }, resume: conn.ResumeRead}
	}
	// Returns at once unless reads could not be paused (not on Linux) or
	// a TLS read held more records than the one that started the fan-out.
	sc.fan.done.Wait()
	bp := sc.held
	if bp == nil || cap(*bp) > 4<<20 {
		bp = batchPool.Get().(*[]byte)
	}
	sc.held = nil
	out := &sc.out
	out.frames, out.starts, out.payload = (*bp)[:0], out.starts[:0], 0
	err := c.rd.Feed(data, c)
	if len(out.starts) > 0 {
		c.srv.publish(sc, c.topic, out, c.pub.claim)
	}
	*bp = out.frames[:0]
	switch {
	case sc.handedOff:
		sc.held = bp // its bytes are still being written
	case cap(out.frames) <= 4<<20:
		batchPool.Put(bp)
	}
	out.frames = nil
	if cap(out.starts) > 4096 {
		out.starts = nil
	}
	c.afterRead(err)
}

// subscriberInput reads what a subscriber sends: control frames are
// answered, data is dropped, and a subscriber sending more than its limit in
// a second is closed. An EventSource client has nothing to say after its
// request: whatever it sends is dropped, within the same limit.
func (c *client) subscriberInput(data []byte) {
	s := c.srv
	if !c.sub.input.take(int64(len(data)), int64(s.cfg.SubscriberInputLimit), c.lastRead) {
		s.stats.SubscriberFloods.Add(1)
		c.closeLocked(ws.ClosePolicyViolation, "subscriber sent more than "+strconv.Itoa(s.cfg.SubscriberInputLimit)+" bytes a second")
		return
	}
	if c.sub.kind == kindSSE {
		return
	}
	c.afterRead(c.rd.Feed(data, c))
}

// afterRead ends a read: it answers a close frame the peer sent, or closes
// the connection over a protocol error.
func (c *client) afterRead(err error) {
	switch {
	case err == errSlow:
		c.cutSlowLocked(slowReason)
	case err != nil:
		code, reason := ws.CloseInternalError, "internal error"
		if ce, ok := err.(*ws.CloseError); ok {
			code, reason = ce.Code, ce.Reason
		}
		c.closeLocked(code, reason)
	case c.close != nil:
		frame := c.close
		c.close = nil
		c.leaveTopic()
		c.setState(stateClosing)
		c.conn.SendLast(frame, 0)
	}
}

// Message implements ws.Handler for publishers: each message is appended to
// the read's run of frames.
func (c *client) Message(op ws.Opcode, payload []byte) error {
	if rate := int64(c.srv.cfg.MaxPublishRate); rate > 0 {
		if !c.pub.rate.take(1, rate, c.lastRead) {
			return &ws.CloseError{Code: ws.ClosePublishRate, Reason: "publishing faster than " + strconv.Itoa(int(rate)) + " messages a second"}
		}
	}
	out := &c.pub.sc.out
	out.starts = append(out.starts, len(out.frames))
	out.frames = ws.AppendFrame(out.frames, op, payload)
	out.payload += len(payload)
	c.srv.stats.MessagesIn.Add(1)
	c.srv.stats.BytesIn.Add(int64(len(payload)))
	return nil
}

// Control implements ws.Handler: pings are answered, pongs ignored, and a
// close frame is answered once the read is handled.
func (c *client) Control(op ws.Opcode, payload []byte) error {
	switch op {
	case ws.OpPing:
		var b [2 + ws.MaxControlPayload]byte
		if err := c.conn.Send(ws.AppendFrame(b[:0], ws.OpPong, payload)); errors.Is(err, loop.ErrBacklogFull) {
			return errSlow
		}
	case ws.OpClose:
		if c.state == stateClosing {
			return nil // the answer to our own close frame
		}
		code := ws.CloseNormal
		if len(payload) >= 2 {
			code = binary.BigEndian.Uint16(payload)
		}
		c.close = ws.AppendClose(nil, code, "")
	}
	return nil
}

// slowReason is what a connection closed for a full backlog is told.
const slowReason = "slow consumer: backlog over --max-backlog"

// errSlow ends the parsing of a read whose answer (a pong) found the
// backlog full: afterRead cuts the connection, once what the read held
// before is handled.
var errSlow = errors.New("server: connection backlog full")

// markSlow records that a Send to c found its backlog full, and reports
// whether this was the first time (the one that counts the slow consumer).
// It takes no lock, so a fan-out marks a subscriber while it holds the
// topic's Publishing mutex: from then on no writer sends it anything, and
// the writer cuts it (cutSlow) once it holds no lock. Every message after
// the one it could not take is dropped, so its stream has no hole.
func (c *client) markSlow() bool {
	if c.slow.Load() || !c.slow.CompareAndSwap(false, true) {
		return false
	}
	c.srv.stats.SlowConsumers.Add(1)
	return true
}

// cutSlow closes a connection marked slow, from any goroutine holding no
// lock of the hub's.
func (c *client) cutSlow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cutSlowLocked(slowReason)
}

// cutSlowLocked is the one way a connection is closed for reading too
// slowly: it is marked (and counted, if it was not yet) and closed with
// 4000 and reason. c.mu is held.
func (c *client) cutSlowLocked(reason string) {
	c.markSlow()
	c.closeLocked(ws.CloseSlowConsumer, reason)
}

// closeWith closes the connection from any goroutine: see closeLocked.
func (c *client) closeWith(code uint16, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
}

// closeLocked leaves the topic, sends a close frame and waits (up to
// CloseTimeout) for the peer's answer; a connection still in its handshake
// is refused with 503 instead. An EventSource subscriber, which has no close
// handshake, gets a last "close" event with the code and reason, and its
// connection ends once that is out (or CloseTimeout, with a backlog that
// does not drain). An HTTP publishing connection gets 503 for the body it
// is sending, the answer to the message being published, or, idle, just
// its end. c.mu is held.
func (c *client) closeLocked(code uint16, reason string) {
	switch c.state {
	case stateClosing, stateClosed:
		return
	case stateHandshake, stateKeyCheck:
		c.refuseWith(refShuttingDown, reason, "", drainLinger)
		return
	case stateHTTP:
		return // its answer is on the way
	case stateAPIIdle:
		c.setState(stateClosing) // nothing asked, nothing to answer
		c.conn.Close()
		return
	case stateAPIBody:
		c.apiAnswer(apiShuttingDown, reason, true)
		return
	case stateAPIPublish:
		c.api.closeAfter = true // once its answer is out
		return
	}
	c.leaveTopic()
	c.setState(stateClosing)
	c.closeCode = code
	if c.sub.kind == kindSSE {
		c.conn.SendFinal(appendSSEClose(nil, code, reason), c.srv.cfg.CloseTimeout)
		return
	}
	if c.drop {
		// A peer that answers no ping will not answer a close either:
		// the connection ends once the kernel has taken the close frame,
		// not CloseTimeout later (or after dropLinger if it cannot).
		c.conn.SendFinal(ws.AppendClose(nil, code, reason), min(c.srv.cfg.CloseTimeout, dropLinger))
		return
	}
	c.conn.SendLast(ws.AppendClose(nil, code, reason), c.srv.cfg.CloseTimeout)
}

// dropLinger bounds how long a connection dropped for missing its pong may
// keep its socket while its close frame waits for the kernel: the peer
// stopped reading, so its receive window may never open.
const dropLinger = time.Second

// dropLocked is closeLocked for a WebSocket peer that missed its pong: it
// gets its close frame, and the hub does not wait for an answer that will
// not come. c.mu is held.
func (c *client) dropLocked(code uint16, reason string) {
	c.drop = true
	c.closeLocked(code, reason)
}

// leaveTopic takes the client out of its topic at once, so no message is
// sent after its close frame and its publisher slot frees up.
func (c *client) leaveTopic() {
	t := c.topic
	if t == nil {
		return
	}
	c.topic = nil
	if c.pub != nil {
		c.srv.keyUsers.remove(c)
		c.srv.topics.RemovePublisher(t)
		c.srv.stats.Publishers.Add(-1)
		if c.pub.claim != nil {
			c.pub.claim.Release()
			c.pub.claim = nil
		}
	} else {
		c.srv.topics.Unsubscribe(t, c)
		c.srv.stats.Subscribers.Add(-1)
	}
}

// limitReason is what a refusal for a broken connection limit says.
var limitReason = [numRefusals]string{
	refTooManyConnections: "too many connections",
	refTooManyFromAddr:    "too many connections from your address",
	refHandshakeRate:      "too many new connections from your address: slow down",
}

// drainRefuse answers 503 to a handshake that comes while the hub drains,
// and lingers so the client reads the answer before the socket goes,
// whatever part of its request is still unread.
func (c *client) drainRefuse() {
	c.refuseWith(refShuttingDown, "server shutting down", "", drainLinger)
}

// drainLinger is how long a refusal during the drain keeps its socket open
// for the client to read it: short, since the shutdown waits for it.
const drainLinger = 200 * time.Millisecond

// requestTarget is the target of the request line at the start of buf, or
// "" while that line is incomplete.
func requestTarget(buf []byte) string {
	line, _, ok := bytes.Cut(buf, []byte("\r\n"))
	if !ok {
		return ""
	}
	fields := bytes.Fields(line)
	if len(fields) < 2 {
		return ""
	}
	return string(fields[1])
}

// refuse answers a handshake with an HTTP error and closes the connection.
func (c *client) refuse(r refusal, reason string) { c.refuseWith(r, reason, "", 0) }

// refuseWith answers with r's status, reason and extra header lines. With
// linger 0 the socket closes as soon as the kernel took the answer; a
// positive linger keeps it open that long for the client to read it.
func (c *client) refuseWith(r refusal, reason, extra string, linger time.Duration) {
	s := c.srv
	s.stats.Refused.add(r, 1)
	status := refusals[r].status
	s.log.Info("handshake refused", "status", status, "reason", reason, "remote", c.remoteAddr())
	c.setState(stateClosing)
	c.hs.buf = nil
	c.conn.SendLast(ws.AppendErrorResponse(nil, status, reason, extra), linger)
}

// refuseKey answers 401 for a key that may not publish in k's domain,
// logging only a redacted form of the key.
func (c *client) refuseKey(k topics.Key, key, why string) {
	s := c.srv
	s.stats.Refused.add(refUnauthorized, 1)
	s.log.Info("handshake refused", "status", 401, "reason", "API key "+why, "domain", k.Domain, "key", keys.Redact(key), "remote", c.remoteAddr())
	c.setState(stateClosing)
	c.hs.buf = nil
	c.conn.SendLast(ws.AppendErrorResponse(nil, 401, "API key refused for this domain", "WWW-Authenticate: Bearer\r\n"), 0)
}
