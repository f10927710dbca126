package server

import (
	"time"

	"github.com/wspubsub/wspubsub/ws"
)

// keepalive pings each upgraded connection that has sent nothing for
// PingInterval, and closes with 4003 one that then sends nothing (a pong or
// anything else) within PongTimeout: dead peers and half-open TCP
// connections do not pile up. EventSource subscribers, which cannot
// answer, get a comment line instead (keepaliveSSE). One goroutine per hub
// scans the connections a few times per PongTimeout; there is no timer per
// connection. It closes subscribers whose token reached its exp, at
// least once a second while there are any, pings on or off. It also sweeps the per-address limits' idle entries, and once
// a second the history's entries past their TTL and HTTP publish's idle
// per-key rates.
func (s *Server) keepalive() {
	// The scan runs every pingEvery for keepalive, and every second while
	// a token's exp may pass: a hub without private subscribers scans no
	// more often than keepalive needs.
	every, pingEvery := tokenSweepEvery, time.Duration(0)
	if s.cfg.PingInterval > 0 {
		pingEvery = max(min(s.cfg.PingInterval, s.cfg.PongTimeout)/4, 10*time.Millisecond)
		every = min(pingEvery, tokenSweepEvery)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var buf []*client
	var swept, pinged int64
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		due := pingEvery > 0 && now-pinged >= int64(pingEvery-every/2)
		if due || s.tokenClients.Load() > 0 {
			buf = s.clients.eachInto(buf, func(c *client) { c.keepalive(now, due) })
			if due {
				pinged = now
			}
		}
		s.limits.sweep(now)
		if now-swept >= int64(time.Second) {
			s.sweepHistory(now)
			s.keyRates.sweep(now)
			swept = now
		}
	}
}

// keepalive closes c if its token expired, and, if ping is set, pings c or
// closes it, as its silence demands.
func (c *client) keepalive(now int64, ping bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != statePublisher && c.state != stateSubscriber {
		return
	}
	if c.tokenExpired(now) || !ping {
		return
	}
	if c.sub.kind == kindSSE {
		c.keepaliveSSE(now)
		return
	}
	cfg := &c.srv.cfg
	switch {
	case c.pingSent != 0:
		if now-c.pingSent >= int64(cfg.PongTimeout) {
			c.dropLocked(ws.CloseIdleTimeout, "idle timeout: no answer to ping")
		}
	case now-c.lastRead >= int64(cfg.PingInterval):
		var b [2]byte
		c.pingSent = now
		if err := c.conn.Send(ws.AppendFrame(b[:0], ws.OpPing, nil)); err != nil && !c.conn.Closing() {
			c.cutSlowLocked(slowReason)
		}
	}
}
