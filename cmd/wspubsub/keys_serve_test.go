package main

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/pgtest"
)

// runCLI runs `bin args...` and returns its stdout, failing the test if it
// exits non-zero.
func runCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("wspubsub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitReady waits until the hub at addr answers /readyz with 200.
func waitReady(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := status("http://" + addr + "/readyz"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub did not become ready within 10s")
		}
	}
}

// dialPub connects a publisher of domain test with key; the handshake's
// HTTP status on failure.
func dialPub(addr, key, topic string) (*websocket.Conn, int, error) {
	c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws/pub/%s/test/%s", addr, key, topic), nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return nil, code, err
	}
	return c, 0, nil
}

// connectPubSub connects a publisher with key and then a subscriber of
// test/topic, and closes both when the test ends.
func connectPubSub(t *testing.T, addr, key, topic string) (pub, sub *websocket.Conn) {
	t.Helper()
	pub, code, err := dialPub(addr, key, topic)
	if err != nil {
		t.Fatalf("publisher of test/%s: %d %v", topic, code, err)
	}
	t.Cleanup(func() { pub.Close() })
	sub, _, err = websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws/sub/test/%s", addr, topic), nil)
	if err != nil {
		t.Fatalf("subscriber of test/%s: %v", topic, err)
	}
	t.Cleanup(func() { sub.Close() })
	return pub, sub
}

// relay publishes msg on pub and fails unless sub receives it within 5s.
func relay(t *testing.T, pub, sub *websocket.Conn, msg string) {
	t.Helper()
	if err := pub.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("publishing %q: %v", msg, err)
	}
	sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, got, err := sub.ReadMessage()
	if err != nil || string(got) != msg {
		t.Fatalf("subscriber got %q, %v; want %q", got, err, msg)
	}
}

