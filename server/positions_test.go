package server_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/server"
)

// metaDialer offers wspubsub.meta.
var metaDialer = websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"wspubsub.meta"}}

// metaSub subscribes to domain/topic with query (e.g. "?since=E:3")
// offering wspubsub.meta, and checks that the hub echoed it.
func (h *hub) metaSub(t testing.TB, domain, topic, query string) *websocket.Conn {
	t.Helper()
	c, resp, err := metaDialer.Dial(h.url+"/ws/sub/"+domain+"/"+topic+query, nil)
	if err != nil {
		t.Fatalf("meta subscribe %s/%s%s: %v", domain, topic, query, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "wspubsub.meta" {
		t.Fatalf("Sec-WebSocket-Protocol %q, want wspubsub.meta", got)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// metaMsg is a message as a wspubsub.meta subscriber reads it.
type metaMsg struct {
	typ    int
	kind   string // "id", "gap" or "reset"
	epoch  string
	first  uint64 // the offset for "id"
	last   uint64 // a gap's last offset
	data   []byte // the published bytes, for "id"
	header string
}

var headerRe = regexp.MustCompile(`^(id|gap|reset): ([A-Za-z0-9]+)(?::(\d+)(?:-(\d+))?)?$`)

// readMeta reads one message and splits off its header.
func readMeta(t testing.TB, c *websocket.Conn) metaMsg {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	head, data, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		t.Fatalf("message without a header: %.60q", b)
	}
	m := headerRe.FindStringSubmatch(string(head))
	if m == nil {
		t.Fatalf("malformed header %q", head)
	}
	mm := metaMsg{typ: typ, kind: m[1], epoch: m[2], data: data, header: string(head)}
	mm.first, _ = strconv.ParseUint(m[3], 10, 64)
	mm.last, _ = strconv.ParseUint(m[4], 10, 64)
	switch {
	case mm.kind == "id" && (m[3] == "" || m[4] != ""),
		mm.kind == "gap" && (m[4] == "" || typ != websocket.TextMessage || len(data) > 0),
		mm.kind == "reset" && (m[3] != "" || typ != websocket.TextMessage || len(data) > 0):
		t.Fatalf("malformed %s notice %q (type %d, %d bytes after)", mm.kind, head, typ, len(data))
	}
	return mm
}

// expectID reads one message and checks its position, type and bytes.
func expectID(t testing.TB, c *websocket.Conn, epoch string, offset uint64, typ int, data string) {
	t.Helper()
	m := readMeta(t, c)
	if m.kind != "id" || m.epoch != epoch || m.first != offset || m.typ != typ || string(m.data) != data {
		t.Fatalf("got %q type %d %.40q, want id: %s:%d type %d %.40q", m.header, m.typ, m.data, epoch, offset, typ, data)
	}
}

// expectNotice reads one message and checks it is the notice want.
func expectNotice(t testing.TB, c *websocket.Conn, want string) {
	t.Helper()
	if m := readMeta(t, c); m.header != want {
		t.Fatalf("got %q, want the notice %q", m.header, want)
	}
}

// expectQuiet checks that nothing arrives for a moment. The read's timeout
// breaks c for later reads: call it last.
func expectQuiet(t testing.TB, c *websocket.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if typ, b, err := c.ReadMessage(); err == nil {
		t.Fatalf("unexpected message type %d %.60q", typ, b)
	}
}

// sendN publishes text messages "m<i>" for i in from..to.
func sendN(t testing.TB, p *websocket.Conn, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		publish(t, p, websocket.TextMessage, fmt.Sprintf("m%d", i))
	}
}

// epochOf publishes nothing: it subscribes with meta and rewind=1 to read
// the topic's current epoch from its newest message.
func (h *hub) epochOf(t testing.TB, topic string) string {
	t.Helper()
	c := h.metaSub(t, "test", topic, "?rewind=1")
	m := readMeta(t, c)
	c.Close()
	return m.epoch
}

func TestPositionsOnTheWire(t *testing.T) {
	h := startHub(t)
	p := h.pub(t, "test", "pos")
	plain := h.sub(t, "test", "pos")
	meta := h.metaSub(t, "test", "pos", "")
	publish(t, p, websocket.TextMessage, "hello")
	publish(t, p, websocket.BinaryMessage, "\x00\x01\n\nbin")
	publish(t, p, websocket.TextMessage, "")
	expect(t, plain, websocket.TextMessage, []byte("hello"))
	expect(t, plain, websocket.BinaryMessage, []byte("\x00\x01\n\nbin"))
	expect(t, plain, websocket.TextMessage, []byte(""))
	first := readMeta(t, meta)
	if first.kind != "id" || len(first.epoch) != 12 || first.first != 1 || first.typ != websocket.TextMessage || string(first.data) != "hello" {
		t.Fatalf("first message %q type %d %q", first.header, first.typ, first.data)
	}
	expectID(t, meta, first.epoch, 2, websocket.BinaryMessage, "\x00\x01\n\nbin")
	expectID(t, meta, first.epoch, 3, websocket.TextMessage, "")

	// A client offering other subprotocols beside it gets wspubsub.meta;
	// one offering only others gets none.
	d := websocket.Dialer{Subprotocols: []string{"chat", "wspubsub.meta"}}
	c, resp, err := d.Dial(h.url+"/ws/sub/test/pos", nil)
	if err != nil || resp.Header.Get("Sec-WebSocket-Protocol") != "wspubsub.meta" {
		t.Fatalf("dial offering two: %v, protocol %q", err, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	c.Close()
	d = websocket.Dialer{Subprotocols: []string{"chat"}}
	c, resp, err = d.Dial(h.url+"/ws/sub/test/pos", nil)
	if err != nil || resp.Header.Get("Sec-WebSocket-Protocol") != "" {
		t.Fatalf("dial offering chat: %v, protocol %q", err, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	c.Close()
}

func TestRewind(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HistorySize = 5 })
	p := h.pub(t, "test", "rw")
	sendN(t, p, 1, 8)
	// Plain subscribers get the bytes as published, without positions.
	s := h.dial(t, "/ws/sub/test/rw?rewind=3", nil)
	for i := 6; i <= 8; i++ {
		expect(t, s, websocket.TextMessage, []byte(fmt.Sprintf("m%d", i)))
	}
	all := h.dial(t, "/ws/sub/test/rw?rewind=100", nil) // fewer are kept
	none := h.dial(t, "/ws/sub/test/rw?rewind=0&other=ignored", nil)
	for i := 4; i <= 8; i++ {
		expect(t, all, websocket.TextMessage, []byte(fmt.Sprintf("m%d", i)))
	}
	publish(t, p, websocket.TextMessage, "live")
	for _, c := range []*websocket.Conn{s, all, none} {
		expect(t, c, websocket.TextMessage, []byte("live"))
	}
	// With positions: the same, with their ids.
	m := h.metaSub(t, "test", "rw", "?rewind=2")
	first := readMeta(t, m)
	if first.first != 8 || string(first.data) != "m8" {
		t.Fatalf("rewind 2 starts with %q %q", first.header, first.data)
	}
	expectID(t, m, first.epoch, 9, websocket.TextMessage, "live")
}

func TestResume(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HistorySize = 5 })
	p := h.pub(t, "test", "rs")
	sendN(t, p, 1, 3)
	epoch := h.epochOf(t, "rs")

	// Everything after the position, then live.
	s := h.metaSub(t, "test", "rs", "?since="+epoch+":1")
	expectID(t, s, epoch, 2, websocket.TextMessage, "m2")
	expectID(t, s, epoch, 3, websocket.TextMessage, "m3")
	// At the newest, or past it: nothing to replay, no gap.
	at := h.metaSub(t, "test", "rs", "?since="+epoch+":3")
	past := h.metaSub(t, "test", "rs", "?since="+epoch+":99")
	sendN(t, p, 4, 4) // the first each of them gets
	for _, c := range []*websocket.Conn{s, at, past} {
		expectID(t, c, epoch, 4, websocket.TextMessage, "m4")
	}

	// Offsets no longer kept: one gap notice, then what is kept.
	sendN(t, p, 5, 9) // 5..9 kept
	g := h.metaSub(t, "test", "rs", "?since="+epoch+":2")
	expectNotice(t, g, "gap: "+epoch+":3-4")
	for i := 5; i <= 9; i++ {
		expectID(t, g, epoch, uint64(i), websocket.TextMessage, fmt.Sprintf("m%d", i))
	}
	// An epoch that is not the topic's: reset, the gap, then what is kept.
	r := h.metaSub(t, "test", "rs", "?since=SomeOldEpoch:7")
	expectNotice(t, r, "reset: "+epoch)
	expectNotice(t, r, "gap: "+epoch+":1-4")
	for i := 5; i <= 9; i++ {
		expectID(t, r, epoch, uint64(i), websocket.TextMessage, fmt.Sprintf("m%d", i))
	}
	// A plain subscriber may resume too: no notices, just the messages.
	plain := h.dial(t, "/ws/sub/test/rs?since="+epoch+":7", nil)
	expect(t, plain, websocket.TextMessage, []byte("m8"))
	expect(t, plain, websocket.TextMessage, []byte("m9"))
	publish(t, p, websocket.TextMessage, "m10")
	expect(t, plain, websocket.TextMessage, []byte("m10"))
	expectID(t, r, epoch, 10, websocket.TextMessage, "m10")
}

func TestResumeRefusals(t *testing.T) {
	h := startHub(t)
	h.pub(t, "test", "bad")
	for _, q := range []string{
		"?since=abc", "?since=abc:", "?since=:5", "?since=a-b:5", "?since=abc:-1", "?since=abc:1x",
		"?since=abc:01", "?since=abc:99999999999999999999999", "?rewind=-1", "?rewind=x", "?rewind=",
		"?rewind=99999999", "?rewind=1&since=abc:1", "?rewind=1&rewind=2", "?since=a%zz:1",
		"?since=" + strings.Repeat("e", 65) + ":1",
	} {
		if got := h.refused(t, "/ws/sub/test/bad"+q, nil); got != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q, got)
		}
	}
	// Well-formed, percent-encoded and unknown parameters pass.
	h.dial(t, "/ws/sub/test/bad?since=abc%3A1&x=%zz", nil).Close()
}

