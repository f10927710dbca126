package server

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseTarget(t *testing.T) {
	good := []struct {
		target, key, domain, topic string
		pub, sse                   bool
	}{
		{"/ws/sub/a/news", "", "a", "news", false, false},
		{"/ws/sub/a/news?x=1", "", "a", "news", false, false},
		{"/ws/pub/KEY/a/news", "KEY", "a", "news", true, false},
		{"/ws/pub/a/news", "", "a", "news", true, false},
		{"/ws/sub/%C3%A9t%C3%A9/prix%20%2B", "", "été", "prix +", false, false},
		{"/ws/sub/a+b/c", "", "a+b", "c", false, false},
		{"/ws/sub/" + strings.Repeat("d", 64) + "/" + strings.Repeat("t", 255), "", strings.Repeat("d", 64), strings.Repeat("t", 255), false, false},
		{"/sse/sub/a/news", "", "a", "news", false, true},
		{"/sse/sub/a/news?since=E:1", "", "a", "news", false, true},
		{"/sse/sub/%C3%A9t%C3%A9/prix%20%2B", "", "été", "prix +", false, true},
	}
	for _, g := range good {
		r, err := parseTarget(g.target)
		if err != nil || r.publisher != g.pub || r.sse != g.sse || r.key != g.key || r.topic.Domain != g.domain || r.topic.Topic != g.topic {
			t.Errorf("%s: %+v %v", g.target, r, err)
		}
	}
	for _, g := range []struct{ target, domain, topic string }{
		{"/api/pub/a/news", "a", "news"},
		{"/api/pub/a/news?x=%zz", "a", "news"},
		{"/api/pub/%C3%A9t%C3%A9/prix%20%2B", "été", "prix +"},
	} {
		r, err := parseTarget(g.target)
		if err != nil || !r.http || !r.publisher || r.key != "" || r.topic.Domain != g.domain || r.topic.Topic != g.topic {
			t.Errorf("%s: %+v %v", g.target, r, err)
		}
	}
	for _, bad := range []string{"/api/pub", "/api/pub/", "/api/pub/a", "/api/pub/a/", "/api/pub//b", "/api/pub/a/b/c",
		"/api/pub/%zz/b", "/api/pub/a%2Fb/c", "/api/pub/" + strings.Repeat("d", 65) + "/t"} {
		if r, err := parseTarget(bad); err == nil || errors.Is(err, errNoEndpoint) || !r.http {
			t.Errorf("%s: %+v %v, want an HTTP publish route with a 400 error", bad, r, err)
		}
	}
	for _, nf := range []string{"/", "/ws", "/ws/", "/ws/foo/a/b", "/metricsx", "/wss/sub/a/b",
		"/sse", "/sse/", "/sse/pub/k/a/b", "/sse/pub/a/b", "/sse/foo/a/b", "/sse/SUB/a/b",
		"/api", "/api/", "/api/sub/a/b", "/api/pubx/a/b"} {
		if _, err := parseTarget(nf); !errors.Is(err, errNoEndpoint) {
			t.Errorf("%s: %v, want errNoEndpoint", nf, err)
		}
	}
	for _, bad := range []string{
		"/ws/sub", "/ws/sub/", "/ws/sub/a", "/ws/sub/a/", "/ws/sub//b", "/ws/sub/a/b/", "/ws/sub/a/b/c",
		"/ws/pub/a", "/ws/pub/k/a/b/c", "/ws/pub//a/b", "/ws/pub/k//b",
		"/ws/sub/%zz/b", "/ws/sub/a/%4", "/ws/sub/%%%/b", "/ws/sub/a/%%", "/ws/sub/%/x", "/ws/sub/a%2Fb/c", "/ws/sub/%FF/b", "/ws/sub/a/%C3",
		"/ws/sub/" + strings.Repeat("d", 65) + "/t", "/ws/sub/d/" + strings.Repeat("t", 256),
		"/ws/pub/" + strings.Repeat("k", 129) + "/a/b",
		"/sse/sub", "/sse/sub/", "/sse/sub/a", "/sse/sub/a/", "/sse/sub//b", "/sse/sub/a/b/c", "/sse/sub/a%2Fb/c", "/sse/sub/%FF/b",
	} {
		if _, err := parseTarget(bad); err == nil || errors.Is(err, errNoEndpoint) {
			t.Errorf("%s: %v, want a 400 error", bad, err)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"/ws/sub/a/b", "/ws/pub/k/a/b", "/ws/pub/a/b", "/ws/sub/%C3%A9/%2F", "/ws/sub//", "/ws/sub/a/b/c",
		"/ws/pub/%", "/ws/sub/%ff%fe/x", "/ws/sub/%%%/x", "/ws/pub/%%/%/%", "/ws/sub/a/b?q=%zz", "/ws/sub/" + strings.Repeat("%41", 70) + "/b",
		"/sse/sub/a/b", "/sse/pub/a/b", "/sse/sub/a/b?since=E:1",
		"/api/pub/a/b", "/api/pub/%C3%A9/x?y", "/api/pub", "/api/pub/a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r, err := parseTarget(target)
		if err != nil {
			return
		}
		d, tp := r.topic.Domain, r.topic.Topic
		if d == "" || tp == "" || len(d) > maxDomainLen || len(tp) > maxTopicLen ||
			!utf8.ValidString(d) || !utf8.ValidString(tp) || strings.Contains(d+tp, "/") {
			t.Fatalf("accepted %q as %+v", target, r)
		}
		if !r.publisher && r.key != "" {
			t.Fatalf("subscriber with a key: %q", target)
		}
		if r.sse != strings.HasPrefix(target, "/sse/sub/") || r.sse && r.publisher {
			t.Fatalf("%q parsed as %+v", target, r)
		}
		if r.http && (!r.publisher || r.key != "" || !strings.HasPrefix(target, "/api/pub/")) {
			t.Fatalf("HTTP publish route %+v for %q", r, target)
		}
	})
}
