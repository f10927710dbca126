package history

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// frame is an unmasked text frame with payload p (short payloads only).
func frame(p string) []byte { return append([]byte{0x81, byte(len(p))}, p...) }

// publish assigns and adds n messages "m<offset>".
func publish(l *Log, n int, now int64) {
	l.Lock()
	defer l.Unlock()
	first := l.Assign(n)
	for i := range n {
		off := first + uint64(i)
		l.Add(off, frame(fmt.Sprintf("m%d", off)), now)
	}
}

func offsets(r Replay) []uint64 {
	var out []uint64
	for _, e := range r.Entries {
		out = append(out, e.Offset)
	}
	return out
}

func check(t *testing.T, what string, r Replay, reset bool, gf, gl uint64, want []uint64) {
	t.Helper()
	got := offsets(r)
	if r.Reset != reset || r.GapFirst != gf || r.GapLast != gl || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: reset %v gap %d-%d entries %v; want reset %v gap %d-%d entries %v",
			what, r.Reset, r.GapFirst, r.GapLast, got, reset, gf, gl, want)
	}
	for _, e := range r.Entries {
		if string(e.Payload()) != fmt.Sprintf("m%d", e.Offset) || e.Opcode() != 1 {
			t.Fatalf("%s: entry %d holds %q", what, e.Offset, e.Payload())
		}
	}
}

func TestPositionsAndBounds(t *testing.T) {
	l := NewLog(Limits{Size: 5}, nil, "")
	l.Lock()
	if r := l.Since("Other", 3, 0); r.Reset || len(r.Entries) > 0 {
		t.Fatalf("a log with no message yet replays %+v", r)
	}
	l.Unlock()
	publish(l, 3, 0)
	epoch := l.Epoch()
	if !ValidEpoch(epoch) || len(epoch) != EpochLen || l.Last() != 3 {
		t.Fatalf("epoch %q, last %d", epoch, l.Last())
	}
	publish(l, 4, 0) // 1..7; 3..7 kept
	l.Lock()
	defer l.Unlock()
	check(t, "rewind 2", l.Rewind(2, 0), false, 0, 0, []uint64{6, 7})
	check(t, "rewind 50", l.Rewind(50, 0), false, 0, 0, []uint64{3, 4, 5, 6, 7})
	check(t, "rewind 0", l.Rewind(0, 0), false, 0, 0, nil)
	check(t, "since 4", l.Since(epoch, 4, 0), false, 0, 0, []uint64{5, 6, 7})
	check(t, "since 2", l.Since(epoch, 2, 0), false, 0, 0, []uint64{3, 4, 5, 6, 7})
	check(t, "since 0", l.Since(epoch, 0, 0), false, 1, 2, []uint64{3, 4, 5, 6, 7})
	check(t, "since newest", l.Since(epoch, 7, 0), false, 0, 0, nil)
	check(t, "since future", l.Since(epoch, 99, 0), false, 0, 0, nil)
	check(t, "other epoch", l.Since("Old", 7, 0), true, 1, 2, []uint64{3, 4, 5, 6, 7})
	if l.Len() != 5 {
		t.Fatalf("%d kept, want 5", l.Len())
	}
}

func TestByteBoundAndTTL(t *testing.T) {
	cost := len(frame("m1")) + entryOverhead
	l := NewLog(Limits{Size: 100, Bytes: 3 * cost, TTL: time.Second}, nil, "")
	publish(l, 5, 0)
	l.Lock()
	check(t, "bytes", l.Rewind(100, 0), false, 0, 0, []uint64{3, 4, 5})
	if l.Bytes() != 3*cost {
		t.Fatalf("bytes %d, want %d", l.Bytes(), 3*cost)
	}
	l.Unlock()
	publish(l, 1, int64(900*time.Millisecond))
	l.Lock()
	check(t, "ttl", l.Rewind(100, int64(1500*time.Millisecond)), false, 0, 0, []uint64{6})
	l.Expire(int64(3 * time.Second))
	if l.Len() != 0 || l.Bytes() != 0 {
		t.Fatalf("after expiry %d entries, %d bytes", l.Len(), l.Bytes())
	}
	check(t, "since after expiry", l.Since(l.Epoch(), 2, 0), false, 3, 6, nil)
	l.Unlock()

	big := NewLog(Limits{Size: 10, Bytes: 10}, nil, "")
	publish(big, 2, 0)
	big.Lock()
	defer big.Unlock()
	if big.Len() != 0 || big.Last() != 2 {
		t.Fatalf("a message larger than the byte bound was kept: %d kept, last %d", big.Len(), big.Last())
	}
}

