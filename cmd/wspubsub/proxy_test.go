package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/deploy/proxytest"
)

// fromIP is a dialer whose connections leave from local address ip
// (127.0.0.0/8 is all this machine's), so that the hub behind a proxy sees
// clients at different addresses.
func fromIP(ip string) *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// wsFrom is a WebSocket dialer from ip, trusting tc's CA for wss://.
func wsFrom(ip string, tc *tls.Config) *websocket.Dialer {
	return &websocket.Dialer{NetDialContext: fromIP(ip).DialContext, TLSClientConfig: tc, HandshakeTimeout: 5 * time.Second}
}

// httpFrom is an HTTP client from ip, trusting tc's CA for https://.
func httpFrom(ip string, tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: fromIP(ip).DialContext, TLSClientConfig: tc, DisableKeepAlives: true,
	}}
}

// serveBehindProxy runs the binary on a free port with a key for domain
// "test", args added, and waits until it answers /healthz to a client at
// 127.0.0.2 (which no test trusts); it returns the hub's address, the key
// and the hub's log.
func serveBehindProxy(t *testing.T, healthz func(c *http.Client, addr string) error, args ...string) (string, string, *syncBuffer) {
	t.Helper()
	bin := buildBinary(t)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	key := addKey(t, bin, keysFile, "test")
	addr := freePort(t)
	logs := startServe(t, bin, append([]string{"--listen", addr, "--keys-file", keysFile,
		"--max-connections-per-addr", "2", "--subscribe-waits"}, args...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := healthz(httpFrom("127.0.0.2", nil), addr)
		if err == nil {
			return addr, key, logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub does not answer /healthz: %v\n%s", err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getOK(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// checkClientAddresses subscribes through the proxy at url (wss://PROXY)
// from 127.0.0.7 and 127.0.0.8: the hub allows two connections per address,
// so the third from 127.0.0.7 gets 503, even when it says it is someone
// else, while 127.0.0.8 is admitted; the hub's log names 127.0.0.7, logged
// as want says. A message published reaches the subscribers through the
// proxy.
func checkClientAddresses(t *testing.T, url string, tc *tls.Config, key string, logs *syncBuffer, want string) {
	t.Helper()
	pub, _, err := wsFrom("127.0.0.9", tc).Dial(url+"/ws/pub/"+key+"/test/news", nil)
	if err != nil {
		t.Fatalf("publisher through the proxy: %v", err)
	}
	defer pub.Close()
	var subs []*websocket.Conn
	for range 2 {
		c, _, err := wsFrom("127.0.0.7", tc).Dial(url+"/ws/sub/test/news", nil)
		if err != nil {
			t.Fatalf("subscriber from 127.0.0.7 through the proxy: %v", err)
		}
		defer c.Close()
		subs = append(subs, c)
	}
	spoof := http.Header{"X-Forwarded-For": {"192.0.2.1"}}
	c, resp, err := wsFrom("127.0.0.7", tc).Dial(url+"/ws/sub/test/news", spoof)
	if err == nil {
		c.Close()
		t.Fatal("a third subscriber from 127.0.0.7 was admitted, want 503")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third subscriber from 127.0.0.7: %v, want 503", err)
	}
	c, _, err = wsFrom("127.0.0.8", tc).Dial(url+"/ws/sub/test/news", nil)
	if err != nil {
		t.Fatalf("subscriber from 127.0.0.8 through the proxy: %v", err)
	}
	defer c.Close()
	subs = append(subs, c)
	if l := logs.String(); !strings.Contains(l, want) || strings.Contains(l, "192.0.2.1") {
		t.Errorf("the hub's log does not name 127.0.0.7 as %q:\n%s", want, l)
	}
	if err := pub.WriteMessage(websocket.TextMessage, []byte("through the proxy")); err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, m, err := s.ReadMessage(); err != nil || string(m) != "through the proxy" {
			t.Fatalf("subscriber read %q, %v", m, err)
		}
	}
}

// checkSSEAndHTTPPublish publishes over HTTP through the proxy from 127.0.0.7,
// which holds no connection now, and reads it from an EventSource stream
// through the proxy.
func checkSSEAndHTTPPublish(t *testing.T, url string, tc *tls.Config, key string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/sse/sub/test/sse", nil)
	req.Header.Set("Accept", "text/event-stream")
	client := httpFrom("127.0.0.8", tc)
	client.Timeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("EventSource through the proxy: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("EventSource through the proxy: %s", resp.Status)
	}
	preq, _ := http.NewRequest("POST", url+"/api/pub/test/sse", strings.NewReader("posted"))
	preq.Header.Set("Authorization", "Bearer "+key)
	preq.Header.Set("Content-Type", "text/plain")
	presp, err := httpFrom("127.0.0.7", tc).Do(preq)
	if err != nil {
		t.Fatalf("HTTP publish through the proxy: %v", err)
	}
	body, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	if presp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP publish through the proxy: %s %s", presp.Status, body)
	}
	// Unbuffered: the event arrives while the stream stays open.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "data: posted" {
			return
		}
	}
	t.Fatalf("the EventSource stream ended without the message: %v", sc.Err())
}

