package jsclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wspubsub/wspubsub/deploy/proxytest"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/ws"
)

// browserCase is one WebSocket the page opens through nginx when it loads,
// and what the test then checks. To add one, give it a name, the path
// (with its query) it opens on nginx, and a check: run is called, each case
// in its subtest, once the page has loaded. Private topics, for instance:
// {name: "private", path: "/ws/sub/private/news?token=" + token, run: ...
// c.opened, publish, c.messages}; a wrong token: c.refused; an expired one:
// c.closed(t, name) with code 4005.
type browserCase struct {
	Name string `json:"name"`
	Path string `json:"path"`
	run  func(t *testing.T, b *browser)
}

// TestBrowserThroughNginx: headless Chromium loads a page whose sockets go
// to wss:// on the real nginx, with deploy/nginx.conf and a certificate of
// a throwaway CA (Chromium trusts its key through
// --ignore-certificate-errors-spki-list), in front of a real hub; what it
// receives is byte for byte what was published, text and binary.
func TestBrowserThroughNginx(t *testing.T) {
	chrome := findChromium(t)
	proxytest.Binary(t, "nginx", "/usr/sbin/nginx")
	h := startHubBehind(t, "127.0.0.1/32")
	certs := proxytest.NewCerts(t)
	ngx := proxytest.StartNginx(t, h.addr, certs.CertFile, certs.KeyFile)

	open := h.publisher(t, "open")
	news := h.publisherIn(t, h.privateKey, "private", "news")
	brief := h.publisherIn(t, h.privateKey, "private", "brief")
	// exp is in whole seconds: at least 3 s ahead, so that the page opens
	// the socket before it passes.
	expiring := h.token(t, 4*time.Second, "brief")
	cases := []browserCase{
		{Name: "open topic", Path: "/ws/sub/test/open", run: func(t *testing.T, b *browser) {
			ev := b.opened(t, "open topic")
			// Chromium offers permessage-deflate; the hub accepts it
			// without context takeover, through nginx.
			if !strings.HasPrefix(ev.Extensions, "permessage-deflate") || !strings.Contains(ev.Extensions, "server_no_context_takeover") {
				t.Errorf("ws.extensions through nginx: %q, want permessage-deflate without context takeover", ev.Extensions)
			}
			before := compression(h.stats)
			var want []message
			for i := 1; i <= 60; i++ {
				want = append(want, messageFor(i))
				open.send(t, want[i-1])
			}
			// Text past --compress-min-size: compressed once for Chromium.
			for i := range 3 {
				m := message{data: []byte(strings.Repeat(fmt.Sprintf(`{"seq":%d,"price":"12.%02d","ok":true},`, i, i), 40+i*20))}
				want = append(want, m)
				open.send(t, m)
			}
			got := b.messages(t, "open topic", len(want))
			for i, e := range got {
				if err := e.is(want[i]); err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
			}
			// The hub really compressed them for Chromium, the topic's
			// only subscriber: its counters moved by what compressing
			// each message of at least 256 bytes (the default
			// --compress-min-size) gives.
			var z zcounts
			for _, m := range want {
				op, plain := ws.OpText, ws.AppendFrame(nil, ws.OpText, m.data)
				if m.binary {
					op, plain = ws.OpBinary, ws.AppendFrame(nil, ws.OpBinary, m.data)
				}
				if len(m.data) < 256 {
					continue
				}
				if f := ws.AppendCompressed(nil, op, m.data); len(f) < len(plain) {
					_, h, _ := ws.FrameLen(f)
					z.messages++
					z.in += int64(len(m.data))
					z.out += int64(len(f) - h)
					z.deliveries++
					z.wire += int64(len(f))
				}
			}
			if z.messages < 4 {
				t.Fatalf("only %d of the messages compressible: the check would prove little", z.messages)
			}
			deadline := time.Now().Add(5 * time.Second)
			for compression(h.stats).minus(before).deliveries < z.deliveries && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := compression(h.stats).minus(before); got != z {
				t.Fatalf("the hub's compression counters moved by %+v, want %+v", got, z)
			}
		}},
		{Name: "private topic", Path: "/ws/sub/private/news?token=" + h.token(t, time.Minute, "news", "other/*"), run: func(t *testing.T, b *browser) {
			b.opened(t, "private topic")
			var want []message
			for i := 1; i <= 30; i++ {
				want = append(want, messageFor(i))
				news.send(t, want[i-1])
			}
			for i, e := range b.messages(t, "private topic", len(want)) {
				if err := e.is(want[i]); err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
			}
		}},
		{Name: "wrong token", Path: "/ws/sub/private/news?token=" + h.token(t, time.Minute, "sports"), run: func(t *testing.T, b *browser) {
			b.refused(t, "wrong token") // 403: the browser sees 1006
		}},
		{Name: "forged token", Path: "/ws/sub/private/news?token=" + forged(h.token(t, time.Minute, "news")), run: func(t *testing.T, b *browser) {
			b.refused(t, "forged token") // 401
		}},
		{Name: "no token", Path: "/ws/sub/private/news", run: func(t *testing.T, b *browser) {
			b.refused(t, "no token") // 401
		}},
		{Name: "expiring token", Path: "/ws/sub/private/brief?token=" + expiring, run: func(t *testing.T, b *browser) {
			b.opened(t, "expiring token")
			m := messageFor(1)
			brief.send(t, m)
			if err := b.messages(t, "expiring token", 1)[0].is(m); err != nil {
				t.Fatal(err)
			}
			if ev := b.closed(t, "expiring token"); ev.Code != 4005 {
				t.Fatalf("expiring token: closed with %d %q, want 4005", ev.Code, ev.Reason)
			}
		}},
	}

	b := startBrowserPage(t, "wss://"+ngx.Addr, cases)
	runChromium(t, chrome, b.url, "--ignore-certificate-errors-spki-list="+certs.SPKI)
	b.waitFor(t, "the page to load", func(evs []event) bool { return hasKind(evs, "", "loaded") })
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) { c.run(t, b) })
	}
}

