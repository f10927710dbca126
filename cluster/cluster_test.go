package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/cluster/natstest"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// testCluster is an in-process NATS server and the hub nodes of one test,
// sharing one key file.
type testCluster struct {
	nats  *natstest.Server
	store *filestore.Store
	key   string // a key for domain "test"
	n     int
}

func newCluster(t *testing.T) *testCluster {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // before its directory goes, after the nodes
	key, err := store.Add(context.Background(), "test", "tester")
	if err != nil {
		t.Fatal(err)
	}
	return &testCluster{nats: natstest.Start(t), store: store, key: key}
}

// node is one hub of the cluster.
type node struct {
	*server.Server
	cl  *cluster.Node
	tc  *testCluster
	url string
}

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("WSPUBSUB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// node starts a hub node on natsURL (the cluster's NATS server if empty).
func (tc *testCluster) node(t *testing.T, natsURL string, opts ...func(*server.Config, *cluster.Config)) *node {
	t.Helper()
	tc.n++
	if natsURL == "" {
		natsURL = tc.nats.URL
	}
	ccfg := cluster.Config{URL: natsURL, Name: fmt.Sprintf("node%d", tc.n), ClaimTTL: 3 * time.Second, Logger: logger(t)}
	scfg := server.Config{Listen: "127.0.0.1:0", Keys: tc.store, Logger: logger(t), GracePeriod: 2 * time.Second}
	for _, o := range opts {
		o(&scfg, &ccfg)
	}
	cl, err := cluster.Connect(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(context.Background()) })
	scfg.Cluster = cl
	srv, err := server.Start(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	n := &node{Server: srv, cl: cl, tc: tc, url: "ws://" + srv.Addr()}
	waitFor(t, "the node to be ready", func() bool { return srv.Ready() == nil })
	return n
}

var dialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second}

// dial opens a WebSocket or returns the HTTP status of the refusal.
func (n *node) dial(path string) (*websocket.Conn, int, error) {
	c, resp, err := dialer.Dial(n.url+path, nil)
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode, err
		}
		return nil, 0, err
	}
	return c, http.StatusSwitchingProtocols, nil
}

func (n *node) mustDial(t testing.TB, path string) *websocket.Conn {
	t.Helper()
	c, status, err := n.dial(path)
	if err != nil {
		t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (n *node) pub(t testing.TB, topic string) *websocket.Conn {
	return n.mustDial(t, "/ws/pub/"+n.tc.key+"/test/"+topic)
}

func (n *node) sub(t testing.TB, topic string) *websocket.Conn {
	return n.mustDial(t, "/ws/sub/test/"+topic)
}

// refused dials path and returns the status of its refusal.
func (n *node) refused(t testing.TB, path string) int {
	t.Helper()
	c, status, err := n.dial(path)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: upgraded, want a refusal", path)
	}
	return status
}

func expect(t testing.TB, c *websocket.Conn, typ int, data []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	gt, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v (want %d bytes)", err, len(data))
	}
	if gt != typ || !bytes.Equal(got, data) {
		t.Fatalf("got type %d %.40q (%d bytes), want type %d %.40q (%d bytes)", gt, got, len(got), typ, data, len(data))
	}
}

func expectClosed(t testing.TB, c *websocket.Conn, code int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, data, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got type %d %.40q, want close %d", typ, data, code)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("read: %v, want close %d", err, code)
	}
}

// expectSilent checks that nothing arrives on c for d.
func expectSilent(t testing.TB, c *websocket.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	typ, data, err := c.ReadMessage()
	if err == nil {
		t.Fatalf("got type %d %.40q, want nothing", typ, data)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v, want nothing", err)
	}
}

func publish(t testing.TB, p *websocket.Conn, typ int, data []byte) {
	t.Helper()
	if err := p.WriteMessage(typ, data); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// leave closes a publisher with the close handshake and returns once the
// hub answered, that is once the publisher is out of its topic.
func leave(t testing.TB, p *websocket.Conn) {
	t.Helper()
	if err := p.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, p, 1000)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metric is the value of a metric of the hub's registry, summed over the
// series whose labels include those given.
func metric(t testing.TB, n *node, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue series
				}
			}
			found = true
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	if !found {
		t.Fatalf("no metric %s%v", name, labels)
	}
	return sum
}

func readyz(n *node) int {
	w := httptest.NewRecorder()
	n.ReadyHandler().ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	return w.Code
}

