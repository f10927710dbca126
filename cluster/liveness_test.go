package cluster_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
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

// TestTopicsShareDeliveryGoroutines: a node's NATS subscriptions, one per
// topic, are delivered by a few shared goroutines, not one each; and every
// topic's messages still arrive, in order.
func TestTopicsShareDeliveryGoroutines(t *testing.T) {
	tc := newCluster(t)
	a, b := tc.node(t, ""), tc.node(t, "")
	const n = 200
	pubs := make([]*websocket.Conn, n)
	for i := range pubs {
		pubs[i] = a.pub(t, fmt.Sprintf("t%d", i))
	}
	before := runtime.NumGoroutine()
	subs := make([]*websocket.Conn, n)
	for i := range subs {
		subs[i] = b.sub(t, fmt.Sprintf("t%d", i))
	}
	if grew := runtime.NumGoroutine() - before; grew > n/4 {
		t.Errorf("%d goroutines more for %d topics' subscriptions on b, want a few shared ones", grew, n)
	}
	for round := range 3 {
		for i, p := range pubs {
			publish(t, p, websocket.TextMessage, fmt.Appendf(nil, "%d-%d", i, round))
		}
	}
	for round := range 3 {
		for i, s := range subs {
			expect(t, s, websocket.TextMessage, fmt.Appendf(nil, "%d-%d", i, round))
		}
	}
}
