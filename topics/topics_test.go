package topics

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

type sub struct{ id int }

func TestLifecycle(t *testing.T) {
	expired := make(chan []*sub, 1)
	tb := New(Config[*sub]{GracePeriod: 50 * time.Millisecond, OnExpire: func(_ *Topic[*sub], s []*sub) { expired <- s }})
	k := Key{"a", "news"}
	if _, err := tb.Subscribe(k, &sub{1}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("subscribe before publisher: %v", err)
	}
	if tb.Len() != 0 {
		t.Fatal("a refused subscriber created a topic")
	}
	tp, err := tb.AddPublisher(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddPublisher(k); !errors.Is(err, ErrHasPublisher) {
		t.Fatalf("second publisher: %v", err)
	}
	s1, s2 := &sub{1}, &sub{2}
	tb.Subscribe(k, s1)
	tb.Subscribe(k, s2)
	if _, err := tb.Subscribe(Key{"b", "news"}, s1); !errors.Is(err, ErrNotStarted) {
		t.Fatal("domains mixed")
	}
	if got := tp.Subscribers(); len(got) != 2 {
		t.Fatalf("subscribers %v", got)
	}
	// Publisher leaves; a new one takes over inside the grace period.
	tb.RemovePublisher(tp)
	time.Sleep(10 * time.Millisecond)
	tp2, err := tb.AddPublisher(k)
	if err != nil || tp2 != tp {
		t.Fatalf("takeover: %v, same topic %v", err, tp2 == tp)
	}
	time.Sleep(80 * time.Millisecond)
	select {
	case <-expired:
		t.Fatal("topic expired although a publisher took it over")
	default:
	}
	// Now leave for good: the grace runs out and the subscribers are handed over.
	tb.RemovePublisher(tp2)
	select {
	case s := <-expired:
		if len(s) != 2 {
			t.Fatalf("expired with %d subscribers", len(s))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("grace period never ran out")
	}
	if tb.Len() != 0 {
		t.Fatal("expired topic still in the table")
	}
}

func TestSubscribeWaitsAndEmptyTopicEnds(t *testing.T) {
	tb := New(Config[*sub]{SubscribeWaits: true, MaxPublishers: 2})
	k := Key{"a", "t"}
	s := &sub{1}
	tp, err := tb.Subscribe(k, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddPublisher(k); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddPublisher(k); err != nil {
		t.Fatal("two publishers allowed but refused:", err)
	}
	if _, err := tb.AddPublisher(k); !errors.Is(err, ErrHasPublisher) {
		t.Fatal("third publisher accepted")
	}
	tb2 := New(Config[*sub]{SubscribeWaits: true})
	tp, _ = tb2.Subscribe(k, s)
	tb2.Unsubscribe(tp, s)
	if tb2.Len() != 0 {
		t.Fatal("topic with nobody left is still live")
	}
}

func TestSnapshotIsStableAndFresh(t *testing.T) {
	tb := New(Config[*sub]{})
	tp, _ := tb.AddPublisher(Key{"d", "t"})
	var all []*sub
	for i := range 100 {
		s := &sub{i}
		all = append(all, s)
		tb.Subscribe(tp.Key(), s)
	}
	snap := tp.Subscribers()
	for _, s := range all[:50] {
		tb.Unsubscribe(tp, s)
	}
	if len(snap) != 100 || snap[0] != all[0] {
		t.Fatal("an old snapshot changed under its reader")
	}
	now := tp.Subscribers()
	if len(now) != 50 || tp.Len() != 50 {
		t.Fatalf("fresh snapshot has %d", len(now))
	}
	seen := map[*sub]bool{}
	for _, s := range now {
		if s.id < 50 || seen[s] {
			t.Fatalf("snapshot holds %d", s.id)
		}
		seen[s] = true
	}
}

func TestConcurrent(t *testing.T) {
	tb := New(Config[*sub]{SubscribeWaits: true})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := Key{"d", fmt.Sprint(i % 10)}
				s := &sub{g*10000 + i}
				tp, err := tb.Subscribe(k, s)
				if err != nil {
					t.Error(err)
					return
				}
				_ = tp.Subscribers()
				tb.Unsubscribe(tp, s)
			}
		}()
	}
	wg.Wait()
	if tb.Len() != 0 {
		t.Fatalf("%d topics left", tb.Len())
	}
}

func BenchmarkSubscribers(b *testing.B) {
	tb := New(Config[*sub]{})
	tp, _ := tb.AddPublisher(Key{"d", "t"})
	for i := range 10000 {
		tb.Subscribe(tp.Key(), &sub{i})
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(tp.Subscribers()) != 10000 {
			b.Fatal("lost subscribers")
		}
	}
}

func BenchmarkJoinLeave(b *testing.B) {
	tb := New(Config[*sub]{})
	tp, _ := tb.AddPublisher(Key{"d", "t"})
	for i := range 10000 {
		tb.Subscribe(tp.Key(), &sub{i})
	}
	s := &sub{-1}
	b.ReportAllocs()
	for b.Loop() {
		tb.Subscribe(tp.Key(), s)
		tb.Unsubscribe(tp, s)
	}
}

