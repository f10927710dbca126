package server

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/topics"
)

// minChunk is the fewest subscribers worth handing to another core: below
// it the hand-off costs more than the writes it saves.
const minChunk = 512

// maxLanes bounds how many cores one fan-out is split over.
const maxLanes = 16

// asyncMin is the fewest subscribers whose fan-out a publisher's event loop
// hands to the pool and leaves to it (see fanoutState.async): written by
// the loop, it would hold up every other connection of that loop. Below it
// the hand-off costs more than the writes.
const asyncMin = 2 * minChunk

// fanoutSlice is how many subscribers a worker writes before it lets other
// goroutines run: an event loop waits at most about one slice's writes for
// a core, however large the topic.
const fanoutSlice = 256

// fanoutTask is one large fan-out, written in slices of fanoutSlice
// subscribers by whoever takes part: the workers the pool hands it to and,
// for a synchronous fan-out, the publisher's goroutine. It lives in its
// publisher's fanoutState and is reused once done: a publisher's fan-outs
// are sequential.
type fanoutTask struct {
	srv    *Server
	fs     *fanoutState
	subs   []*client
	frames *variants
	slices int64

	next   atomic.Int64 // the next slice to write
	active atomic.Int64 // takers that have not left; the last one finishes
	res    struct {
		written, slow, closing atomic.Int64
		byKind                 [numKinds]atomic.Int64
	}
}

type chunkResult struct {
	written, slow, closing int64
	byKind                 [numKinds]int64 // written, by subscriber variant
}

// work writes slices until none is left, then leaves the task; yield lets
// other goroutines (event loops above all) run between slices.
func (t *fanoutTask) work(yield bool) {
	n := int64(len(t.subs))
	for {
		i := t.next.Add(1) - 1
		if i >= t.slices {
			break
		}
		r := t.srv.writeChunk(t.subs[i*fanoutSlice:min((i+1)*fanoutSlice, n)], t.frames, &t.fs.slow)
		t.res.written.Add(r.written)
		t.res.slow.Add(r.slow)
		t.res.closing.Add(r.closing)
		for k, w := range r.byKind {
			if w > 0 {
				t.res.byKind[k].Add(w)
			}
		}
		if yield && i+1 < t.slices {
			runtime.Gosched()
		}
	}
	t.leave()
}

// leave ends one taker's part; the last one out, when every slice is
// written, finishes the fan-out.
func (t *fanoutTask) leave() {
	if t.active.Add(-1) == 0 {
		t.fs.finish()
	}
}

// fanoutPool is a fixed set of workers, one per core, with a bounded queue
// of fan-outs to help with. Handing over never waits: a fan-out that finds
// the queue full is written by its publisher, so the hub never holds more.
type fanoutPool struct {
	lanes int
	tasks chan *fanoutTask
	quit  chan struct{}
}

func newFanoutPool(lanes int) *fanoutPool {
	p := &fanoutPool{lanes: min(max(lanes, 1), maxLanes), tasks: make(chan *fanoutTask, 256), quit: make(chan struct{})}
	for range p.lanes {
		go func() {
			lowerPriority()
			for {
				select {
				case t := <-p.tasks:
					t.work(true)
				case <-p.quit:
					// Finish what was handed over: its publishers wait
					// for it, paused.
					for {
						select {
						case t := <-p.tasks:
							t.work(false)
						default:
							return
						}
					}
				}
			}
		}()
	}
	return p
}

// stop ends the workers once the queue is empty; fan-outs started later
// are written by their publishers.
func (p *fanoutPool) stop() { close(p.quit) }

// offer hands t to a worker if the queue has room and the pool runs.
func (p *fanoutPool) offer(t *fanoutTask) bool {
	select {
	case <-p.quit:
		return false
	default:
	}
	select {
	case p.tasks <- t:
		return true
	default:
		return false
	}
}

// fanoutState is a publisher's reusable fan-out scratch.
type fanoutState struct {
	task fanoutTask
	z    [numKinds]zcount // what each deflate variant of this publish has compressed
	slow slowSubs         // subscribers to cut once the fan-out holds no lock

	// async, when set, lets a fan-out to asyncMin subscribers or more go
	// on after publish returns: pause is called before any of it is
	// handed to the pool (the publisher stops reading: its next publish
	// must wait for this one), resume once every subscriber is written,
	// the topic's Publishing mutex released and the scratch free again,
	// on the goroutine that wrote the last slice. Until then the scratch
	// must not be used: done.Wait() waits for it.
	async *asyncHooks
	done  sync.WaitGroup

	// The fan-out in flight, for finish.
	sc                  *scratch
	topic               *topics.Topic[*client]
	start               time.Time
	messages, payload   int
	elsewhere, detached bool
}

// asyncHooks are what a publisher's connection does around a fan-out that
// outlives its publish call.
type asyncHooks struct {
	pause, resume func()
}