func TestEpochLifecycle(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.GracePeriod = 300 * time.Millisecond })
	p := h.pub(t, "test", "ep")
	sendN(t, p, 1, 2)
	epoch := h.epochOf(t, "ep")
	s := h.metaSub(t, "test", "ep", "")
	// A publisher taking over within the grace keeps the epoch and count.
	leave(t, p)
	p = h.pub(t, "test", "ep")
	sendN(t, p, 3, 3)
	expectID(t, s, epoch, 3, websocket.TextMessage, "m3")
	// A topic that ended starts again with a new epoch from 1: a resume
	// from the old one gets a reset.
	leave(t, p)
	expectClosed(t, s, 4001)
	waitFor(t, "the topic to end", func() bool { return h.Topics() == 0 })
	p = h.pub(t, "test", "ep")
	// Before the new topic's first message too: the reset comes at once.
	early := h.metaSub(t, "test", "ep", "?since="+epoch+":3")
	m := readMeta(t, early)
	if m.kind != "reset" || m.epoch == epoch {
		t.Fatalf("resume into a new epoch before its first message: %q, want reset to a new epoch", m.header)
	}
	sendN(t, p, 1, 1)
	expectID(t, early, m.epoch, 1, websocket.TextMessage, "m1")
	r := h.metaSub(t, "test", "ep", "?since="+epoch+":3")
	expectNotice(t, r, "reset: "+m.epoch)
	expectID(t, r, m.epoch, 1, websocket.TextMessage, "m1")
}

