package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/cluster/natstest"
	"github.com/wspubsub/wspubsub/server"
)

// cli runs `wspubsub ARGS` and returns the exit code and output.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// serveFlagSet is a FlagSet with serve's flags and --config, filling o.
func serveFlagSet(o *serveOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("wspubsub serve", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	serveFlags(fs, o)
	registerConfig(fs)
	return fs
}

// clearEnv unsets every WSPUBSUB_* variable of serve's flags for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	serveFlagSet(&serveOptions{}).VisitAll(func(f *flag.Flag) {
		t.Setenv(envName(f.Name), "") // restored after the test
		os.Unsetenv(envName(f.Name))
	})
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wspubsub.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// setting is one line of `config check`'s output.
type setting struct{ value, from string }

var effectiveLine = regexp.MustCompile(`^([a-z-]+) +=(?: (.*?))? +\((.*)\)$`)

// check runs `config check ARGS`, wants it to pass, and returns the
// settings it prints.
func check(t *testing.T, args ...string) map[string]setting {
	t.Helper()
	code, out, errOut := cli(t, append([]string{"config", "check"}, args...)...)
	if code != 0 {
		t.Fatalf("config check %q: exit %d: %s", args, code, errOut)
	}
	got := map[string]setting{}
	for _, l := range strings.Split(out, "\n") {
		if m := effectiveLine.FindStringSubmatch(l); m != nil {
			got[m[1]] = setting{m[2], m[3]}
		}
	}
	serveFlagSet(&serveOptions{}).VisitAll(func(f *flag.Flag) {
		if _, ok := got[f.Name]; !ok && f.Name != configFlag {
			t.Fatalf("config check does not show %s:\n%s", f.Name, out)
		}
	})
	return got
}

// TestConfigPrecedence: a flag wins over the environment, which wins over
// the file, which wins over the default; each source is reported.
func TestConfigPrecedence(t *testing.T) {
	clearEnv(t)
	path := writeConfig(t, `# a comment
  # an indented comment

listen = 0.0.0.0:9000
max-backlog = 2048
grace-period = 1m
log-level = debug
keys-file = /from/file.json
   publishers-per-topic=3   
`)
	t.Setenv("WSPUBSUB_MAX_BACKLOG", "4096")
	t.Setenv("WSPUBSUB_GRACE_PERIOD", "2m")
	t.Setenv("WSPUBSUB_KEYS_FILE", "/from/env.json")
	t.Setenv("WSPUBSUB_SUBSCRIBE_WAITS", "true")
	args := []string{"--config", path, "--grace-period", "3m", "--pollers", "2"}

	want := map[string]setting{
		"listen":               {"0.0.0.0:9000", "file " + path + ":4"},
		"log-level":            {"debug", "file " + path + ":7"},
		"publishers-per-topic": {"3", "file " + path + ":9"},
		"max-backlog":          {"4096", "env WSPUBSUB_MAX_BACKLOG"},
		"keys-file":            {"/from/env.json", "env WSPUBSUB_KEYS_FILE"},
		"subscribe-waits":      {"true", "env WSPUBSUB_SUBSCRIBE_WAITS"},
		"grace-period":         {"3m0s", "flag"},
		"pollers":              {"2", "flag"},
		"max-message-size":     {"1048576", "default"},
		"close-timeout":        {"5s", "default"},
	}
	got := check(t, args...)
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %q (%s), want %q (%s)", name, got[name].value, got[name].from, w.value, w.from)
		}
	}

	// serve's own path: the options it runs with.
	var o serveOptions
	fs := serveFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if _, err := applyConfig(fs); err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Listen != "0.0.0.0:9000" || c.MaxBacklog != 4096 || c.GracePeriod != 3*time.Minute || c.Pollers != 2 ||
		c.PublishersPerTopic != 3 || !c.SubscribeWaits || c.MaxMessageSize != 1<<20 || o.logLevel != "debug" ||
		o.store.keysFile != "/from/env.json" {
		t.Errorf("serve options: %+v, log level %q, keys file %q", c, o.logLevel, o.store.keysFile)
	}

	// WSPUBSUB_CONFIG names the file when --config does not; --config wins,
	// and --config "" reads none.
	other := writeConfig(t, "listen = 0.0.0.0:7000\n")
	t.Setenv("WSPUBSUB_CONFIG", other)
	if got := check(t)["listen"]; got != (setting{"0.0.0.0:7000", "file " + other + ":1"}) {
		t.Errorf("with WSPUBSUB_CONFIG: listen = %+v", got)
	}
	if got := check(t, "--config", path)["listen"]; got.value != "0.0.0.0:9000" {
		t.Errorf("--config over WSPUBSUB_CONFIG: listen = %+v", got)
	}
	if got := check(t, "--config", "")["listen"]; got != (setting{"127.0.0.1:8080", "default"}) {
		t.Errorf(`--config "": listen = %+v`, got)
	}
	// The environment without a file; a flag over it.
	t.Setenv("WSPUBSUB_CONFIG", "")
	t.Setenv("WSPUBSUB_LISTEN", "0.0.0.0:6000")
	if got := check(t)["listen"]; got != (setting{"0.0.0.0:6000", "env WSPUBSUB_LISTEN"}) {
		t.Errorf("env only: listen = %+v", got)
	}
	if got := check(t, "--listen", "0.0.0.0:5000")["listen"]; got != (setting{"0.0.0.0:5000", "flag"}) {
		t.Errorf("flag over env: listen = %+v", got)
	}
}