// TestNginxPassesClientAddress runs the real nginx with deploy/nginx.conf
// (TLS) in front of the real binary, which trusts it: each client's own
// address is in the hub's per-address limit and log, whatever it puts in
// X-Forwarded-For; WebSocket, EventSource, HTTP publish and health pass;
// /metrics does not.
func TestNginxPassesClientAddress(t *testing.T) {
	proxytest.Binary(t, "nginx", "/usr/sbin/nginx")
	hub, key, logs := serveBehindProxy(t, func(c *http.Client, addr string) error { return getOK(c, "http://"+addr+"/healthz") },
		"--trusted-proxies", "127.0.0.1")
	certs := proxytest.NewCerts(t)
	ngx := proxytest.StartNginx(t, hub, certs.CertFile, certs.KeyFile)
	tc := certs.ClientConfig()
	checkClientAddresses(t, "wss://"+ngx.Addr, tc, key, logs, `remote="127.0.0.7 via 127.0.0.1:`)
	checkSSEAndHTTPPublish(t, "https://"+ngx.Addr, tc, key)
	if err := getOK(httpFrom("127.0.0.7", tc), "https://"+ngx.Addr+"/healthz"); err != nil {
		t.Errorf("/healthz through nginx: %v", err)
	}
	if err := getOK(httpFrom("127.0.0.7", tc), "https://"+ngx.Addr+"/metrics"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("/metrics through nginx: %v, want 404", err)
	}
	// A client at 127.0.0.9 that reaches the hub directly is not trusted:
	// its X-Forwarded-For is not read.
	for i := range 3 {
		hdr := http.Header{"X-Forwarded-For": {fmt.Sprintf("192.0.2.%d", 10+i)}}
		c, resp, err := wsFrom("127.0.0.10", nil).Dial("ws://"+hub+"/ws/sub/test/news", hdr)
		switch {
		case i < 2 && err != nil:
			t.Fatalf("direct subscriber %d: %v", i+1, err)
		case i < 2:
			defer c.Close()
		case err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable:
			t.Fatalf("third direct subscriber from 127.0.0.10, with another X-Forwarded-For: %v, want 503", err)
		}
	}
}

