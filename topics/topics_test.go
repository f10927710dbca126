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
