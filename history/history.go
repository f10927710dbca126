// Package history keeps each topic's recent messages with their positions,
// so that a subscriber can rewind or resume where it left off.
//
// A position is an epoch and an offset: the epoch is a random token, new
// each time a topic starts from nothing, and offsets count 1, 2, 3, ... in
// it, so a position never names two messages. A Log holds one topic's
// positions and its kept messages, as the WebSocket frames the publisher's
// messages were encoded into: keeping a message costs one copy of the bytes
// already encoded, never an encoding per subscriber. A Log is bounded by
// Limits (count, bytes, age) and all the Logs of a hub by one Budget, past
// which the oldest entries of any topic go first.
//
// Concurrency: a Log is guarded by its own mutex, which the caller takes
// with Lock and Unlock around every other method, so that it can make its
// own work (taking a snapshot of subscribers) atomic with the log's. Entries
// are immutable once added: their frames may be read after Unlock. A
// Budget's methods are safe for concurrent use; lock order: a Log's mutex,
// then the Budget's; Budget.Trim takes a Log's mutex holding none.
package history

import (
	"crypto/rand"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound one topic's history. The zero value keeps nothing.
type Limits struct {
	// Size is how many messages are kept; 0 turns history off.
	Size int
	// Bytes bounds the frames kept, in bytes; 0 means no bound but Size.
	Bytes int
	// TTL is how long a message is kept; 0 means no age bound.
	TTL time.Duration
}

// entryOverhead is what an entry costs besides its frame's bytes, charged
// to the byte bounds so that many tiny messages are bounded too.
const entryOverhead = 48

// Entry is one kept message.
type Entry struct {
	Offset uint64
	At     int64  // when it was added, Unix nanoseconds
	Frame  []byte // the final, unmasked WebSocket frame as published
}

// Payload is the message's bytes, without the frame header.
func (e *Entry) Payload() []byte { return e.Frame[HeaderLen(e.Frame):] }

// Opcode is the message's frame opcode (text 1, binary 2).
func (e *Entry) Opcode() byte { return e.Frame[0] & 0x0f }

// HeaderLen is the length of the header of an unmasked frame.
func HeaderLen(frame []byte) int {
	switch frame[1] & 0x7f {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}

// Log is one topic's position and recent messages.
type Log struct {
	mu     sync.Mutex
	lim    Limits
	budget *Budget

	epoch string
	last  uint64 // the newest offset assigned or adopted; 0: none yet
	from  uint64 // see From
	ring  []Entry
	head  int // index of the oldest entry in ring
	n     int // entries kept
	bytes int // their cost: frames plus entryOverhead each

	// Read by Budget without the mutex, to tell stale records.
	gen    atomic.Uint64 // bumped when every entry is dropped at once
	oldest atomic.Uint64 // offset of the oldest entry kept; 0: none
}

// NewLog returns the log of a topic starting from nothing. With an empty
// epoch, the log takes a new random one at its first Assign, or the one an
// Adopt brings (a topic whose positions another hub node assigns).
func NewLog(lim Limits, b *Budget, epoch string) *Log {
	l := &Log{lim: lim, budget: b, epoch: epoch}
	if epoch != "" {
		l.from = 1
	}
	return l
}

// Lock takes the log's mutex.
func (l *Log) Lock() { l.mu.Lock() }

// Unlock releases it.
func (l *Log) Unlock() { l.mu.Unlock() }

// Epoch is the log's epoch; "" until it has one.
func (l *Log) Epoch() string { return l.epoch }

// Last is the newest offset assigned or adopted, 0 before the first.
func (l *Log) Last() uint64 { return l.last }

// Oldest is the offset of the oldest entry kept, 0 if none.
func (l *Log) Oldest() uint64 {
	if l.n == 0 {
		return 0
	}
	return l.ring[l.head].Offset
}

// From is the oldest offset of the epoch the log answers for: every
// message from it on reached the log, and is kept or was dropped by the
// log's limits. A log that assigns its positions has had them all (From is
// 1); one that adopts them from another hub node has had those since it
// joined the stream, or since messages were lost on the way, and Backfill
// can bring the older ones in. 0 while the log has no epoch.
func (l *Log) From() uint64 { return l.from }

// Len is the number of entries kept.
func (l *Log) Len() int { return l.n }

// Bytes is what the entries kept cost against the byte bounds.
func (l *Log) Bytes() int { return l.bytes }

// Keeps reports whether the log keeps messages at all.
func (l *Log) Keeps() bool { return l.lim.Size > 0 }

// Assign gives the next n messages their positions and returns the first
// offset; they run to first+n-1.
func (l *Log) Assign(n int) (first uint64) {
	if l.epoch == "" {
		l.epoch, l.from = NewEpoch(), 1
	}
	first = l.last + 1
	l.last += uint64(n)
	return first
}

// Adopt takes n messages whose positions were assigned elsewhere, from
// epoch:first on. It reports what a subscriber reading the log live must
// be told: reset when the epoch changed (every entry is dropped), or the
// offsets gapFirst..gapLast (0, 0: none) that never came. Messages at or
// before the newest known offset of the same epoch come twice: skip is how
// many of the n to leave out.
func (l *Log) Adopt(epoch string, first uint64, n int) (reset bool, gapFirst, gapLast uint64, skip int) {
	if epoch != l.epoch {
		// A log that knew no epoch yet starts where the stream is: its
		// live readers joined there and miss nothing.
		reset = l.epoch != ""
		l.clear()
		l.epoch, l.last, l.from = epoch, 0, first
		if reset && first > 1 {
			gapFirst, gapLast = 1, first-1
		}
	} else if first > l.last+1 {
		gapFirst, gapLast = l.last+1, first-1
		l.from = first
	} else if first <= l.last {
		skip = int(min(uint64(n), l.last-first+1))
	}
	if end := first + uint64(n) - 1; n > 0 && end > l.last {
		l.last = end
	}
	return reset, gapFirst, gapLast, skip
}

// Continue makes the log go on from epoch:last, where another hub node,
// whose publisher left, stopped: a publisher taking the topic over here
// assigns last+1 next. A log that had no epoch takes it as it is; one of
// another epoch is reset (every entry dropped); one of the same epoch
// that had not heard of every offset up to last skips them (its entries
// dropped, so they stay a run). It reports what a subscriber reading the
// log live must be told, as Adopt does. A last older than the log's newest
// offset leaves the log as it is: a position is never assigned twice.
func (l *Log) Continue(epoch string, last uint64) (reset bool, gapFirst, gapLast uint64) {
	switch {
	case l.epoch == "":
		l.epoch, l.last, l.from = epoch, last, last+1
	case epoch != l.epoch:
		reset = true
		l.clear()
		l.epoch, l.last, l.from = epoch, last, last+1
		if last > 0 {
			gapFirst, gapLast = 1, last
		}
	case last > l.last:
		gapFirst, gapLast = l.last+1, last
		l.dropAll()
		l.last, l.from = last, last+1
	}
	return reset, gapFirst, gapLast
}

// Backfill inserts messages older than every entry the log keeps, which
// another hub node kept: es are consecutive messages of epoch, oldest
// first, and the run must reach the offset just before the oldest entry
// kept (or the newest offset, if none is kept); what overlaps is left
// out. Entries are inserted newest first, as long as the limits allow;
// an entry's At is never later than that of the one after it. oldest is
// the oldest offset the other node could send (0: none): once the log
// holds that far, or its limits stop it, nothing older can be had, and
// From turns 1. It returns how many entries it inserted; their frames are
// copied.
func (l *Log) Backfill(epoch string, es []Entry, oldest uint64, now int64) int {
	if l.lim.Size <= 0 || epoch == "" || epoch != l.epoch || l.from <= 1 {
		return 0
	}
	end := l.last
	if l.n > 0 {
		end = l.ring[l.head].Offset - 1
	}
	if end == 0 {
		l.from = 1
		return 0
	}
	i := len(es) - 1
	for i >= 0 && es[i].Offset > end {
		i--
	}
	if i < 0 || es[i].Offset != end {
		if oldest == 0 || oldest > end {
			l.from = 1 // nothing at or before end is kept there either
		}
		return 0
	}
	l.trim(now)
	cut := int64(0)
	if l.lim.TTL > 0 {
		cut = now - int64(l.lim.TTL)
	}
	added, full := 0, false
	for ; i >= 0; i-- {
		e := es[i]
		if i+1 < len(es) && e.Offset+1 != es[i+1].Offset || len(e.Frame) < 2 {
			break
		}
		cost := len(e.Frame) + entryOverhead
		if l.n >= l.lim.Size || l.lim.Bytes > 0 && l.bytes+cost > l.lim.Bytes || e.At < cut {
			full = true
			break
		}
		if l.n > 0 && e.At > l.ring[l.head].At {
			e.At = l.ring[l.head].At
		}
		if l.ring == nil || l.n == len(l.ring) {
			l.grow()
		}
		l.head = (l.head + len(l.ring) - 1) % len(l.ring)
		l.ring[l.head] = Entry{Offset: e.Offset, At: e.At, Frame: append([]byte(nil), e.Frame...)}
		l.n++
		l.bytes += cost
		l.oldest.Store(e.Offset)
		if l.budget != nil {
			l.budget.add(l, e.Offset, cost)
		}
		added++
		l.from = e.Offset
	}
	if full || l.from <= max(oldest, 1) {
		l.from = 1
	}
	return added
}

// Add keeps a copy of frame as the message at offset, which is newer than
// every entry kept, and drops what the limits no longer allow. With history
// off it does nothing.
//
// The entries kept are always a run of consecutive offsets: a message that
// is not the next one (those between never came here) or that is not kept
// (larger than the whole history may be) ends the run, and the older
// entries go. Since then reports every missing offset in its one gap
// notice, rather than replay across a hole as if nothing were missing.
func (l *Log) Add(offset uint64, frame []byte, now int64) {
	if l.lim.Size <= 0 {
		return
	}
	if l.n > 0 && offset != l.ring[(l.head+l.n-1)%len(l.ring)].Offset+1 {
		l.dropAll()
	}
	cost := len(frame) + entryOverhead
	if l.lim.Bytes > 0 && cost > l.lim.Bytes {
		l.dropAll() // larger than the whole history may be: a hole
		return
	}
	for l.n > 0 && (l.n >= l.lim.Size || l.lim.Bytes > 0 && l.bytes+cost > l.lim.Bytes) {
		l.dropOldest()
	}
	if l.ring == nil || l.n == len(l.ring) {
		l.grow()
	}
	e := Entry{Offset: offset, At: now, Frame: append([]byte(nil), frame...)}
	l.ring[(l.head+l.n)%len(l.ring)] = e
	l.n++
	l.bytes += cost
	if l.n == 1 {
		l.oldest.Store(offset)
	}
	if l.budget != nil {
		l.budget.add(l, offset, cost)
	}
	l.trim(now)
}

// grow makes room for one more entry: the ring starts small and doubles up
// to Size, so a quiet topic does not hold Size slots.
func (l *Log) grow() {
	size := min(max(2*len(l.ring), 8), l.lim.Size)
	if size <= len(l.ring) {
		size = len(l.ring) + 1
	}
	ring := make([]Entry, size)
	for i := range l.n {
		ring[i] = l.ring[(l.head+i)%len(l.ring)]
	}
	l.ring, l.head = ring, 0
}

func (l *Log) dropOldest() {
	e := &l.ring[l.head]
	l.bytes -= len(e.Frame) + entryOverhead
	if l.budget != nil {
		l.budget.used.Add(-int64(len(e.Frame) + entryOverhead))
	}
	*e = Entry{}
	l.head = (l.head + 1) % len(l.ring)
	l.n--
	if l.n == 0 {
		l.oldest.Store(0)
	} else {
		l.oldest.Store(l.ring[l.head].Offset)
	}
}

// trim drops the entries older than the TTL.
func (l *Log) trim(now int64) {
	if l.lim.TTL <= 0 {
		return
	}
	cut := now - int64(l.lim.TTL)
	for l.n > 0 && l.ring[l.head].At < cut {
		l.dropOldest()
	}
}

// Expire drops the entries older than the TTL; the hub calls it now and
// then, so a topic gone quiet does not hold its messages past their age.
func (l *Log) Expire(now int64) { l.trim(now) }

// Drop drops every entry; the log's position stays. A topic that ends
// calls it so its bytes go back to the budget.
func (l *Log) Drop() { l.clear() }

func (l *Log) clear() {
	l.dropAll()
	l.ring, l.head = nil, 0
	l.gen.Add(1)
}

// dropAll drops every entry, keeping the ring.
func (l *Log) dropAll() {
	for l.n > 0 {
		l.dropOldest()
	}
}

// evictThrough drops the entries up to offset, for the budget.
func (l *Log) evictThrough(gen, offset uint64) {
	if l.gen.Load() != gen {
		return
	}
	for l.n > 0 && l.ring[l.head].Offset <= offset {
		l.dropOldest()
	}
}

// Replay is what a subscriber joining at some position is sent before the
// live stream: at most one notice, then entries.
type Replay struct {
	// Reset says the subscriber's epoch is not the log's: it is told the
	// log's epoch, which counts from 1.
	Reset bool
	// GapFirst..GapLast are offsets of the log's epoch that the subscriber
	// will not get; 0, 0 means none.
	GapFirst, GapLast uint64
	// Entries are the kept messages to send, oldest first.
	Entries []Entry
}

// Rewind returns the newest n kept messages (fewer if fewer are kept).
func (l *Log) Rewind(n int, now int64) Replay {
	l.trim(now)
	n = min(n, l.n)
	return Replay{Entries: l.entries(l.n-n, l.n)}
}

// Since returns what a subscriber that last got epoch:offset is missing:
// every kept message after it, with a gap notice for those no longer kept,
// or a reset and everything kept when epoch is not the log's. An offset at
// or past the newest means nothing to replay.
func (l *Log) Since(epoch string, offset uint64, now int64) Replay {
	l.trim(now)
	var r Replay
	if epoch != l.epoch {
		if l.epoch == "" {
			return r // nothing published yet: the first message is offset 1 of a new epoch
		}
		r.Reset, offset = true, 0
	}
	if offset >= l.last {
		return r
	}
	// Offsets offset+1..l.last are wanted; those before the oldest kept
	// are gone.
	first := l.last + 1 // the oldest kept, or past the newest if none
	if l.n > 0 {
		first = l.ring[l.head].Offset
	}
	if first > offset+1 {
		r.GapFirst, r.GapLast = offset+1, first-1
	}
	// Entries are in offset order; skip those at or before offset.
	i := 0
	for i < l.n && l.ring[(l.head+i)%len(l.ring)].Offset <= offset {
		i++
	}
	r.Entries = l.entries(i, l.n)
	return r
}

// entries copies entries i..j-1 (counted from the oldest) out of the ring.
func (l *Log) entries(i, j int) []Entry {
	if i >= j {
		return nil
	}
	out := make([]Entry, 0, j-i)
	for k := i; k < j; k++ {
		out = append(out, l.ring[(l.head+k)%len(l.ring)])
	}
	return out
}

// Budget bounds the memory of every Log that shares it: past Max bytes,
// Trim drops the oldest entries, whatever their topic.
type Budget struct {
	max  int64
	used atomic.Int64

	mu   sync.Mutex
	fifo []record // every entry added, oldest first, some already gone
	head int
}

type record struct {
	log    *Log
	gen    uint64
	offset uint64
}

// NewBudget returns a budget of max bytes; 0 or less means no bound.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used is the bytes the entries of every log cost now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Over reports whether the logs hold more than the budget allows.
func (b *Budget) Over() bool { return b.max > 0 && b.used.Load() > b.max }

// add records an entry; l's mutex is held.
func (b *Budget) add(l *Log, offset uint64, cost int) {
	b.used.Add(int64(cost))
	if b.max <= 0 {
		return
	}
	b.mu.Lock()
	b.fifo = append(b.fifo, record{log: l, gen: l.gen.Load(), offset: offset})
	if live := len(b.fifo) - b.head; live > 1024 && (b.head > live || live > 4*b.entries()) {
		b.compact()
	}
	b.mu.Unlock()
}

// entries estimates the entries alive across logs from the bytes used,
// for deciding when the record queue is mostly stale. b.mu is held.
func (b *Budget) entries() int { return int(b.used.Load()/entryOverhead) + 1 }

// compact drops the records of entries already gone. b.mu is held.
func (b *Budget) compact() {
	out := b.fifo[:0]
	for _, r := range b.fifo[b.head:] {
		if r.live() {
			out = append(out, r)
		}
	}
	clear(b.fifo[len(out):])
	b.fifo, b.head = out, 0
}

// live reports, without the log's mutex, whether the record's entry may
// still be kept.
func (r record) live() bool {
	o := r.log.oldest.Load()
	return r.log.gen.Load() == r.gen && o != 0 && o <= r.offset
}

// Trim drops the oldest entries of any log until the budget holds. The hub
// calls it after adding, holding no log's mutex.
func (b *Budget) Trim() {
	for b.Over() {
		b.mu.Lock()
		if b.head == len(b.fifo) {
			b.mu.Unlock()
			return
		}
		r := b.fifo[b.head]
		b.fifo[b.head] = record{}
		b.head++
		if b.head == len(b.fifo) {
			b.fifo, b.head = b.fifo[:0], 0
		}
		b.mu.Unlock()
		if r.live() {
			r.log.mu.Lock()
			r.log.evictThrough(r.gen, r.offset)
			r.log.mu.Unlock()
		}
	}
}

const epochChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// EpochLen is the length of the epochs NewEpoch makes.
const EpochLen = 12

// NewEpoch returns a random epoch: 12 characters of [A-Za-z0-9], about 71
// bits, so a topic that starts again never reuses one.
func NewEpoch() string {
	var b [EpochLen]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = epochChars[int(b[i])%len(epochChars)]
	}
	return string(b[:])
}

// ValidEpoch reports whether s can be an epoch: 1 to 64 characters of
// [A-Za-z0-9].
func ValidEpoch(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