// TestHAProxyPassesClientAddress runs the real HAProxy with
// deploy/haproxy.cfg (TLS, TCP mode, send-proxy-v2) in front of the real
// binary with --proxy-protocol: each client's own address is in the hub's
// per-address limit and log; a client cannot add a PROXY header of its
// own, through HAProxy or directly; HAProxy's health checks pass.
func TestHAProxyPassesClientAddress(t *testing.T) {
	proxytest.Binary(t, "haproxy", "/usr/sbin/haproxy")
	hub, key, logs := serveBehindProxy(t, func(c *http.Client, addr string) error { return getOK(c, "http://"+addr+"/healthz") },
		"--trusted-proxies", "127.0.0.1", "--proxy-protocol")
	certs := proxytest.NewCerts(t)
	hap := proxytest.StartHAProxy(t, hub, certs.PEMFile)
	tc := certs.ClientConfig()
	checkClientAddresses(t, "wss://"+hap.Addr, tc, key, logs, `remote="127.0.0.7:`)
	checkSSEAndHTTPPublish(t, "https://"+hap.Addr, tc, key)

	// A PROXY header inside the client's own stream, through HAProxy, or
	// from a client that reaches the hub directly, is a bad request.
	spoof := "PROXY TCP4 192.0.2.1 127.0.0.1 1234 443\r\nGET /ws/sub/test/news HTTP/1.1\r\nHost: h\r\n\r\n"
	dials := map[string]func() (net.Conn, error){
		"through HAProxy": func() (net.Conn, error) { return tls.DialWithDialer(fromIP("127.0.0.7"), "tcp", hap.Addr, tc) },
		"directly":        func() (net.Conn, error) { return fromIP("127.0.0.10").Dial("tcp", hub) },
	}
	for name, dial := range dials {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, spoof)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a client's PROXY header %s: %v %v, want 400", name, resp, err)
		}
	}
	checkHAProxyHealth(t, hap, tc, logs)
}

// checkHAProxyHealth checks that HAProxy's health checks (with a PROXY
// header of their own) find the hub up, and that the hub refused none.
func checkHAProxyHealth(t *testing.T, hap *proxytest.Proxy, tc *tls.Config, logs *syncBuffer) {
	t.Helper()
	if err := getOK(httpFrom("127.0.0.7", tc), "https://"+hap.Addr+"/readyz"); err != nil {
		t.Errorf("/readyz through HAProxy: %v", err)
	}
	// Two checks fail a server (fall 2, inter 2s): after three intervals
	// a check without its header would have been refused and logged.
	time.Sleep(6 * time.Second)
	if l := logs.String(); strings.Contains(l, "PROXY protocol header") {
		t.Errorf("the hub refused HAProxy's checks:\n%s", l)
	}
	if out := hap.Output(); strings.Contains(out, "is DOWN") || strings.Contains(out, "Health check") {
		t.Errorf("HAProxy's health checks failed:\n%s", out)
	}
}

