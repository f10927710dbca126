package scenario

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"

	"github.com/wspubsub/wspubsub/bench/target"
)

// NeighborOptions shape the neighbor scenario: SmallTopics topics of
// SmallSubs subscribers, each published SmallRate messages a second, are
// measured alone for Phase and then for Phase more while one topic of
// BigSubs subscribers gets BigRate messages a second beside them.
type NeighborOptions struct {
	SmallTopics, SmallSubs int
	SmallRate              float64
	BigSubs                int
	BigRate                float64
	Size                   int
	Phase                  time.Duration
	Timeout                time.Duration
}

// NeighborPhase is what the small topics' subscribers saw in one phase.
type NeighborPhase struct {
	Deliveries int64         `json:"deliveries"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`
}

// NeighborResult is one neighbor run against one hub.
type NeighborResult struct {
	Target      string        `json:"target"`
	Alone       NeighborPhase `json:"alone"`
	Beside      NeighborPhase `json:"beside"`
	BigDelivery int64         `json:"big_deliveries"` // deliveries of the big topic in the second phase
	BigExpected int64         `json:"big_expected"`   // its messages × its subscribers
	SmallLost   int64         `json:"small_lost"`     // small-topic deliveries missing at the end
	Errors      []string      `json:"errors,omitempty"`
}

// Ratio is the small topics' p99 beside the big topic over their p99 alone.
func (r *NeighborResult) Ratio() float64 {
	if r.Alone.P99 <= 0 {
		return 0
	}
	return float64(r.Beside.P99) / float64(r.Alone.P99)
}

// Message layout: phase (1 byte), send time (8 bytes, UnixNano), padding.
const neighborHeader = 9

func (o *NeighborOptions) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.SmallTopics, 100)
	def(&o.SmallSubs, 20)
	def(&o.BigSubs, 10000)
	def(&o.Size, 128)
	o.Size = max(o.Size, neighborHeader)
	if o.SmallRate <= 0 {
		o.SmallRate = 20
	}
	if o.BigRate <= 0 {
		o.BigRate = 4
	}
	if o.Phase <= 0 {
		o.Phase = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
}