func TestHistoryOff(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HistorySize = -1 })
	p := h.pub(t, "test", "off")
	sendN(t, p, 1, 3)
	s := h.metaSub(t, "test", "off", "?rewind=10")
	publish(t, p, websocket.TextMessage, "m4") // the first it gets
	m := readMeta(t, s)
	if m.first != 4 || string(m.data) != "m4" { // positions are still assigned
		t.Fatalf("got %q %q", m.header, m.data)
	}
	r := h.metaSub(t, "test", "off", "?since="+m.epoch+":1")
	expectNotice(t, r, "gap: "+m.epoch+":2-4")
}

func TestHistoryTTL(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HistoryTTL = 200 * time.Millisecond })
	p := h.pub(t, "test", "ttl")
	sendN(t, p, 1, 2)
	epoch := h.epochOf(t, "ttl")
	time.Sleep(300 * time.Millisecond)
	s := h.metaSub(t, "test", "ttl", "?since="+epoch+":0")
	expectNotice(t, s, "gap: "+epoch+":1-2")
	expectQuiet(t, s)
}

func TestHistoryMemoryBound(t *testing.T) {
	// Each entry costs its frame (2 + 1000 bytes here... 4 with the
	// extended length) plus 48: a 10 KiB budget holds 9 of them.
	h := startHub(t, func(c *server.Config) { c.HistoryMemory = 10 << 10 })
	msg := strings.Repeat("x", 1000)
	pa := h.pub(t, "test", "a")
	for range 6 {
		publish(t, pa, websocket.TextMessage, msg)
	}
	pb := h.pub(t, "test", "b")
	for range 6 {
		publish(t, pb, websocket.TextMessage, msg)
	}
	// 12 published, 9 fit: the oldest three, all of topic a, went first.
	a := h.metaSub(t, "test", "a", "?since=Nope:0")
	m := readMeta(t, a)
	expectNotice(t, a, "gap: "+m.epoch+":1-3")
	for i := 4; i <= 6; i++ {
		expectID(t, a, m.epoch, uint64(i), websocket.TextMessage, msg)
	}
	b := h.dial(t, "/ws/sub/test/b?rewind=100", nil)
	for range 6 {
		expect(t, b, websocket.TextMessage, []byte(msg))
	}
	expectQuiet(t, b)
}

