package server

import (
	"net/netip"
	"strings"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	trusted := func(a netip.Addr) bool {
		return netip.MustParsePrefix("10.0.0.0/8").Contains(a) || a == netip.MustParseAddr("2001:db8::1")
	}
	for _, tc := range []struct{ in, want, err string }{
		{"", "invalid IP", ""},
		{" , ", "invalid IP", ""},
		{"192.0.2.7", "192.0.2.7", ""},
		{"192.0.2.6, 192.0.2.7", "192.0.2.7", ""},              // a client's own entry is never believed
		{"192.0.2.7, 10.0.0.2, 10.0.0.3", "192.0.2.7", ""},     // through two trusted proxies
		{"garbage, 192.0.2.7, 10.0.0.2", "192.0.2.7", ""},      // what is left of the client is not read
		{"10.0.0.5, 10.0.0.2", "10.0.0.5", ""},                 // all trusted: the first
		{"192.0.2.7:5678", "192.0.2.7", ""},                    // with a port
		{"[2001:db8::7]:5678, 2001:db8::1", "2001:db8::7", ""}, // IPv6 with a port
		{"[2001:db8::7]", "2001:db8::7", ""},
		{"::ffff:192.0.2.7", "192.0.2.7", ""},
		{"fe80::7%eth0", "fe80::7", ""},
		{"unknown, 10.0.0.2", "", "malformed X-Forwarded-For"},
		{"192.0.2.7, _hidden", "", "malformed X-Forwarded-For"},
		{"[192.0.2.7", "", "malformed X-Forwarded-For"},
	} {
		got, err := forwardedFor(tc.in, trusted)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v, %v; want error %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got.String() != tc.want):
			t.Errorf("%q: %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// FuzzForwardedFor: any list gives an address, none, or an error, never a
// panic; an address found is unmapped, without zone, and the list's.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{"192.0.2.7", "192.0.2.6, 10.0.0.1", "[2001:db8::7]:80", "unknown", " , ,", "::ffff:1.2.3.4%x"} {
		f.Add(s)
	}
	trusted := func(a netip.Addr) bool { return netip.MustParsePrefix("10.0.0.0/8").Contains(a) }
	f.Fuzz(func(t *testing.T, list string) {
		a, err := forwardedFor(list, trusted)
		if err != nil {
			return
		}
		if a.IsValid() && (a.Is4In6() || a.Zone() != "") {
			t.Fatalf("%q: %v", list, a)
		}
	})
}

// BenchmarkForwardedFor is the cost X-Forwarded-For adds to a handshake
// from a trusted proxy: a client behind two proxies.
func BenchmarkForwardedFor(b *testing.B) {
	s := &Server{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}}}
	b.ReportAllocs()
	for b.Loop() {
		if a, err := forwardedFor("198.51.100.3, 192.0.2.7, 10.0.0.2, 127.0.0.1", s.trusted); err != nil || !a.IsValid() {
			b.Fatal(a, err)
		}
	}
}
