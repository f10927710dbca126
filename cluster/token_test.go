package cluster_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/ws"
)

// TestPrivateDomainAcrossNodes: on a cluster node (subscribeCluster, with
// and without resuming), a private domain's subscriber needs its token as
// on a single hub, gets the messages published on another node, and is
// closed with 4005 at exp.
func TestPrivateDomainAcrossNodes(t *testing.T) {
	tc := newCluster(t)
	ctx := context.Background()
	pk, err := tc.store.Add(ctx, "priv", "backend")
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tc.store.AddTokenKey(ctx, "priv", nil)
	if err != nil {
		t.Fatal(err)
	}
	private := func(c *server.Config, _ *cluster.Config) { c.Tokens = tc.store; c.PingInterval = -1 }
	a, b := tc.node(t, "", private), tc.node(t, "", private)
	mint := func(d time.Duration, topics ...string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(d).Unix(), "topics": topics})
		tok.Header["kid"] = tk.KID
		s, err := tok.SignedString([]byte(tk.Secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	p := a.mustDial(t, "/ws/pub/"+pk+"/priv/news")
	publish(t, p, websocket.TextMessage, []byte("first"))
	if got := b.refused(t, "/ws/sub/priv/news"); got != http.StatusUnauthorized {
		t.Fatalf("no token on the other node: %d, want 401", got)
	}
	if got := b.refused(t, "/ws/sub/priv/news?token="+mint(time.Minute, "sports")); got != http.StatusForbidden {
		t.Fatalf("another topic's token on the other node: %d, want 403", got)
	}
	if got := b.refused(t, "/ws/sub/priv/unknown?token="+mint(time.Minute, "news")); got != http.StatusForbidden {
		t.Fatalf("a topic no token grants: %d, want 403 before any cluster lookup", got)
	}
	long := b.mustDial(t, "/ws/sub/priv/news?rewind=1&token="+mint(time.Minute, "news"))
	short := b.mustDial(t, "/ws/sub/priv/news?token="+mint(2*time.Second, "n*"))
	expect(t, long, websocket.TextMessage, []byte("first"))
	waitFor(t, "the subscribers on b", func() bool { return b.Stats().Subscribers.Load() == 2 })
	publish(t, p, websocket.TextMessage, []byte("second"))
	expect(t, long, websocket.TextMessage, []byte("second"))
	expect(t, short, websocket.TextMessage, []byte("second"))
	expectClosed(t, short, int(ws.CloseTokenExpired))
	publish(t, p, websocket.TextMessage, []byte("third"))
	expect(t, long, websocket.TextMessage, []byte("third"))
}
