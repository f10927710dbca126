package history

import (
	"bytes"
	"testing"
	"time"
)

// frame is a small unmasked text frame holding s.
func frame(s string) []byte { return append([]byte{0x81, byte(len(s))}, s...) }

func offsets(es []Entry) []uint64 {
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
	if r.GapFirst != 4 || r.GapLast != 8 || !equal(offsets(r.Entries), []uint64{9, 10}) {
		t.Fatalf("since 3: gap %d-%d, entries %v; want gap 4-8, entries [9 10]", r.GapFirst, r.GapLast, offsets(r.Entries))
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
	if r.GapFirst != 2 || r.GapLast != 3 || !equal(offsets(r.Entries), []uint64{4}) {
		t.Fatalf("since 1: gap %d-%d, entries %v; want gap 2-3, entries [4]", r.GapFirst, r.GapLast, offsets(r.Entries))
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
	if r.GapFirst != 0 || !equal(offsets(r.Entries), []uint64{3, 4, 5, 6, 7, 8}) {
		t.Fatalf("since 2: gap %d-%d, entries %v", r.GapFirst, r.GapLast, offsets(r.Entries))
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
	if r := l.Rewind(100, now); !equal(offsets(r.Entries), []uint64{2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("rewind: %v", offsets(r.Entries))
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
