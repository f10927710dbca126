package frame

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/wspubsub/wspubsub/ws"
)

type msg struct {
	op      byte
	payload []byte
}

// stream builds server frames with 7-bit, 16-bit and 64-bit lengths, a
// fragmented message with a ping in its middle, and a close frame.
func stream(t *testing.T) ([]byte, []msg) { return streamSized(t, true) }

// streamSized leaves out the frames of 64 KiB and more when big is false,
// for the byte-by-byte feeds (TestDecoderSplitInsideHeader covers the
// 64-bit lengths there).
func streamSized(t *testing.T, big bool) ([]byte, []msg) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var out []byte
	var want []msg
	for _, n := range []int{0, 1, 125, 126, 127, 200, 65535, 65536, 70000, 3} {
		if !big && n > 1000 {
			continue
		}
		p := fill(n)
		out = AppendServerFrame(out, true, OpBinary, p)
		want = append(want, msg{OpBinary, p})
	}
	a, b, c := fill(10), fill(300), fill(5)
	out = AppendServerFrame(out, false, OpText, a)
	out = AppendServerFrame(out, false, OpContinuation, b)
	out = AppendServerFrame(out, true, OpPing, []byte("hi"))
	out = AppendServerFrame(out, true, OpContinuation, c)
	want = append(want, msg{OpPing, []byte("hi")})
	want = append(want, msg{OpText, append(append(append([]byte{}, a...), b...), c...)})
	cl := ClosePayload(nil, CloseSlowConsumer, "slow")
	out = AppendServerFrame(out, true, OpClose, cl)
	want = append(want, msg{OpClose, cl})
	return out, want
}

// feed pushes data through a Decoder in chunks whose sizes come from next.
func feed(t *testing.T, data []byte, next func() int) []msg {
	t.Helper()
	var d Decoder
	scratch := make([]byte, 200<<10)
	var got []msg
	for len(data) > 0 {
		head := d.Prepare(scratch)
		n := min(next(), len(data), len(scratch)-head)
		copy(scratch[head:], data[:n])
		data = data[n:]
		d.Start(scratch[:head+n])
		for {
			op, p, ok, err := d.Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if !ok {
				break
			}
			got = append(got, msg{op, append([]byte{}, p...)})
		}
		d.Finish()
	}
	if d.Pending() != 0 {
		t.Fatalf("%d bytes left over", d.Pending())
	}
	return got
}

func check(t *testing.T, got, want []msg) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].op != want[i].op || !bytes.Equal(got[i].payload, want[i].payload) {
			t.Fatalf("message %d: got op %d len %d, want op %d len %d", i, got[i].op, len(got[i].payload), want[i].op, len(want[i].payload))
		}
	}
}

func TestDecoderWhole(t *testing.T) {
	data, want := stream(t)
	check(t, feed(t, data, func() int { return len(data) }), want)
}

func TestDecoderSplitEverywhere(t *testing.T) {
	small, wantSmall := streamSized(t, false)
	data, want := stream(t)
	// Small chunk sizes split the 2- and 4-byte headers at every offset;
	// the larger ones split the 64 KiB frames' payloads and, with the
	// 16-bit and 64-bit frames in the stream, their headers somewhere.
	for _, size := range []int{1, 2, 3, 4, 5, 7, 9, 10, 11, 13} {
		check(t, feed(t, small, func() int { return size }), wantSmall)
	}
	for _, size := range []int{64, 127, 1000, 4096, 65537} {
		check(t, feed(t, data, func() int { return size }), want)
	}
}

func TestDecoderRandomSplits(t *testing.T) {
	data, want := stream(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		check(t, feed(t, data, func() int { return 1 + rng.IntN(3000) }), want)
	}
}

func TestDecoderSplitInsideHeader(t *testing.T) {
	// A 64-bit length header cut after 1, 2, 5 and 9 of its 10 bytes.
	p := bytes.Repeat([]byte{7}, 70000)
	data := AppendServerFrame(nil, true, OpBinary, p)
	for _, cut := range []int{1, 2, 5, 9, 10, 11} {
		first := true
		got := feed(t, data, func() int {
			if first {
				first = false
				return cut
			}
			return 1 << 20
		})
		check(t, got, []msg{{OpBinary, p}})
	}
}

func TestDecoderErrors(t *testing.T) {
	cases := map[string]struct {
		data []byte
		want error
	}{
		"masked":    {AppendClientFrame(nil, OpBinary, []byte("x"), 1), ErrMaskedServerFrame},
		"rsv":       {[]byte{0x80 | 0x40 | OpBinary, 0}, ErrReservedBits},
		"long ping": {AppendServerFrame(nil, true, OpPing, make([]byte, 126)), ErrBadControlFrame},
		"cont":      {AppendServerFrame(nil, true, OpContinuation, nil), ErrUnexpectedCont},
		"too large": {AppendServerFrame(nil, true, OpBinary, make([]byte, 2000)), ErrTooLarge},
	}
	for name, c := range cases {
		d := Decoder{MaxMessage: 1000}
		d.Start(c.data)
		_, _, _, err := d.Next()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

func TestClientFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte{0xAB}, n)
		f := AppendClientFrame(nil, OpBinary, p, 0xdeadbeef)
		if f[1]&0x80 == 0 {
			t.Fatal("client frame not masked")
		}
		size, header, ok := frameSize(f)
		if !ok || size != len(f) {
			t.Fatalf("n=%d: size %d ok %v, frame is %d bytes", n, size, ok, len(f))
		}
		var key [4]byte
		copy(key[:], f[header-4:header])
		body := append([]byte{}, f[header:]...)
		MaskBytes(body, key)
		if !bytes.Equal(body, p) {
			t.Fatalf("n=%d: unmasked payload differs", n)
		}
	}
}