func TestHistoryOff(t *testing.T) {
	l := NewLog(Limits{}, nil, "")
	publish(l, 3, 0)
	l.Lock()
	defer l.Unlock()
	if l.Keeps() || l.Len() != 0 || l.Last() != 3 {
		t.Fatalf("history off: keeps %v, %d entries, last %d", l.Keeps(), l.Len(), l.Last())
	}
	check(t, "since", l.Since(l.Epoch(), 1, 0), false, 2, 3, nil)
}

func TestAdopt(t *testing.T) {
	l := NewLog(Limits{Size: 10}, nil, "")
	l.Lock()
	defer l.Unlock()
	adopt := func(epoch string, first uint64, n int) (bool, uint64, uint64, int) {
		reset, gf, gl, skip := l.Adopt(epoch, first, n)
		for i := skip; i < n; i++ {
			off := first + uint64(i)
			l.Add(off, frame(fmt.Sprintf("m%d", off)), 0)
		}
		return reset, gf, gl, skip
	}
	// A fresh log joins the stream where it is: nothing to report.
	if r, gf, _, skip := adopt("E1", 40, 2); r || gf != 0 || skip != 0 || l.Epoch() != "E1" || l.Last() != 41 {
		t.Fatalf("first adopt: reset %v gap %d skip %d epoch %q last %d", r, gf, skip, l.Epoch(), l.Last())
	}
	if r, gf, gl, _ := adopt("E1", 45, 1); r || gf != 42 || gl != 44 {
		t.Fatalf("a jump: reset %v gap %d-%d, want 42-44", r, gf, gl)
	}
	if _, gf, _, skip := adopt("E1", 44, 3); gf != 0 || skip != 2 || l.Last() != 46 {
		t.Fatalf("an overlap: gap %d skip %d last %d, want skip 2, last 46", gf, skip, l.Last())
	}
	// The jump ended the run kept: 40 and 41 went, or a resume from
	// before 42 would skip 42-44 without a gap notice.
	check(t, "kept", l.Rewind(10, 0), false, 0, 0, []uint64{45, 46})
	if r, gf, gl, _ := adopt("E2", 3, 1); !r || gf != 1 || gl != 2 || l.Len() != 1 {
		t.Fatalf("a new epoch: reset %v gap %d-%d, %d kept", r, gf, gl, l.Len())
	}
}

func TestBudgetEvictsOldestOfAnyTopic(t *testing.T) {
	cost := int64(len(frame("m1")) + entryOverhead)
	b := NewBudget(4 * cost)
	a, c := NewLog(Limits{Size: 100}, b, ""), NewLog(Limits{Size: 100}, b, "")
	publish(a, 3, 0) // a1 a2 a3
	publish(c, 2, 0) // c1 c2: 5 entries, one over
	b.Trim()
	if b.Used() != 4*cost {
		t.Fatalf("used %d, want %d", b.Used(), 4*cost)
	}
	a.Lock()
	check(t, "a", a.Rewind(10, 0), false, 0, 0, []uint64{2, 3})
	a.Unlock()
	publish(c, 2, 0) // c3 c4: a2, a3 go
	b.Trim()
	a.Lock()
	check(t, "a after", a.Rewind(10, 0), false, 0, 0, nil)
	a.Unlock()
	c.Lock()
	check(t, "c", c.Rewind(10, 0), false, 0, 0, []uint64{1, 2, 3, 4})
	c.Drop()
	c.Unlock()
	if b.Used() != 0 {
		t.Fatalf("used %d after every log dropped its entries", b.Used())
	}
	// Stale records do not pile up: a log that keeps dropping its own
	// oldest entries under a small Size leaves records the budget compacts.
	d := NewLog(Limits{Size: 2}, b, "")
	for range 10_000 {
		publish(d, 1, 0)
	}
	b.mu.Lock()
	n := len(b.fifo) - b.head
	b.mu.Unlock()
	if n > 2048 {
		t.Fatalf("%d records for 2 live entries", n)
	}
}

