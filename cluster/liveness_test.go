package cluster_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
)

// TestRecordsLiveByHeartbeat: a topic's record is written when it is
// claimed and not again while its owner lives (the owner's heartbeat keeps
// it alive, several ClaimTTLs long); the other nodes serve the topic all
// that time, and end it once the owner's heartbeat stops.
func TestRecordsLiveByHeartbeat(t *testing.T) {
	tc := newCluster(t)
	opts := func(s *server.Config, c *cluster.Config) {
		s.GracePeriod = 300 * time.Millisecond
		c.ClaimTTL = 600 * time.Millisecond
	}
	a, b := tc.node(t, "", opts), tc.node(t, "", opts)
	p := a.pub(t, "quiet")

	nc, err := nats.Connect(tc.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "wspubsub_topics")
	if err != nil {
		t.Fatal(err)
	}
	key := base64.RawURLEncoding.EncodeToString([]byte("test")) + "." + base64.RawURLEncoding.EncodeToString([]byte("quiet"))
	first, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("the topic's record: %v", err)
	}
	hb, err := js.KeyValue(ctx, "wspubsub_topics_nodes")
	if err != nil {
		t.Fatal(err)
	}
	beats, err := hb.Get(ctx, base64.RawURLEncoding.EncodeToString([]byte(a.cl.ID())))
	if err != nil {
		t.Fatalf("a's heartbeat: %v", err)
	}

	time.Sleep(5 * 600 * time.Millisecond) // five ClaimTTLs
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("the topic's record after 5 ClaimTTLs: %v", err)
	}
	if e.Revision() != first.Revision() {
		t.Fatalf("the record was rewritten while its owner lived: revision %d, then %d", first.Revision(), e.Revision())
	}
	if again, err := hb.Get(ctx, beats.Key()); err != nil || again.Revision() == beats.Revision() {
		t.Fatalf("a's heartbeat was not written again in 5 ClaimTTLs: %v", err)
	}
	sb := b.sub(t, "quiet") // b still sees the topic started
	publish(t, p, websocket.TextMessage, []byte("still here"))
	expect(t, sb, websocket.TextMessage, []byte("still here"))
	if status := b.refused(t, "/ws/pub/"+tc.key+"/test/quiet"); status != http.StatusConflict {
		t.Fatalf("a second publisher on b: status %d, want 409 (a owns the topic)", status)
	}

	start := time.Now()
	a.cl.Crash() // no more heartbeats
	expectClosed(t, sb, 4001)
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("b ended the topic %v after a stopped, before its heartbeat could lapse", d)
	}
}
