package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/ws"
)

// syncBuffer is a log sink tests can read while the hub writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// privateHub is a hub whose key file also serves token keys, with domain
// "priv" private (one HS256 key) and an API key to publish there; the
// store's revocations close subscribers as serve wires them.
type privateHub struct {
	*hub
	pubKey string        // API key for domain "priv"
	hs     keys.TokenKey // the HS256 key of "priv"
	log    *syncBuffer   // every line the hub logged, at debug level
	closed chan string   // kids the store reported revoked
}

func startPrivateHub(t testing.TB, opts ...func(*server.Config)) *privateHub {
	t.Helper()
	logs := new(syncBuffer)
	h := startHub(t, append([]func(*server.Config){func(c *server.Config) {
		c.Tokens = c.Keys.(*filestore.Store)
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}}, opts...)...)
	ctx := context.Background()
	pk, err := h.keys.Add(ctx, "priv", "backend")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := h.keys.AddTokenKey(ctx, "priv", nil)
	if err != nil {
		t.Fatal(err)
	}
	ph := &privateHub{hub: h, pubKey: pk, hs: hs, log: logs, closed: make(chan string, 16)}
	h.keys.OnTokenKeyRevoked(func(kid string) {
		h.TokenKeyRevoked(kid)
		ph.closed <- kid
	})
	return ph
}

// mint signs claims with key under method, kid in the header unless "".
func mint(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// grant is the claims of a token for topics, valid for d.
func grant(d time.Duration, topics ...string) jwt.MapClaims {
	return jwt.MapClaims{"exp": time.Now().Add(d).Unix(), "topics": topics}
}

// hsToken mints an HS256 token with the hub's key for topics, valid a
// minute.
func (ph *privateHub) hsToken(t testing.TB, topics ...string) string {
	return mint(t, jwt.SigningMethodHS256, []byte(ph.hs.Secret), ph.hs.KID, grant(time.Minute, topics...))
}

// refusal sends a subscriber's handshake by hand and returns the status,
// the WWW-Authenticate header and the body of the refusal.
func (h *hub) refusal(t testing.TB, target string, headers ...string) (int, string, string) {
	t.Helper()
	c := h.rawDial(t, 0)
	c.send(t, []byte(request("GET", target, upgradeHeaders(headers...)...)))
	resp, body := c.response(t)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.expectEnd(t)
	}
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body
}

func pemOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// TestPrivateDomainHandshakes: every refusal of a private domain's
// subscriber has its status, WWW-Authenticate and reason; good tokens of
// every alg, by query or header, are admitted; open domains are unchanged.
func TestPrivateDomainHandshakes(t *testing.T) {
	ph := startPrivateHub(t)
	ctx := context.Background()
	ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	ph.pub(t, "test", "news")

	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaPriv, _ := rsa.GenerateKey(rand.Reader, 2048)
	ed, err := ph.keys.AddTokenKey(ctx, "priv", pemOf(t, edPriv.Public()))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ph.keys.AddTokenKey(ctx, "priv", pemOf(t, ecPriv.Public()))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ph.keys.AddTokenKey(ctx, "priv", pemOf(t, rsaPriv.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if ed.Alg != keys.AlgEdDSA || ec.Alg != keys.AlgES256 || rs.Alg != keys.AlgRS256 {
		t.Fatalf("algs inferred: %s %s %s", ed.Alg, ec.Alg, rs.Alg)
	}
	secret := []byte(ph.hs.Secret)
	hour := grant(time.Hour, "news")

	// alg none, by hand: golang-jwt signs none only with its unsafe key.
	none := mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ph.hs.KID, hour)
	// The classic confusion: HS256 "signed" with the RSA key's public PEM.
	confused := mint(t, jwt.SigningMethodHS256, []byte(rs.PublicKey), rs.KID, hour)

	for _, tc := range []struct {
		name, token string
		status      int
		auth        string // WWW-Authenticate
		reason      string
	}{
		{"missing", "", 401, "Bearer", "missing token"},
		{"malformed", "abc.def", 401, `Bearer error="invalid_token"`, "malformed token"},
		{"bad signature", mint(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 43)), ph.hs.KID, hour), 401, `Bearer error="invalid_token"`, "bad token signature"},
		{"expired", mint(t, jwt.SigningMethodHS256, secret, ph.hs.KID, grant(-time.Minute, "news")), 401, `Bearer error="invalid_token"`, "token expired"},
		{"no exp", mint(t, jwt.SigningMethodHS256, secret, ph.hs.KID, jwt.MapClaims{"topics": []string{"news"}}), 401, `Bearer error="invalid_token"`, "no exp"},
		{"nbf ahead", mint(t, jwt.SigningMethodHS256, secret, ph.hs.KID, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Add(time.Minute).Unix(), "topics": []string{"news"}}), 401, `Bearer error="invalid_token"`, "not valid yet"},
		{"unknown kid", mint(t, jwt.SigningMethodHS256, secret, "tkNoSuchKey", hour), 401, `Bearer error="invalid_token"`, "unknown kid"},
		{"alg none", none, 401, `Bearer error="invalid_token"`, "bad token signature"},
		{"HS384 with the HS256 key", mint(t, jwt.SigningMethodHS384, secret, ph.hs.KID, hour), 401, `Bearer error="invalid_token"`, "bad token signature"},
		{"HS256 with an RS256 key's PEM", confused, 401, `Bearer error="invalid_token"`, "alg is not its key's"},
		{"RS256 token under the ES256 kid", mint(t, jwt.SigningMethodRS256, rsaPriv, ec.KID, hour), 401, `Bearer error="invalid_token"`, "alg is not its key's"},
		{"other topic", mint(t, jwt.SigningMethodHS256, secret, ph.hs.KID, grant(time.Hour, "sports", "new")), 403, `Bearer error="insufficient_scope"`, "does not grant this topic"},
		{"no topics claim", mint(t, jwt.SigningMethodHS256, secret, ph.hs.KID, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}), 403, `Bearer error="insufficient_scope"`, "does not grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token
			target := "/ws/sub/priv/news"
			if token != "" {
				target += "?token=" + token
			}
			status, auth, body := ph.refusal(t, target)
			if status != tc.status || auth != tc.auth || !strings.Contains(body, tc.reason) {
				t.Fatalf("got %d %q %q, want %d %q %q", status, auth, body, tc.status, tc.auth, tc.reason)
			}
			if token != "" && strings.Contains(body, token) {
				t.Fatalf("the refusal quotes the token: %q", body)
			}
		})
	}

	for _, tc := range []struct {
		name, target string
		hdr          http.Header
	}{
		{"HS256 in the query", "/ws/sub/priv/news?token=" + ph.hsToken(t, "news"), nil},
		{"HS256 prefix grant", "/ws/sub/priv/news?token=" + ph.hsToken(t, "sports", "ne*"), nil},
		{"HS256 every topic", "/ws/sub/priv/news?token=" + ph.hsToken(t, "*"), nil},
		{"HS256 as Bearer", "/ws/sub/priv/news", http.Header{"Authorization": {"Bearer " + ph.hsToken(t, "news")}}},
		{"EdDSA", "/ws/sub/priv/news?token=" + mint(t, jwt.SigningMethodEdDSA, edPriv, ed.KID, hour), nil},
		{"ES256", "/ws/sub/priv/news?token=" + mint(t, jwt.SigningMethodES256, ecPriv, ec.KID, hour), nil},
		{"RS256", "/ws/sub/priv/news?token=" + mint(t, jwt.SigningMethodRS256, rsaPriv, rs.KID, hour), nil},
		{"nbf passed", "/ws/sub/priv/news?token=" + mint(t, jwt.SigningMethodHS256, secret, ph.hs.KID, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "nbf": time.Now().Add(-time.Minute).Unix(), "topics": []string{"news"}}), nil},
		{"open domain, no token", "/ws/sub/test/news", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ph.dial(t, tc.target, tc.hdr).Close()
		})
	}
}

// TestTokenWithoutKID: a token without kid is verified with the domain's
// only key of its alg, and refused once the domain has two (rotation wants
// the kid).
func TestTokenWithoutKID(t *testing.T) {
	ph := startPrivateHub(t)
	ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	tok := mint(t, jwt.SigningMethodHS256, []byte(ph.hs.Secret), "", grant(time.Minute, "news"))
	ph.dial(t, "/ws/sub/priv/news?token="+tok, nil).Close()
	if _, err := ph.keys.AddTokenKey(context.Background(), "priv", nil); err != nil {
		t.Fatal(err)
	}
	status, _, body := ph.refusal(t, "/ws/sub/priv/news?token="+tok)
	if status != 401 || !strings.Contains(body, "no kid") {
		t.Fatalf("got %d %q, want 401 for a token without kid", status, body)
	}
	// With its kid it still works.
	ph.dial(t, "/ws/sub/priv/news?token="+ph.hsToken(t, "news"), nil).Close()
}