func TestBudgetConcurrent(t *testing.T) {
	b := NewBudget(64 << 10)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := NewLog(Limits{Size: 1000, Bytes: 32 << 10}, b, "")
			for j := range 5000 {
				publish(l, 1+j%3, int64(j))
				b.Trim()
				if j%1000 == 999 && i%2 == 0 {
					l.Lock()
					l.Drop()
					l.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	b.Trim()
	if b.Used() > 64<<10 {
		t.Fatalf("used %d past the budget", b.Used())
	}
}

func TestEpochs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		e := NewEpoch()
		if !ValidEpoch(e) || seen[e] {
			t.Fatalf("epoch %q invalid or repeated", e)
		}
		seen[e] = true
	}
	for _, bad := range []string{"", "a:b", "é", "a b", string(make([]byte, 65))} {
		if ValidEpoch(bad) {
			t.Errorf("ValidEpoch(%q)", bad)
		}
	}
}

func BenchmarkAdd(b *testing.B) {
	l := NewLog(Limits{Size: 100, Bytes: 1 << 20, TTL: time.Minute}, NewBudget(256<<20), "")
	f := make([]byte, 130)
	f[0], f[1] = 0x82, 126
	f[2], f[3] = 0, 128
	b.ReportAllocs()
	for b.Loop() {
		l.Lock()
		off := l.Assign(1)
		l.Add(off, f, 0)
		l.Unlock()
	}
}

// BenchmarkAtBound fills 64 MiB of budget across 2,000 topics of 100
// messages of 1 KiB (200 MB offered: the budget evicts the oldest) and
// reports what the heap holds for it: heap-bytes/budget-byte is the
// history's memory overhead at its bound (1.0 would be none).
func BenchmarkAtBound(b *testing.B) {
	const (
		topics = 2000
		msgs   = 100
		budget = 64 << 20
	)
	f := make([]byte, 1028)
	f[0], f[1], f[2], f[3] = 0x82, 126, 0x04, 0x00
	var before, after runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		bg := NewBudget(budget)
		logs := make([]*Log, topics)
		for i := range logs {
			logs[i] = NewLog(Limits{Size: msgs, Bytes: 1 << 20}, bg, "")
		}
		for range msgs {
			for _, l := range logs {
				l.Lock()
				l.Add(l.Assign(1), f, 0)
				l.Unlock()
				bg.Trim()
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(bg.Used())/(1<<20), "budget-MiB")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(bg.Used()), "heap-bytes/budget-byte")
		runtime.KeepAlive(logs)
	}
}

// offsetsOf lists the offsets of es.
func offsetsOf(es []Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Offset)
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// adopt is what the hub does with messages another node assigned: Adopt,
// then Add those that are not duplicates.
func adopt(l *Log, epoch string, first uint64, n int, now int64) (reset bool, gapFirst, gapLast uint64) {
	reset, gapFirst, gapLast, skip := l.Adopt(epoch, first, n)
	for i := skip; i < n; i++ {
		l.Add(first+uint64(i), frame("m"), now)
	}
	return reset, gapFirst, gapLast
}

// TestSinceNeverSkipsAHole: messages that never reached a log (lost between
// hub nodes) leave no hole in what it keeps, or a resume across the hole
// would skip them without a gap notice.
func TestSinceNeverSkipsAHole(t *testing.T) {
	l := NewLog(Limits{Size: 100}, nil, "")
	now := time.Now().UnixNano()
	adopt(l, "E", 1, 5, now)
	if _, gf, gl := adopt(l, "E", 9, 2, now); gf != 6 || gl != 8 {
		t.Fatalf("live gap %d-%d, want 6-8", gf, gl)
	}
	r := l.Since("E", 3, now)
	// Either 4, 5, then a gap... which one notice cannot say; or a gap
	// 4-8 and then 9, 10: the log keeps no run with a hole.
	if r.GapFirst != 4 || r.GapLast != 8 || !equal(offsetsOf(r.Entries), []uint64{9, 10}) {
		t.Fatalf("since 3: gap %d-%d, entries %v; want gap 4-8, entries [9 10]", r.GapFirst, r.GapLast, offsetsOf(r.Entries))
	}
}