// samples scrapes the hub's /metrics and returns every sample by name and
// labels, as `name` or `name{label="value"}` (one label at most).
func samples(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := status("http://" + addr + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := name
			if lp := m.GetLabel(); len(lp) == 1 {
				k = fmt.Sprintf("%s{%s=%q}", name, lp[0].GetName(), lp[0].GetValue())
			}
			switch {
			case m.GetCounter() != nil:
				out[k] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[k] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// waitSample polls /metrics until the sample named k has value want.
func waitSample(t *testing.T, addr, k string, want float64, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		v, ok := samples(t, addr)[k]
		if ok && v == want {
			t.Logf("%s = %v after %v", k, want, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s = %v (exported: %v), want %v within %v", k, v, ok, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const (
	keyStoreUp = "wspubsub_key_store_up"
	cacheHits  = `wspubsub_key_cache_lookups_total{result="hit"}`
	cacheMiss  = `wspubsub_key_cache_lookups_total{result="miss"}`
)

// TestServePGOutage runs `serve --database-url` on a PostgreSQL of the
// test's own and stops and starts it under the hub. On an empty database
// the hub makes no first key (that is the key file's convenience). While
// the database is down key_store_up is 0 and /readyz stays 200: the live
// publisher keeps reaching its subscriber, and a new publisher with a
// cached key connects and publishes. key_cache_lookups_total is exported
// and counts throughout, and key_store_up is 1 again once the database is
// back.
func TestServePGOutage(t *testing.T) {
	db := pgtest.StartCluster(t)
	bin := buildBinary(t)
	url := db.URL()
	runCLI(t, bin, "keys", "migrate", "--database-url", url)
	addr := freePort(t)
	logs := startServe(t, bin, "--listen", addr, "--database-url", url)
	waitReady(t, addr)

	// No stray first key: the log says the database is empty, and it is.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "holds no API keys"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("serve on an empty key database did not warn that it holds no keys")
		}
	}
	if strings.Contains(logs.String(), "created an API key") {
		t.Fatal("serve on PostgreSQL created a first-start key")
	}
	if list := runCLI(t, bin, "keys", "list", "--database-url", url); strings.Count(strings.TrimSpace(list), "\n") != 0 {
		t.Fatalf("the key database is not empty after serve:\n%s", list)
	}

	key := lastLine(runCLI(t, bin, "keys", "add", "--domain", "test", "--database-url", url))
	pub, sub := connectPubSub(t, addr, key, "live")
	relay(t, pub, sub, "before")
	m := samples(t, addr)
	if m[keyStoreUp] != 1 || m[cacheMiss] < 1 {
		t.Fatalf("before the outage: key_store_up %v, cache misses %v; want 1 and at least 1", m[keyStoreUp], m[cacheMiss])
	}
	if _, ok := m[cacheHits]; !ok {
		t.Fatal("key_cache_lookups_total{result=\"hit\"} is not exported")
	}
	hitsBefore := m[cacheHits]

	db.Stop()
	waitSample(t, addr, keyStoreUp, 0, 5*time.Second)
	if code, body := status("http://" + addr + "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while the database is down: %d %q, want 200", code, body)
	}
	relay(t, pub, sub, "while the database is down")
	pub2, sub2 := connectPubSub(t, addr, key, "cached") // the key is cached
	relay(t, pub2, sub2, "a new publisher with a cached key")
	unknown, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, code, _ := dialPub(addr, unknown, "x"); code != http.StatusServiceUnavailable {
		t.Fatalf("unknown key while the database is down: %d, want 503", code)
	}
	m = samples(t, addr)
	if m[keyStoreUp] != 0 || m[cacheHits] <= hitsBefore {
		t.Fatalf("during the outage: key_store_up %v, cache hits %v (before %v); want 0 and more hits", m[keyStoreUp], m[cacheHits], hitsBefore)
	}
	if code, body := status("http://" + addr + "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while the database is down: %d %q, want 200", code, body)
	}

	db.Start()
	waitSample(t, addr, keyStoreUp, 1, 20*time.Second)
	relay(t, pub, sub, "after")
	key2 := lastLine(runCLI(t, bin, "keys", "add", "--domain", "test", "--database-url", url))
	pub3, sub3 := connectPubSub(t, addr, key2, "new")
	relay(t, pub3, sub3, "a key added after the outage")
}

// TestServeKeyUsableAtOnce: a key that `keys add` has printed is accepted
// by a running hub on the very next handshake, with the key file and with
// PostgreSQL, however soon after the previous one it comes. With
// PostgreSQL, a key refused before it was imported and activated is
// accepted within a second of `keys activate`, long before the cached
// refusal would expire.
func TestServeKeyUsableAtOnce(t *testing.T) {
	bin := buildBinary(t)
	for _, store := range []string{"file", "postgresql"} {
		t.Run(store, func(t *testing.T) {
			var flags []string
			var url string
			if store == "file" {
				flags = []string{"--keys-file", filepath.Join(t.TempDir(), "keys.json")}
			} else {
				url = pgtest.Database(t)
				flags = []string{"--database-url", url}
				runCLI(t, bin, append([]string{"keys", "migrate"}, flags...)...)
			}
			addr := freePort(t)
			startServe(t, bin, append([]string{"--listen", addr}, flags...)...)
			waitReady(t, addr)
			for i := range 5 {
				key := lastLine(runCLI(t, bin, append([]string{"keys", "add", "--domain", "test"}, flags...)...))
				c, code, err := dialPub(addr, key, fmt.Sprint("t", i))
				if err != nil {
					t.Fatalf("key %d: publisher right after `keys add`: %d %v", i, code, err)
				}
				c.Close()
			}
			if store == "file" {
				return
			}
			// A key refused a moment ago (the hub caches the refusal for 5s)
			// that is then imported and activated: the NOTIFY of each change
			// drops the cached refusal.
			pgtest.CreateOriginalTable(t, url)
			if _, code, _ := dialPub(addr, pgtest.OriginalKey, "legacy"); code != http.StatusUnauthorized {
				t.Fatalf("the original's key before it is imported: %d, want 401", code)
			}
			runCLI(t, bin, "keys", "import-legacy", "--database-url", url)
			runCLI(t, bin, "keys", "activate", "--domain", "test", "--database-url", url)
			start := time.Now()
			refused := 0
			for ; ; refused++ {
				c, code, err := dialPub(addr, pgtest.OriginalKey, "legacy")
				if err == nil {
					c.Close()
					break
				}
				if time.Since(start) > time.Second {
					t.Fatalf("the original's key, imported and activated, still refused after %v: %d", time.Since(start), code)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("the original's key accepted %v after `keys activate` returned, refused %d time(s) before",
				time.Since(start).Round(time.Microsecond), refused)
		})
	}
}
