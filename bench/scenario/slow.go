package scenario

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/bench/frame"
	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/scrape"
	"github.com/wspubsub/wspubsub/bench/target"
)

// The slow-consumer scenario: one topic, SubsPerTopic fast subscribers on
// the epoll clients and one more subscriber on a plain blocking socket with
// a small SO_RCVBUF. A publisher sends at a steady Rate. At Stall the slow
// one stops reading; the hub must cut it off once its backlog passes
// --max-backlog (close 4000), while the fast ones lose nothing and their
// latency does not jump, and the hub's memory must come back. Once the
// hub's /metrics shows the cut-off, the slow one reads again, to count what
// was queued for it and to see its close frame.
//
// Windows: "before" is the Window before the stall; "after" runs from the
// stall to Window after the cut-off, so it holds the whole time the slow
// one fell behind, the cut-off and what follows.

// slowReader is the subscriber that stops reading. Its goroutine reads
// frames until told to stall, then waits until told to resume, then reads
// to the close frame.
type slowReader struct {
	conn   net.Conn
	stall  chan struct{}
	resume chan struct{}
	done   chan struct{}

	stalledAt atomic.Int64 // Unix ns when it stopped reading
	// Written by the goroutine, read after done.
	before, after int64 // bytes read before the stall and after resuming
	lastSeq       uint64
	code          int
	err           error
}

func dialSlow(ctx context.Context, server, path string, rcvbuf int) (*slowReader, error) {
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		})
		return errors.Join(err, serr)
	}}
	nc, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, fmt.Errorf("cannot connect the slow subscriber: %w", err)
	}
	key := frame.NewKey([16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(frame.AppendRequest(nil, server, path, key)); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot send the slow subscriber's handshake: %w", err)
	}
	// Read the response head byte by byte, so no frame is read with it.
	var head []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(nc, b[:]); err != nil {
			nc.Close()
			return nil, fmt.Errorf("cannot read the slow subscriber's handshake: %w", err)
		}
		head = append(head, b[0])
		n, err := frame.ParseResponse(head, key)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("slow subscriber: %w", err)
		}
		if n > 0 {
			break
		}
	}
	nc.SetDeadline(time.Time{})
	s := &slowReader{conn: nc, stall: make(chan struct{}), resume: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s, nil
}

func (s *slowReader) run() {
	defer close(s.done)
	r := bufio.NewReaderSize(s.conn, 4096)
	stalled := false
	for {
		if !stalled {
			select {
			case <-s.stall:
				stalled = true
				s.stalledAt.Store(time.Now().UnixNano())
				<-s.resume
				s.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			default:
			}
		}
		op, p, n, err := readServerFrame(r)
		if err != nil {
			s.err = err
			return
		}
		if stalled {
			s.after += int64(n)
		} else {
			s.before += int64(n)
		}
		switch op {
		case frame.OpBinary:
			if _, seq, _, err := payload.Parse(p, 0); err == nil {
				s.lastSeq = seq
			}
		case frame.OpClose:
			s.code = frame.CloseCode(p)
			s.conn.SetWriteDeadline(time.Now().Add(time.Second))
			s.conn.Write(frame.AppendClientFrame(nil, frame.OpClose, p[:min(2, len(p))], 0x12345678))
			io.Copy(io.Discard, r) // to the hub's end of the connection
			return
		}
	}
}

// readServerFrame reads one final, unmasked frame and returns its opcode,
// payload and size on the wire.
func readServerFrame(r *bufio.Reader) (byte, []byte, int, error) {
	var hd [10]byte
	if _, err := io.ReadFull(r, hd[:2]); err != nil {
		return 0, nil, 0, err
	}
	n, hl := int(hd[1]&0x7f), 2
	switch n {
	case 126:
		if _, err := io.ReadFull(r, hd[2:4]); err != nil {
			return 0, nil, 0, err
		}
		n, hl = int(binary.BigEndian.Uint16(hd[2:])), 4
	case 127:
		if _, err := io.ReadFull(r, hd[2:10]); err != nil {
			return 0, nil, 0, err
		}
		n, hl = int(binary.BigEndian.Uint64(hd[2:])), 10
	}
	if hd[0]&0x80 == 0 || hd[0]&0x70 != 0 || hd[1]&0x80 != 0 || n > 64<<20 {
		return 0, nil, 0, fmt.Errorf("slow subscriber: bad frame header % x", hd[:2])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, 0, err
	}
	return hd[0] & 0x0f, p, hl + n, nil
}

