// Package scrape reads a hub's /metrics, the Prometheus text format, into
// samples the bench can compare: the hub's goroutines, open files, memory,
// connections and topics before, during and after a run, and its counters.
//
// Only what the bench needs is parsed: sample lines with their labels and
// value; comments, timestamps and exemplars are skipped.
//
// Concurrency contract: a Scraper may be used from any goroutine; a
// Metrics is a plain value, read-only once returned.
package scrape

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Metrics is one scrape: every sample by its series, "name" or
// `name{a="x",b="y"}` with the labels sorted by name.
type Metrics map[string]float64

// Series is the key of a sample: name with labels given as name, value
// pairs, in any order.
func Series(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	type pair struct{ k, v string }
	ps := make([]pair, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		ps = append(ps, pair{labels[i], labels[i+1]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.k)
		b.WriteString(`="`)
		b.WriteString(p.v)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Get returns the sample of name with exactly the labels given, and
// whether there is one.
func (m Metrics) Get(name string, labels ...string) (float64, bool) {
	v, ok := m[Series(name, labels...)]
	return v, ok
}

// Value returns the sample of name with the labels given, or 0.
func (m Metrics) Value(name string, labels ...string) float64 {
	v, _ := m.Get(name, labels...)
	return v
}

// Sum adds every sample of name, whatever its labels.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// Parse reads the Prometheus text exposition format.
func Parse(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, v, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("cannot parse line %d of the metrics, %q: %w", n, line, err)
		}
		m[key] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read the metrics: %w", err)
	}
	return m, nil
}

var errSyntax = errors.New("not a sample line")

// parseLine splits `name{a="x"} 1.5 [timestamp]` into its series key and
// value.
func parseLine(line string) (string, float64, error) {
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", 0, errSyntax
	}
	name, rest := line[:i], line[i:]
	var labels []string
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " \t,")
			if rest == "" {
				return "", 0, errSyntax
			}
			if rest[0] == '}' {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				return "", 0, errSyntax
			}
			k := strings.TrimSpace(rest[:eq])
			val, n, err := unquote(rest[eq+1:])
			if err != nil {
				return "", 0, err
			}
			labels = append(labels, k, val)
			rest = rest[eq+1+n:]
		}
	}
	f := strings.Fields(rest)
	if len(f) < 1 {
		return "", 0, errSyntax
	}
	v, err := parseValue(f[0])
	if err != nil {
		return "", 0, err
	}
	return Series(name, labels...), v, nil
}

// unquote reads a quoted label value at the start of s and returns it and
// the bytes it took.
func unquote(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			i++
			if i == len(s) {
				return "", 0, errSyntax
			}
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			default:
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errSyntax
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// Scraper fetches one URL's metrics.
type Scraper struct {
	URL    string
	client *http.Client
}

// New returns a Scraper of url (http://127.0.0.1:PORT/metrics). Each
// scrape opens a connection of its own, so the hub holds no idle one
// between scrapes.
func New(url string) *Scraper {
	return &Scraper{URL: url, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

// Scrape fetches and parses the metrics.
func (s *Scraper) Scrape(ctx context.Context) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", s.URL, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", s.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("cannot scrape %s: %s %q", s.URL, resp.Status, b)
	}
	m, err := Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", s.URL, err)
	}
	return m, nil
}
