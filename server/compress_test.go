package server_test

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/server"
)

const deflateOffer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"

// wantExtension is what the hub answers an acceptable offer with.
const wantExtension = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// zDialer negotiates permessage-deflate (gorilla's is always without
// context takeover) and compresses what it writes.
var zDialer = websocket.Dialer{HandshakeTimeout: 5 * time.Second, EnableCompression: true}

// rawZ upgrades by hand with the given extra header lines and returns the
// client and the Sec-WebSocket-Extensions the hub answered.
func (h *hub) rawZ(t testing.TB, target string, headers ...string) (*rawClient, string) {
	t.Helper()
	c := h.rawDial(t, 0)
	c.send(t, []byte(request("GET", target, upgradeHeaders(headers...)...)))
	resp, body := c.response(t)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s %q, want 101", resp.Status, body)
	}
	return c, resp.Header.Get("Sec-WebSocket-Extensions")
}

// zFrame is one server frame as it came on the wire.
type zFrame struct {
	b0      byte   // FIN, RSV and opcode bits
	payload []byte // inflated if RSV1 was set
	wire    int    // bytes on the wire, header included
}

func (f zFrame) compressed() bool { return f.b0&0x40 != 0 }

// nextZ reads one server frame, which may be compressed (RSV1), and
// inflates it with the standard library as RFC 7692 7.2.2 says.
func (c *rawClient) nextZ(t testing.TB) zFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hd [2]byte
	if _, err := io.ReadFull(c.r, hd[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if hd[0]&0x30 != 0 || hd[0]&finBit == 0 || hd[1]&0x80 != 0 {
		t.Fatalf("server frame header % x: want FIN, no RSV2/3, no mask", hd)
	}
	n, wire := uint64(hd[1]&0x7f), 2
	switch n {
	case 126:
		var ext [2]byte
		io.ReadFull(c.r, ext[:])
		n, wire = uint64(binary.BigEndian.Uint16(ext[:])), 4
	case 127:
		var ext [8]byte
		io.ReadFull(c.r, ext[:])
		n, wire = binary.BigEndian.Uint64(ext[:]), 10
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.r, p); err != nil {
		t.Fatalf("read payload: %v", err)
	}
	f := zFrame{b0: hd[0], payload: p, wire: wire + int(n)}
	if f.compressed() {
		r := flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("inflating a %d-byte frame: %v", n, err)
		}
		f.payload = out
	}
	return f
}

// TestDeflateOnceForSome: on one topic a plain and a deflate subscriber get
// the same frame types and payload bytes; the deflate one gets messages of
// at least --compress-min-size compressed (and smaller than they are
// plain), smaller ones plain; the plain one never sees RSV1.
func TestDeflateOnceForSome(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.CompressMinSize = 300 })
	p := h.pub(t, "test", "feed")
	plain, ext := h.rawZ(t, "/ws/sub/test/feed")
	if ext != "" {
		t.Fatalf("no offer, extension %q answered", ext)
	}
	z, ext := h.rawZ(t, "/ws/sub/test/feed", deflateOffer)
	if ext != wantExtension {
		t.Fatalf("extension %q, want %q", ext, wantExtension)
	}
	g := h.dialWith(t, zDialer, "/ws/sub/test/feed", nil) // a real client library
	msgs := []struct {
		typ  int
		data []byte
		big  bool
	}{
		{websocket.TextMessage, payload.AppendJSON(nil, 1), true},
		{websocket.TextMessage, []byte(strings.Repeat("x", 299)), false},
		{websocket.TextMessage, []byte(strings.Repeat("y", 300)), true},
		{websocket.BinaryMessage, bytes.Repeat([]byte{0, 1, 2, 3}, 1000), true},
		{websocket.BinaryMessage, []byte{}, false},
		{websocket.TextMessage, payload.AppendJSON(nil, 2), true},
	}
	for _, m := range msgs {
		if err := p.WriteMessage(m.typ, m.data); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range msgs {
		op := byte(opText)
		if m.typ == websocket.BinaryMessage {
			op = opBin
		}
		pf, zf := plain.nextZ(t), z.nextZ(t)
		if pf.b0 != finBit|op || !bytes.Equal(pf.payload, m.data) {
			t.Fatalf("message %d: plain subscriber got %#x %.40q", i, pf.b0, pf.payload)
		}
		if zf.b0&^0x40 != finBit|op || !bytes.Equal(zf.payload, m.data) {
			t.Fatalf("message %d: deflate subscriber got %#x %.40q", i, zf.b0, zf.payload)
		}
		if zf.compressed() != m.big {
			t.Fatalf("message %d (%d bytes): compressed %v, want %v", i, len(m.data), zf.compressed(), m.big)
		}
		if m.big && zf.wire >= pf.wire/2 {
			t.Fatalf("message %d: %d bytes on the wire compressed, %d plain", i, zf.wire, pf.wire)
		}
		expect(t, g, m.typ, m.data)
	}
}