// zcounts are the hub's compression counters (wspubsub_compressed_*).
type zcounts struct{ messages, in, out, deliveries, wire int64 }

func compression(st *server.Stats) zcounts {
	return zcounts{st.Compressed.Load(), st.CompressedIn.Load(), st.CompressedOut.Load(),
		st.CompressedDeliveries.Load(), st.CompressedWireBytes.Load()}
}

func (z zcounts) minus(o zcounts) zcounts {
	return zcounts{z.messages - o.messages, z.in - o.in, z.out - o.out, z.deliveries - o.deliveries, z.wire - o.wire}
}

// forged is token with its signature's last characters changed.
func forged(token string) string {
	if strings.HasSuffix(token, "AAAA") {
		return token[:len(token)-4] + "BBBB"
	}
	return token[:len(token)-4] + "AAAA"
}

// startHubBehind starts a hub that trusts the proxies at prefix (none if
// ""), with an API key for domain "test", and one for domain "private"
// with its token verification key (HS256).
func startHubBehind(t *testing.T, prefix string) *hub {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.Add(context.Background(), "test", "tester")
	if err != nil {
		t.Fatal(err)
	}
	privateKey, err := store.Add(context.Background(), "private", "tester")
	if err != nil {
		t.Fatal(err)
	}
	tokenKey, err := store.AddTokenKey(context.Background(), "private", nil)
	if err != nil {
		t.Fatal(err)
	}
	var trusted []netip.Prefix
	if prefix != "" {
		trusted = []netip.Prefix{netip.MustParsePrefix(prefix)}
	}
	srv, err := server.Start(server.Config{
		Listen:         "127.0.0.1:0",
		Keys:           store,
		Tokens:         store,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		TrustedProxies: trusted,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &hub{addr: srv.Addr(), key: key, privateKey: privateKey, tokenKey: tokenKey, stats: srv.Stats()}
}

// token mints an HS256 token of h's private domain for topics, valid for d.
func (h *hub) token(t *testing.T, d time.Duration, topics ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(d).Unix(), "topics": topics})
	tok.Header["kid"] = h.tokenKey.KID
	s, err := tok.SignedString([]byte(h.tokenKey.Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// browser serves the page of browserPageHTML and collects what it reports.
type browser struct {
	url      string
	deadline time.Time
	reports
}

// startBrowserPage serves a page that opens each case's socket on base
// (wss://HOST:PORT) and reports every event on it.
func startBrowserPage(t *testing.T, base string, cases []browserCase) *browser {
	t.Helper()
	b := &browser{deadline: time.Now().Add(50 * time.Second)}
	cfg, err := json.Marshal(struct {
		Base  string        `json:"base"`
		Cases []browserCase `json:"cases"`
	}{base, cases})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, strings.Replace(browserPageHTML, "CONFIG", string(cfg), 1))
	})
	mux.HandleFunc("POST /report", b.serveReport)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// waitFor polls the page's events until cond holds, failing the test at
// the page's deadline or its first error.
func (b *browser) waitFor(t *testing.T, what string, cond func([]event) bool) {
	t.Helper()
	for {
		evs := b.events()
		for _, e := range evs {
			if e.Kind == "error" {
				t.Fatalf("waiting for %s: page error: %s", what, e.Reason)
			}
		}
		if cond(evs) {
			return
		}
		if time.Now().After(b.deadline) {
			for _, e := range evs[max(0, len(evs)-40):] {
				t.Log(e.String())
			}
			t.Fatalf("timed out waiting for %s (%d events from the page, the last ones above)", what, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasKind(evs []event, sub, kind string) bool {
	for _, e := range evs {
		if e.Sub == sub && e.Kind == kind {
			return true
		}
	}
	return false
}

// first is the first event of kind on the case's socket.
func first(evs []event, sub, kind string) (event, bool) {
	for _, e := range evs {
		if e.Sub == sub && e.Kind == kind {
			return e, true
		}
	}
	return event{}, false
}

// opened waits for the case's socket to open and returns its open event;
// a close first fails the test.
func (b *browser) opened(t *testing.T, name string) event {
	t.Helper()
	var ev event
	b.waitFor(t, name+" to open", func(evs []event) bool {
		if c, ok := first(evs, name, "close"); ok && !hasKind(evs, name, "open") {
			t.Fatalf("%s closed before it opened: %d %q", name, c.Code, c.Reason)
		}
		var ok bool
		ev, ok = first(evs, name, "open")
		return ok
	})
	return ev
}

// messages waits for n messages on the case's socket and returns them.
func (b *browser) messages(t *testing.T, name string, n int) []event {
	t.Helper()
	var got []event
	b.waitFor(t, fmt.Sprintf("%d messages on %s", n, name), func(evs []event) bool {
		got = msgs(evs, name)
		if c, ok := first(evs, name, "close"); ok && len(got) < n {
			t.Fatalf("%s closed after %d of %d messages: %d %q", name, len(got), n, c.Code, c.Reason)
		}
		return len(got) >= n
	})
	return got[:n]
}

// closed waits for the case's socket to close and returns its close event.
func (b *browser) closed(t *testing.T, name string) event {
	t.Helper()
	var ev event
	b.waitFor(t, name+" to close", func(evs []event) bool {
		var ok bool
		ev, ok = first(evs, name, "close")
		return ok
	})
	return ev
}

// refused waits for the case's socket to fail its handshake: a browser
// sees no status, only a close with 1006 before any open.
func (b *browser) refused(t *testing.T, name string) {
	t.Helper()
	ev := b.closed(t, name)
	if hasKind(b.events(), name, "open") || ev.Code != 1006 {
		t.Fatalf("%s: close %d after open=%v, want a refused handshake (1006, no open)", name, ev.Code, hasKind(b.events(), name, "open"))
	}
}

// browserPageHTML opens a WebSocket per case of CONFIG and reports, in
// order, its open (with ws.extensions and ws.protocol), each message (binary
// ones base64, as Uint8Array), its close and errors, by POST.
const browserPageHTML = `<!doctype html>
<meta charset="utf-8">
<title>wspubsub through nginx</title>
<script type="module">
` + reportJS + `
const config = CONFIG;
for (const c of config.cases) {
  const sub = c.name;
  const ws = new WebSocket(config.base + c.path);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => report({sub, kind: 'open', extensions: ws.extensions, url: ws.url, reason: ws.protocol});
  ws.onmessage = (e) => {
    const binary = e.data instanceof ArrayBuffer;
    report({sub, kind: 'msg', binary, u8: binary, data: binary ? base64(new Uint8Array(e.data)) : e.data});
  };
  ws.onclose = (e) => report({sub, kind: 'close', code: e.code, reason: e.reason});
}
report({kind: 'loaded'});
</script>
`
