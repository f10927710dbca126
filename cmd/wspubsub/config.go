package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/server"
)

// configUsage is printed for `wspubsub config help` and for bad usage.
const configUsage = `usage: wspubsub config <command> [flags]

Commands:
  default                               print a config file documenting every serve
                                        setting at its built-in default
  check [--config FILE] [serve flags]   validate the config file and the environment
                                        and print the effective settings, each with
                                        where it came from (default, file, env, flag);
                                        a setting serve computes when left at 0 shows
                                        the value it would compute here, marked computed
  help                                  show this text

serve takes each setting from, highest first: its flag on the command line,
its WSPUBSUB_* environment variable (--max-backlog is WSPUBSUB_MAX_BACKLOG),
the config file (--config FILE, else $WSPUBSUB_CONFIG), the built-in default.
`

// The config file holds one `name = value` per line, where name is a serve
// flag's name exactly (max-backlog, grace-period), and value is the rest of
// the line with its surrounding spaces trimmed, taken as is: no quotes, no
// comment after it. Lines whose first non-blank character is '#' are
// comments; blank lines are ignored. A name may appear once. An unknown
// name, a repeated one, a line without '=' and a value its flag refuses are
// errors naming the file and the line, and so is a control character other
// than a tab.

// configFlag is the flag naming the config file; it is never a file setting.
const configFlag = "config"

// registerConfig registers --config on fs.
func registerConfig(fs *flag.FlagSet) *string {
	return fs.String(configFlag, "", "read settings from this file (env WSPUBSUB_CONFIG); flags and the environment win over it")
}

// envName is the environment variable of a flag: WSPUBSUB_MAX_BACKLOG for
// max-backlog.
func envName(flagName string) string {
	return "WSPUBSUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// origin says where a flag's effective value came from.
type origin struct {
	source string // "default", "file", "env" or "flag"
	where  string // file:line for "file", the variable for "env"
}

func (o origin) String() string {
	if o.where == "" {
		return o.source
	}
	return o.source + " " + o.where
}

// configEntry is one `name = value` line of a config file.
type configEntry struct {
	line        int
	name, value string
}

// parseConfig parses a config file's content and calls set with each
// setting, in order; file names it in errors, known says which names are
// settings, and set returns an error for a bad value. It reports every bad
// line, not just the first, and returns the settings that are well formed.
func parseConfig(file string, data []byte, known func(name string) bool, set func(configEntry) error) ([]configEntry, error) {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	var entries []configEntry
	var errs []error
	first := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("%s:%d: %s", file, n, fmt.Sprintf(format, a...)))
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		switch {
		case strings.ContainsFunc(line, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }):
			bad("holds a control character")
		case !ok:
			bad("want `name = value`, got %q", redact(line))
		case name == "":
			bad("missing the setting's name before '='")
		case !known(name):
			hint := ""
			if s := strings.ReplaceAll(strings.TrimLeft(name, "-"), "_", "-"); s != name && known(s) {
				hint = fmt.Sprintf(" (write %s)", s)
			}
			if name == configFlag {
				hint = " (a config file cannot name another)"
			}
			bad("unknown setting %q%s", name, hint)
		case first[name] != 0:
			bad("%s is set again (first on line %d)", name, first[name])
		default:
			first[name] = n
			e := configEntry{line: n, name: name, value: value}
			if err := set(e); err != nil {
				bad("bad value %q for %s: %v", redact(value), name, err)
				continue
			}
			entries = append(entries, e)
		}
	}
	return entries, errors.Join(errs...)
}

// applyConfig completes fs, already parsed from the command line, from the
// config file (--config, else $WSPUBSUB_CONFIG, else none) and then the
// WSPUBSUB_* environment, so that a flag wins over the environment, which
// wins over the file, which wins over the default. Every file value is
// checked, including those a flag or variable overrides. It returns where
// each flag's value came from.
func applyConfig(fs *flag.FlagSet) (map[string]origin, error) {
	origins := map[string]origin{}
	fs.VisitAll(func(f *flag.Flag) { origins[f.Name] = origin{source: "default"} })
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	path := ""
	if f := fs.Lookup(configFlag); f != nil {
		path = f.Value.String()
		if !given[configFlag] {
			path = os.Getenv(envName(configFlag))
		}
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("cannot read the config file: %w", err)
		}
		known := func(name string) bool { return name != configFlag && fs.Lookup(name) != nil }
		set := func(e configEntry) error {
			f := fs.Lookup(e.name)
			// f.Value.Set rather than fs.Set: the file does not count as
			// given, so the environment still overrides it.
			was := f.Value.String()
			if err := f.Value.Set(e.value); err != nil {
				return fmt.Errorf("%w%s", err, want(f))
			}
			if given[e.name] {
				f.Value.Set(was) // checked; the command line's value stays
				return nil
			}
			origins[e.name] = origin{source: "file", where: fmt.Sprintf("%s:%d", path, e.line)}
			return nil
		}
		if _, err := parseConfig(path, data, known, set); err != nil {
			return nil, err
		}
	}

	if err := envOverrides(fs); err != nil {
		return nil, err
	}
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			origins[f.Name] = origin{source: "flag"}
		} else if _, ok := os.LookupEnv(envName(f.Name)); ok {
			origins[f.Name] = origin{source: "env", where: envName(f.Name)}
		}
	})
	return origins, nil
}