// dialWith is dial with another dialer.
func (h *hub) dialWith(t testing.TB, d websocket.Dialer, path string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := d.Dial(h.url+path, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	if resp.Header.Get("Sec-WebSocket-Extensions") == "" && d.EnableCompression {
		t.Fatalf("dial %s: no extension negotiated", path)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDeflateOff: with --compression=false an offer is ignored and every
// frame goes plain; a publisher's RSV1 is then a protocol error (1002).
func TestDeflateOff(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.DisableCompression = true })
	p, ext := h.rawZ(t, "/ws/pub/"+h.key+"/test/feed", deflateOffer)
	if ext != "" {
		t.Fatalf("publisher: extension %q negotiated with compression off", ext)
	}
	s, ext := h.rawZ(t, "/ws/sub/test/feed", deflateOffer)
	if ext != "" {
		t.Fatalf("subscriber: extension %q negotiated with compression off", ext)
	}
	big := payload.AppendJSON(nil, 7)
	p.send(t, masked(finBit|opText, big))
	if f := s.nextZ(t); f.compressed() || !bytes.Equal(f.payload, big) {
		t.Fatalf("got %#x %.40q, want the plain message", f.b0, f.payload)
	}
	p.send(t, masked(finBit|0x40|opText, compress(t, big)))
	p.expectClose(t, 1002)
}

// compress is payload as a permessage-deflate message's payload, made with
// the standard library.
func compress(t testing.TB, payload []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(payload)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte("\x00\x00\xff\xff"))
}

// TestDeflatePublisher: a publisher that negotiated deflate may send
// compressed messages, whole or fragmented, and plain ones; subscribers
// get them inflated (and re-compressed once for deflate subscribers).
func TestDeflatePublisher(t *testing.T) {
	h := startHub(t)
	g := h.dialWith(t, zDialer, "/ws/pub/"+h.key+"/test/feed", nil)
	s := h.sub(t, "test", "feed")
	z := h.dialWith(t, zDialer, "/ws/sub/test/feed", nil)
	for i := range 5 {
		m := payload.AppendJSON(nil, uint64(i))
		g.EnableWriteCompression(i%2 == 0)
		if err := g.WriteMessage(websocket.TextMessage, m); err != nil {
			t.Fatal(err)
		}
		expect(t, s, websocket.TextMessage, m)
		expect(t, z, websocket.TextMessage, m)
	}
	g.Close()

	h2 := startHub(t)
	p, ext := h2.rawZ(t, "/ws/pub/"+h2.key+"/test/feed", deflateOffer)
	if ext != wantExtension {
		t.Fatalf("publisher: extension %q", ext)
	}
	s2 := h2.sub(t, "test", "feed")
	m := bytes.Repeat([]byte("fragmented and compressed "), 40)
	zm := compress(t, m)
	p.send(t, masked(0x40|opBin, zm[:5]), masked(opCont, zm[5:9]), masked(finBit|opCont, zm[9:]))
	expect(t, s2, websocket.BinaryMessage, m)
	// RSV1 on a continuation frame is a protocol error.
	p.send(t, masked(opBin, []byte("a")), masked(finBit|0x40|opCont, []byte("b")))
	p.expectClose(t, 1002)
}

// TestDeflateZipBomb: a compressed message that would inflate past
// --max-message-size is cut with 1009; another publisher's subscribers
// keep getting their messages, and the bomb's own subscriber stays.
func TestDeflateZipBomb(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.MaxMessageSize = 64 << 10 })
	bomber, _ := h.rawZ(t, "/ws/pub/"+h.key+"/test/bomb", deflateOffer)
	victim := h.sub(t, "test", "bomb")
	other := h.pub(t, "test", "calm")
	watcher := h.sub(t, "test", "calm")

	var zb bytes.Buffer
	w, _ := flate.NewWriter(&zb, flate.BestCompression)
	w.Write(make([]byte, 64<<20)) // 64 MiB of zeros: about 64 KiB compressed
	w.Flush()
	bomb := bytes.TrimSuffix(zb.Bytes(), []byte("\x00\x00\xff\xff"))
	if len(bomb) > 64<<10 {
		t.Fatalf("the bomb is %d bytes compressed, over the limit itself", len(bomb))
	}
	small := []byte("before the bomb")
	bomber.send(t, masked(finBit|0x40|opText, compress(t, small)))
	expect(t, victim, websocket.TextMessage, small)
	bomber.send(t, masked(finBit|0x40|opBin, bomb))
	bomber.expectClose(t, 1009)
	for i := range 3 {
		m := []byte(fmt.Sprintf("still here %d", i))
		if err := other.WriteMessage(websocket.TextMessage, m); err != nil {
			t.Fatal(err)
		}
		expect(t, watcher, websocket.TextMessage, m)
	}
	// The bomb's subscriber got nothing of it, and is still subscribed.
	victim.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, got, err := victim.ReadMessage(); err == nil {
		t.Fatalf("the bomb's subscriber got %d bytes", len(got))
	}
}