func TestTwoNodesPublisherAndSubscribersApart(t *testing.T) {
	tc := newCluster(t)
	a, b := tc.node(t, ""), tc.node(t, "")
	if got := b.refused(t, "/ws/sub/test/news"); got != http.StatusNotFound {
		t.Fatalf("subscriber to a topic started nowhere: %d, want 404", got)
	}
	p := a.pub(t, "news")
	sa := a.sub(t, "news")
	sb := b.sub(t, "news") // right after the publisher's 101: b's view may lag, the lookup does not
	msgs := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello")},
		{websocket.BinaryMessage, []byte{0, 1, 2, 0xff}},
		{websocket.BinaryMessage, []byte{}},
		{websocket.TextMessage, []byte("")},
		{websocket.BinaryMessage, bytes.Repeat([]byte{7}, 70000)},
		{websocket.TextMessage, []byte("héllo wörld")},
		// The largest message a publisher may send is larger than NATS's
		// max_payload: it crosses in parts.
		{websocket.BinaryMessage, bytes.Repeat([]byte{1, 2, 3, 4}, 1<<18)},
		{websocket.TextMessage, []byte("after")},
	}
	for _, m := range msgs {
		publish(t, p, m.typ, m.data)
	}
	for _, s := range []*websocket.Conn{sa, sb} {
		for _, m := range msgs {
			expect(t, s, m.typ, m.data)
		}
	}
	// Domains and topics do not mix across nodes either.
	if got := b.refused(t, "/ws/sub/test/other"); got != http.StatusNotFound {
		t.Fatalf("subscriber to another topic: %d, want 404", got)
	}
	if got := b.refused(t, "/ws/sub/other/news"); got != http.StatusNotFound {
		t.Fatalf("subscriber to another domain: %d, want 404", got)
	}
	if got := metric(t, a, "wspubsub_cluster_sent_messages_total"); got != float64(len(msgs)) {
		t.Errorf("a sent %v messages to other nodes, want %d", got, len(msgs))
	}
	if got := metric(t, b, "wspubsub_cluster_received_messages_total"); got != float64(len(msgs)) {
		t.Errorf("b received %v messages from other nodes, want %d", got, len(msgs))
	}
	if got := metric(t, b, "wspubsub_cluster_lag_seconds"); got == 0 {
		t.Error("no lag observed on b")
	}
	if got := metric(t, a, "wspubsub_cluster_received_batches_total"); got != 0 {
		t.Errorf("the publishing node received %v runs of its own (NoEcho)", got)
	}
}

