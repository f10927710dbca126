// Package jsclient_test runs wspubsub.js in a real headless Chromium against
// a real hub, through a proxy that breaks the connections, and checks that
// the page sees every message once, in order, with its bytes.
package jsclient_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// The pace of the publisher: 50 messages a second, so that the outages of
// the test (well under a second each) stay inside the hub's history of 100.
const pace = 20 * time.Millisecond

func TestBrowserResumesAcrossCuts(t *testing.T) {
	chrome := findChromium(t)
	start := time.Now()
	h := startHub(t)
	cut := startCutter(t, h.addr, 3) // each resume replays 3 seen messages
	pg := startPage(t)

	// A topic whose first 50 messages the history no longer has, for a
	// subscriber that resumes from an epoch the hub never had.
	gapPub := h.publisher(t, "gaps")
	var gapMsgs []message
	for i := 1; i <= 150; i++ {
		gapMsgs = append(gapMsgs, messageFor(i))
		gapPub.send(t, gapMsgs[i-1])
	}
	// A topic whose history is larger than a subscriber's backlog may be:
	// the hub sends what fits and closes with 4000, again and again, and
	// the page must resume from what it got until it has them all.
	bigPub := h.publisher(t, "big")
	var bigMsgs []message
	for i := 1; i <= 40; i++ {
		m := message{binary: true, data: bytes.Repeat([]byte{byte(i)}, 20000)}
		bigMsgs = append(bigMsgs, m)
		bigPub.send(t, m)
	}
	// The main topic: a few messages before the page loads, for rewind.
	pub := h.publisher(t, "main")
	var sent []message // every message published on main, in order
	send := func() {
		m := messageFor(len(sent) + 1)
		sent = append(sent, m)
		pub.send(t, m)
	}
	for range 5 {
		send()
	}

	pg.serve([]pageSub{{
		Name: "main", URL: "ws://" + cut.addr() + "/ws/sub/test/main?rewind=1000&foo=bar",
		MinDelay: 50, MaxDelay: 1000,
	}, {
		Name: "gaps", URL: "ws://" + h.addr + "/ws/sub/test/gaps?foo=bar", Since: "nope:0",
		MinDelay: 50, MaxDelay: 1000,
	}, {
		Name: "big", URL: "ws://" + h.addr + "/ws/sub/test/big?rewind=1000",
		MinDelay: 50, MaxDelay: 1000,
	}})
	runChromium(t, chrome, pg.url+"/")
	pg.waitFor(t, "the page to get the rewound messages", 20*time.Second, func(evs []event) bool {
		return len(msgs(evs, "main")) >= 5
	})
	t.Logf("page up after %v", time.Since(start).Round(time.Millisecond))

	// run publishes at the pace for d, calling each on every tick.
	run := func(d time.Duration, each func()) {
		tick := time.NewTicker(pace)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			send()
			if each != nil {
				each()
			}
		}
	}
	allSent := func(what string) {
		pg.waitFor(t, what, 10*time.Second, func(evs []event) bool {
			return len(msgs(evs, "main")) >= len(sent)
		})
	}

	// 1. The network cuts: every connection is reset every 150-450 ms.
	resets, next := 0, time.Now()
	run(5*time.Second, func() {
		if time.Now().After(next) {
			resets += cut.resetAll()
			next = time.Now().Add(150*time.Millisecond + rand.N(300*time.Millisecond))
		}
	})
	// 2. The hub cuts: 400 ms into each connection the browser's bytes stop
	// reaching the hub, so its pong never comes and the hub closes with 4003.
	cut.swallowEach(400 * time.Millisecond)
	run(5*time.Second, nil)
	cut.swallowEach(0)
	run(time.Second, nil)
	allSent("every message of the first epoch")

	// 3. The topic ends (4001), the hub refuses the page's handshakes (404),
	// and a new publisher starts the topic again in a new epoch.
	firstEpoch := len(sent)
	pub.close()
	pg.waitFor(t, "the page to see 4001", 5*time.Second, func(evs []event) bool {
		return countCloses(evs, "main")[4001] > 0
	})
	time.Sleep(1500 * time.Millisecond)
	pub = h.publisher(t, "main")
	run(2*time.Second, nil)
	allSent("every message of the second epoch")
	pg.waitFor(t, "the page to get the gapped and the big topic", 5*time.Second, func(evs []event) bool {
		return len(msgs(evs, "gaps")) >= 100 && len(msgs(evs, "big")) >= len(bigMsgs)
	})
	elapsed := time.Since(start)

	evs := pg.events()
	for _, e := range evs {
		if e.Kind == "error" {
			t.Errorf("page error: %s", e.Reason)
		}
	}
	// Every message once, in order, bytes and type as sent; offsets count
	// from 1 in each epoch, and the new epoch was announced once.
	got := msgs(evs, "main")
	if len(got) != len(sent) {
		t.Errorf("page got %d messages, want %d", len(got), len(sent))
	}
	for i := range min(len(got), len(sent)) {
		if err := got[i].is(sent[i]); err != nil {
			t.Fatalf("message %d of %d: %v", i+1, len(sent), err)
		}
		wantEpoch, wantOffset := got[0].Epoch, i+1
		if i >= firstEpoch {
			wantEpoch, wantOffset = got[firstEpoch].Epoch, i+1-firstEpoch
		}
		if got[i].Epoch != wantEpoch || got[i].Offset != wantOffset {
			t.Fatalf("message %d at %s:%d, want %s:%d", i+1, got[i].Epoch, got[i].Offset, wantEpoch, wantOffset)
		}
	}
	if len(got) > firstEpoch && got[firstEpoch].Epoch == got[0].Epoch {
		t.Errorf("the topic restarted in the same epoch %s", got[0].Epoch)
	}
	var notices []string
	for _, e := range evs {
		if e.Sub == "main" && (e.Kind == "gap" || e.Kind == "reset") {
			notices = append(notices, e.String())
		}
	}
	if len(got) > firstEpoch {
		if want := "reset " + got[firstEpoch].Epoch; len(notices) != 1 || notices[0] != want {
			t.Errorf("main's notices: %q, want [%q]", notices, want)
		}
	}

	// Reconnects happened, by both kinds of cut, and each resumed correctly.
	opens, codes := 0, countCloses(evs, "main")
	for _, e := range evs {
		if e.Sub == "main" && e.Kind == "open" {
			opens++
		}
	}
	if opens < 10 || codes[1006] < 5 || codes[4003] < 2 || codes[4001] != 1 {
		t.Errorf("page opened %d times, closes by code %v; want >= 10 opens, >= 5 1006, >= 2 4003, one 4001", opens, codes)
	}
	checkRequests(t, cut.requestLines())

	// The subscriber from an unknown epoch: reset, the lost part as a gap,
	// then the rest.
	var gapNotices []string
	for _, e := range evs {
		if e.Sub == "gaps" && (e.Kind == "gap" || e.Kind == "reset") {
			gapNotices = append(gapNotices, e.String())
		}
	}
	gm := msgs(evs, "gaps")
	if len(gm) != 100 {
		t.Errorf("gapped topic: page got %d messages, want 100 (51-150)", len(gm))
	}
	for i, m := range gm {
		if err := m.is(gapMsgs[50+i]); err != nil || m.Offset != 51+i {
			t.Fatalf("gapped topic: message %d at offset %d: %v", 51+i, m.Offset, err)
		}
	}
	if len(gm) > 0 {
		e := gm[0].Epoch
		if want := []string{"reset " + e, "gap " + e + ":1-50"}; fmt.Sprint(gapNotices) != fmt.Sprint(want) {
			t.Errorf("gapped topic's notices: %q, want %q", gapNotices, want)
		}
	}

	// The big topic: all of it once, in order, over several 4000 closes.
	bm, bigCloses := msgs(evs, "big"), countCloses(evs, "big")
	if len(bm) != len(bigMsgs) {
		t.Errorf("big topic: page got %d messages, want %d", len(bm), len(bigMsgs))
	}
	for i, m := range bm[:min(len(bm), len(bigMsgs))] {
		if err := m.is(bigMsgs[i]); err != nil || m.Offset != i+1 {
			t.Fatalf("big topic: message %d at offset %d: %v", i+1, m.Offset, err)
		}
	}
	for _, e := range evs {
		if e.Sub == "big" && (e.Kind == "gap" || e.Kind == "reset") {
			t.Errorf("big topic: %s", e)
		}
	}
	if bigCloses[4000] < 2 {
		t.Errorf("big topic: closes by code %v, want the replay cut by 4000 more than once", bigCloses)
	}

	t.Logf("%d messages (%d in the first epoch) once each, in order; %d reconnects (closes by code %v), %d connections reset by the proxy, %d resumes made to replay 3 seen messages; gapped topic: %q then %d messages; big topic: %d messages of 20 KB over %d replays cut by 4000; %v",
		len(got), firstEpoch, opens-1, codes, resets, cut.moved.Load(), gapNotices, len(gm), len(bm), bigCloses[4000], elapsed.Round(time.Millisecond))
	if t.Failed() {
		for _, e := range evs {
			t.Log(e.String())
		}
	}
}

