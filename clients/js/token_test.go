package jsclient_test

import (
	"testing"
	"time"
)

// TestBrowserRenewsExpiredTokens: wspubsub.js subscribes to a private topic
// with a token function; the tokens it gets live 2-3 s, so the hub closes
// its socket with 4005 again and again, and each time it fetches a fresh
// token and resumes at once: every message arrives once, in order, with no
// gap.
func TestBrowserRenewsExpiredTokens(t *testing.T) {
	chrome := findChromium(t)
	h := startHubBehind(t, "")
	pg := startPage(t)
	minted := 0
	pg.mu.Lock()
	pg.mint = func() string {
		minted++
		// exp is whole seconds: this token lives 2 to 3 s.
		return h.token(t, 3*time.Second, "live")
	}
	pg.mu.Unlock()

	pub := h.publisherIn(t, h.privateKey, "private", "live")
	pg.serve([]pageSub{{Name: "live", URL: "ws://" + h.addr + "/ws/sub/private/live", MinDelay: 50, MaxDelay: 1000, Token: true}})
	runChromium(t, chrome, pg.url+"/")
	pg.waitFor(t, "the page to open its socket", 20*time.Second, func(evs []event) bool {
		return hasKind(evs, "live", "open")
	})

	var sent []message
	tick := time.NewTicker(pace)
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); <-tick.C {
		m := messageFor(len(sent) + 1)
		sent = append(sent, m)
		pub.send(t, m)
	}
	tick.Stop()
	pg.waitFor(t, "every message", 10*time.Second, func(evs []event) bool {
		return len(msgs(evs, "live")) >= len(sent)
	})

	evs := pg.events()
	got := msgs(evs, "live")
	if len(got) != len(sent) {
		t.Errorf("page got %d messages, want %d", len(got), len(sent))
	}
	for i := range min(len(got), len(sent)) {
		if err := got[i].is(sent[i]); err != nil || got[i].Offset != i+1 {
			t.Fatalf("message %d at offset %d: %v", i+1, got[i].Offset, err)
		}
	}
	for _, e := range evs {
		if e.Sub == "live" && (e.Kind == "gap" || e.Kind == "reset" || e.Kind == "error") {
			t.Errorf("page: %s", e)
		}
	}
	codes := countCloses(evs, "live")
	if codes[4005] < 2 || len(codes) != 1 {
		t.Errorf("closes by code %v, want only 4005, at least twice in 7 s of 2-3 s tokens", codes)
	}
	pg.mu.Lock()
	n := minted
	pg.mu.Unlock()
	if n < codes[4005]+1 {
		t.Errorf("the page fetched %d tokens for %d expiries: it must fetch one per connect", n, codes[4005])
	}
	t.Logf("%d messages once each, in order, across %d expiries (4005) and %d tokens", len(got), codes[4005], n)
}