func TestThreeNodesManySubscribersInOrder(t *testing.T) {
	tc := newCluster(t)
	nodes := []*node{tc.node(t, ""), tc.node(t, ""), tc.node(t, "")}
	// Two topics, published on different nodes at once.
	pubs := map[string]*websocket.Conn{"news": nodes[1].pub(t, "news"), "sport": nodes[2].pub(t, "sport")}
	type subscriber struct {
		topic string
		c     *websocket.Conn
	}
	var subs []subscriber
	for _, n := range nodes {
		for i := range 4 {
			topic := "news"
			if i%2 == 1 {
				topic = "sport"
			}
			subs = append(subs, subscriber{topic, n.sub(t, topic)})
		}
	}
	const count = 2000
	var wg sync.WaitGroup
	for topic, p := range pubs {
		wg.Go(func() {
			for i := range count {
				if err := p.WriteMessage(websocket.TextMessage, []byte(topic+" "+strconv.Itoa(i))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		})
	}
	errs := make(chan error, len(subs))
	for _, s := range subs {
		wg.Go(func() {
			for i := range count {
				s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, got, err := s.c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("%s subscriber: read %d: %v", s.topic, i, err)
					return
				}
				if want := s.topic + " " + strconv.Itoa(i); string(got) != want {
					errs <- fmt.Errorf("%s subscriber: got %q, want %q", s.topic, got, want)
					return
				}
			}
			errs <- nil
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// Nothing more: each message came once.
	for _, s := range subs {
		expectSilent(t, s.c, 50*time.Millisecond)
	}
}

func TestInterestFollowsSubscribers(t *testing.T) {
	tc := newCluster(t)
	a, b := tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	if got := metric(t, b, "wspubsub_cluster_subscriptions"); got != 0 {
		t.Fatalf("b holds %v subscriptions without subscribers", got)
	}
	s1, s2 := b.sub(t, "news"), b.sub(t, "news")
	if got := metric(t, b, "wspubsub_cluster_subscriptions"); got != 1 {
		t.Fatalf("b holds %v subscriptions for one topic, want 1", got)
	}
	publish(t, p, websocket.TextMessage, []byte("one"))
	expect(t, s1, websocket.TextMessage, []byte("one"))
	expect(t, s2, websocket.TextMessage, []byte("one"))
	s1.Close()
	s2.Close()
	waitFor(t, "b to drop its subscription", func() bool { return metric(t, b, "wspubsub_cluster_subscriptions") == 0 })
	// The publishing node subscribes to nothing: it has no subscribers.
	if got := metric(t, a, "wspubsub_cluster_subscriptions"); got != 0 {
		t.Fatalf("a holds %v subscriptions without subscribers", got)
	}
}

func TestOwnershipConflictAcrossNodes(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	sc := c.sub(t, "news")
	path := "/ws/pub/" + tc.key + "/test/news"
	if got := b.refused(t, path); got != http.StatusConflict {
		t.Fatalf("second publisher on another node: %d, want 409", got)
	}
	if got := a.refused(t, path); got != http.StatusConflict {
		t.Fatalf("second publisher on the same node: %d, want 409", got)
	}
	if got := metric(t, b, "wspubsub_handshakes_refused_total", "reason", "topic_has_publisher"); got != 1 {
		t.Fatalf("b counted %v conflicts, want 1", got)
	}
	// The first publisher is untouched.
	publish(t, p, websocket.TextMessage, []byte("still mine"))
	expect(t, sc, websocket.TextMessage, []byte("still mine"))
	// Another topic is free on b.
	b.pub(t, "sport")
}

func TestTakeoverOnAnotherNodeWithinGrace(t *testing.T) {
	tc := newCluster(t)
	a, b, c := tc.node(t, ""), tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	subs := []*websocket.Conn{a.sub(t, "news"), b.sub(t, "news"), c.sub(t, "news")}
	publish(t, p, websocket.TextMessage, []byte("from a"))
	for _, s := range subs {
		expect(t, s, websocket.TextMessage, []byte("from a"))
	}
	leave(t, p)
	// The publisher comes back through another node within the grace period.
	p2 := b.pub(t, "news")
	publish(t, p2, websocket.TextMessage, []byte("from b"))
	for _, s := range subs {
		expect(t, s, websocket.TextMessage, []byte("from b"))
	}
	// Past the old grace period, nobody was closed and the topic is b's.
	time.Sleep(3 * time.Second)
	publish(t, p2, websocket.TextMessage, []byte("still b"))
	for _, s := range subs {
		expect(t, s, websocket.TextMessage, []byte("still b"))
	}
	if got := a.refused(t, "/ws/pub/"+tc.key+"/test/news"); got != http.StatusConflict {
		t.Fatalf("publisher on a after the takeover: %d, want 409", got)
	}
	// A new subscriber on a joins the topic, now fed from b.
	subs = append(subs, a.sub(t, "news"))
	publish(t, p2, websocket.TextMessage, []byte("to all"))
	for _, s := range subs {
		expect(t, s, websocket.TextMessage, []byte("to all"))
	}
	// And back to a, the node it started on.
	leave(t, p2)
	p3 := a.pub(t, "news")
	publish(t, p3, websocket.TextMessage, []byte("a again"))
	for _, s := range subs {
		expect(t, s, websocket.TextMessage, []byte("a again"))
	}
}

func TestGraceRunsOutOnEveryNode(t *testing.T) {
	tc := newCluster(t)
	short := func(s *server.Config, _ *cluster.Config) { s.GracePeriod = 300 * time.Millisecond }
	a, b, c := tc.node(t, "", short), tc.node(t, "", short), tc.node(t, "", short)
	p := a.pub(t, "news")
	subs := []*websocket.Conn{a.sub(t, "news"), b.sub(t, "news"), c.sub(t, "news")}
	leave(t, p)
	for _, s := range subs {
		expectClosed(t, s, 4001)
	}
	for _, n := range []*node{a, b, c} {
		if got := n.refused(t, "/ws/sub/test/news"); got != http.StatusNotFound {
			t.Fatalf("subscriber after the topic ended: %d, want 404", got)
		}
	}
	// The topic can start again anywhere.
	c.pub(t, "news")
}

func TestSubscribeWaitsAcrossNodes(t *testing.T) {
	tc := newCluster(t)
	waits := func(s *server.Config, _ *cluster.Config) { s.SubscribeWaits = true }
	a, b := tc.node(t, "", waits), tc.node(t, "", waits)
	sb := b.sub(t, "news") // before any publisher
	p := a.pub(t, "news")
	publish(t, p, websocket.BinaryMessage, []byte{1, 2, 3})
	expect(t, sb, websocket.BinaryMessage, []byte{1, 2, 3})
}

func TestOwnerCrashTakeoverElsewhere(t *testing.T) {
	tc := newCluster(t)
	opts := func(s *server.Config, c *cluster.Config) {
		s.GracePeriod = 5 * time.Second
		c.ClaimTTL = 1500 * time.Millisecond
	}
	a, b, c := tc.node(t, "", opts), tc.node(t, "", opts), tc.node(t, "", opts)
	p := a.pub(t, "news")
	sb, sc := b.sub(t, "news"), c.sub(t, "news")
	publish(t, p, websocket.TextMessage, []byte("before"))
	expect(t, sb, websocket.TextMessage, []byte("before"))
	expect(t, sc, websocket.TextMessage, []byte("before"))
	a.cl.Crash() // a's claim is no longer refreshed, and no grace record is written
	// The publisher reconnects to b: refused while a's record is live, taken
	// over once it lapsed, within the grace period.
	var p2 *websocket.Conn
	waitFor(t, "the publisher to take the topic over on b", func() bool {
		conn, status, err := b.dial("/ws/pub/" + tc.key + "/test/news")
		if err == nil {
			p2 = conn
			return true
		}
		if status != http.StatusConflict {
			t.Fatalf("publisher on b: status %d, %v; want 409 or 101", status, err)
		}
		return false
	})
	defer p2.Close()
	publish(t, p2, websocket.TextMessage, []byte("after"))
	expect(t, sb, websocket.TextMessage, []byte("after"))
	expect(t, sc, websocket.TextMessage, []byte("after"))
}

func TestOwnerCrashEndsTopic(t *testing.T) {
	tc := newCluster(t)
	opts := func(s *server.Config, c *cluster.Config) {
		s.GracePeriod = 500 * time.Millisecond
		c.ClaimTTL = 1500 * time.Millisecond
	}
	a, b := tc.node(t, "", opts), tc.node(t, "", opts)
	a.pub(t, "news")
	sb := b.sub(t, "news")
	start := time.Now()
	a.cl.Crash()
	expectClosed(t, sb, 4001) // once the record lapsed and the grace period ran out
	if d := time.Since(start); d < time.Second {
		t.Fatalf("closed %v after the crash, before the claim could lapse", d)
	}
}

func TestNATSRestartUnderLoad(t *testing.T) {
	tc := newCluster(t)
	a, b := tc.node(t, ""), tc.node(t, "")
	p := a.pub(t, "news")
	const perNode = 20
	var subsA, subsB []*websocket.Conn
	for range perNode {
		subsA = append(subsA, a.sub(t, "news"))
		subsB = append(subsB, b.sub(t, "news"))
	}
	// Readers: a's subscribers must get everything; b's get a strictly
	// increasing run, missing what was published while NATS was away.
	type seen struct {
		all     bool
		n, last int
		err     error
	}
	results := make(chan seen, 2*perNode)
	read := func(c *websocket.Conn, all bool) {
		s := seen{all: all, last: -1}
		for {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, data, err := c.ReadMessage()
			if err != nil {
				s.err = err
				break
			}
			if string(data) == "end" {
				break
			}
			i, _ := strconv.Atoi(string(data))
			if i <= s.last || (all && i != s.last+1) {
				s.err = fmt.Errorf("got %d after %d", i, s.last)
				break
			}
			s.last, s.n = i, s.n+1
		}
		results <- s
	}
	for _, c := range subsA {
		go read(c, true)
	}
	for _, c := range subsB {
		go read(c, false)
	}
	i := 0
	send := func(n int) {
		for range n {
			publish(t, p, websocket.TextMessage, []byte(strconv.Itoa(i)))
			i++
			time.Sleep(time.Millisecond)
		}
	}
	send(300)
	tc.nats.Stop()
	waitFor(t, "both nodes to report not ready", func() bool {
		return a.Ready() != nil && b.Ready() != nil && readyz(a) == 503 && readyz(b) == 503
	})
	if got := metric(t, a, "wspubsub_cluster_connected"); got != 0 {
		t.Errorf("a's connected gauge is %v while NATS is down", got)
	}
	send(300) // a keeps serving its own subscribers
	tc.nats.Start()
	waitFor(t, "both nodes to be ready again", func() bool { return a.Ready() == nil && b.Ready() == nil })
	if got := readyz(b); got != 200 {
		t.Fatalf("b's /readyz answers %d after the restart", got)
	}
	after := i
	send(300)
	publish(t, p, websocket.TextMessage, []byte("end"))
	for range 2 * perNode {
		s := <-results
		if s.err != nil {
			t.Fatal(s.err)
		}
		if s.last != i-1 {
			t.Fatalf("a subscriber's last message is %d, want %d", s.last, i-1)
		}
		if s.all && s.n != i {
			t.Fatalf("a subscriber on the publishing node got %d messages, want %d", s.n, i)
		}
		if s.n < i-after {
			t.Fatalf("a subscriber got %d messages, fewer than the %d published after NATS came back", s.n, i-after)
		}
	}
	if got := metric(t, a, "wspubsub_cluster_reconnects_total"); got < 1 {
		t.Errorf("a counted %v reconnects", got)
	}
	// b accounts for every run a sent: received, or told lost by the
	// sequence numbers.
	sent := metric(t, a, "wspubsub_cluster_sent_batches_total") + metric(t, a, "wspubsub_cluster_dropped_batches_total", "reason", "publish_error")
	got := metric(t, b, "wspubsub_cluster_received_batches_total") + metric(t, b, "wspubsub_cluster_lost_batches_total")
	if got != sent {
		t.Errorf("b received or lost %v runs, a sent %v", got, sent)
	}
	t.Logf("a sent %v runs; b received %v, lost %v; a's reconnect buffer refused %v", sent,
		metric(t, b, "wspubsub_cluster_received_batches_total"), metric(t, b, "wspubsub_cluster_lost_batches_total"),
		metric(t, a, "wspubsub_cluster_dropped_batches_total", "reason", "publish_error"))
}

// proxy forwards TCP connections to target until cut, which drops them all
// and refuses new ones until restored.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// TestClaimLostAfterPartition: a node cut off from NATS longer than its
// claims live loses its topic to a publisher on another node, and when it is
// back it closes its own publisher of that topic with 1001 rather than
// keep two publishers.
func TestClaimLostAfterPartition(t *testing.T) {
	tc := newCluster(t)
	fast := func(s *server.Config, c *cluster.Config) { c.ClaimTTL = time.Second }
	px := startProxy(t, strings.TrimPrefix(tc.nats.URL, "nats://"))
	a := tc.node(t, px.url(), fast)
	b := tc.node(t, "", fast)
	p := a.pub(t, "news")
	sb := b.sub(t, "news")
	publish(t, p, websocket.TextMessage, []byte("from a"))
	expect(t, sb, websocket.TextMessage, []byte("from a"))

	px.setCut(true)
	waitFor(t, "a to notice", func() bool { return a.Ready() != nil })
	// a's record lapses; a publisher on b takes the topic.
	var p2 *websocket.Conn
	waitFor(t, "a publisher on b to take the topic over", func() bool {
		conn, status, err := b.dial("/ws/pub/" + tc.key + "/test/news")
		if err == nil {
			p2 = conn
			return true
		}
		if status != http.StatusConflict {
			t.Fatalf("publisher on b: %d %v", status, err)
		}
		return false
	})
	defer p2.Close()
	publish(t, p2, websocket.TextMessage, []byte("from b"))
	expect(t, sb, websocket.TextMessage, []byte("from b"))

	px.setCut(false)
	expectClosed(t, p, 1001) // a's publisher, once a is back and sees b's record
	if got := metric(t, a, "wspubsub_cluster_claims_lost_total"); got != 1 {
		t.Fatalf("a counted %v lost claims, want 1", got)
	}
	// a's subscribers, if any, would now be fed from b: a new one is.
	waitFor(t, "a to be ready", func() bool { return a.Ready() == nil })
	sa := a.sub(t, "news")
	publish(t, p2, websocket.TextMessage, []byte("to both"))
	expect(t, sb, websocket.TextMessage, []byte("to both"))
	expect(t, sa, websocket.TextMessage, []byte("to both"))
}