// kernelBuffer is the most the kernel may hold for a subscriber on top of
// the hub's backlog: the hub's send buffer (tcp_wmem's maximum, the
// autotuning limit) and the client's receive buffer (SO_RCVBUF, doubled
// by the kernel).
func kernelBuffer(rcvbuf int) int64 {
	wmem := int64(4 << 20)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if v, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				wmem = v
			}
		}
	}
	return wmem + 2*int64(rcvbuf)
}

// sampler scrapes the hub's /metrics every period until stopped, and keeps
// every scrape with its time.
type sampler struct {
	scr   *scrape.Scraper
	mu    sync.Mutex
	times []int64
	ms    []scrape.Metrics
	err   error
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func startSampler(ctx context.Context, scr *scrape.Scraper, period time.Duration) *sampler {
	s := &sampler{scr: scr, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			m, err := scr.Scrape(ctx)
			s.mu.Lock()
			if err != nil {
				s.err = err
			} else {
				s.times = append(s.times, time.Now().UnixNano())
				s.ms = append(s.ms, m)
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// halt stops the scrapes; it may be called more than once.
func (s *sampler) halt() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// latest returns the last scrape and its time.
func (s *sampler) latest() (int64, scrape.Metrics) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ms) == 0 {
		return 0, nil
	}
	return s.times[len(s.times)-1], s.ms[len(s.ms)-1]
}

// between returns the values of f over the scrapes taken in [from, to).
func (s *sampler) between(from, to int64, f func(scrape.Metrics) float64) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []float64
	for i, t := range s.times {
		if t >= from && t < to {
			out = append(out, f(s.ms[i]))
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	return v[len(v)/2]
}

func rss(m scrape.Metrics) float64 { return m.Value("process_resident_memory_bytes") }

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func runSlow(ctx context.Context, t *target.Target, o Options, r *result.Result) error {
	scr := scrape.New(o.MetricsURL)
	m0, err := scr.Scrape(ctx)
	if err != nil {
		return err
	}
	if _, ok := m0.Get("wspubsub_disconnects_total", "reason", "slow_consumer"); !ok {
		return fmt.Errorf("%s has no wspubsub_disconnects_total{reason=\"slow_consumer\"}: the slow-consumer scenario needs our hub", o.MetricsURL)
	}
	interval := int64(1e9 / o.Rate)
	maxRun := o.Stall + o.CutoffTimeout + o.Window + 5*time.Second
	count := int(int64(maxRun) / interval)
	setup := Setup{
		Server: t.Server.String(), Size: o.Size, Count: count, Workers: o.Workers,
		DialConcurrency: o.DialConcurrency, HandshakeMs: o.HandshakeTimeout.Milliseconds(),
		CoalesceUs: o.Coalesce.Microseconds(),
	}
	g, err := NewGroup(setup)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.ConnectPublishers(ctx, t.Domain, t.Key, 1, o.Sources); err != nil {
		return err
	}
	rep, err := g.Subscribe(ctx, SubscribePlan{Domain: t.Domain, Topics: 1, N: o.SubsPerTopic, Sources: o.Sources})
	if err != nil {
		return err
	}
	r.Subscribers, r.DialFailed, r.DialErrors = rep.Opened, rep.Failed, rep.Errors
	if rep.Opened == 0 {
		return fmt.Errorf("cannot connect any of %d subscribers (%s)", o.SubsPerTopic, result.FormatCounts(rep.Errors))
	}
	r.ConnectSeconds = float64(rep.LastOpen-rep.FirstDial) / 1e9
	if r.ConnectSeconds > 0 {
		r.ConnectRate = float64(rep.Opened) / r.ConnectSeconds
	}
	slow, err := dialSlow(ctx, t.Server.String(), "/ws/sub/"+t.Domain+"/"+topicName(0), o.SlowRcvBuf)
	if err != nil {
		return err
	}
	defer slow.conn.Close()
	sl := &result.SlowConsumer{
		FastSubscribers: rep.Opened, MaxBacklog: o.MaxBacklog, KernelBuffer: kernelBuffer(o.SlowRcvBuf),
		WindowSeconds: o.Window.Seconds(), MaxP99JumpUs: float64(o.MaxP99Jump.Microseconds()), Tolerance: o.Tolerance,
	}
	r.Slow = sl
	if err := sleep(ctx, o.Settle); err != nil {
		return err
	}
	if r.ServerMeasured {
		r.ServerRSSBefore, _ = procfs.RSS(t.PID)
	}
	subsBefore := float64(rep.Opened + 1)
	mBefore, err := scr.Scrape(ctx)
	if err != nil {
		return err
	}
	if got := mBefore.Value("wspubsub_connections", "role", "subscriber"); got != subsBefore {
		return fmt.Errorf("the hub has %v subscribers, want %v: is anything else using it?", got, subsBefore)
	}

	samples := startSampler(ctx, scr, 250*time.Millisecond)
	defer samples.halt()
	start := time.Now().Add(50 * time.Millisecond).UnixNano()
	if err := g.Mark(ctx, start, int64(100*time.Millisecond)); err != nil {
		return err
	}
	cpu := startCPU(r, t)
	if err := g.StartPublishing(ctx, start, interval, 1); err != nil {
		return err
	}
	if err := sleep(ctx, time.Until(time.Unix(0, start).Add(o.Stall))); err != nil {
		return err
	}
	close(slow.stall)
	if !waitFor(ctx, 5*time.Second, func() bool { return slow.stalledAt.Load() != 0 }) {
		return errors.New("the slow subscriber did not stop reading")
	}
	stalled := slow.stalledAt.Load()
	sl.StallSeconds = float64(stalled-start) / 1e9

	// The cut-off: the hub takes the subscriber out of its topic at once.
	var cut int64
	sl.CutOff = waitFor(ctx, o.CutoffTimeout, func() bool {
		at, m := samples.latest()
		if at > stalled && m.Value("wspubsub_connections", "role", "subscriber") < subsBefore {
			cut = at
			return true
		}
		return false
	})
	close(slow.resume)
	if !sl.CutOff {
		cut = time.Now().UnixNano()
	}
	sl.CutoffSeconds = float64(cut-stalled) / 1e9
	if err := sleep(ctx, time.Until(time.Unix(0, cut).Add(o.Window))); err != nil {
		return err
	}
	end := time.Now().UnixNano()
	n, err := g.StopPublishing(ctx)
	if err != nil {
		return err
	}
	want := int64(n) * int64(rep.Opened)
	waitFor(ctx, o.DrainTimeout, func() bool { return g.Progress().Received >= want })
	cpu.stop()
	select {
	case <-slow.done:
	case <-time.After(30 * time.Second):
		return errors.New("the slow subscriber did not see the end of its connection within 30 s of resuming")
	}
	samples.halt()

	sl.QueuedBytes, sl.CloseCode = slow.after, slow.code
	mEnd, err := scr.Scrape(ctx)
	if err != nil {
		return err
	}
	sl.Disconnects = mEnd.Value("wspubsub_disconnects_total", "reason", "slow_consumer") - mBefore.Value("wspubsub_disconnects_total", "reason", "slow_consumer")
	sl.Dropped = mEnd.Value("wspubsub_dropped_messages_total", "reason", "slow_consumer") - mBefore.Value("wspubsub_dropped_messages_total", "reason", "slow_consumer")
	w := int64(o.Window)
	// Baseline: the median over the window before the stall; peak: from
	// the stall to the end; after: the last reading before the end.
	memory := func(f func(scrape.Metrics) float64) (base, peak, after float64) {
		base = median(samples.between(stalled-w, stalled, f))
		for _, v := range samples.between(stalled, end, f) {
			peak = max(peak, v)
		}
		if a := samples.between(end-int64(time.Second), end+1, f); len(a) > 0 {
			after = a[len(a)-1]
		}
		return base, peak, after
	}
	sl.RSSBaseline, sl.RSSPeak, sl.RSSAfter = memory(rss)
	sl.HeapBaseline, sl.HeapPeak, sl.HeapAfter = memory(func(m scrape.Metrics) float64 { return m.Value("go_memstats_heap_inuse_bytes") })

	part, err := g.Finish(ctx, false)
	if err != nil {
		return err
	}
	sl.Before = result.WindowLatency(&part, stalled-w, stalled)
	sl.After = result.WindowLatency(&part, stalled, end)
	r.Published = int64(n) * int64(r.Publishers)
	fillFlow(r, &part, start)
	r.Params.Count = int(n)
	cpu.fill(r, part.Delivered)
	if slow.err != nil && sl.CloseCode == 0 {
		r.Errors = append(r.Errors, fmt.Sprintf("slow subscriber: %v", slow.err))
	}
	return nil
}

// cpuMeter measures the CPU time of the hub and of this process over a
// run's measured phase, and the hub's memory at its end.
type cpuMeter struct {
	r             *result.Result
	t             *target.Target
	stat0, sched0 time.Duration
	stat1, sched1 time.Duration
	self0, self1  time.Duration
}

func startCPU(r *result.Result, t *target.Target) *cpuMeter {
	m := &cpuMeter{r: r, t: t, self0: procfs.SelfCPU()}
	if r.ServerMeasured {
		m.sched0, _ = procfs.SchedCPU(t.PID)
		m.stat0, _ = procfs.CPU(t.PID)
	}
	return m
}

func (m *cpuMeter) stop() {
	m.self1 = procfs.SelfCPU()
	if m.r.ServerMeasured {
		m.sched1, _ = procfs.SchedCPU(m.t.PID)
		m.stat1, _ = procfs.CPU(m.t.PID)
	}
}

// fill writes the figures into r; delivered is the deliveries of the
// measured phase.
func (m *cpuMeter) fill(r *result.Result, delivered int64) {
	if r.ServerMeasured {
		r.ServerRSSAfter, _ = procfs.RSS(m.t.PID)
		r.ServerPeakRSS, _ = procfs.PeakRSS(m.t.PID)
		r.ServerCPUSeconds = (m.stat1 - m.stat0).Seconds()
		r.ServerSchedCPUSeconds = (m.sched1 - m.sched0).Seconds()
		if r.Subscribers > 0 {
			r.RSSPerConn = float64(r.ServerRSSAfter-r.ServerRSSBefore) / float64(r.Subscribers)
		}
	}
	r.ClientCPUSeconds = (m.self1 - m.self0).Seconds()
	if delivered > 0 {
		r.ServerCPUPerDeliveryUs = r.ServerCPUSeconds * 1e6 / float64(delivered)
		r.ServerSchedCPUPerDeliveryUs = r.ServerSchedCPUSeconds * 1e6 / float64(delivered)
		r.ClientCPUPerDeliveryUs = r.ClientCPUSeconds * 1e6 / float64(delivered)
	}
}

// fillFlow copies what the subscribers measured into r: deliveries,
// integrity, throughput since start, latency and its series.
func fillFlow(r *result.Result, part *result.Part, start int64) {
	r.Expected = part.Expected
	r.Delivered = part.Delivered
	r.Lost = part.Lost
	r.Duplicates = part.Duplicates
	r.OutOfOrder = part.OutOfOrder
	r.Corrupt = part.Corrupt
	r.Dropped = part.Dropped
	r.CloseCodes = part.CloseCodes
	if part.LastRecv > start {
		r.PublishSeconds = float64(part.LastRecv-start) / 1e9
		r.DeliveriesPerSec = float64(part.Delivered) / r.PublishSeconds
		r.MBPerSec = float64(part.Bytes) / r.PublishSeconds / 1e6
	}
	r.LatencyHist = part.Latency
	r.Latency = result.Summarize(part.Latency)
	r.Series = result.Points(part)
	if part.Reads > 0 {
		r.MessagesPerRead = float64(part.Delivered) / float64(part.Reads)
	}
}
