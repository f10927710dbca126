package server

// Behind a proxy. A connection from a peer in Config.TrustedProxies is
// carried by a proxy for a client elsewhere; the hub learns the client's
// address from the proxy's word, and only then applies the per-address
// limits, logs the client's address and counts its refusals:
//
//   - with Config.ProxyProtocol, from the PROXY protocol header that must
//     open the connection (readProxyHeader, before any HTTP; under TLS,
//     before the TLS handshake, which package loop holds back until
//     OnPreface has read the header);
//   - without it, from X-Forwarded-For, at each request head (forwarded):
//     a keep-alive connection a proxy reuses for several clients is
//     counted for the client of its latest request.
//
// A peer outside TrustedProxies is the client itself: its PROXY header is
// a malformed HTTP request (400), or under TLS a failed TLS handshake, and
// its X-Forwarded-For is never read. A connection from a trusted proxy
// that names no client (a PROXY LOCAL health check, a request without
// X-Forwarded-For) is the proxy's own and no per-address limit applies to
// it, so that a proxy never uses up its own address's allowance.

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/proxyproto"
)

// via says how a connection learns its client's address.
type via uint8

const (
	viaPeer      via = iota // the peer is the client
	viaHeader               // from a trusted proxy: a PROXY header is due
	viaForwarded            // from a trusted proxy: X-Forwarded-For, at each request
	viaProxied              // from a trusted proxy whose PROXY header was read
)

// ParseTrustedProxies reads a comma-separated list of CIDR prefixes and
// bare addresses ("10.0.0.0/8, 192.0.2.7, ::1") into prefixes, each bare
// address a /32 or /128.
func ParseTrustedProxies(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("bad trusted proxy %q: want an address or CIDR prefix such as 10.0.0.0/8", item)
			}
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("bad trusted proxy %q: want an address or CIDR prefix such as 10.0.0.0/8", item)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// trusted reports whether a is one of the trusted proxies.
func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// openAddr sets a new connection's client address and how it is to be
// learnt, and admits a direct client under the per-address limits.
func (c *client) openAddr() {
	s := c.srv
	peer := addrOf(c.conn.RemoteAddr())
	switch {
	case !s.trusted(peer):
		c.hs.via = viaPeer
		c.admit(peer)
	case s.cfg.ProxyProtocol:
		c.hs.via = viaHeader
		c.conn.ExpectPreface(s) // under TLS the header comes before the handshake
	default:
		c.hs.via = viaForwarded
	}
}

// admit counts the connection for client address a in the per-address
// limits, in place of the address it was counted for, if another; a
// broken limit is answered at the request, as at the accept. c.mu is held,
// or the connection is not yet shared.
func (c *client) admit(a netip.Addr) {
	s := c.srv
	if !s.limits.on() || c.hs.refusal != 0 || a == c.addr {
		return
	}
	if c.addr.IsValid() {
		s.limits.close(c.addr)
		c.addr = netip.Addr{}
	}
	if !a.IsValid() {
		return // the proxy's own connection
	}
	if r, ok := s.limits.open(a, time.Now().UnixNano()); ok {
		c.addr = a
	} else {
		c.hs.refusal = r
	}
}

// readProxyHeader reads the PROXY header a trusted proxy opens the
// connection with. It returns the bytes that follow it, and true, once it
// is read; false while more is needed, or after refusing a connection that
// does not start with a valid one. c.mu is held.
func (c *client) readProxyHeader(data []byte) ([]byte, bool) {
	s := c.srv
	buf := data
	if len(c.hs.buf) > 0 {
		c.hs.buf = append(c.hs.buf, data...)
		buf = c.hs.buf
	}
	h, n, err := proxyproto.Parse(buf, s.cfg.MaxHeaderBytes)
	switch {
	case errors.Is(err, proxyproto.ErrIncomplete):
		if len(c.hs.buf) == 0 {
			c.hs.buf = append(c.hs.buf, data...)
		}
		return nil, false
	case errors.Is(err, proxyproto.ErrMissing):
		c.refuseHeader("missing PROXY protocol header: the hub runs with --proxy-protocol and this peer is a trusted proxy")
		return nil, false
	case errors.Is(err, proxyproto.ErrTooLarge):
		c.refuseHeader("PROXY protocol header larger than " + strconv.Itoa(s.cfg.MaxHeaderBytes) + " bytes")
		return nil, false
	case err != nil:
		c.refuseHeader("malformed PROXY protocol header")
		return nil, false
	}
	c.hs.via = viaProxied
	if !h.Local {
		c.setProxied(h.Source)
		c.admit(h.Source.Addr())
	}
	rest := buf[n:]
	c.hs.buf = nil // rest, if in it, is copied by handshake before c.hs.buf is reused
	return rest, true
}