// fanout writes frames, the encodings of one read's messages (payload bytes
// in all), to every one of subs, each in its variant: one Send each, no
// allocation. When the frames also went to other hub nodes (elsewhere), a
// topic without local subscribers drops nothing. A large topic is written
// in slices by the pool's workers, each subscriber's messages in the order
// of the fan-outs. It reports whether the fan-out goes on after it returns
// (see fanoutState.async): its finish then releases t's Publishing mutex
// and sc's variants. The subscribers it found full wait in fs.slow, for
// the caller to cut once it holds no lock (a detached fan-out's finish
// cuts its own).
func (s *Server) fanout(fs *fanoutState, sc *scratch, t *topics.Topic[*client], subs []*client, frames *variants, messages, payload int, elsewhere bool) (detached bool) {
	fs.start, fs.messages, fs.payload, fs.elsewhere = time.Now(), messages, payload, elsewhere
	if len(subs) < asyncMin {
		r := s.writeChunk(subs, frames, &fs.slow)
		s.countFanout(fs, &r, len(subs))
		return false
	}
	task := &fs.task
	task.srv, task.fs, task.subs, task.frames = s, fs, subs, frames
	task.slices = int64((len(subs) + fanoutSlice - 1) / fanoutSlice)
	task.next.Store(0)
	task.active.Store(1) // the publisher's own part
	detached = fs.async != nil && t != nil
	fs.sc, fs.topic, fs.detached = sc, t, detached
	fs.done.Add(1)
	if detached {
		fs.async.pause()
	}
	// A detached fan-out leaves one core to the event loops.
	lanes := s.pool.lanes
	if detached {
		lanes = max(1, lanes-1)
	}
	helpers := 0
	for range min(lanes, int(task.slices)) {
		task.active.Add(1)
		if !s.pool.offer(task) {
			task.active.Add(-1)
			break
		}
		helpers++
	}
	if !detached || helpers == 0 {
		task.work(false) // nobody to leave it to, or the caller waits anyway
	} else {
		task.leave()
	}
	if !detached {
		fs.done.Wait()
	}
	return detached
}

// finish counts a large fan-out once its last slice is written and, for a
// detached one, frees what its publish held.
func (fs *fanoutState) finish() {
	task := &fs.task
	var r chunkResult
	r.written, r.slow, r.closing = task.res.written.Swap(0), task.res.slow.Swap(0), task.res.closing.Swap(0)
	for k := range r.byKind {
		r.byKind[k] = task.res.byKind[k].Swap(0)
	}
	s, n := task.srv, len(task.subs)
	task.subs, task.frames = nil, nil // keep no frames or subscribers alive
	s.countFanout(fs, &r, n)
	if fs.detached {
		sc, t := fs.sc, fs.topic
		fs.sc, fs.topic, fs.detached = nil, nil, false
		sc.release()
		t.Publishing.Unlock()
		fs.slow.cut()
		fs.async.resume()
	}
	fs.done.Done()
}

// countFanout counts a written fan-out to n subscribers in the metrics.
func (s *Server) countFanout(fs *fanoutState, res *chunkResult, n int) {
	m := int64(fs.messages)
	st := &s.stats
	st.Writes.Add(res.written)
	st.Deliveries.Add(res.written * m)
	st.DeliveredBytes.Add(res.written * int64(fs.payload))
	for k := range fs.z {
		if z := fs.z[k]; z.messages > 0 && res.byKind[k] > 0 {
			st.CompressedDeliveries.Add(res.byKind[k] * z.messages)
			st.CompressedWireBytes.Add(res.byKind[k] * z.wire)
		}
	}
	if n == 0 && !fs.elsewhere {
		st.dropped.add(dropNoSubscribers, m)
	}
	if res.slow > 0 {
		st.dropped.add(dropSlowConsumer, res.slow*m)
	}
	if res.closing > 0 {
		st.dropped.add(dropClosing, res.closing*m)
	}
	s.metrics.fanout.Observe(time.Since(fs.start).Seconds())
}

// writeChunk sends frames to each of subs. A subscriber whose backlog is
// full is marked slow and added to slow, for its writer to cut once it
// holds no lock; one marked before gets nothing more.
func (s *Server) writeChunk(subs []*client, frames *variants, slow *slowSubs) chunkResult {
	var r chunkResult
	for _, c := range subs {
		if c.slow.Load() {
			r.closing++ // being cut: its stream ends at the message it missed
			continue
		}
		switch err := c.conn.Send(frames[c.sub.kind]); {
		case err == nil:
			r.written++
			r.byKind[c.sub.kind]++
		case errors.Is(err, loop.ErrBacklogFull):
			r.slow++
			if c.markSlow() {
				slow.add(c)
			}
		default:
			r.closing++
		}
	}
	return r
}

// slowSubs holds the subscribers a fan-out marked slow, until its writer
// cuts them: the cut takes the subscriber's client.mu, which no goroutine
// may take while it holds a topic's Publishing mutex or a publisher's
// client.mu. Each subscriber is marked once, so it holds at most the
// topic's subscribers; it is empty but for the writes that found a full
// backlog.
type slowSubs struct {
	any  atomic.Bool // subs is not empty
	mu   sync.Mutex
	subs []*client
}

// add records c, marked slow; the pool's workers add concurrently.
func (l *slowSubs) add(c *client) {
	l.mu.Lock()
	l.subs = append(l.subs, c)
	l.any.Store(true)
	l.mu.Unlock()
}

// cut closes the subscribers added so far. The caller holds no lock of
// the hub's.
func (l *slowSubs) cut() {
	if !l.any.Load() {
		return
	}
	l.mu.Lock()
	subs := l.subs
	l.subs = nil
	l.any.Store(false)
	l.mu.Unlock()
	for _, c := range subs {
		c.cutSlow()
	}
}

// lanesFor is how many cores a fan-out may use: one per event loop.
func lanesFor(pollers int) int {
	if pollers <= 0 {
		return loop.DefaultPollers()
	}
	return pollers
}
