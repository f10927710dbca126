package cluster_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
)

var httpClient = &http.Client{Timeout: 15 * time.Second}

// post publishes body on topic through n's HTTP publish and returns the
// status, and the position when published.
func (n *node) post(t testing.TB, topic, contentType string, body []byte) (status int, epoch string, offset uint64) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+n.Addr()+"/api/pub/test/"+topic, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.tc.key)
	req.Header.Set("Content-Type", contentType)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", topic, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", 0
	}
	var pos struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	if err := json.Unmarshal(text, &pos); err != nil || pos.Epoch == "" || pos.Offset == 0 {
		t.Fatalf("POST %s: 200 with %q", topic, text)
	}
	return resp.StatusCode, pos.Epoch, pos.Offset
}

// mustPost publishes and checks the position the hub answers with.
func (n *node) mustPost(t testing.TB, topic, body, epoch string, offset uint64) string {
	t.Helper()
	status, e, o := n.post(t, topic, "text/plain", []byte(body))
	if status != http.StatusOK || epoch != "" && e != epoch || o != offset {
		t.Fatalf("POST %q to %s: %d at %s:%d, want 200 at %s:%d", body, topic, status, e, o, epoch, offset)
	}
	return e
}

// TestHTTPPublishForwardedToOwner: an HTTP publish on a node that does
// not own the topic is published by the owner, ordered with its WebSocket
// publisher, and answered with the position every node's subscribers see.
func TestHTTPPublishForwardedToOwner(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	sa, sb := a.metaSub(t, "news", ""), b.metaSub(t, "news", "")
	plain := c.sub(t, "news")
	publishN(t, p, 1, 1, "m")
	epoch := next(t, sa).epoch
	expectIDs(t, sb, epoch, 1, 1, "m")
	b.mustPost(t, "news", "m2", epoch, 2) // b: a subscriber's node
	c.mustPost(t, "news", "m3", epoch, 3) // c: likewise
	a.mustPost(t, "news", "m4", epoch, 4) // the owner itself
	publishN(t, p, 5, 5, "m")
	expectIDs(t, sa, epoch, 2, 5, "m")
	expectIDs(t, sb, epoch, 2, 5, "m")
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		expect(t, plain, websocket.TextMessage, []byte(m))
	}
	// Binary bodies too, bytes unchanged.
	if status, _, o := b.post(t, "news", "application/octet-stream", []byte{0, 1, 0xff}); status != 200 || o != 6 {
		t.Fatalf("binary POST: %d at %d", status, o)
	}
	if it := next(t, sb); it.typ != websocket.BinaryMessage || !bytes.Equal(it.data, []byte{0, 1, 0xff}) || it.offset != 6 {
		t.Fatalf("binary message: %v type %d %q", it, it.typ, it.data)
	}
	if got := metric(t, a, "wspubsub_cluster_forwarded_publishes_served_total"); got != 3 {
		t.Fatalf("a published %v forwarded publishes, want 3", got)
	}
	// A message NATS cannot carry to the owner in one piece: 413.
	if status, _, _ := b.post(t, "news", "application/octet-stream", make([]byte, 1<<20-16)); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a message larger than NATS's max_payload: %d, want 413", status)
	}
}

// TestHTTPPublishStartsTopicAcrossCluster: an HTTP publish to a topic
// that no node owns starts it on the node that took it, which then owns
// it in its grace period: HTTP publishes on other nodes go there, a
// WebSocket publisher takes it over anywhere with the positions going on,
// and with no more publishes the grace period runs out on every node.
func TestHTTPPublishStartsTopicAcrossCluster(t *testing.T) {
	tc := newCluster(t)
	grace := func(s *server.Config, _ *cluster.Config) { s.GracePeriod = 1500 * time.Millisecond }
	a, b, c := tc.node(t, "", grace), tc.node(t, "", grace), tc.node(t, "", grace)
	if got := a.refused(t, "/ws/sub/test/fresh"); got != http.StatusNotFound {
		t.Fatalf("subscriber before any publish: %d, want 404", got)
	}
	epoch := c.mustPost(t, "fresh", "h1", "", 1)
	// Started everywhere: a subscriber on a resumes from the start, the
	// message fetched from c.
	sa := a.metaSub(t, "fresh", "?since="+epoch+":0")
	expectID(t, sa, epoch, 1, "h1")
	sb := b.metaSub(t, "fresh", "")
	a.mustPost(t, "fresh", "h2", epoch, 2) // forwarded to c, the owner in grace
	b.mustPost(t, "fresh", "h3", epoch, 3)
	for _, s := range []*websocket.Conn{sa, sb} {
		expectID(t, s, epoch, 2, "h2")
		expectID(t, s, epoch, 3, "h3")
	}
	// A WebSocket publisher takes the topic over on b, within the grace
	// period: the count goes on.
	p := b.pub(t, "fresh")
	publish(t, p, websocket.TextMessage, []byte("w4"))
	expectID(t, sa, epoch, 4, "w4")
	expectID(t, sb, epoch, 4, "w4")
	c.mustPost(t, "fresh", "h5", epoch, 5) // now forwarded to b
	expectID(t, sa, epoch, 5, "h5")
	leave(t, p)
	// The grace period runs from the last publish, on every node.
	time.Sleep(time.Second)
	a.mustPost(t, "fresh", "h6", epoch, 6)
	expectID(t, sa, epoch, 6, "h6")
	expectID(t, sb, epoch, 5, "h5")
	expectID(t, sb, epoch, 6, "h6")
	start := time.Now()
	expectClosed(t, sa, 4001)
	expectClosed(t, sb, 4001)
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("closed %v after the last publish's answer, before its grace period", d)
	}
	// Gone: a new publish starts the topic again, in a new epoch.
	waitFor(t, "the topic to end on a", func() bool { return a.Topics() == 0 })
	if e := a.mustPost(t, "fresh", "again", "", 1); e == epoch {
		t.Fatal("a topic started again kept its epoch")
	}
}