func TestStartedElsewhere(t *testing.T) {
	remote := map[Key]bool{{"a", "news"}: true}
	tb := New(Config[*sub]{Started: func(k Key) bool { return remote[k] }})
	if _, err := tb.Subscribe(Key{"a", "other"}, &sub{1}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("subscribe to a topic started nowhere: %v", err)
	}
	k := Key{"a", "news"}
	s1 := &sub{1}
	tp, err := tb.Subscribe(k, s1)
	if err != nil {
		t.Fatalf("subscribe to a topic started elsewhere: %v", err)
	}
	if tb.Lookup(k) != tp || tb.HasPublisher(k) {
		t.Fatal("Lookup or HasPublisher wrong for a topic without local publishers")
	}
	// Its last subscriber leaving ends it here.
	tb.Unsubscribe(tp, s1)
	if tb.Has(k) {
		t.Fatal("a topic with neither publisher nor subscriber lives on")
	}
	// End closes a remote topic, but never one with a local publisher.
	tb.Subscribe(k, s1)
	subs, ok := tb.End(k)
	if !ok || len(subs) != 1 || subs[0] != s1 || tb.Has(k) {
		t.Fatalf("End: %v %v, still there %v", subs, ok, tb.Has(k))
	}
	tb.AddPublisher(k)
	tb.Subscribe(k, s1)
	if _, ok := tb.End(k); ok || !tb.Has(k) {
		t.Fatal("End ended a topic with a local publisher")
	}
}

func TestKeepAtExpiry(t *testing.T) {
	keep := make(chan bool, 1)
	expired := make(chan []*sub, 1)
	asked := make(chan Key, 1)
	tb := New(Config[*sub]{
		GracePeriod: 10 * time.Millisecond,
		Keep:        func(k Key) bool { asked <- k; return <-keep },
		OnExpire:    func(_ *Topic[*sub], s []*sub) { expired <- s },
	})
	k := Key{"a", "news"}
	tp, _ := tb.AddPublisher(k)
	s1 := &sub{1}
	tb.Subscribe(k, s1)
	// The topic lives on elsewhere: kept, out of grace, subscribers kept.
	tb.RemovePublisher(tp)
	<-asked
	keep <- true
	waitUntil(t, func() bool { tb.shard(k).mu.Lock(); defer tb.shard(k).mu.Unlock(); return !tp.inGrace })
	if tb.Lookup(k) != tp || tp.Len() != 1 {
		t.Fatal("a kept topic lost its subscribers")
	}
	select {
	case <-expired:
		t.Fatal("a kept topic expired")
	default:
	}
	// It can now be ended from elsewhere.
	if subs, ok := tb.End(k); !ok || len(subs) != 1 {
		t.Fatal("a kept topic cannot be ended")
	}
	// Not kept: expires as usual.
	tp, _ = tb.AddPublisher(k)
	tb.Subscribe(k, s1)
	tb.RemovePublisher(tp)
	<-asked
	keep <- false
	select {
	case s := <-expired:
		if len(s) != 1 {
			t.Fatalf("expired with %d subscribers", len(s))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("grace never ran out")
	}
	// A publisher that arrives while Keep is being asked wins.
	tp, _ = tb.AddPublisher(k)
	tb.RemovePublisher(tp)
	<-asked
	tb.AddPublisher(k)
	keep <- false
	time.Sleep(20 * time.Millisecond)
	if !tb.HasPublisher(k) {
		t.Fatal("the topic expired under its new publisher")
	}
	select {
	case <-expired:
		t.Fatal("the topic expired under its new publisher")
	default:
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMaxTopicsPerDomain(t *testing.T) {
	tb := New(Config[*sub]{MaxTopicsPerDomain: 2, SubscribeWaits: true})
	a, _ := tb.AddPublisher(Key{"d", "a"})
	if _, err := tb.AddPublisher(Key{"d", "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddPublisher(Key{"d", "c"}); !errors.Is(err, ErrTooManyTopics) {
		t.Fatalf("third topic of d: %v", err)
	}
	if _, err := tb.Subscribe(Key{"d", "c"}, &sub{1}); !errors.Is(err, ErrTooManyTopics) {
		t.Fatalf("a waiting subscriber made a third topic of d: %v", err)
	}
	if _, err := tb.AddPublisher(Key{"e", "c"}); err != nil {
		t.Fatal("another domain is limited too:", err)
	}
	tb.RemovePublisher(a) // no grace: ends at once
	time.Sleep(10 * time.Millisecond)
	if _, err := tb.AddPublisher(Key{"d", "c"}); err != nil {
		t.Fatal("a topic ended but its domain's count did not go down:", err)
	}
}

func TestHold(t *testing.T) {
	remote := map[Key]bool{{"a", "news"}: true}
	tb := New(Config[*sub]{Started: func(k Key) bool { return remote[k] }})
	if _, err := tb.Hold(Key{"a", "other"}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("hold of a topic started nowhere: %v", err)
	}
	k := Key{"a", "news"}
	tp, err := tb.Hold(k)
	if err != nil || tb.Lookup(k) != tp {
		t.Fatalf("hold: %v; in the table: %v", err, tb.Lookup(k) == tp)
	}
	// A subscriber joins and leaves while the topic is held: it lives on,
	// with its log.
	s1 := &sub{1}
	tb.Subscribe(k, s1)
	tp.Log.Lock()
	tp.Log.Adopt("E", 1, 1)
	tp.Log.Unlock()
	tb.Unsubscribe(tp, s1)
	if tb.Lookup(k) != tp {
		t.Fatal("a held topic ended when its last subscriber left")
	}
	// The same topic for a second hold; the last Unhold ends it.
	if tp2, _ := tb.Hold(k); tp2 != tp {
		t.Fatal("a second hold got another topic")
	}
	tb.Unhold(tp)
	if !tb.Has(k) {
		t.Fatal("the topic ended with a hold left")
	}
	tb.Unhold(tp)
	if tb.Has(k) {
		t.Fatal("a topic with neither subscriber nor hold lives on")
	}
	tb.Unhold(tp) // one too many: nothing happens
	// A held topic that ends elsewhere ends.
	tp, _ = tb.Hold(k)
	if _, ok := tb.End(k); !ok || tb.Has(k) {
		t.Fatal("End left a held topic")
	}
	tb.Unhold(tp)
}
