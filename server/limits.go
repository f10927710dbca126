package server

import (
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxTrackedAddrs bounds the per-address table. Past it, new addresses are
// not limited: a TCP peer cannot forge its address, so that many distinct
// ones is a real crowd, not a spoof. close of an untracked address is a
// no-op.
const maxTrackedAddrs = 1 << 20

// addrLimits enforces the per-address limits: open connections and the
// handshake rate (a token bucket per address). Sharded; entries go when
// their address has no connection and a full bucket.
type addrLimits struct {
	maxConns int     // per address; 0: none
	rate     float64 // handshakes a second per address; 0: none
	burst    float64
	seed     maphash.Seed
	shards   [64]struct {
		mu sync.Mutex
		m  map[netip.Addr]*addrState
	}
}

type addrState struct {
	conns  int
	tokens float64
	last   int64 // UnixNano of the last refill
}

func newAddrLimits(maxConns int, rate float64, burst int) *addrLimits {
	l := &addrLimits{maxConns: maxConns, rate: rate, burst: float64(max(burst, 1)), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]*addrState)
	}
	return l
}

func (l *addrLimits) on() bool { return l.maxConns > 0 || l.rate > 0 }

func (l *addrLimits) shard(a netip.Addr) int {
	return int(maphash.Comparable(l.seed, a) % uint64(len(l.shards)))
}

// open admits a new connection from a, or says which limit it breaks.
func (l *addrLimits) open(a netip.Addr, now int64) (refusal, bool) {
	sh := &l.shards[l.shard(a)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[a]
	if st == nil {
		if len(sh.m) >= maxTrackedAddrs/len(l.shards) {
			return 0, true
		}
		st = &addrState{tokens: l.burst, last: now}
		sh.m[a] = st
	}
	if l.rate > 0 {
		st.tokens = min(l.burst, st.tokens+float64(now-st.last)*l.rate/1e9)
		st.last = now
		if st.tokens < 1 {
			return refHandshakeRate, false
		}
		st.tokens--
	}
	if l.maxConns > 0 && st.conns >= l.maxConns {
		return refTooManyFromAddr, false
	}
	st.conns++
	return 0, true
}

// close records that a connection from a, admitted by open, ended.
func (l *addrLimits) close(a netip.Addr) {
	sh := &l.shards[l.shard(a)]
	sh.mu.Lock()
	if st := sh.m[a]; st != nil && st.conns > 0 {
		st.conns--
	}
	sh.mu.Unlock()
}

// sweep drops the entries of addresses with no connection whose bucket
// has refilled.
func (l *addrLimits) sweep(now int64) {
	if !l.on() {
		return
	}
	full := int64(time.Second)
	if l.rate > 0 {
		full = int64(l.burst / l.rate * 1e9)
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for a, st := range sh.m {
			if st.conns == 0 && now-st.last >= full {
				delete(sh.m, a)
			}
		}
		sh.mu.Unlock()
	}
}

// addrOf is the IP address of a peer, unmapped from IPv4-in-IPv6.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// originAllowed reports whether a browser's Origin may connect: allowed
// lists exact origins ("https://app.example.com"), "*" for any, or a
// wildcard for subdomains ("https://*.example.com"). A request without an
// Origin header (not a browser) is always allowed.
func originAllowed(allowed []string, origin string) bool {
	if len(allowed) == 0 || origin == "" {
		return true
	}
	for _, a := range allowed {
		switch {
		case a == "*", a == origin:
			return true
		case len(a) > 4:
			scheme, host, ok := cutWildcard(a)
			if ok && len(origin) > len(scheme)+len(host) && origin[:len(scheme)] == scheme &&
				origin[len(origin)-len(host):] == host && origin[len(origin)-len(host)-1] != '/' {
				return true
			}
		}
	}
	return false
}

// cutWildcard splits "https://*.example.com" into "https://" and
// ".example.com".
func cutWildcard(pattern string) (scheme, host string, ok bool) {
	for i := 0; i+3 < len(pattern); i++ {
		if pattern[i:i+3] == "://" {
			rest := pattern[i+3:]
			if len(rest) > 2 && rest[0] == '*' && rest[1] == '.' {
				return pattern[:i+3], rest[1:], true
			}
			return "", "", false
		}
	}
	return "", "", false
}

// bucket is a token bucket: it holds up to rate tokens and gains rate
// tokens a second, rate being given at each call (the owner knows it, the
// bucket need not keep it). Tokens are counted in billionths, so that calls
// closer together than one token's worth still add up to whole tokens.
type bucket struct {
	avail int64 // billionths of a token
	last  int64 // UnixNano of the last refill
}

// maxBucketRate bounds a bucket's rate, so that a full bucket's billionths
// fit in an int64 with room for one second's refill on top.
const maxBucketRate = 1 << 32

// fill makes b full at now.
func (b *bucket) fill(rate, now int64) {
	b.avail, b.last = min(rate, maxBucketRate)*int64(time.Second), now
}

// take takes n tokens at now if b holds them, and reports whether it did;
// a refused take takes nothing.
func (b *bucket) take(n, rate, now int64) bool {
	const unit = int64(time.Second)
	rate = min(rate, maxBucketRate)
	if d := now - b.last; d > 0 {
		b.avail = min(rate*unit, b.avail+min(d, unit)*rate)
		b.last = now
	}
	if n > rate || b.avail < n*unit {
		return false
	}
	b.avail -= n * unit
	return true
}