// TestTokenMessagesAndRewind: an admitted subscriber gets the topic's
// messages, and rewind replays history to it as to anyone.
func TestTokenMessagesAndRewind(t *testing.T) {
	ph := startPrivateHub(t)
	p := ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	for i := range 3 {
		p.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "m%d", i))
	}
	live := ph.dial(t, "/ws/sub/priv/news?token="+ph.hsToken(t, "news"), nil)
	waitFor(t, "the subscriber", func() bool { return ph.Stats().Subscribers.Load() == 1 })
	rw := ph.dial(t, "/ws/sub/priv/news?rewind=2&token="+ph.hsToken(t, "news"), nil)
	expect(t, rw, websocket.TextMessage, []byte("m1"))
	expect(t, rw, websocket.TextMessage, []byte("m2"))
	if status, _, _ := ph.refusal(t, "/ws/sub/priv/news?rewind=2"); status != 401 {
		t.Fatalf("rewind without a token: %d, want 401", status)
	}
	p.WriteMessage(websocket.TextMessage, []byte("m3"))
	expect(t, live, websocket.TextMessage, []byte("m3"))
	expect(t, rw, websocket.TextMessage, []byte("m3"))
}

// TestTokenExpiry: at exp the subscriber is closed with 4005, pings off as
// well as on; a subscriber of the same topic with a longer token stays.
func TestTokenExpiry(t *testing.T) {
	for _, ping := range []time.Duration{-1, 30 * time.Second} {
		t.Run(fmt.Sprint("ping=", ping), func(t *testing.T) {
			ph := startPrivateHub(t, func(c *server.Config) { c.PingInterval = ping })
			p := ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
			short := mint(t, jwt.SigningMethodHS256, []byte(ph.hs.Secret), ph.hs.KID, grant(2*time.Second, "news"))
			s := ph.dial(t, "/ws/sub/priv/news?token="+short, nil)
			long := ph.dial(t, "/ws/sub/priv/news?token="+ph.hsToken(t, "news"), nil)
			waitFor(t, "the subscribers", func() bool { return ph.Stats().Subscribers.Load() == 2 })
			p.WriteMessage(websocket.TextMessage, []byte("before"))
			expect(t, s, websocket.TextMessage, []byte("before"))
			expectClosed(t, s, int(ws.CloseTokenExpired))
			p.WriteMessage(websocket.TextMessage, []byte("after"))
			expect(t, long, websocket.TextMessage, []byte("before"))
			expect(t, long, websocket.TextMessage, []byte("after"))
		})
	}
}

// TestTokenSSE: EventSource subscribers follow the same rules: refusals,
// admission by ?token=, and at exp a last "close" event with 4005, then the
// end of the stream.
func TestTokenSSE(t *testing.T) {
	ph := startPrivateHub(t, func(c *server.Config) { c.PingInterval = -1 })
	p := ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	if got := ph.sseStatus(t, "/sse/sub/priv/news"); got != 401 {
		t.Fatalf("no token: %d, want 401", got)
	}
	if got := ph.sseStatus(t, "/sse/sub/priv/news?token="+ph.hsToken(t, "other")); got != 403 {
		t.Fatalf("other topic: %d, want 403", got)
	}
	short := mint(t, jwt.SigningMethodHS256, []byte(ph.hs.Secret), ph.hs.KID, grant(2*time.Second, "news"))
	s := ph.sse(t, "/sse/sub/priv/news?token="+short)
	bearer := ph.sse(t, "/sse/sub/priv/news", "Authorization: Bearer "+ph.hsToken(t, "news"))
	waitFor(t, "the subscribers", func() bool { return ph.Stats().Subscribers.Load() == 2 })
	p.WriteMessage(websocket.TextMessage, []byte("hello"))
	for _, st := range []*sseStream{s, bearer} {
		if e := st.event(t); e.typ != "message" || e.data != "hello" {
			t.Fatalf("got %+v, want the message", e)
		}
	}
	s.expectClose(t, int(ws.CloseTokenExpired))
}

