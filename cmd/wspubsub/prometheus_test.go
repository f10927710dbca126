package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/cluster/natstest"
	"github.com/wspubsub/wspubsub/keys/pgtest"
)

// The files of deploy/ these tests check.
var (
	deployDir      = filepath.Join("..", "..", "deploy")
	dashboardFile  = filepath.Join(deployDir, "grafana-dashboard.json")
	promConfigFile = filepath.Join(deployDir, "prometheus", "prometheus.yml")
	alertRulesFile = filepath.Join(deployDir, "prometheus", "wspubsub-alerts.yml")
	wantAlerts     = []string{"WspubsubDown", "WspubsubNotReady", "WspubsubKeyStoreDown",
		"WspubsubSlowConsumersRising", "WspubsubHandshakeRefusalsRising", "WspubsubClusterBatchesLost"}
)

// prometheusTool finds prog (prometheus or promtool, both from Debian's
// prometheus package). Without it the test is skipped, unless CI is set:
// .ci/run installs the package, so there its absence is a failure.
func prometheusTool(t *testing.T, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and %s is not on PATH: install Debian's prometheus package (.ci/run does)", prog)
		}
		t.Skipf("%s is not on PATH (apt-get install prometheus): skipping", prog)
	}
	return p
}

// TestDeployPrometheusFiles: promtool accepts deploy/prometheus's config
// and alert rules, and every rule has a summary and a description.
func TestDeployPrometheusFiles(t *testing.T) {
	promtool := prometheusTool(t, "promtool")
	for _, args := range [][]string{{"check", "config", promConfigFile}, {"check", "rules", alertRulesFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	data, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	// One block per rule; the YAML is checked by promtool above.
	blocks := strings.Split(string(data), "- alert: ")[1:]
	var names []string
	for _, b := range blocks {
		name, _, _ := strings.Cut(b, "\n")
		names = append(names, name)
		for _, field := range []string{"summary: ", "description: ", "expr: ", "severity: "} {
			if !strings.Contains(b, field) {
				t.Errorf("alert %s has no %s", name, strings.TrimSuffix(field, ": "))
			}
		}
	}
	if strings.Join(names, " ") != strings.Join(wantAlerts, " ") {
		t.Errorf("alerts %v, want %v", names, wantAlerts)
	}
}

// TestPrometheusEvaluatesDashboardAndAlerts runs the real Prometheus (the
// Debian package's binary) against three `wspubsub serve` processes: a hub
// on a throwaway PostgreSQL and a two-node cluster on NATS. It loads them
// for a few seconds (WebSocket publishers and subscribers, a rewind, HTTP
// publishes, refused handshakes), then evaluates through Prometheus' HTTP
// API every query of deploy/grafana-dashboard.json and every alert rule of
// deploy/prometheus, which Prometheus loads from a copy whose `for:` is 1s:
//
//   - a panel's query must return at least one sample that is a number (not
//     NaN): Grafana would draw it;
//   - an alert rule's expression, and the dashboard's annotation, are
//     conditions (`X > 0.2`) that hold only in trouble: each is evaluated
//     with `bool` added to its final comparison (`X > bool 0.2`), which
//     keeps the threshold and the whole expression but returns the series
//     whether or not the condition holds; it must return a sample;
//   - the handshake-refusals alert fires where the load refused two of
//     five handshakes;
//   - the key-store alert must fire for the PostgreSQL hub, and only it,
//     while the database is stopped, and resolve once it is back.
//
// It takes about 25 s; its waits end 60 s after the binary is built, so
// that a failing run ends within about a minute.
func TestPrometheusEvaluatesDashboardAndAlerts(t *testing.T) {
	promBin := prometheusTool(t, "prometheus")
	start := time.Now()
	bin := buildBinary(t)
	// Every wait below is cut short 60 s after the build.
	clock := waits{t: t, end: time.Now().Add(60 * time.Second)}
	dir := t.TempDir()

	// A hub on its own PostgreSQL, which the test stops later.
	pg := pgtest.StartCluster(t)
	if out, err := exec.Command(bin, "keys", "migrate", "--database-url", pg.URL()).CombinedOutput(); err != nil {
		t.Fatalf("keys migrate: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "keys", "add", "--domain", "test", "--database-url", pg.URL()).Output()
	if err != nil {
		t.Fatalf("keys add: %v", err)
	}
	pgKey := lastLine(string(out))
	pgHub := freePort(t)
	startServe(t, bin, "--listen", pgHub, "--database-url", pg.URL(), "--drain-period", "100ms")

	// Two cluster nodes sharing a key file, under a cluster name of this run.
	ns := natstest.Start(t)
	keysFile := filepath.Join(dir, "keys.json")
	key := addKey(t, bin, keysFile, "test")
	// A well-formed key that no store holds: with the database down, its
	// check needs a query that fails.
	unknownKey := addKey(t, bin, filepath.Join(dir, "other-keys.json"), "test")
	suffix := make([]byte, 4)
	rand.Read(suffix)
	clusterName := "promtest_" + hex.EncodeToString(suffix)
	nodes := []string{freePort(t), freePort(t)}
	for i, addr := range nodes {
		startServe(t, bin, "--listen", addr, "--keys-file", keysFile, "--nats-url", ns.URL,
			"--cluster-name", clusterName, "--node-name", fmt.Sprintf("node%d", i), "--drain-period", "100ms")
	}
	hubs := append([]string{pgHub}, nodes...)
	for _, addr := range hubs {
		clock.waitFor(20*time.Second, "hub "+addr+" ready", func() bool {
			code, _ := status("http://" + addr + "/readyz")
			return code == 200
		})
	}

	// Prometheus, scraping every second, with the alert rules' `for:` cut
	// to 1s.
	rules, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	forLine := regexp.MustCompile(`(?m)^(\s+for: ).*$`)
	if n := len(forLine.FindAll(rules, -1)); n < 3 {
		t.Fatalf("found only %d `for:` lines in %s", n, alertRulesFile)
	}
	rulesCopy := filepath.Join(dir, "alerts.yml")
	if err := os.WriteFile(rulesCopy, forLine.ReplaceAll(rules, []byte("${1}1s")), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freePort(t)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: wspubsub
    static_configs:
      - targets: ['%s']
`, rulesCopy, strings.Join(hubs, "', '"))
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promLogs syncBuffer
	prom.Stdout, prom.Stderr = &promLogs, &promLogs
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus's output:\n%s", promLogs.String())
		}
	})
	api := &promAPI{t: t, base: "http://" + promAddr}
	clock.waitFor(15*time.Second, "Prometheus ready", func() bool {
		code, _ := status(api.base + "/-/ready")
		return code == 200
	})

	// Prometheus applies new targets up to 5 s after it starts: the load
	// waits until every hub has been scraped twice, so that its counters
	// have a sample from before it.
	clock.waitFor(15*time.Second, "Prometheus scraping all three hubs", func() bool {
		r := api.query(`min(count_over_time(up{job="wspubsub"}[1m])) >= 2 and count(up{job="wspubsub"}) == 3`)
		return len(r) == 1
	})

	loadHubs(t, pgHub, pgKey, nodes, key)

	// Every target scraped, the last scrape after the load.
	time.Sleep(1500 * time.Millisecond)
	clock.waitFor(10*time.Second, "all three hubs up in Prometheus", func() bool {
		r := api.query(`sum(up{job="wspubsub"})`)
		return len(r) == 1 && r[0].value() == 3
	})

	// The dashboard: every panel's query returns a number, the annotation
	// and the template variables' queries return series.
	dash := readDashboard(t)
	expand := strings.NewReplacer(`$job`, "wspubsub", `$instance`, ".*", `$__rate_interval`, "1m")
	pending := map[int][]promSample{} // the queries without data, and what they returned
	for i := range dash.queries {
		pending[i] = nil
	}
	// All of them within one wait: the last scrape may still be landing.
	clock.poll(5*time.Second, func() bool {
		for i := range pending {
			q := dash.queries[i]
			expr := expand.Replace(q.expr)
			if q.condition {
				expr = withBool(t, expr)
			}
			got := api.query(expr)
			pending[i] = got
			for _, s := range got {
				if q.condition || !math.IsNaN(s.value()) {
					delete(pending, i)
					break
				}
			}
		}
		return len(pending) == 0
	})
	for i, got := range pending {
		q := dash.queries[i]
		t.Errorf("dashboard %s: no data from %s: %v", q.where, expand.Replace(q.expr), got)
	}
	if len(dash.queries) < 60 {
		t.Errorf("found only %d queries in the dashboard", len(dash.queries))
	}

	// The alert rules as Prometheus loaded them.
	var loaded []string
	for _, r := range api.rules() {
		loaded = append(loaded, r.Name)
		expr := withBool(t, r.Query)
		if got := api.query(expr); len(got) == 0 {
			t.Errorf("alert %s: no series from %s", r.Name, expr)
		}
		if r.Health != "ok" && r.Health != "unknown" {
			t.Errorf("alert %s: health %q: %s", r.Name, r.Health, r.LastError)
		}
	}
	if strings.Join(loaded, " ") != strings.Join(wantAlerts, " ") {
		t.Errorf("Prometheus loaded alerts %v, want %v", loaded, wantAlerts)
	}
	// Two of the five handshakes on the second node were refused (the 409
	// and the 404 of loadHubs): more than the fifth the rule allows.
	refusals := "WspubsubHandshakeRefusalsRising@" + nodes[1]
	if !clock.poll(5*time.Second, func() bool { return api.firing()[refusals] }) {
		t.Errorf("%s is not firing: %v", refusals, api.firing())
	}
	if api.firing()["WspubsubKeyStoreDown@"+pgHub] {
		t.Fatal("WspubsubKeyStoreDown fires before the database stops")
	}

	// The database stops: a publisher whose key is not cached gets 503,
	// key_store_up goes to 0 on that hub, and the alert fires for it alone.
	pg.Stop()
	pgAlert := "WspubsubKeyStoreDown@" + pgHub
	if !clock.poll(20*time.Second, func() bool {
		publisherStatus(t, pgHub, unknownKey)
		return api.firing()[pgAlert]
	}) {
		t.Fatalf("%s did not fire within 20s of the database stopping; firing: %v; the hub's key_store_up: %v",
			pgAlert, api.firing(), api.query(`wspubsub_key_store_up`))
	}
	for a := range api.firing() {
		if strings.HasPrefix(a, "WspubsubKeyStoreDown@") && a != pgAlert {
			t.Errorf("%s fires for a hub on the key file", a)
		}
	}
	if code := publisherStatus(t, pgHub, unknownKey); code != http.StatusServiceUnavailable {
		t.Errorf("publisher with an uncached key while the database is down: %d, want 503", code)
	}
	if code, body := status("http://" + pgHub + "/readyz"); code != 200 {
		t.Errorf("/readyz of the hub whose database is down: %d %q, want 200 (an outage of a shared database hits every hub)", code, body)
	}

	// Back: the next query succeeds and the alert resolves.
	pg.Start()
	if !clock.poll(15*time.Second, func() bool {
		publisherStatus(t, pgHub, unknownKey)
		return !api.firing()[pgAlert]
	}) {
		t.Errorf("%s still firing 15s after the database came back", pgAlert)
	}
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// loadHubs drives a few seconds of traffic through every hub: on the
// cluster, a publisher on the first node and subscribers on both, a
// rewinding subscriber on the second (its history comes from the first),
// an HTTP publish through the second (forwarded to the first), a second
// publisher refused with 409 and a subscriber refused with 404; on the
// PostgreSQL hub, a publisher, subscribers, a rewind and an HTTP publish.
func loadHubs(t *testing.T, pgHub, pgKey string, nodes []string, key string) {
	t.Helper()
	const (
		duration = 4 * time.Second
		perTick  = 10
		tick     = 20 * time.Millisecond
		subs     = 4
	)
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	dial := func(addr, path string) *websocket.Conn {
		t.Helper()
		c, resp, err := dialer.Dial("ws://"+addr+path, nil)
		if err != nil {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Fatalf("dial %s%s: %v (%d)", addr, path, err, code)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	type topic struct {
		pub  *websocket.Conn
		subs []*websocket.Conn
	}
	topics := []topic{
		{pub: dial(nodes[0], "/ws/pub/"+key+"/test/load")},
		{pub: dial(pgHub, "/ws/pub/"+pgKey+"/test/load")},
	}
	for i := range subs {
		topics[0].subs = append(topics[0].subs, dial(nodes[i%2], "/ws/sub/test/load"))
		topics[1].subs = append(topics[1].subs, dial(pgHub, "/ws/sub/test/load"))
	}
	var wg sync.WaitGroup
	read := func(c *websocket.Conn) {
		defer wg.Done()
		for {
			c.SetReadDeadline(time.Now().Add(duration + 5*time.Second))
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}
	for _, tp := range topics {
		for _, s := range tp.subs {
			wg.Add(1)
			go read(s)
		}
	}
	httpPublish := func(addr, key string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/pub/test/load", strings.NewReader("over http"))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := plainHTTP.Do(req)
		if err != nil {
			t.Fatalf("HTTP publish on %s: %v", addr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("HTTP publish on %s: %d", addr, resp.StatusCode)
		}
	}

	end := time.Now().Add(duration)
	for n := 0; time.Now().Before(end); n++ {
		for _, tp := range topics {
			for j := range perTick {
				if err := tp.pub.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "message %d.%d", n, j)); err != nil {
					t.Fatalf("publish: %v", err)
				}
			}
		}
		switch n {
		case 50: // a second in: history to rewind into, and HTTP publishes
			for _, s := range []*websocket.Conn{dial(nodes[1], "/ws/sub/test/load?rewind=20"), dial(pgHub, "/ws/sub/test/load?rewind=20")} {
				wg.Add(1)
				go read(s)
			}
			httpPublish(nodes[1], key)
			httpPublish(pgHub, pgKey)
		case 100: // refusals, and a subscriber leaving
			if code := publisherStatus(t, nodes[1], key); code != http.StatusConflict {
				t.Errorf("second publisher on the other node: %d, want 409", code)
			}
			if c, resp, err := dialer.Dial("ws://"+nodes[1]+"/ws/sub/test/never-started", nil); err == nil || resp == nil || resp.StatusCode != 404 {
				if c != nil {
					c.Close()
				}
				t.Errorf("subscriber to a topic never started: %v, want 404", err)
			}
			topics[0].subs[0].WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		}
		time.Sleep(tick)
	}
	for _, tp := range topics {
		tp.pub.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	}
	// The subscribers stay (the topics are in their grace period) and the
	// hubs' gauges keep them; their readers end when the test closes them.
	go wg.Wait()
}

// publisherStatus tries a publisher handshake on addr with key and returns
// the HTTP status (101 if it was accepted; the connection is then closed).
func publisherStatus(t *testing.T, addr, key string) int {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/ws/pub/"+key+"/test/load", nil)
	if err == nil {
		c.Close()
		return 101
	}
	if resp != nil {
		return resp.StatusCode
	}
	t.Fatalf("publisher handshake on %s: %v", addr, err)
	return 0
}

// dashboardQuery is one PromQL query of the dashboard.
type dashboardQuery struct {
	where     string // panel title and legend, annotation or variable name
	expr      string
	condition bool // holds only in trouble: evaluated with bool
}

type dashboard struct{ queries []dashboardQuery }

// readDashboard reads every query of the Grafana dashboard: the panels'
// targets, the annotations, and the metric selectors of the template
// variables' label_values(SELECTOR, LABEL).
func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr, LegendFormat string }
		}
		Annotations struct{ List []struct{ Name, Expr string } }
		Templating  struct {
			List []struct{ Name, Definition string }
		}
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	var d dashboard
	for _, p := range raw.Panels {
		for _, tg := range p.Targets {
			d.queries = append(d.queries, dashboardQuery{where: fmt.Sprintf("panel %q (%s)", p.Title, tg.LegendFormat), expr: tg.Expr})
		}
	}
	for _, a := range raw.Annotations.List {
		if a.Expr != "" {
			d.queries = append(d.queries, dashboardQuery{where: "annotation " + a.Name, expr: a.Expr, condition: true})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	for _, v := range raw.Templating.List {
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("template variable %s: cannot read %q", v.Name, v.Definition)
			continue
		}
		d.queries = append(d.queries, dashboardQuery{where: "variable " + v.Name, expr: m[1]})
	}
	return d
}

// finalComparison is a comparison with a number that ends an expression.
var finalComparison = regexp.MustCompile(`\s(==|!=|>=|<=|>|<)\s*(-?[0-9.]+(?:e[+-]?[0-9]+)?)\s*$`)

// withBool adds bool to expr's final comparison with a number, so that it
// returns its series whether or not the condition holds.
func withBool(t *testing.T, expr string) string {
	t.Helper()
	m := finalComparison.FindStringSubmatchIndex(expr)
	if m == nil {
		t.Errorf("%q does not end in a comparison with a number (the rules' convention)", expr)
		return expr
	}
	return expr[:m[2]] + expr[m[2]:m[3]] + " bool " + expr[m[4]:]
}

// promAPI queries a Prometheus server's HTTP API.
type promAPI struct {
	t    *testing.T
	base string
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  [2]any // time, "value"
}

func (s promSample) value() float64 {
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

func (p *promAPI) get(path string, data any) {
	p.t.Helper()
	resp, err := plainHTTP.Get(p.base + path)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		p.t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		p.t.Fatalf("GET %s: %s: %s", path, body.Status, body.Error)
	}
	if err := json.Unmarshal(body.Data, data); err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
}

// query evaluates expr now; an error (a bad query) fails the test.
func (p *promAPI) query(expr string) []promSample {
	p.t.Helper()
	var data struct {
		ResultType string
		Result     []promSample
	}
	p.get("/api/v1/query?query="+url.QueryEscape(expr), &data)
	if data.ResultType != "vector" {
		p.t.Fatalf("%s: result type %s, want vector", expr, data.ResultType)
	}
	return data.Result
}

// promRule is an alerting rule as Prometheus loaded it.
type promRule struct {
	Name, Query, Type, Health, LastError string
}

func (p *promAPI) rules() []promRule {
	p.t.Helper()
	var data struct{ Groups []struct{ Rules []promRule } }
	p.get("/api/v1/rules?type=alert", &data)
	var rules []promRule
	for _, g := range data.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// firing returns the firing alerts as NAME@INSTANCE.
func (p *promAPI) firing() map[string]bool {
	p.t.Helper()
	var data struct {
		Alerts []struct {
			Labels map[string]string
			State  string
		}
	}
	p.get("/api/v1/alerts", &data)
	firing := map[string]bool{}
	for _, a := range data.Alerts {
		if a.State == "firing" {
			firing[a.Labels["alertname"]+"@"+a.Labels["instance"]] = true
		}
	}
	return firing
}

// waits bounds a test's waits: none goes past end.
type waits struct {
	t   *testing.T
	end time.Time
}

// poll calls cond every 200ms until it holds or d has passed (or the
// waits' end).
func (w waits) poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	if deadline.After(w.end) {
		deadline = w.end
	}
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitFor fails the test if cond does not hold within d.
func (w waits) waitFor(d time.Duration, what string, cond func() bool) {
	w.t.Helper()
	if !w.poll(d, cond) {
		w.t.Fatalf("%s: not within %v (or the test's 60 s)", what, d)
	}
}