// want describes the values a flag takes, for an error about a bad one.
func want(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case bool:
		return " (want true or false)"
	case time.Duration:
		return " (want a duration such as 500ms, 10s or 1m30s)"
	case int, int64, uint, uint64:
		return " (want a whole number)"
	}
	return ""
}

// configGroups orders serve's settings for people; a flag in no group is
// listed last, under "Other".
var configGroups = []struct {
	title string
	names []string
}{
	{"Listening", []string{"listen", "tls-cert", "tls-key", "metrics-listen", "pprof"}},
	{"API keys", []string{"keys-file", "database-url", "migrate"}},
	{"Topics", []string{"grace-period", "subscribe-waits", "publishers-per-topic"}},
	{"History", []string{"history-size", "history-bytes", "history-ttl", "history-memory"}},
	{"Limits", []string{"max-message-size", "max-backlog", "subscriber-input-limit", "max-header-bytes", "handshake-timeout", "close-timeout",
		"max-connections", "max-connections-per-addr", "handshake-rate", "handshake-burst", "max-topics-per-domain", "max-publish-rate"}},
	{"Keepalive", []string{"ping-interval", "pong-timeout"}},
	{"Browsers", []string{"allowed-origins"}},
	{"Compression", []string{"compression", "compress-min-size"}},
	{"Behind a proxy", []string{"trusted-proxies", "proxy-protocol"}},
	{"Cluster", []string{"nats-url", "nats-creds", "nats-nkey", "nats-tls-ca", "nats-tls-cert", "nats-tls-key", "node-name", "cluster-name"}},
	{"Shutdown", []string{"drain-period", "shutdown-timeout"}},
	{"Performance", []string{"pollers"}},
	{"Logging", []string{"log-level", "log-format"}},
}

// grouped returns fs's settings (every flag but --config) in configGroups'
// order.
func grouped(fs *flag.FlagSet) (titles []string, groups [][]*flag.Flag) {
	placed := map[string]bool{configFlag: true}
	for _, g := range configGroups {
		var fl []*flag.Flag
		for _, name := range g.names {
			if f := fs.Lookup(name); f != nil && !placed[name] {
				placed[name] = true
				fl = append(fl, f)
			}
		}
		if len(fl) > 0 {
			titles, groups = append(titles, g.title), append(groups, fl)
		}
	}
	var other []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !placed[f.Name] {
			other = append(other, f)
		}
	})
	if len(other) > 0 {
		titles, groups = append(titles, "Other"), append(groups, other)
	}
	return titles, groups
}

// envSeeded holds the built-in defaults of the flags storeFlags.register
// seeds from the environment, so that `config default` prints the built-in
// value, never a variable's (which may hold a password).
var envSeeded = map[string]string{"keys-file": "wspubsub-keys.json", "database-url": ""}

func builtinDefault(f *flag.Flag) string {
	if d, ok := envSeeded[f.Name]; ok {
		return d
	}
	return f.DefValue
}

const configHeader = `# wspubsub serve configuration (written by: wspubsub config default)
#
# One setting per line, "name = value", where name is a flag of
# "wspubsub serve" without its dashes. The value is the rest of the line with
# its surrounding spaces trimmed, taken as is: no quotes, and no comment after
# it. Lines starting with # are comments. A setting may appear once; an
# unknown name, a repeated one or a bad value stops serve with the file and
# line.
#
# Every setting is listed below commented out ("#name = value") at its
# built-in default: remove the # to change it. Precedence, highest first:
# command-line flags, WSPUBSUB_* environment variables (max-backlog is
# WSPUBSUB_MAX_BACKLOG), this file, the built-in defaults.
#
# Check a file, and see every effective setting and where it comes from, with
#     wspubsub config check --config FILE
`