func TestReplayLargerThanBacklog(t *testing.T) {
	// 30 messages of 1 KiB, a 4 KiB backlog: each join gets part of the
	// replay and a 4000, and resuming from the last position it got
	// makes progress until everything is in.
	h := startHub(t, func(c *server.Config) { c.MaxBacklog = 4 << 10 })
	p := h.pub(t, "test", "big")
	for i := 1; i <= 30; i++ {
		publish(t, p, websocket.TextMessage, fmt.Sprintf("%04d", i)+strings.Repeat(".", 1020))
	}
	epoch := h.epochOf(t, "big")
	var last uint64
	joins := 0
	for last < 30 {
		if joins++; joins > 30 {
			t.Fatalf("no progress: at offset %d after %d joins", last, joins)
		}
		c := h.metaSub(t, "test", "big", fmt.Sprintf("?since=%s:%d", epoch, last))
		for {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4000 {
					t.Fatalf("join %d: %v, want a close 4000 after the part that fits", joins, err)
				}
				break
			}
			head, data, _ := bytes.Cut(b, []byte("\n\n"))
			want := fmt.Sprintf("id: %s:%d", epoch, last+1)
			if string(head) != want || string(data[:4]) != fmt.Sprintf("%04d", last+1) {
				t.Fatalf("join %d: got %q %.4q, want %q", joins, head, data, want)
			}
			if last++; last == 30 {
				break // the whole replay came: this join is live now
			}
		}
		c.Close()
	}
	if joins < 5 {
		t.Fatalf("%d joins for 30 KiB through a 4 KiB backlog: the replay was not bounded", joins)
	}
}

// TestJoinWhilePublishing is the replay's promise under load: subscribers
// join with rewind and since while a publisher streams, and each sees a
// contiguous run of offsets, no gap and no duplicate between its replay and
// its live stream.
func TestJoinWhilePublishing(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.HistorySize = 1000 })
	p := h.pub(t, "test", "race")
	const total = 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= total; i++ {
			if err := p.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))); err != nil {
				return
			}
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for j := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			query := fmt.Sprintf("?rewind=%d", rand.IntN(200))
			if j%2 == 1 {
				query = "?since=AnyEpoch:0" // reset, then every kept message
			}
			c, _, err := metaDialer.Dial(h.url+"/ws/sub/test/race"+query, nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			var last uint64
			for last < total {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, b, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("subscriber %d after offset %d: %v", j, last, err)
					return
				}
				head, data, _ := bytes.Cut(b, []byte("\n\n"))
				m := headerRe.FindStringSubmatch(string(head))
				if m == nil {
					errs <- fmt.Errorf("subscriber %d: header %q", j, head)
					return
				}
				if m[1] != "id" {
					continue // the reset (and gap) before the replay
				}
				off, _ := strconv.ParseUint(m[3], 10, 64)
				if last != 0 && off != last+1 || string(data) != m[3] {
					errs <- fmt.Errorf("subscriber %d: offset %d (%q) after %d", j, off, data, last)
					return
				}
				last = off
			}
		}()
	}
	wg.Wait()
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