// checkRequests checks the page's handshakes: the first ones as the app gave
// the URL, then, once the page had a position, `since` instead of `rewind`,
// other parameters kept, never going back.
func checkRequests(t *testing.T, lines []string) {
	t.Helper()
	re := regexp.MustCompile(`^GET /ws/sub/test/main\?(?:rewind=1000&foo=bar|foo=bar&since=([A-Za-z0-9]+):(\d+)) HTTP/1.1\r\n$`)
	epoch, offset := "", 0 // of the last handshake with since
	for i, l := range lines {
		m := re.FindStringSubmatch(l)
		switch {
		case m == nil:
			t.Errorf("handshake %d: %q", i+1, l)
		case m[1] == "" && epoch != "":
			t.Errorf("handshake %d: %q after one with since", i+1, l)
		case m[1] != "":
			o, _ := strconv.Atoi(m[2])
			if m[1] == epoch && o < offset {
				t.Errorf("handshake %d: %q went back from %s:%d", i+1, l, epoch, offset)
			}
			epoch, offset = m[1], o
		}
	}
}

// hub is a real hub on 127.0.0.1 with a real key file.
type hub struct {
	addr string
	key  string // an API key of domain test
	// A private domain's API key and its token verification key (HS256),
	// for hubs that have one (startHubBehind).
	privateKey string
	tokenKey   keys.TokenKey
	// The hub's statistics, for hubs that have them (startHubBehind).
	stats *server.Stats
}

