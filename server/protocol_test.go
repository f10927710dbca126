package server_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

func TestFragmentedMessageIsReassembled(t *testing.T) {
	h := startHub(t)
	p := h.rawPub(t, "test", "news")
	raw := h.rawSub(t, "test", "news")
	s := h.sub(t, "test", "news")

	// Text in four fragments, a ping between two of them, and every frame
	// cut in the middle of its header or payload.
	stream := bytes.Join([][]byte{
		masked(opText, []byte("Hel")),
		masked(opCont, []byte("lo, ")),
		masked(finBit|opPing, []byte("in the middle")),
		masked(opCont, nil),
		masked(finBit|opCont, []byte("wörld")),
	}, nil)
	for i := 0; i < len(stream); i += 3 {
		p.send(t, stream[i:min(i+3, len(stream))])
	}
	p.expectFrame(t, finBit|opPong, []byte("in the middle"))
	raw.expectFrame(t, finBit|opText, []byte("Hello, wörld"))
	expect(t, s, websocket.TextMessage, []byte("Hello, wörld"))

	// Binary, fragmented, then a whole message.
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10)
	p.send(t, masked(opBin, big[:100<<10]), masked(finBit|opPing, nil), masked(finBit|opCont, big[100<<10:]), masked(finBit|opText, []byte("next")))
	p.expectFrame(t, finBit|opPong, nil)
	raw.expectFrame(t, finBit|opBin, big)
	raw.expectFrame(t, finBit|opText, []byte("next"))
	expect(t, s, websocket.BinaryMessage, big)
	expect(t, s, websocket.TextMessage, []byte("next"))
}

// TestGorillaFragments uses gorilla's NextWriter, which sends a large
// message as many frames.
func TestGorillaFragments(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	s := h.sub(t, "test", "news")
	msg := bytes.Repeat([]byte("fragment "), 50000)
	w, err := p.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(msg); i += 1000 {
		if _, err := w.Write(msg[i:min(i+1000, len(msg))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMessage(websocket.BinaryMessage, []byte("after")); err != nil {
		t.Fatal(err)
	}
	expect(t, s, websocket.TextMessage, msg)
	expect(t, s, websocket.BinaryMessage, []byte("after"))
}

func TestInvalidUTF8ClosesPublisher(t *testing.T) {
	bad := map[string][][]byte{
		"one frame":        {masked(finBit|opText, []byte("ok \xff"))},
		"surrogate":        {masked(finBit|opText, []byte("\xed\xa0\x80"))},
		"overlong":         {masked(finBit|opText, []byte("\xc0\xaf"))},
		"cut at the end":   {masked(opText, []byte("é")), masked(finBit|opCont, []byte("\xc3"))},
		"bad in fragments": {masked(opText, []byte("ab")), masked(opCont, []byte("\xfe")), masked(finBit|opCont, []byte("cd"))},
	}
	for name, frames := range bad {
		t.Run(name, func(t *testing.T) {
			h := startHub(t)
			p := h.rawPub(t, "test", "news")
			s := h.rawSub(t, "test", "news")
			p.send(t, masked(finBit|opText, []byte("before")))
			p.send(t, frames...)
			p.expectClose(t, 1007)
			p.closeHandshake(t, 1000)
			s.expectFrame(t, finBit|opText, []byte("before"))

			// Nothing of it was forwarded: the next frame the subscriber
			// gets comes from a new publisher.
			p2 := h.pub(t, "test", "news")
			if err := p2.WriteMessage(websocket.TextMessage, []byte("after")); err != nil {
				t.Fatal(err)
			}
			s.expectFrame(t, finBit|opText, []byte("after"))
		})
	}
}

// TestUTF8SplitAcrossFragments is valid UTF-8 whose characters straddle
// fragment boundaries.
func TestUTF8SplitAcrossFragments(t *testing.T) {
	h := startHub(t)
	p := h.rawPub(t, "test", "news")
	s := h.sub(t, "test", "news")
	msg := []byte("€𝄞é")
	p.send(t, masked(opText, msg[:1]), masked(opCont, msg[1:5]), masked(finBit|opCont, msg[5:]))
	expect(t, s, websocket.TextMessage, msg)
}

func TestPingIsAnsweredNotForwarded(t *testing.T) {
	h := startHub(t)
	p := h.rawPub(t, "test", "news")
	s := h.rawSub(t, "test", "news")
	for _, payload := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xff, 0}, 62), bytes.Repeat([]byte("p"), 125)} {
		p.send(t, masked(finBit|opPing, payload))
		p.expectFrame(t, finBit|opPong, payload)
		s.send(t, masked(finBit|opPing, payload))
		s.expectFrame(t, finBit|opPong, payload)
	}
	// Pongs are ignored, from either side.
	p.send(t, masked(finBit|opPong, []byte("unsolicited")))
	s.send(t, masked(finBit|opPong, []byte("unsolicited")))
	// The subscriber's next frame is the next message: no ping or pong of
	// the publisher's was forwarded.
	p.send(t, masked(finBit|opBin, []byte("data")))
	s.expectFrame(t, finBit|opBin, []byte("data"))
	// Nor did the subscriber's reach the publisher.
	p.send(t, masked(finBit|opPing, []byte("last")))
	p.expectFrame(t, finBit|opPong, []byte("last"))
}

