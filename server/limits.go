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
	burst    int64
	seed     maphash.Seed
	shards   [64]struct {
		mu sync.Mutex
		m  map[netip.Addr]*addrState
	}
}

type addrState struct {
	conns int
	hs    bucket // handshakes
}

func newAddrLimits(maxConns int, rate float64, burst int) *addrLimits {
	l := &addrLimits{maxConns: maxConns, rate: rate, burst: int64(max(burst, 1)), seed: maphash.MakeSeed()}
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
		st = new(addrState)
		st.hs.fillBurst(l.burst, now)
		sh.m[a] = st
	}
	if l.rate > 0 && !st.hs.takeBurst(1, l.rate, l.burst, now) {
		return refHandshakeRate, false
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
		full = int64(float64(l.burst) / l.rate * 1e9)
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for a, st := range sh.m {
			if st.conns == 0 && now-st.hs.last >= full {
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

// bucket is the hub's one token bucket, for every rate it enforces: a
// publisher's messages, a subscriber's input bytes, an HTTP publishing
// key's messages and an address's handshakes. It holds up to burst tokens
// and gains rate tokens a second, both given at each call (the owner knows
// them, the bucket need not keep them). Tokens are counted in billionths,
// so that calls closer together than one token's worth still add up to
// whole tokens, and a rate below one a second still refills.
type bucket struct {
	avail int64 // billionths of a token
	last  int64 // UnixNano of the last refill
}

// maxBucketRate bounds a bucket's burst (and, for take, its rate), so that
// a full bucket's billionths fit in an int64 with room for one second's
// refill on top.
const maxBucketRate = 1 << 32

// fill makes b full at now, for a burst of rate tokens.
func (b *bucket) fill(rate, now int64) { b.fillBurst(rate, now) }

// fillBurst makes b full at now: burst tokens.
func (b *bucket) fillBurst(burst, now int64) {
	b.avail, b.last = min(burst, maxBucketRate)*int64(time.Second), now
}

// take takes n tokens at now if b holds them, and reports whether it did;
// a refused take takes nothing. The bucket holds one second's worth: rate
// tokens.
func (b *bucket) take(n, rate, now int64) bool {
	rate = min(rate, maxBucketRate)
	return b.takeBurst(n, float64(rate), rate, now)
}

// takeBurst is take for a bucket that gains rate tokens a second (a
// fraction allowed) up to burst.
func (b *bucket) takeBurst(n int64, rate float64, burst, now int64) bool {
	const unit = int64(time.Second)
	burst = min(burst, maxBucketRate)
	if d := now - b.last; d > 0 {
		full := burst * unit
		if add := float64(d) * rate; add >= float64(full-b.avail) {
			b.avail = full
		} else {
			b.avail += int64(add)
		}
		b.last = now
	}
	if n > burst || b.avail < n*unit {
		return false
	}
	b.avail -= n * unit
	return true
}