// TestTokenKeyRevoked: revoking a verification key closes, with 4002, the
// subscribers (WebSocket and EventSource) it admitted and no others, and
// its tokens are refused from then on.
func TestTokenKeyRevoked(t *testing.T) {
	ph := startPrivateHub(t)
	ctx := context.Background()
	p := ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	k2, err := ph.keys.AddTokenKey(ctx, "priv", nil)
	if err != nil {
		t.Fatal(err)
	}
	tok1 := ph.hsToken(t, "news")
	tok2 := mint(t, jwt.SigningMethodHS256, []byte(k2.Secret), k2.KID, grant(time.Minute, "news"))
	a := ph.dial(t, "/ws/sub/priv/news?token="+tok1, nil)
	sa := ph.sse(t, "/sse/sub/priv/news?token="+tok1)
	b := ph.dial(t, "/ws/sub/priv/news?token="+tok2, nil)
	op := ph.pub(t, "test", "news")
	open := ph.sub(t, "test", "news")
	waitFor(t, "the subscribers", func() bool { return ph.Stats().Subscribers.Load() == 4 })
	if err := ph.keys.RevokeTokenKey(ctx, ph.hs.KID); err != nil {
		t.Fatal(err)
	}
	if kid := <-ph.closed; kid != ph.hs.KID {
		t.Fatalf("revoked %q, want %q", kid, ph.hs.KID)
	}
	expectClosed(t, a, int(ws.CloseKeyRevoked))
	sa.expectClose(t, int(ws.CloseKeyRevoked))
	p.WriteMessage(websocket.TextMessage, []byte("still"))
	expect(t, b, websocket.TextMessage, []byte("still"))
	op.WriteMessage(websocket.TextMessage, []byte("open"))
	expect(t, open, websocket.TextMessage, []byte("open"))
	if status, _, body := ph.refusal(t, "/ws/sub/priv/news?token="+tok1); status != 401 || !strings.Contains(body, "unknown kid") {
		t.Fatalf("a revoked key's token: %d %q, want 401 unknown kid", status, body)
	}
	// Revoking the last key opens the domain again.
	if err := ph.keys.RevokeTokenKey(ctx, k2.KID); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, b, int(ws.CloseKeyRevoked))
	ph.dial(t, "/ws/sub/priv/news", nil).Close()
}

// TestTokenNeverLogged: refused and accepted tokens, in the query and in a
// header, over WebSocket and EventSource, leave no trace in the hub's log,
// even at debug level; nor in /metrics.
func TestTokenNeverLogged(t *testing.T) {
	ph := startPrivateHub(t, func(c *server.Config) {
		c.HTTP = http.NotFoundHandler()
	})
	p := ph.dial(t, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	good := ph.hsToken(t, "news")
	other := ph.hsToken(t, "other")
	bad := mint(t, jwt.SigningMethodHS256, []byte(strings.Repeat("y", 43)), ph.hs.KID, grant(time.Minute, "news"))
	expired := mint(t, jwt.SigningMethodHS256, []byte(ph.hs.Secret), ph.hs.KID, grant(-time.Minute, "news"))
	ph.dial(t, "/ws/sub/priv/news?token="+good, nil).Close()
	ph.dial(t, "/ws/sub/priv/news", http.Header{"Authorization": {"Bearer " + good}}).Close()
	ph.sse(t, "/sse/sub/priv/news?token="+good)
	for _, tok := range []string{other, bad, expired} {
		ph.refusal(t, "/ws/sub/priv/news?token="+tok)
		ph.refusal(t, "/ws/sub/priv/news", "Authorization: Bearer "+tok)
		ph.sseStatus(t, "/sse/sub/priv/news?token="+tok)
		ph.refusal(t, "/ws/sub/priv/nosuch?token="+tok+"&rewind=x")
	}
	p.Close()
	waitFor(t, "refusals logged", func() bool { return strings.Count(ph.log.String(), "handshake refused") >= 12 })
	logged := ph.log.String()
	for _, tok := range []string{good, other, bad, expired} {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(logged, part) {
				t.Fatalf("the log holds part of a token %q:\n%s", part, logged)
			}
		}
	}
}

// BenchmarkSubscribeHandshake is subscribers' whole handshakes on the
// real code path, over TCP on 127.0.0.1: connect, send the upgrade
// request, read the 101, close; token=none to an open domain, token=HS256
// to a private one with an HS256 token in the query. 8 clients per core
// keep the hub busy, so ns/op is the hub's time per handshake rather than
// one client's round trip. Run both in one go and compare (BENCHMARKS.md).
func BenchmarkSubscribeHandshake(b *testing.B) {
	ph := startPrivateHub(b, func(c *server.Config) { c.Logger = slog.New(slog.DiscardHandler) })
	ph.dial(b, "/ws/pub/"+ph.pubKey+"/priv/news", nil)
	ph.pub(b, "test", "news")
	tok := mint(b, jwt.SigningMethodHS256, []byte(ph.hs.Secret), ph.hs.KID, grant(time.Hour, "news", "scores/*"))
	for _, bc := range []struct{ name, target string }{
		{"token=none", "/ws/sub/test/news"},
		{"token=HS256", "/ws/sub/priv/news?token=" + tok},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := []byte(request("GET", bc.target, upgradeHeaders()...))
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 512)
				for pb.Next() {
					c, err := net.Dial("tcp", ph.Addr())
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					n, err := c.Read(buf)
					if err != nil || !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
						b.Errorf("handshake: %q %v", buf[:n], err)
						return
					}
					// No TIME_WAIT left behind: thousands of them would
					// make each later connect slower.
					c.(*net.TCPConn).SetLinger(0)
					c.Close()
				}
			})
		})
	}
}
