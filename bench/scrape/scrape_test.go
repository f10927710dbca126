package scrape

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const sample = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 17
process_resident_memory_bytes 1.4680064e+07
wspubsub_connections{role="publisher"} 1
wspubsub_connections{role="subscriber"} 1000
wspubsub_disconnects_total{reason="slow_consumer"} 2
weird{b="x,y",a="say \"hi\"\n"} 3 1712345678000
wspubsub_fanout_duration_seconds_bucket{le="+Inf"} 12
nan_metric NaN
`

func TestParse(t *testing.T) {
	m, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		got, want float64
		what      string
	}{
		{m.Value("go_goroutines"), 17, "goroutines"},
		{m.Value("process_resident_memory_bytes"), 14680064, "rss"},
		{m.Value("wspubsub_connections", "role", "subscriber"), 1000, "subscribers"},
		{m.Sum("wspubsub_connections"), 1001, "all connections"},
		{m.Value("wspubsub_disconnects_total", "reason", "slow_consumer"), 2, "slow consumers"},
		{m.Value("weird", "a", `say "hi"`+"\n", "b", "x,y"), 3, "escaped labels"},
		{m.Value("wspubsub_fanout_duration_seconds_bucket", "le", "+Inf"), 12, "le label"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if _, ok := m.Get("wspubsub_connections"); ok {
		t.Error("a labelled series answered without its labels")
	}
	if !math.IsNaN(m.Value("nan_metric")) {
		t.Error("NaN")
	}
	if m.Sum("go") != 0 {
		t.Error("Sum matched a name prefix")
	}
}

func TestParseRefusesGarbage(t *testing.T) {
	for _, bad := range []string{`name{a="x" 1`, `name{a=x} 1`, `name abc`, `{} 1`, `name{a="x\"} 1`} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, sample)
	}))
	defer srv.Close()
	m, err := New(srv.URL + "/metrics").Scrape(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.Value("go_goroutines") != 17 {
		t.Errorf("go_goroutines %v", m.Value("go_goroutines"))
	}
	if _, err := New(srv.URL + "/nope").Scrape(context.Background()); err == nil {
		t.Error("a 404 scraped")
	}
}