// TestDeflateOffers: an offer the hub cannot honour is declined (the
// handshake goes on without the extension), never refused.
func TestDeflateOffers(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.SubscribeWaits = true })
	for _, c := range []struct {
		offer string
		want  string
	}{
		{"permessage-deflate", wantExtension},
		{"permessage-deflate; server_max_window_bits=15; client_max_window_bits=10", wantExtension},
		{"permessage-deflate; server_max_window_bits=10", ""},
		{"permessage-deflate; server_max_window_bits=10, permessage-deflate", wantExtension},
		{"permessage-deflate; unknown_param", ""},
		{"permessage-deflate; server_no_context_takeover; server_no_context_takeover", ""},
		{"permessage-deflate; client_max_window_bits=99", ""},
		{`permessage-deflate; server_max_window_bits="15`, ""},
		{"permessage-deflate;;;", ""},
		{"x-webkit-deflate-frame", ""},
		{strings.Repeat("a", 2000), ""},
	} {
		s, ext := h.rawZ(t, "/ws/sub/test/offers", "Sec-WebSocket-Extensions: "+c.offer)
		if ext != c.want {
			t.Errorf("offer %.60q: answered %q, want %q", c.offer, ext, c.want)
		}
		s.Close()
	}
}

// TestDeflateMeta: wspubsub.meta subscribers that negotiated deflate get
// the meta variant compressed, identical once inflated to a plain meta
// subscriber's; their replay comes plain.
func TestDeflateMeta(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "feed")
	first := payload.AppendJSON(nil, 1)
	if err := p.WriteMessage(websocket.TextMessage, first); err != nil {
		t.Fatal(err)
	}
	meta, _ := h.rawZ(t, "/ws/sub/test/feed?rewind=1", "Sec-WebSocket-Protocol: wspubsub.meta")
	zmeta, ext := h.rawZ(t, "/ws/sub/test/feed?rewind=1", "Sec-WebSocket-Protocol: wspubsub.meta", deflateOffer)
	if ext != wantExtension {
		t.Fatalf("meta subscriber: extension %q", ext)
	}
	mf, zf := meta.nextZ(t), zmeta.nextZ(t)
	if zf.compressed() || !bytes.Equal(mf.payload, zf.payload) || !bytes.HasSuffix(zf.payload, first) {
		t.Fatalf("replay: %#x %.40q, want plain %.40q", zf.b0, zf.payload, mf.payload)
	}
	for i := range 3 {
		m := payload.AppendJSON(nil, uint64(10+i))
		if err := p.WriteMessage(websocket.TextMessage, m); err != nil {
			t.Fatal(err)
		}
		mf, zf := meta.nextZ(t), zmeta.nextZ(t)
		if !zf.compressed() || zf.b0&^0x40 != mf.b0 || !bytes.Equal(mf.payload, zf.payload) {
			t.Fatalf("live %d: %#x %.40q, want compressed %#x %.40q", i, zf.b0, zf.payload, mf.b0, mf.payload)
		}
		if !bytes.HasPrefix(zf.payload, []byte("id: ")) || !bytes.HasSuffix(zf.payload, m) {
			t.Fatalf("live %d: %.60q is no meta message", i, zf.payload)
		}
	}
}

// TestDeflateSubscriberInput: a deflate subscriber may send compressed
// data (dropped as any), but RSV1 on a control frame is a protocol error.
func TestDeflateSubscriberInput(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "feed")
	s, _ := h.rawZ(t, "/ws/sub/test/feed", deflateOffer)
	s.send(t, masked(finBit|0x40|opText, compress(t, []byte("hello hub"))))
	s.send(t, masked(finBit|opPing, []byte("p")))
	if f := s.nextZ(t); f.b0 != finBit|opPong || string(f.payload) != "p" {
		t.Fatalf("got %#x %q, want the pong", f.b0, f.payload)
	}
	m := []byte("live")
	p.WriteMessage(websocket.TextMessage, m)
	if f := s.nextZ(t); string(f.payload) != "live" {
		t.Fatalf("got %q", f.payload)
	}
	s.send(t, masked(finBit|0x40|opPing, []byte("p")))
	s.expectClose(t, 1002)
}