// TestSinceAfterMessageTooLargeToKeep: a message larger than the whole
// history is not kept, and the older ones it would leave a hole behind go
// too.
func TestSinceAfterMessageTooLargeToKeep(t *testing.T) {
	l := NewLog(Limits{Size: 100, Bytes: 1000}, nil, "")
	now := time.Now().UnixNano()
	l.Lock()
	defer l.Unlock()
	add := func(payload []byte) {
		first := l.Assign(1)
		l.Add(first, frame(string(payload)), now)
	}
	add([]byte("a"))
	add([]byte("b"))
	big := bytes.Repeat([]byte{'x'}, 120)
	big = append([]byte{0x81, 126, 0, byte(len(big) * 9)}, bytes.Repeat(big, 9)...) // 1084 bytes
	first := l.Assign(1)
	l.Add(first, big, now)
	add([]byte("d"))
	r := l.Since(l.Epoch(), 1, now)
	if r.GapFirst != 2 || r.GapLast != 3 || !equal(offsetsOf(r.Entries), []uint64{4}) {
		t.Fatalf("since 1: gap %d-%d, entries %v; want gap 2-3, entries [4]", r.GapFirst, r.GapLast, offsetsOf(r.Entries))
	}
}

func TestContinue(t *testing.T) {
	now := time.Now().UnixNano()
	// A log that knew nothing takes the position as it is, quietly.
	l := NewLog(Limits{Size: 10}, nil, "")
	if reset, gf, _ := l.Continue("E", 7); reset || gf != 0 {
		t.Fatal("an empty log was told of a reset or gap")
	}
	if l.Epoch() != "E" || l.Last() != 7 || l.From() != 8 {
		t.Fatalf("epoch %q last %d from %d, want E 7 8", l.Epoch(), l.Last(), l.From())
	}
	if first := l.Assign(2); first != 8 {
		t.Fatalf("next offset %d, want 8", first)
	}
	// The same epoch, behind: its live readers are told of the gap, and
	// the kept run does not span it.
	l = NewLog(Limits{Size: 10}, nil, "")
	adopt(l, "E", 1, 3, now)
	if reset, gf, gl := l.Continue("E", 6); reset || gf != 4 || gl != 6 {
		t.Fatalf("continue E:6 from E:3: reset %v gap %d-%d, want gap 4-6", reset, gf, gl)
	}
	if l.Len() != 0 || l.Last() != 6 || l.From() != 7 {
		t.Fatalf("len %d last %d from %d, want 0 6 7", l.Len(), l.Last(), l.From())
	}
	// The same epoch, ahead: nothing changes, no offset is reused.
	adopt(l, "E", 7, 3, now)
	if reset, gf, _ := l.Continue("E", 8); reset || gf != 0 || l.Last() != 9 || l.Len() != 3 {
		t.Fatalf("continue E:8 from E:9 changed the log: reset %v gap %d last %d len %d", reset, gf, l.Last(), l.Len())
	}
	// Another epoch: a reset, and the new epoch's offsets up to last are
	// a gap for live readers.
	if reset, gf, gl := l.Continue("F", 4); !reset || gf != 1 || gl != 4 {
		t.Fatalf("continue F:4 from E: reset %v gap %d-%d, want reset, gap 1-4", reset, gf, gl)
	}
	if l.Epoch() != "F" || l.Len() != 0 || l.Last() != 4 {
		t.Fatalf("epoch %q len %d last %d", l.Epoch(), l.Len(), l.Last())
	}
	if first := l.Assign(1); first != 5 {
		t.Fatalf("next offset %d, want 5", first)
	}
}

func run(first, last uint64, at int64) []Entry {
	var es []Entry
	for o := first; o <= last; o++ {
		es = append(es, Entry{Offset: o, At: at, Frame: frame("m")})
	}
	return es
}