func TestSubscriberInputIsDropped(t *testing.T) {
	h := startHub(t)
	p := h.rawPub(t, "test", "news")
	talker := h.rawSub(t, "test", "news")
	other := h.rawSub(t, "test", "news")
	g := h.sub(t, "test", "news")

	talker.send(t,
		masked(finBit|opText, []byte("from a subscriber")),
		masked(finBit|opBin, bytes.Repeat([]byte{1}, 5000)),
		masked(opText, []byte("frag")), masked(finBit|opCont, []byte("ment")),
		masked(finBit|opPing, []byte("sync")))
	talker.expectFrame(t, finBit|opPong, []byte("sync"))
	if err := g.WriteMessage(websocket.TextMessage, []byte("from gorilla")); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteControl(websocket.PingMessage, []byte("g"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}

	// The publisher was sent nothing: its next frame is the pong to this.
	p.send(t, masked(finBit|opPing, []byte("p")))
	p.expectFrame(t, finBit|opPong, []byte("p"))
	p.send(t, masked(finBit|opText, []byte("news")))
	for _, s := range []*rawClient{talker, other} {
		s.expectFrame(t, finBit|opText, []byte("news"))
	}
	expect(t, g, websocket.TextMessage, []byte("news"))
}

func TestSubscriberFloodIsClosed(t *testing.T) {
	const limit = 4096
	h := startHub(t, func(c *server.Config) { c.SubscriberInputLimit = limit })
	p := h.pub(t, "test", "news")
	flooder := h.sub(t, "test", "news")
	rawFlooder := h.rawSub(t, "test", "news")
	healthy := h.sub(t, "test", "news")
	modest := h.rawSub(t, "test", "news")

	// Under the limit: answered as usual.
	modest.send(t, masked(finBit|opBin, make([]byte, limit/4)), masked(finBit|opPing, []byte("ok")))
	modest.expectFrame(t, finBit|opPong, []byte("ok"))

	if err := flooder.WriteMessage(websocket.BinaryMessage, make([]byte, 2*limit)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, flooder, 1008)

	for range 2 * limit / 100 {
		rawFlooder.send(t, masked(finBit|opText, make([]byte, 94)))
	}
	rawFlooder.expectClose(t, 1008)
	rawFlooder.closeHandshake(t, 1008)

	if err := p.WriteMessage(websocket.TextMessage, []byte("still flowing")); err != nil {
		t.Fatal(err)
	}
	expect(t, healthy, websocket.TextMessage, []byte("still flowing"))
	modest.expectFrame(t, finBit|opText, []byte("still flowing"))
	if got := h.Stats().SubscriberFloods.Load(); got != 2 {
		t.Errorf("Stats.SubscriberFloods = %d, want 2", got)
	}
}

// TestProtocolErrors sends each kind of bad frame, as a publisher and as a
// subscriber: the offender is closed with 1002, and the hub serves others.
func TestProtocolErrors(t *testing.T) {
	h := startHub(t)
	hp := h.pub(t, "test", "healthy")
	hs := h.sub(t, "test", "healthy")

	ping126 := append([]byte{finBit | opPing, 0x80 | 126, 0, 126, 0, 0, 0, 0}, make([]byte, 126)...)
	cases := []struct {
		name  string
		bytes []byte
	}{
		{"unmasked text", unmasked(finBit|opText, []byte("hello"))},
		{"unmasked ping", unmasked(finBit|opPing, nil)},
		{"unmasked close", unmasked(finBit|opClose, closePayload(1000, ""))},
		{"RSV1", masked(finBit|0x40|opText, []byte("x"))},
		{"RSV2", masked(finBit|0x20|opBin, []byte("x"))},
		{"RSV3", masked(finBit|0x10|opText, []byte("x"))},
		{"RSV1 on a ping", masked(finBit|0x40|opPing, nil)},
		{"RSV on a continuation", append(masked(opText, []byte("a")), masked(finBit|0x40|opCont, []byte("b"))...)},
		{"opcode 3", masked(finBit|0x3, []byte("x"))},
		{"opcode 4", masked(finBit|0x4, nil)},
		{"opcode 5", masked(finBit|0x5, nil)},
		{"opcode 6", masked(finBit|0x6, nil)},
		{"opcode 7", masked(finBit|0x7, nil)},
		{"opcode 11", masked(finBit|0xB, nil)},
		{"opcode 12", masked(finBit|0xC, nil)},
		{"opcode 13", masked(finBit|0xD, nil)},
		{"opcode 14", masked(finBit|0xE, nil)},
		{"opcode 15", masked(finBit|0xF, []byte("x"))},
		{"fragmented ping", masked(opPing, []byte("x"))},
		{"fragmented pong", masked(opPong, nil)},
		{"fragmented close", masked(opClose, closePayload(1000, ""))},
		{"ping of 126 bytes", ping126},
		{"close of 126 bytes", masked(finBit|opClose, closePayload(1000, strings.Repeat("r", 124)))},
		{"pong of 200 bytes", masked(finBit|opPong, make([]byte, 200))},
		{"continuation without start", masked(finBit|opCont, []byte("x"))},
		{"unfinished continuation without start", masked(opCont, []byte("x"))},
		{"new message inside a fragmented one", append(masked(opText, []byte("a")), masked(finBit|opText, []byte("b"))...)},
		{"binary inside a fragmented text", append(masked(opText, []byte("a")), masked(opBin, []byte("b"))...)},
		{"close with 1 byte", masked(finBit|opClose, []byte{3})},
		{"close code 999", masked(finBit|opClose, closePayload(999, ""))},
		{"close code 1004", masked(finBit|opClose, closePayload(1004, ""))},
		{"close code 1005", masked(finBit|opClose, closePayload(1005, ""))},
		{"close code 1006", masked(finBit|opClose, closePayload(1006, ""))},
		{"close code 1015", masked(finBit|opClose, closePayload(1015, ""))},
		{"close code 5000", masked(finBit|opClose, closePayload(5000, ""))},
		{"length with top bit", []byte{finBit | opBin, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}},
	}
	for i, c := range cases {
		for _, role := range []string{"publisher", "subscriber"} {
			topic := fmt.Sprintf("%s%d", role, i)
			var bad *rawClient
			if role == "publisher" {
				bad = h.rawPub(t, "test", topic)
			} else {
				h.pub(t, "test", topic)
				bad = h.rawSub(t, "test", topic)
			}
			bad.send(t, c.bytes)
			b0, p := bad.next(t)
			if b0 != finBit|opClose || len(p) < 2 || int(p[0])<<8|int(p[1]) != 1002 {
				t.Errorf("%s from a %s: got frame %#x %.40q, want close 1002", c.name, role, b0, p)
				continue
			}
			bad.closeHandshake(t, 1002)

			msg := []byte(c.name + " " + role)
			if err := hp.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
			expect(t, hs, websocket.BinaryMessage, msg)
		}
	}
}

// TestBadCloseReason is a close frame whose reason is not UTF-8: 1007.
func TestBadCloseReason(t *testing.T) {
	h := startHub(t)
	p := h.rawPub(t, "test", "news")
	p.send(t, masked(finBit|opClose, closePayload(1000, "\xff")))
	p.expectClose(t, 1007)
	p.closeHandshake(t, 1000)
}

func TestCloseHandshake(t *testing.T) {
	h := startHub(t)
	p := h.rawPub(t, "test", "news")
	s := h.rawSub(t, "test", "news")
	g := h.sub(t, "test", "news")

	s.send(t, masked(finBit|opClose, closePayload(1000, "bye")))
	s.expectClose(t, 1000)
	s.expectEnd(t)

	// Another code is echoed.
	s2 := h.rawSub(t, "test", "news")
	s2.send(t, masked(finBit|opClose, closePayload(4321, "")))
	s2.expectClose(t, 4321)
	s2.expectEnd(t)

	// An empty close frame is answered with a close frame.
	s3 := h.rawSub(t, "test", "news")
	s3.send(t, masked(finBit|opClose, nil))
	if b0, _ := s3.next(t); b0 != finBit|opClose {
		t.Fatalf("got frame %#x, want a close frame", b0)
	}
	s3.expectEnd(t)

	if err := g.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, g, 1000)

	// Data after the close frame, in the same write, is ignored.
	s4 := h.rawSub(t, "test", "news")
	p.send(t, masked(finBit|opText, []byte("last")), masked(finBit|opClose, closePayload(1001, "")), masked(finBit|opText, []byte("ignored")))
	p.expectClose(t, 1001)
	p.expectEnd(t)
	s4.expectFrame(t, finBit|opText, []byte("last"))

	g2 := h.sub(t, "test", "news") // the topic is in its grace period
	p2 := h.pub(t, "test", "news")
	if err := p2.WriteMessage(websocket.TextMessage, []byte("new")); err != nil {
		t.Fatal(err)
	}
	expect(t, g2, websocket.TextMessage, []byte("new"))
	s4.expectFrame(t, finBit|opText, []byte("new"))
}

