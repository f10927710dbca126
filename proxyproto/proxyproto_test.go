package proxyproto

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// v2 builds a version 2 header: command, family and protocol, the address
// block and TLVs.
func v2(cmd, famProto byte, addrs []byte, tlvs []byte) []byte {
	b := append([]byte(nil), v2Sig...)
	b = append(b, 0x20|cmd, famProto)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+len(tlvs)))
	b = append(b, addrs...)
	return append(b, tlvs...)
}

func v4Block(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func v6Block(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

// tlv is a type-length-value entry as HAProxy appends them.
func tlv(typ byte, v []byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func TestParse(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name string
		in   string
		want Header
		n    int
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n", Header{1, false, ap("192.0.2.7:56324"), ap("198.51.100.1:443")}, 45},
		{"v1 tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n", Header{1, false, ap("[2001:db8::7]:65535"), ap("[2001:db8::1]:80")}, 45},
		{"v1 tcp6 mapped", "PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n", Header{1, false, ap("192.0.2.7:1"), ap("[::1]:2")}, 37},
		{"v1 unknown", "PROXY UNKNOWN\r\n", Header{Version: 1, Local: true}, 15},
		{"v1 unknown with addresses", "PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\nX", Header{Version: 1, Local: true}, 43},
		{"v2 tcp4", string(v2(1, 0x11, v4Block("192.0.2.8", "127.0.0.1", 40000, 8080), nil)), Header{2, false, ap("192.0.2.8:40000"), ap("127.0.0.1:8080")}, 28},
		{"v2 tcp6", string(v2(1, 0x21, v6Block("2001:db8::8", "::1", 1, 2), nil)), Header{2, false, ap("[2001:db8::8]:1"), ap("[::1]:2")}, 52},
		{"v2 tcp4 with TLVs", string(v2(1, 0x11, v4Block("10.1.2.3", "10.0.0.1", 5, 6), append(tlv(0x04, make([]byte, 100)), tlv(0x02, []byte("hub.example"))...))) + "GET", Header{2, false, ap("10.1.2.3:5"), ap("10.0.0.1:6")}, 16 + 12 + 103 + 14},
		{"v2 local", string(v2(0, 0x00, nil, nil)), Header{Version: 2, Local: true}, 16},
		{"v2 local with addresses", string(v2(0, 0x11, v4Block("1.2.3.4", "5.6.7.8", 1, 2), nil)), Header{Version: 2, Local: true}, 28},
		{"v2 unspec", string(v2(1, 0x00, nil, nil)), Header{Version: 2, Local: true}, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := Parse([]byte(tc.in), 4096)
			if err != nil || h != tc.want || n != tc.n {
				t.Fatalf("Parse = %+v, %d, %v; want %+v, %d", h, n, err, tc.want, tc.n)
			}
			// Every proper prefix asks for more.
			for i := 0; i < tc.n; i++ {
				if _, _, err := Parse([]byte(tc.in[:i]), 4096); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("prefix of %d bytes: %v, want ErrIncomplete", i, err)
				}
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	long := "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 "
	for len(long) < v1Max+1 {
		long += "x"
	}
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"HTTP", "GET /ws/sub/a/b HTTP/1.1\r\n", ErrMissing},
		{"TLS", "\x16\x03\x01\x02\x00", ErrMissing},
		{"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ErrMissing},
		{"v1 no CRLF", long, ErrMalformed},
		{"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", ErrMalformed},
		{"v1 UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", ErrMalformed},
		{"v1 empty protocol", "PROXY  1.2.3.4 5.6.7.8 1 2\r\n", ErrMalformed},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", ErrMalformed},
		{"v1 TCP6 with IPv4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", ErrMalformed},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", ErrMalformed},
		{"v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", ErrMalformed},
		{"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", ErrMalformed},
		{"v1 port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", ErrMalformed},
		{"v1 too few fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", ErrMalformed},
		{"v1 too many fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", ErrMalformed},
		{"v1 double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", ErrMalformed},
		{"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", ErrMalformed},
		{"v2 version 1", string(append(append([]byte(nil), v2Sig...), 0x11, 0x11, 0, 0)), ErrMalformed},
		{"v2 command 2", string(v2(2, 0x11, v4Block("1.2.3.4", "5.6.7.8", 1, 2), nil)), ErrMalformed},
		{"v2 short IPv4 block", string(v2(1, 0x11, make([]byte, 11), nil)), ErrMalformed},
		{"v2 short IPv6 block", string(v2(1, 0x21, make([]byte, 35), nil)), ErrMalformed},
		{"v2 UDP", string(v2(1, 0x12, v4Block("1.2.3.4", "5.6.7.8", 1, 2), nil)), ErrMalformed},
		{"v2 unix", string(v2(1, 0x31, make([]byte, 216), nil)), ErrMalformed},
		{"v2 too large", string(v2(1, 0x11, v4Block("1.2.3.4", "5.6.7.8", 1, 2), tlv(1, make([]byte, 600)))), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, n, err := Parse([]byte(tc.in), 512); !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %+v, %d, %v; want %v", h, n, err, tc.want)
			}
		})
	}
}

// FuzzParse: no input panics, a header never claims more bytes than it
// was given, and what parses parses the same as a prefix of a longer
// stream, since the hub gets the header in whatever pieces TCP makes.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(v2(1, 0x11, v4Block("192.0.2.8", "127.0.0.1", 40000, 8080), nil))
	f.Add(v2(1, 0x21, v6Block("2001:db8::8", "::1", 1, 2), tlv(0x04, []byte("x"))))
	f.Add(v2(0, 0x00, nil, nil))
	f.Add(v2(1, 0x11, make([]byte, 3), nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, n, err := Parse(in, 1024)
		if err != nil {
			if n != 0 || h != (Header{}) {
				t.Fatalf("error %v with %+v, %d", err, h, n)
			}
			return
		}
		if n <= 0 || n > len(in) || n > 1024 && h.Version == 2 {
			t.Fatalf("n = %d of %d", n, len(in))
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d", h.Version)
		}
		if h.Local != !h.Source.IsValid() || h.Source.Addr().Is4In6() {
			t.Fatalf("header %+v", h)
		}
		h2, n2, err2 := Parse(append(in[:n:n], "more bytes"...), 1024)
		if err2 != nil || h2 != h || n2 != n {
			t.Fatalf("with more bytes: %+v, %d, %v; alone %+v, %d", h2, n2, err2, h, n)
		}
	})
}

// BenchmarkParse is the cost a PROXY header adds to a handshake.
func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET /ws/sub/a/b HTTP/1.1\r\n")},
		{"v2", v2(1, 0x11, v4Block("192.0.2.8", "127.0.0.1", 40000, 8080), nil)},
		{"v2_tcp6_tlv", v2(1, 0x21, v6Block("2001:db8::8", "::1", 1, 2), tlv(0x05, make([]byte, 32)))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Parse(bc.in, 8192); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