func TestParseResponse(t *testing.T) {
	key := NewKey([16]byte{1, 2, 3})
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(key) + "\r\n\r\n"
	for i := range len(ok) {
		if n, err := ParseResponse([]byte(ok[:i]), key); n != 0 || err != nil {
			t.Fatalf("prefix %d: n=%d err=%v", i, n, err)
		}
	}
	if n, err := ParseResponse([]byte(ok+"\x82\x00"), key); n != len(ok) || err != nil {
		t.Fatalf("full: n=%d err=%v", n, err)
	}
	bad := strings.Replace(ok, AcceptKey(key), "nope", 1)
	if _, err := ParseResponse([]byte(bad), key); !errors.Is(err, ErrBadHandshake) {
		t.Fatalf("wrong accept: %v", err)
	}
	_, err := ParseResponse([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), key)
	var he *HandshakeError
	if !errors.As(err, &he) || he.Status != 404 {
		t.Fatalf("404: %v", err)
	}
}

func TestSubprotocol(t *testing.T) {
	key := NewKey([16]byte{4, 5, 6})
	req := string(AppendRequestProtocol(nil, "127.0.0.1:1", "/ws/sub/d/t?since=e:3", key, "wspubsub.meta"))
	if !strings.Contains(req, "\r\nSec-WebSocket-Protocol: wspubsub.meta\r\n") || !strings.HasPrefix(req, "GET /ws/sub/d/t?since=e:3 HTTP/1.1\r\n") || !strings.HasSuffix(req, "\r\n\r\n") {
		t.Fatalf("request %q", req)
	}
	if strings.Contains(string(AppendRequest(nil, "h", "/", key)), "Protocol") {
		t.Fatal("AppendRequest offers a subprotocol")
	}
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(key) + "\r\n"
	for _, tc := range []struct {
		resp, offered string
		accepted, bad bool
	}{
		{resp: head + "Sec-WebSocket-Protocol: wspubsub.meta\r\n\r\n", offered: "wspubsub.meta", accepted: true},
		{resp: head + "sec-websocket-protocol:  wspubsub.meta \r\n\r\n", offered: "wspubsub.meta", accepted: true},
		{resp: head + "\r\n", offered: "wspubsub.meta"},
		{resp: head + "Sec-WebSocket-Protocol: chat\r\n\r\n", offered: "wspubsub.meta", bad: true},
		{resp: head + "Sec-WebSocket-Protocol: chat\r\n\r\n"},
	} {
		n, accepted, err := ParseResponseProtocol([]byte(tc.resp), key, tc.offered)
		if tc.bad != (err != nil) || accepted != tc.accepted || (err == nil && n != len(tc.resp)) {
			t.Errorf("%q offering %q: n=%d accepted=%v err=%v", tc.resp, tc.offered, n, accepted, err)
		}
	}
}

func FuzzDecoder(f *testing.F) {
	data, _ := stream(&testing.T{})
	f.Add(data[:300], 7)
	f.Add([]byte{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, 3)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		var d Decoder
		d.MaxMessage = 1 << 16
		scratch := make([]byte, 1<<18)
		for len(data) > 0 {
			head := d.Prepare(scratch)
			n := min(chunk, len(data), len(scratch)-head)
			copy(scratch[head:], data[:n])
			data = data[n:]
			d.Start(scratch[:head+n])
			for {
				_, _, ok, err := d.Next()
				if err != nil {
					return
				}
				if !ok {
					break
				}
			}
			d.Finish()
		}
	})
}

func TestDecoderInflates(t *testing.T) {
	msg := bytes.Repeat([]byte("0123456789abcdef"), 100)
	z := ws.AppendCompressed(nil, ws.OpBinary, msg)
	stream := append(append([]byte(nil), z...), AppendServerFrame(nil, true, OpText, []byte("plain"))...)
	for _, raw := range []bool{false, true} {
		d := Decoder{Inflate: true, Raw: raw}
		d.Start(stream)
		op, p, ok, err := d.Next()
		want := msg
		if raw {
			_, h, _ := ws.FrameLen(z)
			want = z[h:] // the payload as it came
		}
		if err != nil || !ok || op != OpBinary || !bytes.Equal(p, want) || d.Compressed() != raw {
			t.Fatalf("raw %v: %v %v %d, %d bytes, compressed %v", raw, ok, err, op, len(p), d.Compressed())
		}
		if op, p, ok, err = d.Next(); err != nil || !ok || op != OpText || string(p) != "plain" || d.Compressed() {
			t.Fatalf("raw %v: the plain message after: %v %v %q", raw, ok, err, p)
		}
	}
	d := Decoder{}
	d.Start(z)
	if _, _, _, err := d.Next(); !errors.Is(err, ErrReservedBits) {
		t.Fatalf("compressed without Inflate: %v, want ErrReservedBits", err)
	}
}