// Neighbor runs the neighbor scenario against t: every client is a plain
// WebSocket client (gorilla), latency is the time from the publisher's
// write to the subscriber's read, both in this process.
func Neighbor(ctx context.Context, t *target.Target, o NeighborOptions) (*NeighborResult, error) {
	o.defaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res := &NeighborResult{Target: t.Name}
	base := "ws://" + t.Server.String()
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 4096}
	var conns []*websocket.Conn
	var cmu sync.Mutex
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func(path string) (*websocket.Conn, error) {
		c, _, err := d.DialContext(ctx, base+path, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		cmu.Lock()
		conns = append(conns, c)
		cmu.Unlock()
		return c, nil
	}
	pubPath := func(topic string) string {
		return "/ws/pub/" + url.PathEscape(t.Key) + "/" + t.Domain + "/" + topic
	}
	subPath := func(topic string) string { return "/ws/sub/" + t.Domain + "/" + topic }

	small := make([]*websocket.Conn, o.SmallTopics)
	for i := range small {
		c, err := dial(pubPath("small" + strconv.Itoa(i)))
		if err != nil {
			return res, err
		}
		small[i] = c
	}
	big, err := dial(pubPath("big"))
	if err != nil {
		return res, err
	}

	var hmu sync.Mutex
	hists := [3]*hdrhistogram.Histogram{nil, hdrhistogram.New(1, int64(time.Minute), 3), hdrhistogram.New(1, int64(time.Minute), 3)}
	var smallGot, bigGot atomic.Int64
	var wg sync.WaitGroup
	read := func(c *websocket.Conn, measured bool) {
		defer wg.Done()
		for {
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if !measured {
				bigGot.Add(1)
				continue
			}
			now := time.Now().UnixNano()
			if len(p) < neighborHeader || p[0] < 1 || p[0] > 2 {
				continue
			}
			smallGot.Add(1)
			lat := now - int64(binary.BigEndian.Uint64(p[1:]))
			hmu.Lock()
			hists[p[0]].RecordValue(max(lat, 1))
			hmu.Unlock()
		}
	}
	// Subscribers: the big topic's first, so that both phases have the
	// same connections and differ only in its traffic.
	subscribe := func(topic string, n int, measured bool) error {
		sem := make(chan struct{}, 64)
		errs := make(chan error, 1)
		var dwg sync.WaitGroup
		for range n {
			sem <- struct{}{}
			dwg.Add(1)
			go func() {
				defer func() { <-sem; dwg.Done() }()
				c, err := dial(subPath(topic))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				wg.Add(1)
				go read(c, measured)
			}()
		}
		dwg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	// The big topic's subscribers live in a process of their own: woken
	// by the thousand at each of its messages, here they would queue the
	// small topics' readers behind them in this process's scheduler, and
	// that wait is the client's, not the hub's.
	sink, err := startSink(ctx, base+subPath("big"), o.BigSubs, &bigGot)
	if err != nil {
		return res, err
	}
	defer sink.stop()
	for i := range o.SmallTopics {
		if err := subscribe("small"+strconv.Itoa(i), o.SmallSubs, true); err != nil {
			return res, err
		}
	}
	time.Sleep(500 * time.Millisecond)

	publish := func(ctx context.Context, c *websocket.Conn, phase byte, rate float64, offset time.Duration, sent *atomic.Int64) error {
		msg := make([]byte, o.Size)
		msg[0] = phase
		if err := sleepCtx(ctx, offset); err != nil {
			return nil
		}
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg[1:], uint64(time.Now().UnixNano()))
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				return err
			}
			sent.Add(1)
		}
	}
	var smallSent, bigSent atomic.Int64
	phase := func(n byte, withBig bool) error {
		pctx, pcancel := context.WithTimeout(ctx, o.Phase)
		defer pcancel()
		var pwg sync.WaitGroup
		errs := make(chan error, len(small)+1)
		period := time.Duration(float64(time.Second) / o.SmallRate)
		for i, c := range small {
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				errs <- publish(pctx, c, n, o.SmallRate, period*time.Duration(i)/time.Duration(len(small)), &smallSent)
			}()
		}
		if withBig {
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				errs <- publish(pctx, big, 0, o.BigRate, 0, &bigSent)
			}()
		}
		pwg.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		return errors.Join(all...)
	}
	if err := phase(1, false); err != nil {
		return res, err
	}
	if err := phase(2, true); err != nil {
		return res, err
	}
	// Let the last messages arrive.
	want, wantBig := smallSent.Load()*int64(o.SmallSubs), bigSent.Load()*int64(o.BigSubs)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && (smallGot.Load() < want || bigGot.Load() < wantBig); {
		time.Sleep(20 * time.Millisecond)
	}
	res.SmallLost = want - smallGot.Load()
	res.BigExpected = wantBig
	res.BigDelivery = bigGot.Load()
	hmu.Lock()
	for i, p := range []*NeighborPhase{&res.Alone, &res.Beside} {
		h := hists[i+1]
		p.Deliveries = h.TotalCount()
		p.P50 = time.Duration(h.ValueAtQuantile(50))
		p.P99 = time.Duration(h.ValueAtQuantile(99))
		p.Max = time.Duration(h.Max())
	}
	hmu.Unlock()
	if res.BigDelivery < res.BigExpected {
		res.Errors = append(res.Errors, fmt.Sprintf("%d big-topic deliveries lost", res.BigExpected-res.BigDelivery))
	}
	if res.SmallLost > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d small-topic deliveries lost", res.SmallLost))
	}
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type sinkProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// startSink starts this binary as the neighbor sink (RunHelper) holding n
// subscribers of wsURL; got follows the deliveries it reports.
func startSink(ctx context.Context, wsURL string, n int, got *atomic.Int64) (*sinkProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, wsURL, strconv.Itoa(n))
	cmd.Env = append(os.Environ(), target.RoleEnv+"=neighbor-sink")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sp := &sinkProc{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(sp.done)
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			line := sc.Text()
			if first {
				first = false
				if line != "ready" {
					ready <- errors.New("neighbor-sink: " + line)
					return
				}
				ready <- nil
				continue
			}
			if v, err := strconv.ParseInt(line, 10, 64); err == nil {
				got.Store(v)
			}
		}
		ready <- errors.New("neighbor-sink exited before its subscribers were ready")
	}()
	if err := <-ready; err != nil {
		sp.stop()
		return nil, err
	}
	return sp, nil
}

func (sp *sinkProc) stop() {
	sp.stdin.Close()
	<-sp.done
	sp.cmd.Wait()
}

// NeighborSink is the neighbor scenario's helper process (the bench binary
// with args URL N, started by RunHelper): it holds N subscribers of URL,
// prints "ready" once all are in, then their deliveries so far every 50 ms,
// until its stdin closes.
func NeighborSink(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: neighbor-sink URL N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 4096}
	var got atomic.Int64
	sem := make(chan struct{}, 64)
	var mu sync.Mutex
	var conns []*websocket.Conn
	var firstErr error
	var wg sync.WaitGroup
	for range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, _, err := d.Dial(args[0], nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmpErr(firstErr, err)
				return
			}
			conns = append(conns, c)
			go func() {
				for {
					if _, _, err := c.NextReader(); err != nil {
						return
					}
					got.Add(1)
				}
			}()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Println("cannot subscribe:", firstErr)
		return firstErr
	}
	fmt.Println("ready")
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			fmt.Println(got.Load())
			for _, c := range conns {
				c.Close()
			}
			return nil
		case <-tick.C:
			fmt.Println(got.Load())
		}
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
