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
