package server

import (
	"errors"
	"sync"
	"time"

	"github.com/wspubsub/wspubsub/loop"
)

// minChunk is the fewest subscribers worth handing to another core: below
// it the hand-off costs more than the writes it saves.
const minChunk = 512

// maxLanes bounds how many cores one fan-out is split over.
const maxLanes = 16

// fanoutJob is one chunk of a fan-out, written by a worker of the pool.
// A publisher owns its jobs and reuses them: its fan-outs are sequential.
type fanoutJob struct {
	srv    *Server
	subs   []*client
	frames *variants
	done   *sync.WaitGroup
	res    chunkResult
}

type chunkResult struct {
	written, slow, closing int64
	byKind                 [numKinds]int64 // written, by subscriber variant
}

// add sums another chunk's result into r.
func (r *chunkResult) add(o *chunkResult) {
	r.written += o.written
	r.slow += o.slow
	r.closing += o.closing
	for k := range r.byKind {
		r.byKind[k] += o.byKind[k]
	}
}

// fanoutPool is a fixed set of workers, one per core besides the
// publisher's own, with a bounded queue: a publisher whose chunks cannot be
// queued waits, it never makes the hub hold more.
type fanoutPool struct {
	lanes int
	jobs  chan *fanoutJob
	quit  chan struct{}
}

func newFanoutPool(lanes int) *fanoutPool {
	p := &fanoutPool{lanes: min(max(lanes, 1), maxLanes), jobs: make(chan *fanoutJob, 256), quit: make(chan struct{})}
	for range p.lanes - 1 {
		go func() {
			for {
				select {
				case j := <-p.jobs:
					j.run()
				case <-p.quit:
					return
				}
			}
		}()
	}
	return p
}

// stop ends the workers; chunks handed over later are written inline.
func (p *fanoutPool) stop() { close(p.quit) }

// submit hands j to a worker, or runs it here once the pool has stopped.
func (p *fanoutPool) submit(j *fanoutJob) {
	select {
	case p.jobs <- j:
	case <-p.quit:
		j.run()
	}
}

func (j *fanoutJob) run() {
	j.res = j.srv.writeChunk(j.subs, j.frames)
	j.done.Done()
}

// fanoutState is a publisher's reusable fan-out scratch.
type fanoutState struct {
	wg   sync.WaitGroup
	jobs [maxLanes]fanoutJob
	z    [numKinds]zcount // what each deflate variant of this publish has compressed
}

// fanout writes frames, the encodings of one read's messages (payload bytes
// in all), to every one of subs, each in its variant: one Send each, no
// allocation. When the frames also went to other hub nodes (elsewhere), a
// topic without local subscribers drops nothing. A large topic is split
// over the cores: the other chunks go to the pool's workers while the
// publisher's goroutine writes the first, and fanout returns when all are
// written, so each subscriber gets a topic's messages in order.
func (s *Server) fanout(fs *fanoutState, subs []*client, frames *variants, messages, payload int, elsewhere bool) {
	start := time.Now()
	lanes := min(s.pool.lanes, len(subs)/minChunk)
	var res chunkResult
	if lanes <= 1 {
		res = s.writeChunk(subs, frames)
	} else {
		n := len(subs)
		fs.wg.Add(lanes - 1)
		for i := 1; i < lanes; i++ {
			j := &fs.jobs[i]
			*j = fanoutJob{srv: s, subs: subs[i*n/lanes : (i+1)*n/lanes], frames: frames, done: &fs.wg}
			s.pool.submit(j)
		}
		res = s.writeChunk(subs[:n/lanes], frames)
		fs.wg.Wait()
		for i := 1; i < lanes; i++ {
			j := &fs.jobs[i]
			res.add(&j.res)
			*j = fanoutJob{} // keep no frames or subscribers alive
		}
	}
	m := int64(messages)
	st := &s.stats
	st.Writes.Add(res.written)
	st.Deliveries.Add(res.written * m)
	st.DeliveredBytes.Add(res.written * int64(payload))
	for k := range fs.z {
		if z := fs.z[k]; z.messages > 0 && res.byKind[k] > 0 {
			st.CompressedDeliveries.Add(res.byKind[k] * z.messages)
			st.CompressedWireBytes.Add(res.byKind[k] * z.wire)
		}
	}
	if len(subs) == 0 && !elsewhere {
		st.dropped.add(dropNoSubscribers, m)
	}
	if res.slow > 0 {
		st.dropped.add(dropSlowConsumer, res.slow*m)
	}
	if res.closing > 0 {
		st.dropped.add(dropClosing, res.closing*m)
	}
	s.metrics.fanout.Observe(time.Since(start).Seconds())
}

// writeChunk sends frames to each of subs and closes those whose backlog is
// full.
func (s *Server) writeChunk(subs []*client, frames *variants) chunkResult {
	var r chunkResult
	for _, sub := range subs {
		switch err := sub.conn.Send(frames[sub.kind]); {
		case err == nil:
			r.written++
			r.byKind[sub.kind]++
		case errors.Is(err, loop.ErrBacklogFull):
			r.slow++
			s.stats.SlowConsumers.Add(1)
			sub.cutSlow()
		default:
			r.closing++
		}
	}
	return r
}

// lanesFor is how many cores a fan-out may use: one per event loop.
func lanesFor(pollers int) int {
	if pollers <= 0 {
		return loop.DefaultPollers()
	}
	return pollers
}