// writeDefaultConfig writes the documented default config file of fs's
// flags.
func writeDefaultConfig(w io.Writer, fs *flag.FlagSet) error {
	var b strings.Builder
	b.WriteString(configHeader)
	titles, groups := grouped(fs)
	for i, title := range titles {
		fmt.Fprintf(&b, "\n# ---- %s %s\n", title, strings.Repeat("-", max(3, 70-len(title))))
		for _, f := range groups[i] {
			b.WriteString("\n")
			for _, l := range wrap(f.Usage, 76) {
				fmt.Fprintf(&b, "# %s\n", l)
			}
			fmt.Fprintln(&b, strings.TrimSpace(fmt.Sprintf("#%s = %s", f.Name, builtinDefault(f))))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap breaks text into lines of at most width bytes where it can.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// computed lists the settings whose zero value stands for a value serve
// computes when it starts, with how; config check shows that value, from the
// same functions serve uses, rather than the 0.
var computed = map[string]struct {
	unset func(v string) bool // whether v leaves the value to be computed
	value func() string
	how   string
}{
	"max-connections": {intUnset, func() string { return strconv.Itoa(server.DefaultMaxConnections()) },
		"the open-file limit of this process less 64"},
	"pollers": {intUnset, func() string { return strconv.Itoa(loop.DefaultPollers()) },
		"one per core"},
	"node-name": {func(v string) bool { return v == "" }, cluster.DefaultName,
		"the host name"},
}

// intUnset reports whether an integer setting is 0 or less: the default.
func intUnset(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n <= 0
}

// writeEffective writes every setting of fs as "name = value" with where it
// came from, secrets redacted. A setting serve computes when it is left at
// 0 shows the computed value, marked "computed".
func writeEffective(w io.Writer, fs *flag.FlagSet, origins map[string]origin) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	_, groups := grouped(fs)
	for _, g := range groups {
		for _, f := range g {
			value, from := f.Value.String(), origins[f.Name].String()
			if c, ok := computed[f.Name]; ok && c.unset(value) {
				value, from = c.value(), from+"; computed: "+c.how
			}
			if f.Name == "nats-url" {
				value = cluster.RedactURL(value) // a token, and URLs without a scheme
			}
			fmt.Fprintf(tw, "%s\t= %s\t(%s)\n", f.Name, redact(value), from)
		}
	}
	return tw.Flush()
}

// dsnPassword finds a password given as a key/value pair: in a connection
// string ("host=db password=secret") or a URL's query (?password=secret).
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// natsSchemes are the schemes of NATS URLs, whose user without a password
// is a token (and which may come in a comma-separated list).
var natsSchemes = []string{"nats://", "tls://", "ws://", "wss://"}

// redact hides the passwords a value may hold: a URL's user:password@, a
// NATS URL's token@, and any password=...; other values are returned as
// they are. It errs on the side of hiding too much.
func redact(v string) string {
	for _, scheme := range natsSchemes {
		if len(v) >= len(scheme) && strings.EqualFold(v[:len(scheme)], scheme) {
			return dsnPassword.ReplaceAllString(cluster.RedactURL(v), "${1}xxxxx")
		}
	}
	if i := strings.Index(v, "://"); i >= 0 {
		rest := v[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				v = v[:i+3] + rest[:colon+1] + "xxxxx" + rest[at:]
			}
		}
	}
	return dsnPassword.ReplaceAllString(v, "${1}xxxxx")
}

// runConfig runs `wspubsub config ARGS`.
func runConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, configUsage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "default":
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "wspubsub config default: takes no arguments\n\n%s", configUsage)
			return 2
		}
		fs := flag.NewFlagSet("wspubsub serve", flag.ContinueOnError)
		serveFlags(fs, &serveOptions{})
		if err := writeDefaultConfig(stdout, fs); err != nil {
			fmt.Fprintln(stderr, "wspubsub config default:", err)
			return 1
		}
		return 0
	case "check":
		fs := flag.NewFlagSet("wspubsub config check", flag.ContinueOnError)
		fs.SetOutput(stderr)
		var o serveOptions
		serveFlags(fs, &o)
		registerConfig(fs)
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "wspubsub config check: unexpected argument %q\n\n%s", fs.Arg(0), configUsage)
			return 2
		}
		origins, err := applyConfig(fs)
		if err == nil {
			_, err = newLogger(io.Discard, o.logLevel, o.logFormat)
		}
		if err == nil && o.cfg.ProxyProtocol && len(o.cfg.TrustedProxies) == 0 {
			err = errors.New("proxy-protocol needs trusted-proxies, the peers that send the header")
		}
		if err == nil {
			err = o.nats.check(o.natsURL)
		}
		if err != nil {
			fmt.Fprintln(stderr, "wspubsub config check:", err)
			return 1
		}
		file := fs.Lookup(configFlag).Value.String()
		if file == "" {
			file = "(none)"
		}
		fmt.Fprintf(stdout, "config file: %s\n\n", file)
		if err := writeEffective(stdout, fs, origins); err != nil {
			fmt.Fprintln(stderr, "wspubsub config check:", err)
			return 1
		}
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, configUsage)
		return 0
	}
	fmt.Fprintf(stderr, "wspubsub config: unknown command %q\n\n%s", cmd, configUsage)
	return 2
}