// TestConfigErrors: every bad line is reported with the file and its line;
// the check and serve both refuse the file.
func TestConfigErrors(t *testing.T) {
	clearEnv(t)
	cases := []struct {
		name, file, want string
	}{
		{"no equals sign", "listen = :1\nlisten :2\n", `:2: want ` + "`name = value`" + `, got "listen :2"`},
		{"no name", "\n\n= 5\n", `:3: missing the setting's name before '='`},
		{"unknown", "# c\nmax-backlogs = 5\n", `:2: unknown setting "max-backlogs"`},
		{"underscores", "max_backlog = 5\n", `:1: unknown setting "max_backlog" (write max-backlog)`},
		{"dashes", "--max-backlog = 5\n", `:1: unknown setting "--max-backlog" (write max-backlog)`},
		{"config in config", "config = other.conf\n", `:1: unknown setting "config" (a config file cannot name another)`},
		{"duplicate", "listen = :1\n\nmax-backlog = 5\nlisten = :2\n", `:4: listen is set again (first on line 1)`},
		{"bad int", "\nmax-backlog = 1MiB\n", `:2: bad value "1MiB" for max-backlog: parse error (want a whole number)`},
		{"int out of range", "pollers = 99999999999999999999\n", `:1: bad value "99999999999999999999" for pollers: value out of range`},
		{"bad duration", "grace-period = 10\n", `:1: bad value "10" for grace-period: parse error (want a duration`},
		{"bad bool", "subscribe-waits = yes please\n", `:1: bad value "yes please" for subscribe-waits: parse error (want true or false)`},
		{"empty bool", "migrate =\n", `:1: bad value "" for migrate`},
		{"control character", "listen = :1\r:2\n", `:1: holds a control character`},
		{"inline comment", "max-backlog = 5 # five\n", `:1: bad value "5 # five" for max-backlog`},
		{"bad value under a flag", "pollers = many\n", `:1: bad value "many" for pollers`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeConfig(t, c.file)
			code, _, errOut := cli(t, "config", "check", "--config", path, "--pollers", "1")
			if code != 1 || !strings.Contains(errOut, path+c.want) {
				t.Errorf("config check: exit %d, stderr %q, want 1 and %q", code, errOut, path+c.want)
			}
			code, _, errOut = cli(t, "serve", "--config", path, "--listen", "127.0.0.1:0", "--pollers", "1")
			if code != 2 || !strings.Contains(errOut, path+c.want) {
				t.Errorf("serve: exit %d, stderr %q, want 2 and %q", code, errOut, path+c.want)
			}
		})
	}

	// Every bad line at once, in order.
	path := writeConfig(t, "max_backlog = 1\nlisten = :1\nlisten = :2\ngrace-period = x\nnonsense\n")
	code, _, errOut := cli(t, "config", "check", "--config", path)
	want := []string{":1: unknown", ":3: listen is set again", ":4: bad value", ":5: want"}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || len(lines) != len(want) {
		t.Fatalf("exit %d, stderr %q, want %d errors", code, errOut, len(want))
	}
	for i, w := range want {
		if !strings.Contains(lines[i], path+w) {
			t.Errorf("error %d: %q, want %q", i, lines[i], path+w)
		}
	}

	// No such file; a bad variable; a value only serve's logger refuses;
	// bad usage.
	if code, _, errOut := cli(t, "config", "check", "--config", path+".missing"); code != 1 ||
		!strings.Contains(errOut, "cannot read the config file") || !strings.Contains(errOut, path+".missing") {
		t.Errorf("missing file: exit %d, %q", code, errOut)
	}
	t.Setenv("WSPUBSUB_DRAIN_PERIOD", "soon")
	if code, _, errOut := cli(t, "config", "check"); code != 1 || !strings.Contains(errOut, `bad WSPUBSUB_DRAIN_PERIOD="soon"`) {
		t.Errorf("bad variable: exit %d, %q", code, errOut)
	}
	t.Setenv("WSPUBSUB_DRAIN_PERIOD", "1s")
	if code, _, errOut := cli(t, "config", "check", "--log-level", "loud"); code != 1 || !strings.Contains(errOut, "bad --log-level") {
		t.Errorf("bad log level: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"config"}, {"config", "nope"}, {"config", "default", "x"}, {"config", "check", "x"}, {"config", "check", "--nope"}} {
		if code, _, _ := cli(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// TestConfigDefaultRoundTrip: `config default` documents every serve flag
// at its built-in default, passes `config check` as it is, and again with
// every setting uncommented, where every value comes from the file.
func TestConfigDefaultRoundTrip(t *testing.T) {
	clearEnv(t)
	code, def, errOut := cli(t, "config", "default")
	if code != 0 {
		t.Fatalf("config default: exit %d: %s", code, errOut)
	}
	fs := serveFlagSet(&serveOptions{})
	fs.VisitAll(func(f *flag.Flag) {
		n := strings.Count(def, "\n#"+f.Name+" =")
		if f.Name == configFlag {
			if n != 0 {
				t.Errorf("config default sets --config")
			}
			return
		}
		if n != 1 {
			t.Errorf("config default lists %s %d times, want once", f.Name, n)
		}
		if !strings.Contains(def, "\n# "+wrap(f.Usage, 76)[0]+"\n") {
			t.Errorf("config default does not document %s with its usage", f.Name)
		}
	})
	if titles, _ := grouped(fs); titles[len(titles)-1] == "Other" {
		t.Errorf("a serve flag is in no group of configGroups: add it")
	}
	for i, l := range strings.Split(def, "\n") {
		if len(l) > 79 || strings.TrimRight(l, " ") != l {
			t.Errorf("config default line %d is too long or ends in a space: %q", i+1, l)
		}
	}

	got := check(t, "--config", writeConfig(t, def))
	for name, s := range got {
		if _, ok := computed[name]; ok && s.from == "default; computed: "+computed[name].how {
			continue // left at 0, as printed, and shown as serve computes it
		}
		if s.from != "default" {
			t.Errorf("as printed: %s comes from %s, want default", name, s.from)
		}
	}

	uncommented := regexp.MustCompile(`(?m)^#([a-z])`).ReplaceAllString(def, "$1")
	path := writeConfig(t, uncommented)
	fromFile := check(t, "--config", path)
	for name, s := range fromFile {
		if !strings.HasPrefix(s.from, "file "+path+":") || s.value != got[name].value {
			t.Errorf("uncommented: %s = %q (%s), want %q from the file", name, s.value, s.from, got[name].value)
		}
	}

	// The built-in defaults, whatever the environment says: envSeeded is
	// what storeFlags.register falls back to, and no variable's value (a
	// password) reaches the printed file.
	fs.VisitAll(func(f *flag.Flag) {
		if d, ok := envSeeded[f.Name]; ok && d != f.DefValue {
			t.Errorf("envSeeded[%s] = %q, but storeFlags registers %q", f.Name, d, f.DefValue)
		}
	})
	t.Setenv("WSPUBSUB_DATABASE_URL", "postgres://u:s3cret@db/x")
	t.Setenv("WSPUBSUB_KEYS_FILE", "/elsewhere.json")
	if _, def2, _ := cli(t, "config", "default"); def2 != def {
		t.Errorf("config default depends on the environment")
	}
}

// TestConfigRedaction: config check never prints a password, from the file
// or the environment.
func TestConfigRedaction(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://wspubsub:s3cret@db:5432/wspubsub":             "postgres://wspubsub:xxxxx@db:5432/wspubsub",
		"postgres://u:p%40ss:w@rd@db/x?sslmode=disable":           "postgres://u:xxxxx@db/x?sslmode=disable",
		"postgres://u:s3cret@db/x#frag@ment":                      "postgres://u:xxxxx@ment",
		"postgres://u@db/x?password=s3cret&sslmode=require":       "postgres://u@db/x?password=xxxxx&sslmode=require",
		"postgres://db/x?sslpassword=s3cret":                      "postgres://db/x?sslpassword=xxxxx",
		"host=db user=u password=s3cret dbname=x":                 "host=db user=u password=xxxxx dbname=x",
		"host=db password = 's3 \\' cret' dbname=x":               "host=db password = xxxxx dbname=x",
		"postgres://u@db/x":                                       "postgres://u@db/x",
		"postgres://":                                             "postgres://",
		"127.0.0.1:8080":                                          "127.0.0.1:8080",
		"10s":                                                     "10s",
		"postgres://user@db.example:5432/wspubsub?sslmode=verify": "postgres://user@db.example:5432/wspubsub?sslmode=verify",
		"nats://T0KEN@h:4222":                                     "nats://xxxxx@h:4222",
		"NATS://u:pw@h1,tls://T0KEN@h2,nats://h3":                 "NATS://u:xxxxx@h1,tls://xxxxx@h2,nats://h3",
		"nats://h:4222":                                           "nats://h:4222",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}

	clearEnv(t)
	path := writeConfig(t, "database-url = postgres://wspubsub:s3cret@db:5432/wspubsub\n")
	code, out, errOut := cli(t, "config", "check", "--config", path)
	if code != 0 || strings.Contains(out+errOut, "s3cret") || !strings.Contains(out, "postgres://wspubsub:xxxxx@db:5432/wspubsub") {
		t.Errorf("from the file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv("WSPUBSUB_DATABASE_URL", "host=db password=s3cret")
	code, out, errOut = cli(t, "config", "check", "--config", path)
	if code != 0 || strings.Contains(out+errOut, "s3cret") || !strings.Contains(out, "host=db password=xxxxx") {
		t.Errorf("from the environment: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Nor in an error about the line.
	path = writeConfig(t, "postgres://u:s3cret@db/x\n")
	if code, out, errOut := cli(t, "config", "check", "--config", path); code != 1 || strings.Contains(out+errOut, "s3cret") {
		t.Errorf("bad line: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestDeployConfig: the shipped config file passes the check and lists every
// setting.
func TestDeployConfig(t *testing.T) {
	clearEnv(t)
	path := filepath.Join("..", "..", "deploy", "wspubsub.conf")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	check(t, "--config", path)
	serveFlagSet(&serveOptions{}).VisitAll(func(f *flag.Flag) {
		if f.Name != configFlag && !regexp.MustCompile(`(?m)^#?`+f.Name+` =`).Match(data) {
			t.Errorf("%s does not list %s: regenerate it with `wspubsub config default`", path, f.Name)
		}
	})
}

// FuzzParseConfig: any content parses without panicking, every setting it
// returns is on a line of the content, known and set once, and a setting's
// value never holds a line break.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("# c\n\nlisten = :1\nmax-backlog=5\r\n"))
	f.Add([]byte("\uFEFFlisten = a = b\n= x\nfoo\nlisten = 2\n"))
	f.Add([]byte("listen=0\r0\n"))
	f.Add([]byte("database-url = postgres://u:p@h/x?password=q#frag\n"))
	var def bytes.Buffer
	if run([]string{"config", "default"}, &def, &def) == 0 {
		f.Add(def.Bytes())
	}
	known := func(name string) bool { return name == "listen" || name == "max-backlog" || name == "database-url" }
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := bytes.Count(data, []byte("\n")) + 1
		entries, _ := parseConfig("f", data, known, func(e configEntry) error {
			if e.value == "bad" {
				return os.ErrInvalid
			}
			return nil
		})
		seen := map[string]bool{}
		for _, e := range entries {
			if e.line < 1 || e.line > lines || !known(e.name) || seen[e.name] || strings.ContainsAny(e.value, "\r\n") {
				t.Fatalf("bad entry %+v", e)
			}
			seen[e.name] = true
		}
	})
}

// cachedKeys is a key store with a cache, so that the hub exports every
// metric the dashboard uses.
type cachedKeys struct{}

func (cachedKeys) Check(context.Context, string, string) error { return nil }
func (cachedKeys) CacheCounts() (hits, misses int64)           { return 1, 1 }

// TestDeployDashboard: every metric the Grafana dashboard queries is one a
// hub, as a cluster node, exports; and every metric of the cluster and of
// history, replay and HTTP publish has a panel.
// (TestPrometheusEvaluatesDashboardAndAlerts runs every query on a real
// Prometheus.)
func TestDeployDashboard(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Annotations struct{ List []struct{ Expr string } }
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node, err := cluster.Connect(cluster.Config{URL: natstest.Start(t).URL, Name: "dash", Prefix: "dash", Bucket: "dash_topics", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(context.Background())
	srv, err := server.Start(server.Config{Listen: "127.0.0.1:0", Keys: cachedKeys{}, Cluster: node, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	families, err := srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, mf := range families {
		exported[mf.GetName()] = true
		switch mf.GetType().String() {
		case "HISTOGRAM":
			exported[mf.GetName()+"_bucket"] = true
			fallthrough
		case "SUMMARY":
			exported[mf.GetName()+"_sum"], exported[mf.GetName()+"_count"] = true, true
		}
	}
	metric := regexp.MustCompile(`([a-z_:][a-z0-9_:]*)\{`)
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, a := range dash.Annotations.List {
		exprs = append(exprs, a.Expr)
	}
	n := 0
	queried := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metric.FindAllStringSubmatch(e, -1) {
			n++
			queried[strings.TrimSuffix(m[1], "_bucket")] = true
			if !exported[m[1]] {
				t.Errorf("the dashboard queries %s, which the hub does not export: %s", m[1], e)
			}
		}
	}
	if n < 30 {
		t.Errorf("found only %d metrics in the dashboard's queries", n)
	}
	wanted := 0
	for _, mf := range families {
		name := mf.GetName()
		if strings.HasPrefix(name, "wspubsub_cluster_") || strings.Contains(name, "history") || strings.Contains(name, "replay") ||
			name == "wspubsub_gap_notices_total" || name == "wspubsub_http_publishes_total" || name == "wspubsub_ready" {
			wanted++
			if !queried[name] {
				t.Errorf("the dashboard has no panel for %s", name)
			}
		}
	}
	if wanted < 24+6 {
		t.Errorf("the hub exported only %d cluster, history and HTTP publish metrics: is it a cluster node?", wanted)
	}
}

// TestConfigCheckComputed: config check shows what serve would use for the
// settings it computes when they are left at 0 (the open-file limit less 64,
// one event loop per core, the host name), marked computed, and a value
// given for them as it is.
func TestConfigCheckComputed(t *testing.T) {
	clearEnv(t)
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	limit := int(rl.Cur)
	if rl.Cur > 1<<30 {
		limit = 1 << 20 // serve's stand-in for an unlimited limit
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skipf("no host name: %v", err)
	}
	want := map[string]string{
		"max-connections": strconv.Itoa(limit - 64),
		"pollers":         strconv.Itoa(runtime.GOMAXPROCS(0)),
		"node-name":       host,
	}
	got := check(t)
	for name, w := range want {
		if g := got[name]; g.value != w || g.from != "default; computed: "+computed[name].how {
			t.Errorf("%s = %q (%s), want %q computed", name, g.value, g.from, w)
		}
	}
	// From a file, 0 still means computed.
	path := writeConfig(t, "pollers = 0\n")
	if g := check(t, "--config", path)["pollers"]; g.value != want["pollers"] || !strings.HasPrefix(g.from, "file "+path+":1; computed: ") {
		t.Errorf("pollers = 0 in a file: %q (%s)", g.value, g.from)
	}
	got = check(t, "--max-connections", "100", "--pollers", "3", "--node-name", "n1")
	for name, w := range map[string]string{"max-connections": "100", "pollers": "3", "node-name": "n1"} {
		if g := got[name]; g.value != w || g.from != "flag" {
			t.Errorf("%s given as %s: %q (%s)", name, w, g.value, g.from)
		}
	}
}