var _ loop.Prefacer = (*Server)(nil)

// OnPreface implements loop.Prefacer: a TLS connection from a trusted
// proxy under ProxyProtocol opens with its PROXY header in the clear,
// before the TLS handshake, and readProxyHeader reads it there as it does
// at the head of a plain connection's bytes.
func (s *Server) OnPreface(conn *loop.Conn, data []byte) ([]byte, bool) {
	c := conn.Value.(*client)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateHandshake || c.hs.via != viaHeader {
		return nil, false // refused, and closing
	}
	return c.readProxyHeader(data)
}

// refuseHeader refuses a connection from a trusted proxy whose PROXY
// header is missing or bad: with a 400 on a plain connection; under TLS,
// where the header comes before the TLS handshake and a plain-text answer
// would mean nothing to the client, by closing it, counted as
// bad_proxy_header and logged. c.mu is held.
func (c *client) refuseHeader(reason string) {
	s := c.srv
	if s.cfg.TLS == nil {
		c.refuse(refBadRequest, reason)
		return
	}
	s.stats.Refused.add(refBadProxyHeader, 1)
	s.log.Info("handshake refused", "answer", "none: the connection is closed before TLS", "reason", reason, "remote", c.remoteAddr())
	c.setState(stateClosing)
	c.hs.buf = nil
	c.conn.Close()
}

// forwarded takes the client's address from a request's X-Forwarded-For,
// for a connection from a trusted proxy, and admits it. It returns false
// after refusing a list it cannot read. c.mu is held.
func (c *client) forwarded(list string) bool {
	a, err := forwardedFor(list, c.srv.trusted)
	if err != nil {
		c.refuse(refBadRequest, err.Error())
		return false
	}
	c.admit(a) // invalid: the proxy's own request
	if a.IsValid() {
		c.setProxied(netip.AddrPortFrom(a, 0))
	} else {
		c.proxied = nil
	}
	return true
}

// setProxied records the client a trusted proxy named, reusing the
// record of the connection's previous request. c.mu is held.
func (c *client) setProxied(ap netip.AddrPort) {
	if c.proxied == nil {
		c.proxied = new(netip.AddrPort)
	}
	*c.proxied = ap
}

// forwardedFor is the client's address in an X-Forwarded-For list: the
// rightmost entry that is not a trusted proxy, since each proxy appends the
// address it got the request from and only those appended by trusted ones
// can be believed; the leftmost entry if all are trusted; the zero Addr for
// an empty list. An entry that is not an address, where the client's
// address is sought, is an error.
func forwardedFor(list string, trusted func(netip.Addr) bool) (netip.Addr, error) {
	var last netip.Addr
	for list != "" {
		var item string
		if i := strings.LastIndexByte(list, ','); i >= 0 {
			item, list = list[i+1:], list[:i]
		} else {
			item, list = list, ""
		}
		item = strings.Trim(item, " \t")
		if item == "" {
			continue // an empty list element (RFC 9110 5.6.1)
		}
		a, ok := parseForwardedAddr(item)
		if !ok {
			return netip.Addr{}, fmt.Errorf("malformed X-Forwarded-For: %q is not an IP address", truncate(item, 64))
		}
		if !trusted(a) {
			return a, nil
		}
		last = a
	}
	return last, nil
}

// parseForwardedAddr reads an X-Forwarded-For entry: an address, possibly
// with a port ("192.0.2.1:5678", "[2001:db8::1]:5678") or in brackets.
func parseForwardedAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		if err2 != nil {
			if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
				return netip.Addr{}, false
			}
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil {
				return netip.Addr{}, false
			}
		} else {
			a = ap.Addr()
		}
	}
	return a.WithZone("").Unmap(), true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// remoteAddr is the client's address for the logs: the peer's address and
// port, or, behind a trusted proxy, the client's (with its port when the
// PROXY header gave one) followed by " via " and the proxy's.
func (c *client) remoteAddr() string {
	peer := c.conn.RemoteAddr().String()
	if c.proxied == nil {
		return peer // a direct client, or the proxy's own connection
	}
	var client string
	if c.proxied.Port() != 0 {
		client = c.proxied.String()
	} else {
		client = c.proxied.Addr().String()
	}
	if client == peer || c.proxied.Addr() == addrOf(c.conn.RemoteAddr()) && c.proxied.Port() == 0 {
		return peer // the proxy named itself
	}
	return client + " via " + peer
}