// TestHAProxyPassthroughTLS runs the real HAProxy with deploy/haproxy.cfg
// changed as its comment says for TLS passthrough (TCP mode, no TLS of its
// own, send-proxy-v2, health checks over TLS) in front of the real binary
// with --tls-cert and --proxy-protocol: the PROXY header comes before the
// client's TLS, and each client's own address is in the hub's per-address
// limit and log, over wss:// and https:// end to end. A client's own PROXY
// header, through HAProxy or directly, fails its TLS handshake; a trusted
// peer without a header is closed, counted and logged.
func TestHAProxyPassthroughTLS(t *testing.T) {
	proxytest.Binary(t, "haproxy", "/usr/sbin/haproxy")
	certs := proxytest.NewCerts(t)
	tc := certs.ClientConfig()
	hub, key, logs := serveBehindProxy(t, func(_ *http.Client, addr string) error {
		return getOK(httpFrom("127.0.0.2", tc), "https://"+addr+"/healthz")
	}, "--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile, "--trusted-proxies", "127.0.0.1", "--proxy-protocol")
	hap := proxytest.StartHAProxyPassthrough(t, hub, certs.CAFile)
	checkClientAddresses(t, "wss://"+hap.Addr, tc, key, logs, `remote="127.0.0.7:`)
	checkSSEAndHTTPPublish(t, "https://"+hap.Addr, tc, key)

	// A PROXY header the client sends itself, before its TLS: behind
	// HAProxy's it is the client's TLS, and broken; directly, from a peer
	// that is not trusted, likewise.
	dials := map[string]func() (net.Conn, error){
		"through HAProxy": func() (net.Conn, error) { return fromIP("127.0.0.7").Dial("tcp", hap.Addr) },
		"directly":        func() (net.Conn, error) { return fromIP("127.0.0.10").Dial("tcp", hub) },
	}
	for name, dial := range dials {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "PROXY TCP4 192.0.2.1 127.0.0.1 1234 443\r\n")
		err = tls.Client(c, tc).Handshake()
		c.Close()
		if err == nil {
			t.Errorf("a client's PROXY header %s: the TLS handshake succeeded, want it to fail", name)
		}
	}
	checkHAProxyHealth(t, hap, tc, logs)

	// The trusted peer itself, without a header: closed before TLS,
	// logged and counted.
	c, err := fromIP("127.0.0.1").Dial("tcp", hub)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	err = tls.Client(c, tc).Handshake()
	c.Close()
	if err == nil {
		t.Fatal("a TLS client at the trusted proxy's address without a header: handshake succeeded")
	}
	waitFor(t, "the hub's log line on the connection without a header", func() bool {
		return strings.Contains(logs.String(), `answer="none: the connection is closed before TLS" reason="missing PROXY protocol header`)
	})
	if l := logs.String(); strings.Contains(l, "192.0.2.1") {
		t.Errorf("the hub's log names the address a client put in its own PROXY header:\n%s", l)
	}
	resp, err := httpFrom("127.0.0.2", tc).Get("https://" + hub + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `wspubsub_handshakes_refused_total{reason="bad_proxy_header"} 1` + "\n"; !strings.Contains(string(body), want) {
		t.Errorf("/metrics has no %q", want)
	}
}

// TestProxyFlags: --trusted-proxies takes addresses and prefixes, from the
// command line or the config file, and refuses anything else;
// --proxy-protocol without trusted proxies is refused by serve and by
// config check; with --tls-cert it is accepted.
func TestProxyFlags(t *testing.T) {
	var out, errs strings.Builder
	conf := filepath.Join(t.TempDir(), "wspubsub.conf")
	if err := os.WriteFile(conf, []byte("trusted-proxies = 10.0.0.0/8, 192.0.2.7\nproxy-protocol = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := runConfig([]string{"check", "--config", conf}, &out, &errs); code != 0 || !strings.Contains(out.String(), "10.0.0.0/8,192.0.2.7/32") {
		t.Fatalf("config check: exit %d\n%s%s", code, out.String(), errs.String())
	}
	errs.Reset()
	if code := runConfig([]string{"check", "--proxy-protocol"}, io.Discard, &errs); code != 1 || !strings.Contains(errs.String(), "needs trusted-proxies") {
		t.Errorf("config check --proxy-protocol: exit %d %q, want 1 naming trusted-proxies", code, errs.String())
	}
	out.Reset()
	errs.Reset()
	if code := runConfig([]string{"check", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--trusted-proxies", "10.0.0.2", "--proxy-protocol"}, &out, &errs); code != 0 {
		t.Errorf("config check --tls-cert --proxy-protocol: exit %d %q, want 0 (TLS passthrough)", code, errs.String())
	}
	errs.Reset()
	if code := runServe([]string{"--trusted-proxies", "proxy.example"}, io.Discard, &errs); code != 2 || !strings.Contains(errs.String(), `bad trusted proxy "proxy.example"`) {
		t.Errorf("serve --trusted-proxies proxy.example: exit %d %q, want 2", code, errs.String())
	}
	errs.Reset()
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	if code := runServe([]string{"--listen", "127.0.0.1:0", "--keys-file", keysFile, "--proxy-protocol"}, io.Discard, &errs); code != 1 || !strings.Contains(errs.String(), "--proxy-protocol needs --trusted-proxies") {
		t.Errorf("serve --proxy-protocol: exit %d %q, want 1", code, errs.String())
	}
}