// startHub starts a hub whose keepalive notices a silent browser within
// 0.7 s (a pong may be late by 500 ms: more than a loaded CI machine keeps
// the idle publishers' reading goroutines waiting), whose topics end 100 ms after their publisher left and
// keep their last 100 messages, and which cuts a replay at 128 KiB.
func startHub(t *testing.T) *hub {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.Add(context.Background(), "test", "tester")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(server.Config{
		Listen:       "127.0.0.1:0",
		Keys:         store,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		PingInterval: 200 * time.Millisecond,
		PongTimeout:  500 * time.Millisecond,
		CloseTimeout: 300 * time.Millisecond,
		GracePeriod:  100 * time.Millisecond,
		HistorySize:  100, // the gapped topic's expectations count on it
		MaxBacklog:   128 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &hub{addr: srv.Addr(), key: key}
}

// publisher is a WebSocket publisher; it reads what the hub sends so that
// pings are answered.
type publisher struct{ c *websocket.Conn }

func (h *hub) publisher(t *testing.T, topic string) *publisher {
	t.Helper()
	return h.publisherIn(t, h.key, "test", topic)
}

// publisherIn connects a publisher of domain/topic with key.
func (h *hub) publisherIn(t *testing.T, key, domain, topic string) *publisher {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(fmt.Sprintf("ws://%s/ws/pub/%s/%s/%s", h.addr, key, domain, topic), nil)
	if err != nil {
		t.Fatalf("publisher of %s: %v", topic, err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return &publisher{c}
}

func (p *publisher) send(t *testing.T, m message) {
	t.Helper()
	typ := websocket.TextMessage
	if m.binary {
		typ = websocket.BinaryMessage
	}
	if err := p.c.WriteMessage(typ, m.data); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func (p *publisher) close() {
	p.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	p.c.Close()
}

// message is one published message.
type message struct {
	binary bool
	data   []byte
}

// messageFor is the i-th message of a topic: text and binary, empty, up to
// 20 KB, with "\n\n" and header-like lines in the payload.
func messageFor(i int) message {
	switch {
	case i%50 == 0:
		return message{binary: i%100 == 0}
	case i%37 == 0:
		b := make([]byte, 20000)
		for k := range b {
			b[k] = byte(k * i)
		}
		return message{binary: true, data: b}
	case i%2 == 0:
		return message{data: fmt.Appendf(nil, "%d: é€😀\n\nid: X:1\n\n", i)}
	default:
		b := binary.BigEndian.AppendUint64(nil, uint64(i))
		b = append(b, "\n\n"...)
		for k := range i % 300 {
			b = append(b, byte(k+i))
		}
		return message{binary: true, data: b}
	}
}

// event is what the page reports: a message, a notice, an open, a close or
// an error.
type event struct {
	N      int    `json:"n"`
	Sub    string `json:"sub"`
	Kind   string `json:"kind"` // loaded, msg, gap, reset, open, close, error
	Epoch  string `json:"epoch"`
	Offset int    `json:"offset"`
	Binary bool   `json:"binary"`
	U8     bool   `json:"u8"`   // a binary payload came as a Uint8Array
	Data   string `json:"data"` // text, or base64 of binary
	First  int    `json:"first"`
	Last   int    `json:"last"`
	Code   int    `json:"code"`
	Reason string `json:"reason"`
	URL    string `json:"url"`
	// Extensions is a socket's ws.extensions at its open (nginx_test.go).
	Extensions string `json:"extensions"`
}

func (e event) String() string {
	switch e.Kind {
	case "msg":
		return fmt.Sprintf("%s: msg %s:%d binary=%v %d bytes", e.Sub, e.Epoch, e.Offset, e.Binary, len(e.Data))
	case "gap":
		return fmt.Sprintf("gap %s:%d-%d", e.Epoch, e.First, e.Last)
	case "reset":
		return "reset " + e.Epoch
	case "close":
		return fmt.Sprintf("%s: close %d %s", e.Sub, e.Code, e.Reason)
	}
	return fmt.Sprintf("%s: %s %s %s", e.Sub, e.Kind, e.URL, e.Reason)
}

// is says how e differs from the message m, if it does.
func (e event) is(m message) error {
	data := []byte(e.Data)
	if e.Binary {
		var err error
		if data, err = base64.StdEncoding.DecodeString(e.Data); err != nil {
			return err
		}
		if !e.U8 {
			return fmt.Errorf("binary payload not a Uint8Array")
		}
	}
	if e.Binary != m.binary || !bytes.Equal(data, m.data) {
		return fmt.Errorf("got binary=%v %.40q, want binary=%v %.40q", e.Binary, data, m.binary, m.data)
	}
	return nil
}

func msgs(evs []event, sub string) []event {
	var out []event
	for _, e := range evs {
		if e.Sub == sub && e.Kind == "msg" {
			out = append(out, e)
		}
	}
	return out
}

func countCloses(evs []event, sub string) map[int]int {
	n := make(map[int]int)
	for _, e := range evs {
		if e.Sub == sub && e.Kind == "close" {
			n[e.Code]++
		}
	}
	return n
}

// pageSub is one subscribe() call the page makes.
type pageSub struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Since    string `json:"since,omitempty"`
	MinDelay int    `json:"minDelay"`
	MaxDelay int    `json:"maxDelay"`
	// Token, if set, makes the page pass subscribe a token function that
	// fetches a fresh token from the page's /token before each connect.
	Token bool `json:"token,omitempty"`
}

// page serves the test page and wspubsub.js, and collects what the page
// reports.
type page struct {
	url      string
	deadline time.Time // no wait goes past it

	reports

	mu   sync.Mutex
	subs []pageSub     // what the page subscribes to (serve)
	mint func() string // what the page's /token answers, if set
}

// reports collects the events a test page POSTs to /report (reportJS),
// each once: a page sends a batch again until it gets an answer.
type reports struct {
	mu   sync.Mutex
	evs  []event
	seen map[int]bool
}

// serveReport is the handler of POST /report.
func (rs *reports) serveReport(w http.ResponseWriter, r *http.Request) {
	var evs []event
	if err := json.NewDecoder(r.Body).Decode(&evs); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.seen == nil {
		rs.seen = make(map[int]bool)
	}
	for _, e := range evs {
		if !rs.seen[e.N] { // a batch the page sent again
			rs.seen[e.N] = true
			rs.evs = append(rs.evs, e)
		}
	}
}

// events returns what the page reported so far, in order.
func (rs *reports) events() []event {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]event(nil), rs.evs...)
}

// reportJS is the test pages' report(ev): it numbers the events and POSTs
// them to /report in order, in batches, again until one is taken; page
// errors are reported as kind "error"; base64 encodes binary messages.
const reportJS = `const queue = [];
let n = 0, sending = false;
function report(ev) {
  queue.push({n: ++n, ...ev});
  if (!sending) flush();
}
async function flush() {
  sending = true;
  while (queue.length) {
    const batch = queue.splice(0, 500);
    for (;;) {
      try {
        if ((await fetch('/report', {method: 'POST', body: JSON.stringify(batch)})).ok) break;
      } catch (e) {}
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  sending = false;
}
addEventListener('error', (e) => report({kind: 'error', reason: String(e.message)}));
addEventListener('unhandledrejection', (e) => report({kind: 'error', reason: String(e.reason)}));

function base64(u8) {
  let s = '';
  for (const b of u8) s += String.fromCharCode(b);
  return btoa(s);
}
`

// serve sets the subscriptions the page makes once the browser loads it.
func (p *page) serve(subs []pageSub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs = subs
}

func startPage(t *testing.T) *page {
	t.Helper()
	js, err := os.ReadFile("wspubsub.js")
	if err != nil {
		t.Fatal(err)
	}
	// The whole test stays within a minute, browser start included.
	p := &page{deadline: time.Now().Add(50 * time.Second)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		cfg, _ := json.Marshal(p.subs)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, strings.Replace(pageHTML, "SUBS", string(cfg), 1))
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		mint := p.mint
		p.mu.Unlock()
		if mint == nil {
			http.Error(w, "no tokens here", http.StatusNotFound)
			return
		}
		io.WriteString(w, mint())
	})
	mux.HandleFunc("GET /wspubsub.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Write(js)
	})
	mux.HandleFunc("POST /report", p.serveReport)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// waitFor polls the page's events until cond holds, failing the test after
