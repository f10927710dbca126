package cluster_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
)

// metaDialer offers wspubsub.meta: messages come with their positions.
var metaDialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: []string{"wspubsub.meta"}}

// metaSub subscribes with wspubsub.meta; query is "" or "?since=..." etc.
func (n *node) metaSub(t testing.TB, topic, query string) *websocket.Conn {
	t.Helper()
	c, resp, err := metaDialer.Dial(n.url+"/ws/sub/test/"+topic+query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("meta subscriber to %s%s: %v (status %d)", topic, query, err, status)
	}
	if c.Subprotocol() != "wspubsub.meta" {
		t.Fatalf("subprotocol %q not echoed", c.Subprotocol())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// item is what a wspubsub.meta subscriber reads: a message with its
// position, or a notice.
type item struct {
	kind   string // "id", "gap" or "reset"
	epoch  string
	offset uint64 // id; gap: the first missing offset
	last   uint64 // gap: the last missing offset
	typ    int
	data   []byte
}

func (it item) String() string {
	switch it.kind {
	case "id":
		return fmt.Sprintf("%s:%d", it.epoch, it.offset)
	case "gap":
		return fmt.Sprintf("gap %s:%d-%d", it.epoch, it.offset, it.last)
	}
	return "reset " + it.epoch
}

func parseItem(t testing.TB, typ int, b []byte) item {
	t.Helper()
	head, body, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		t.Fatalf("no header in %.60q", b)
	}
	name, value, ok := strings.Cut(string(head), ": ")
	if !ok {
		t.Fatalf("bad header %q", head)
	}
	it := item{kind: name, typ: typ, data: body}
	epoch, pos, _ := strings.Cut(value, ":")
	it.epoch = epoch
	switch name {
	case "id":
		it.offset, _ = strconv.ParseUint(pos, 10, 64)
	case "gap":
		f, l, _ := strings.Cut(pos, "-")
		it.offset, _ = strconv.ParseUint(f, 10, 64)
		it.last, _ = strconv.ParseUint(l, 10, 64)
		if typ != websocket.TextMessage || len(body) != 0 {
			t.Fatalf("gap notice %q of type %d", b, typ)
		}
	case "reset":
		if typ != websocket.TextMessage || len(body) != 0 || pos != "" {
			t.Fatalf("reset notice %q of type %d", b, typ)
		}
	default:
		t.Fatalf("unknown header %q", head)
	}
	return it
}

// next reads one item from a wspubsub.meta subscriber.
func next(t testing.TB, c *websocket.Conn) item {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return parseItem(t, typ, b)
}

// expectID reads a message and checks its position and bytes.
func expectID(t testing.TB, c *websocket.Conn, epoch string, offset uint64, data string) {
	t.Helper()
	it := next(t, c)
	if it.kind != "id" || it.epoch != epoch || it.offset != offset || string(it.data) != data {
		t.Fatalf("got %v %q, want %s:%d %q", it, it.data, epoch, offset, data)
	}
}

// expectIDs reads messages at offsets first..last of epoch, each holding
// prefix and its offset, and no notice.
func expectIDs(t testing.TB, c *websocket.Conn, epoch string, first, last uint64, prefix string) {
	t.Helper()
	for o := first; o <= last; o++ {
		expectID(t, c, epoch, o, prefix+strconv.FormatUint(o, 10))
	}
}

// publishN publishes "prefix<offset>" for offsets first..last.
func publishN(t testing.TB, p *websocket.Conn, first, last uint64, prefix string) {
	t.Helper()
	for o := first; o <= last; o++ {
		publish(t, p, websocket.TextMessage, []byte(prefix+strconv.FormatUint(o, 10)))
	}
}

// takeover dials a publisher of topic on n, waiting while another node's
// claim is live (409).
func (n *node) takeover(t testing.TB, topic string) *websocket.Conn {
	t.Helper()
	var p *websocket.Conn
	waitFor(t, "a publisher to take "+topic+" over", func() bool {
		c, status, err := n.dial("/ws/pub/" + n.tc.key + "/test/" + topic)
		if err == nil {
			p = c
			return true
		}
		if status != http.StatusConflict {
			t.Fatalf("publisher: status %d, %v; want 409 or 101", status, err)
		}
		return false
	})
	t.Cleanup(func() { p.Close() })
	return p
}

// TestPositionsSameOnEveryNode: the owner assigns positions, and every
// node's subscribers see the same ones; a publisher taking the topic over
// on another node within the grace period, even a node that never had the
// topic, goes on with the epoch and the count.
func TestPositionsSameOnEveryNode(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	sa, sb := a.metaSub(t, "news", ""), b.metaSub(t, "news", "")
	plain := b.sub(t, "news")
	publishN(t, p, 1, 3, "m")
	first := next(t, sa)
	epoch := first.epoch
	if first.kind != "id" || first.offset != 1 || string(first.data) != "m1" || len(epoch) != 12 {
		t.Fatalf("first message on the owner: %v %q", first, first.data)
	}
	expectIDs(t, sa, epoch, 2, 3, "m")
	expectIDs(t, sb, epoch, 1, 3, "m")
	for _, m := range []string{"m1", "m2", "m3"} {
		expect(t, plain, websocket.TextMessage, []byte(m))
	}
	// A subscriber joining on a node where the topic was not live yet
	// sees the owner's positions from its first message.
	sc := c.metaSub(t, "news", "")
	publishN(t, p, 4, 4, "m")
	for _, s := range []*websocket.Conn{sa, sb, sc} {
		expectIDs(t, s, epoch, 4, 4, "m")
	}
	sc.Close()
	waitFor(t, "c to drop the topic", func() bool { return c.Topics() == 0 })

	// The publisher leaves a and comes back on c, which has no trace of
	// the topic: it goes on at 5.
	leave(t, p)
	p2 := c.pub(t, "news")
	publishN(t, p2, 5, 6, "m")
	expectIDs(t, sa, epoch, 5, 6, "m")
	expectIDs(t, sb, epoch, 5, 6, "m")
	// And again to b, which had the topic's messages as a subscriber's
	// node.
	leave(t, p2)
	p3 := b.pub(t, "news")
	publishN(t, p3, 7, 7, "m")
	expectIDs(t, sa, epoch, 7, 7, "m")
	expectIDs(t, sb, epoch, 7, 7, "m")
	expectSilent(t, sa, 50*time.Millisecond) // no notice anywhere
	expectSilent(t, sb, 50*time.Millisecond)
}

// TestOwnerCrashStartsNewEpoch: when the owner dies, nobody can say which
// offsets it assigned last, so the publisher taking the topic over starts
// a new epoch, and every subscriber that sees positions is told so.
func TestOwnerCrashStartsNewEpoch(t *testing.T) {
	tc := newCluster(t)
	opts := func(s *server.Config, c *cluster.Config) {
		s.GracePeriod = 5 * time.Second
		c.ClaimTTL = 1500 * time.Millisecond
	}
	a, b, c := tc.node(t, "", opts), tc.node(t, "", opts), tc.node(t, "", opts)
	p := a.pub(t, "news")
	sb, sc := b.metaSub(t, "news", ""), c.metaSub(t, "news", "")
	publishN(t, p, 1, 2, "m")
	epoch := next(t, sb).epoch
	expectIDs(t, sb, epoch, 2, 2, "m")
	expectIDs(t, sc, epoch, 1, 2, "m")
	a.cl.Crash()
	p2 := b.takeover(t, "news")
	publishN(t, p2, 1, 1, "n")
	for _, s := range []*websocket.Conn{sb, sc} {
		r := next(t, s)
		if r.kind != "reset" || r.epoch == epoch {
			t.Fatalf("after the owner's crash: %v, want a reset to a new epoch", r)
		}
		expectIDs(t, s, r.epoch, 1, 1, "n")
	}
}

// TestResumeOnAnyNode: a subscriber resuming or rewinding on a node that
// never had the topic's older messages gets them from the owner, then
// the live stream, with no gap and no duplicate; the node keeps them for
// the next one.
func TestResumeOnAnyNode(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	sa := a.metaSub(t, "news", "")
	publishN(t, p, 1, 5, "m")
	epoch := next(t, sa).epoch
	expectIDs(t, sa, epoch, 2, 5, "m")

	sb := b.metaSub(t, "news", "?since="+epoch+":2")
	expectIDs(t, sb, epoch, 3, 5, "m")
	// rewind, without positions.
	sc := c.sub(t, "news?rewind=4")
	for _, m := range []string{"m2", "m3", "m4", "m5"} {
		expect(t, sc, websocket.TextMessage, []byte(m))
	}
	publishN(t, p, 6, 6, "m")
	expectIDs(t, sb, epoch, 6, 6, "m")
	expect(t, sc, websocket.TextMessage, []byte("m6"))
	fetches := metric(t, b, "wspubsub_cluster_history_fetches_total", "result", "ok")
	if fetches == 0 || metric(t, a, "wspubsub_cluster_history_requests_served_total") == 0 {
		t.Fatal("no history was fetched from the owner")
	}
	// b now keeps the topic's history from offset 1: the next subscriber
	// resuming there, from any position, asks nobody.
	sb2 := b.metaSub(t, "news", "?since="+epoch+":0")
	expectIDs(t, sb2, epoch, 1, 6, "m")
	sb3 := b.metaSub(t, "news", "?since=0ldEp0ch:3")
	if r := next(t, sb3); r.kind != "reset" || r.epoch != epoch {
		t.Fatalf("resume from another epoch: %v, want a reset to %s", r, epoch)
	}
	expectIDs(t, sb3, epoch, 1, 6, "m")
	if got := metric(t, b, "wspubsub_cluster_history_fetches_total", "result", "ok"); got != fetches {
		t.Fatalf("b asked the owner %v more times for history it keeps", got-fetches)
	}
	expectSilent(t, sb, 50*time.Millisecond)
}

// TestResumeWhilePublishing: subscribers resume on nodes without the
// topic's history while the publisher keeps publishing; each gets every
// message after its position once, in order, across the replay fetched
// from the owner and the live stream.
func TestResumeWhilePublishing(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	sa := a.metaSub(t, "news", "")
	publishN(t, p, 1, 1, "m")
	epoch := next(t, sa).epoch
	const total = 90 // within the default history of 100
	done := make(chan struct{})
	go func() {
		defer close(done)
		for o := uint64(2); o <= total; o++ {
			if err := p.WriteMessage(websocket.TextMessage, []byte("m"+strconv.FormatUint(o, 10))); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	type resumer struct {
		c    *websocket.Conn
		from uint64
	}
	var rs []resumer
	for i := range 12 {
		n := []*node{b, c}[i%2]
		from := uint64(i * 3)
		rs = append(rs, resumer{n.metaSub(t, "news", "?since="+epoch+":"+strconv.FormatUint(from, 10)), from})
		time.Sleep(10 * time.Millisecond)
	}
	<-done
	for _, r := range rs {
		expectIDs(t, r.c, epoch, r.from+1, total, "m")
	}
	for _, r := range rs {
		expectSilent(t, r.c, 20*time.Millisecond)
	}
}

// TestResumeBeyondHistory: what the owner no longer keeps is reported
// with one gap notice, on any node.
func TestResumeBeyondHistory(t *testing.T) {
	tc := newCluster(t)
	small := func(s *server.Config, _ *cluster.Config) { s.HistorySize = 10 }
	a, b := tc.node(t, "", small), tc.node(t, "", small)
	p := a.pub(t, "news")
	sa := a.metaSub(t, "news", "")
	publishN(t, p, 1, 25, "m")
	epoch := next(t, sa).epoch
	expectIDs(t, sa, epoch, 2, 25, "m")
	sb := b.metaSub(t, "news", "?since="+epoch+":3")
	if g := next(t, sb); g.kind != "gap" || g.epoch != epoch || g.offset != 4 || g.last != 15 {
		t.Fatalf("resume beyond the history: %v, want gap %s:4-15", g, epoch)
	}
	expectIDs(t, sb, epoch, 16, 25, "m")
}

// TestResumeOwnerUnreachable: when the owner cannot be asked, a node
// serves what it has, with a gap notice for the rest; one that knows
// nothing of the topic's positions refuses a resume with 503 rather than
// skip anything silently, and never waits for long.
func TestResumeOwnerUnreachable(t *testing.T) {
	tc := newCluster(t)
	opts := func(s *server.Config, c *cluster.Config) {
		s.GracePeriod = 10 * time.Second
		c.ClaimTTL = 10 * time.Second // a's record outlives it for the test
	}
	a, b, c := tc.node(t, "", opts), tc.node(t, "", opts), tc.node(t, "", opts)
	p := a.pub(t, "news")
	sa := a.metaSub(t, "news", "")
	publishN(t, p, 1, 3, "m")
	epoch := next(t, sa).epoch
	expectIDs(t, sa, epoch, 2, 3, "m")
	// b has the stream from 4 on (or 3, if a had not sent it to NATS yet
	// when b's interest came into force).
	sb := b.metaSub(t, "news", "")
	publishN(t, p, 4, 5, "m")
	from := next(t, sb)
	if from.kind != "id" || from.offset < 3 || from.offset > 4 {
		t.Fatalf("b's first message: %v", from)
	}
	expectIDs(t, sb, epoch, from.offset+1, 5, "m")
	a.cl.Crash()

	start := time.Now()
	sb2 := b.metaSub(t, "news", "?since="+epoch+":1")
	if g := next(t, sb2); g.kind != "gap" || g.offset != 2 || g.last != from.offset-1 {
		t.Fatalf("resume on b with the owner gone: %v, want gap %s:2-%d", g, epoch, from.offset-1)
	}
	expectIDs(t, sb2, epoch, from.offset, 5, "m")
	if status := c.refused(t, "/ws/sub/test/news?since="+epoch+":1"); status != http.StatusServiceUnavailable {
		t.Fatalf("resume on c, which knows nothing of the topic, with the owner gone: %d, want 503", status)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the handshakes took %v", d)
	}
	// A rewind asks for what is kept: c has nothing, and says nothing.
	sc := c.metaSub(t, "news", "?rewind=3")
	expectSilent(t, sc, 100*time.Millisecond)
	if got := metric(t, b, "wspubsub_cluster_history_fetches_total", "result", "error"); got == 0 {
		t.Fatal("no failed fetch counted")
	}
}

// TestTakeoverKeepsHistory: the node a publisher takes a topic over on
// brings in the previous owner's history, so that it outlives that
// node's copy.
func TestTakeoverKeepsHistory(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "") // grace: 2s
	p := a.pub(t, "news")
	sa := a.metaSub(t, "news", "")
	publishN(t, p, 1, 4, "m")
	epoch := next(t, sa).epoch
	expectIDs(t, sa, epoch, 2, 4, "m")
	sa.Close()
	leave(t, p)
	p2 := b.pub(t, "news")
	publishN(t, p2, 5, 5, "m")
	waitFor(t, "a to drop its copy of the topic", func() bool { return a.Topics() == 0 })
	sc := c.metaSub(t, "news", "?since="+epoch+":0")
	expectIDs(t, sc, epoch, 1, 5, "m")
}

// TestPartitionedNodeGetsWhatItMissed: a node cut off from NATS while the
// topic's publisher goes on elsewhere fetches what it missed from the
// owner's history when the link is back, and its wspubsub.meta
// subscribers get every message in order, with no gap notice; nothing is
// said when they missed nothing; a subscriber resuming there later gets
// the missed messages too.
func TestPartitionedNodeGetsWhatItMissed(t *testing.T) {
	tc := newCluster(t)
	px := startProxy(t, strings.TrimPrefix(tc.nats.URL, "nats://"))
	a, b := tc.node(t, ""), tc.node(t, px.url())
	p := a.pub(t, "news")
	sa, sb := a.metaSub(t, "news", ""), b.metaSub(t, "news", "")
	publishN(t, p, 1, 3, "m")
	epoch := next(t, sa).epoch
	expectIDs(t, sb, epoch, 1, 3, "m")

	px.setCut(true)
	waitFor(t, "b to notice", func() bool { return b.Ready() != nil })
	publishN(t, p, 4, 10, "m") // lost for b
	px.setCut(false)
	waitFor(t, "b to be back", func() bool { return b.Ready() == nil })
	// What is published while b subscribes again may be lost on the way
	// too: b fetches it all from the owner's history.
	for o := uint64(11); o <= 60; o++ {
		publishN(t, p, o, o, "m")
		time.Sleep(2 * time.Millisecond)
	}
	expectIDs(t, sb, epoch, 4, 60, "m")
	if got := metric(t, b, "wspubsub_cluster_catchup_messages_total"); got < 7 {
		t.Errorf("b caught %v messages up, want at least 7", got)
	}

	// Cut off again while nothing is published: nothing missed, nothing
	// said. (b is ready once its subscriptions are back: its view's
	// reload is sent after them.)
	px.setCut(true)
	waitFor(t, "b to notice", func() bool { return b.Ready() != nil })
	px.setCut(false)
	waitFor(t, "b to be back", func() bool { return b.Ready() == nil })
	publishN(t, p, 61, 61, "m")
	if it := next(t, sb); it.kind != "id" || it.offset != 61 {
		t.Fatalf("after a partition in which nothing was published: %v, want %s:61", it, epoch)
	}

	// A subscriber resuming on b from before the partition gets every
	// message: b asks the owner for what it missed.
	sb2 := b.metaSub(t, "news", "?since="+epoch+":2")
	expectIDs(t, sb2, epoch, 3, 61, "m")
}

// TestSSEResumeOnNodeWithoutHistory: an EventSource client resuming with
// Last-Event-ID on a node that never had the topic gets what it missed
// from the owner, then the live stream.
func TestSSEResumeOnNodeWithoutHistory(t *testing.T) {
	tc := newCluster(t)
	a, b := tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	sa := a.metaSub(t, "news", "")
	publishN(t, p, 1, 4, "m")
	epoch := next(t, sa).epoch
	s, status := b.sse(t, "/sse/sub/test/news", "Last-Event-ID: "+epoch+":1")
	if s == nil {
		t.Fatalf("resuming on b: %d", status)
	}
	publishN(t, p, 5, 5, "m")
	for o := 2; o <= 5; o++ {
		if e := s.event(t); e.id != epoch+":"+strconv.Itoa(o) || e.data != "m"+strconv.Itoa(o) {
			t.Fatalf("event %d: %+v", o, e)
		}
	}
}