// TestCompressionMetrics: after a compressed fan-out, /metrics counts each
// message compressed once per topic and variant with its bytes before and
// after, and each delivery of a compressed frame with its bytes on the
// wire, exactly as the deflate subscribers read them off their sockets;
// plain subscribers, small messages and incompressible ones add nothing.
func TestCompressionMetrics(t *testing.T) {
	h := startMetricsHub(t, func(c *server.Config) { c.CompressMinSize = 300 })
	p := h.pub(t, "test", "feed")
	plain, _ := h.rawZ(t, "/ws/sub/test/feed")
	zs := []*rawClient{}
	for range 2 {
		z, ext := h.rawZ(t, "/ws/sub/test/feed", deflateOffer)
		if ext != wantExtension {
			t.Fatalf("extension %q, want %q", ext, wantExtension)
		}
		zs = append(zs, z)
	}
	zmeta, ext := h.rawZ(t, "/ws/sub/test/feed", "Sec-WebSocket-Protocol: wspubsub.meta", deflateOffer)
	if ext != wantExtension {
		t.Fatalf("meta: extension %q, want %q", ext, wantExtension)
	}
	zs = append(zs, zmeta)
	before := h.scrape(t)

	noise := make([]byte, 400) // incompressible: goes plain
	rand.Read(noise)
	msgs := [][]byte{payload.AppendJSON(nil, 1), []byte(strings.Repeat("x", 299)), noise,
		payload.AppendJSON(nil, 2), payload.AppendJSON(nil, 3)}
	for _, m := range msgs {
		if err := p.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range msgs {
		if f := plain.nextZ(t); f.compressed() || !bytes.HasSuffix(f.payload, m) {
			t.Fatalf("plain subscriber got %#x %.40q", f.b0, f.payload)
		}
	}
	// What the compressed frames are, as the deflate subscribers read them:
	// the plain variant's once (both its subscribers get the same frames),
	// the meta variant's once.
	var in, out, wire, deliveries, compressed float64
	for i, z := range zs {
		for _, m := range msgs {
			f := z.nextZ(t)
			if !bytes.HasSuffix(f.payload, m) {
				t.Fatalf("deflate subscriber %d got %.40q", i, f.payload)
			}
			// the meta variant's 299-byte message has its "id: ..." header
			// too: past the threshold.
			if f.compressed() != (len(f.payload) >= 300 && &m[0] != &noise[0]) {
				t.Fatalf("deflate subscriber %d: a %d-byte message compressed %v", i, len(f.payload), f.compressed())
			}
			if !f.compressed() {
				continue
			}
			deliveries++
			wire += float64(f.wire)
			if i == 0 || z == zmeta { // one subscriber per variant
				compressed++
				in += float64(len(f.payload))
				out += float64(f.wire - frameHeaderLen(f.wire))
			}
		}
	}
	if deliveries != 2*3+4 || compressed != 3+4 {
		t.Fatalf("%v compressed deliveries of %v compressed messages, want 10 of 7", deliveries, compressed)
	}
	after := h.scrapeUntil(t, "the compressed deliveries", func(s scrape) bool {
		v, _ := s.find("wspubsub_compressed_deliveries_total")
		return v >= deliveries
	})
	d := delta{before, after}
	for _, c := range []struct {
		name string
		want float64
	}{
		{"wspubsub_compressed_messages_total", compressed},
		{"wspubsub_compressed_input_bytes_total", in},
		{"wspubsub_compressed_output_bytes_total", out},
		{"wspubsub_compressed_deliveries_total", deliveries},
		{"wspubsub_compressed_delivered_wire_bytes_total", wire},
	} {
		if got := d.of(t, c.name); got != c.want {
			t.Errorf("%s went up by %v, want %v", c.name, got, c.want)
		}
	}
	if out >= in/2 {
		t.Errorf("the feed compressed from %v to %v bytes: not the JSON feed's ratio", in, out)
	}
	checkFamilies(t, after)
}

// frameHeaderLen is the header length of a server frame of wire bytes in
// all.
func frameHeaderLen(wire int) int {
	switch {
	case wire <= 2+125:
		return 2
	case wire <= 4+65535:
		return 4
	}
	return 10
}