// timeout or at the page's first error.
func (p *page) waitFor(t *testing.T, what string, timeout time.Duration, cond func([]event) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	if deadline.After(p.deadline) {
		deadline = p.deadline
	}
	for {
		evs := p.events()
		for _, e := range evs {
			if e.Kind == "error" {
				t.Fatalf("waiting for %s: page error: %s", what, e.Reason)
			}
		}
		if cond(evs) {
			return
		}
		if time.Now().After(deadline) {
			for _, e := range evs[max(0, len(evs)-40):] {
				t.Log(e.String())
			}
			t.Fatalf("timed out waiting for %s (%d events from the page, the last ones above)", what, len(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pageHTML subscribes as SUBS says and reports every callback by POST, in
// order, one batch at a time.
const pageHTML = `<!doctype html>
<meta charset="utf-8">
<title>wspubsub.js test</title>
<script type="module">
` + reportJS + `
import('/wspubsub.js').then(({subscribe}) => {
  for (const s of SUBS) {
    const sub = s.name;
    subscribe(s.url, {
      since: s.since, minDelay: s.minDelay, maxDelay: s.maxDelay,
      token: s.token ? () => fetch('/token').then((r) => r.ok ? r.text() : Promise.reject(new Error('token: ' + r.status))) : undefined,
      onMessage: (data, {epoch, offset, binary}) => report({sub, kind: 'msg', epoch, offset, binary,
        u8: data instanceof Uint8Array, data: binary ? base64(data) : data}),
      onGap: ({epoch, first, last}) => report({sub, kind: 'gap', epoch, first, last}),
      onReset: ({epoch}) => report({sub, kind: 'reset', epoch}),
      onOpen: ({url}) => report({sub, kind: 'open', url}),
      onClose: ({code, reason}) => report({sub, kind: 'close', code, reason}),
    });
  }
  report({kind: 'loaded'});
}, (e) => report({kind: 'error', reason: 'import: ' + e}));
</script>
`

// findChromium returns the browser to run, or skips the test when there is
// none; CI must have one (.ci/run installs it), so there it fails instead.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (CI is set, so this fails instead of skipping; .ci/run installs it)")
	}
	t.Skip("chromium is not installed: apt-get install chromium to run the browser test")
	return ""
}

// runChromium starts a headless Chromium on url, with flags added, in a
// process group of its own that is killed when the test ends.
func runChromium(t *testing.T, chrome, url string, flags ...string) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu",
		"--disable-quic", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-proxy-server",
		"--disable-dev-shm-usage", "--user-data-dir=" + dir}, flags...)
	cmd := exec.Command(chrome, append(args, url)...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", chrome, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("chromium (pid %d) did not exit", cmd.Process.Pid)
		}
		if t.Failed() { // its output, less the noise of a machine without D-Bus
			var keep []string
			for _, l := range strings.Split(out.String(), "\n") {
				if !strings.Contains(l, "dbus") {
					keep = append(keep, l)
				}
			}
			t.Logf("chromium's output:\n%s", strings.Join(keep[max(0, len(keep)-40):], "\n"))
		}
	})
}

// lockedBuffer is a bytes.Buffer that the test may read while the
// browser's output is written to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