// TestCloseTimeout: a client that does not answer the hub's close frame is
// dropped after CloseTimeout.
func TestCloseTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := startHub(t, func(c *server.Config) { c.CloseTimeout = timeout })
	p := h.rawPub(t, "test", "news")
	p.send(t, masked(finBit|0x40|opText, nil))
	start := time.Now()
	p.expectClose(t, 1002)
	p.expectEnd(t)
	if d := time.Since(start); d < timeout-50*time.Millisecond || d > timeout+2*time.Second {
		t.Fatalf("dropped after %v, want about %v", d, timeout)
	}
}

// TestSubscriberInputAcrossReads: what a subscriber sends is skipped frame
// by frame even when frames are cut across reads, so the control frames
// between them are still answered.
func TestSubscriberInputAcrossReads(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "news")
	s := h.rawSub(t, "test", "news")
	big := bytes.Repeat([]byte{0x5a}, 3000)
	stream := bytes.Join([][]byte{
		masked(opBin, big),
		masked(finBit|opPing, []byte("one")),
		masked(opCont, big[:200]),
		masked(finBit|opCont, big[:70000%len(big)]),
		masked(finBit|opText, big[:126]),
		masked(finBit|opPing, []byte("two")),
	}, nil)
	for i := 0; i < len(stream); i += 97 {
		s.send(t, stream[i:min(i+97, len(stream))])
	}
	s.expectFrame(t, finBit|opPong, []byte("one"))
	s.expectFrame(t, finBit|opPong, []byte("two"))
	if err := p.WriteMessage(websocket.TextMessage, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	s.expectFrame(t, finBit|opText, []byte("ok"))
}