func TestBackfill(t *testing.T) {
	now := time.Now().UnixNano()
	b := NewBudget(0)
	l := NewLog(Limits{Size: 10}, b, "")
	adopt(l, "E", 6, 3, now) // joined the stream at 6
	if l.From() != 6 {
		t.Fatalf("from %d, want 6", l.From())
	}
	// A run that does not reach 5 cannot be inserted: it would leave a hole.
	if n := l.Backfill("E", run(1, 4, now), 1, now); n != 0 {
		t.Fatalf("inserted %d entries of a run ending at 4 before 6", n)
	}
	// Nor a run of another epoch.
	if n := l.Backfill("F", run(1, 5, now), 1, now); n != 0 {
		t.Fatalf("inserted %d entries of another epoch", n)
	}
	// A run overlapping the entries: what overlaps is left out.
	if n := l.Backfill("E", run(3, 7, now-1), 2, now); n != 3 {
		t.Fatalf("inserted %d entries, want 3 (3, 4, 5)", n)
	}
	if l.From() != 3 || l.Oldest() != 3 || l.Len() != 6 {
		t.Fatalf("from %d oldest %d len %d, want 3 3 6", l.From(), l.Oldest(), l.Len())
	}
	r := l.Since("E", 2, now)
	if r.GapFirst != 0 || !equal(offsetsOf(r.Entries), []uint64{3, 4, 5, 6, 7, 8}) {
		t.Fatalf("since 2: gap %d-%d, entries %v", r.GapFirst, r.GapLast, offsetsOf(r.Entries))
	}
	// The other node keeps nothing older than 2: From turns 1 once the
	// log holds 2, and nothing more is asked for.
	if n := l.Backfill("E", run(2, 2, now), 2, now); n != 1 || l.From() != 1 {
		t.Fatalf("inserted %d, from %d; want 1, 1", n, l.From())
	}
	if n := l.Backfill("E", run(1, 1, now), 1, now); n != 0 {
		t.Fatal("inserted into a log that answers for every offset")
	}
	if got, want := b.Used(), int64(7*(len(frame("m"))+entryOverhead)); got != want {
		t.Fatalf("budget used %d, want %d", got, want)
	}
	// Appending goes on after the inserted entries.
	adopt(l, "E", 9, 1, now)
	if r := l.Rewind(100, now); !equal(offsetsOf(r.Entries), []uint64{2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("rewind: %v", offsetsOf(r.Entries))
	}
}

func TestBackfillWithinLimits(t *testing.T) {
	now := time.Now().UnixNano()
	l := NewLog(Limits{Size: 4, TTL: time.Minute}, nil, "")
	l.Continue("E", 10)
	// The log keeps nothing yet: the run must reach its newest offset.
	if n := l.Backfill("E", run(1, 9, now), 1, now); n != 0 {
		t.Fatal("inserted a run that does not reach the newest offset")
	}
	es := run(1, 10, now)
	es[5].At = now - 2*int64(time.Minute) // too old: it and older stop the insert
	if n := l.Backfill("E", es, 1, now); n != 4 || l.Oldest() != 7 || l.From() != 1 {
		t.Fatalf("inserted %d, oldest %d, from %d; want 4 (the size), 7, 1", n, l.Oldest(), l.From())
	}
	l = NewLog(Limits{Size: 10, TTL: time.Minute}, nil, "")
	l.Continue("E", 10)
	if n := l.Backfill("E", es, 1, now); n != 4 || l.Oldest() != 7 || l.From() != 1 {
		t.Fatalf("inserted %d, oldest %d, from %d; want 4 (stopped by the TTL), 7, 1", n, l.Oldest(), l.From())
	}
	// Entries are kept in age order even when the other node's clock
	// says otherwise.
	l = NewLog(Limits{Size: 10}, nil, "")
	adopt(l, "E", 5, 1, now)
	l.Backfill("E", run(1, 4, now+int64(time.Hour)), 1, now)
	for _, e := range l.Rewind(10, now).Entries {
		if e.At > now {
			t.Fatalf("entry %d is newer than the one after it", e.Offset)
		}
	}
}
