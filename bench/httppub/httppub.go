// Package httppub measures a hub's HTTP publish (POST /api/pub/{Domain}/{Topic}):
// publishes a second, their latency from request to answer, and the
// server's CPU per publish, over Conns keep-alive connections, while
// WebSocket subscribers check that every published message arrives.
//
// Each connection either uses Go's HTTP client, one request at a time as
// most backends would (Depth 1), or writes raw HTTP/1.1 with up to Depth
// requests in flight (pipelining), which measures the hub rather than the
// round trip.
//
// Concurrency contract: Run is called from one goroutine and owns the
// goroutines it starts (two per pipelined connection, one per Go client
// connection, one per subscriber), all ended before it returns.
package httppub

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
)

// Options configure a run; zero fields take the defaults documented here.
type Options struct {
	Server netip.AddrPort // the hub
	Domain string         // default "bench"
	Key    string         // a key of Domain
	// Conns is the number of keep-alive connections publishing at once.
	// Default 1.
	Conns int
	// Depth is the number of requests each connection keeps in flight: 1
	// uses Go's HTTP client, more pipeline raw HTTP/1.1. Default 1.
	Depth int
	// Size is the message size in bytes. Default 128.
	Size int
	// Topics spreads the connections over this many topics (connection i
	// publishes to topic i mod Topics). Default 1.
	Topics int
	// Subs is the number of WebSocket subscribers per topic that check
	// delivery. Default 1; negative: none.
	Subs int
	// Duration is how long the connections publish. Default 5s.
	Duration time.Duration
	// PIDs are the hub's processes, to measure its CPU; may be empty.
	PIDs []int
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if o.Domain == "" {
		o.Domain = "bench"
	}
	def(&o.Conns, 1)
	def(&o.Depth, 1)
	def(&o.Size, 128)
	def(&o.Topics, 1)
	def(&o.Subs, 1)
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
}

// Result is what a run measured.
type Result struct {
	Conns, Depth, Topics, Size int
	Client                     string // "net/http" or "pipelined raw TCP"
	Published                  int64  // answered 200
	Refused                    int64  // answered otherwise
	Elapsed                    time.Duration
	Latency                    *result.Hist // request written to answer read, ns
	ServerCPU                  time.Duration
	ClientCPU                  time.Duration // this process's, subscribers included
	Subscribers                int
	Delivered                  int64 // messages the subscribers got, all together
	Lost                       int64 // messages published during the run that some subscriber did not get
	Errors                     []string
}

// PerSecond is the rate of published messages.
func (r *Result) PerSecond() float64 { return float64(r.Published) / r.Elapsed.Seconds() }

// Pass reports whether every request was published and delivered.
func (r *Result) Pass() bool { return r.Refused == 0 && r.Lost == 0 && len(r.Errors) == 0 }

// Run publishes for o.Duration and returns what it measured.
func Run(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	if o.Size < 0 || o.Conns < 0 || o.Depth < 0 || o.Topics < 0 {
		return nil, errors.New("cannot run HTTP publishes with negative counts or sizes")
	}
	r := &Result{Conns: o.Conns, Depth: o.Depth, Topics: o.Topics, Size: o.Size, Latency: result.NewLatency(), Client: "net/http"}
	if o.Depth > 1 {
		r.Client = "pipelined raw TCP"
	}
	addr := o.Server.String()
	topic := func(i int) string { return "h" + strconv.Itoa(i%o.Topics) }
	body := bytes.Repeat([]byte{'x'}, o.Size)

	// One publish per topic starts it, so that the subscribers can join.
	warm := &http.Client{Timeout: 10 * time.Second}
	for i := range o.Topics {
		if err := publishOnce(ctx, warm, addr, o.Domain, topic(i), o.Key, body); err != nil {
			return nil, err
		}
	}
	warm.CloseIdleConnections()
	var subs []*subscriber
	defer func() {
		for _, s := range subs {
			s.conn.Close()
			<-s.done
		}
	}()
	for i := range o.Topics * max(o.Subs, 0) {
		s, err := subscribe(ctx, addr, o.Domain, topic(i%o.Topics))
		if err != nil {
			return nil, err
		}
		s.topic = i % o.Topics
		subs = append(subs, s)
	}
	r.Subscribers = len(subs)

	cpu0, self0 := serverCPU(o.PIDs), procfs.SelfCPU()
	start := time.Now()
	stop := start.Add(o.Duration)
	perTopic := make([]atomic.Int64, o.Topics)
	conns := make([]*connResult, o.Conns)
	var wg sync.WaitGroup
	transport := &http.Transport{MaxConnsPerHost: o.Conns, MaxIdleConnsPerHost: o.Conns}
	defer transport.CloseIdleConnections()
	for i := range o.Conns {
		cr := &connResult{lat: result.NewLatency()}
		conns[i] = cr
		wg.Add(1)
		go func() {
			defer wg.Done()
			if o.Depth > 1 {
				cr.err = pipelined(ctx, addr, o.Domain, topic(i), o.Key, body, o.Depth, stop, cr)
			} else {
				cr.err = viaClient(ctx, transport, addr, o.Domain, topic(i), o.Key, body, stop, cr)
			}
			perTopic[i%o.Topics].Add(cr.published)
		}()
	}
	wg.Wait()
	r.Elapsed = time.Since(start)
	r.ServerCPU, r.ClientCPU = serverCPU(o.PIDs)-cpu0, procfs.SelfCPU()-self0
	for _, cr := range conns {
		r.Published += cr.published
		r.Refused += cr.refused
		r.Latency.Merge(cr.lat)
		if cr.err != nil {
			r.Errors = append(r.Errors, cr.err.Error())
		}
	}
	// Every subscriber must get every message published to its topic.
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range subs {
		want := perTopic[s.topic].Load()
		for s.got.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		got := s.got.Load()
		r.Delivered += got
		r.Lost = max(r.Lost, want-got)
	}
	return r, ctx.Err()
}

// connResult is one connection's tally.
type connResult struct {
	published, refused int64
	lat                *result.Hist
	err                error
}

func request(domain, topic, key string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST /api/pub/%s/%s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", domain, topic, key, len(body))
	b.Write(body)
	return b.Bytes()
}

func publishOnce(ctx context.Context, c *http.Client, addr, domain, topic, key string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/api/pub/"+domain+"/"+topic, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("cannot publish over HTTP: %w", err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cannot publish over HTTP: %s %q", resp.Status, bytes.TrimSpace(text))
	}
	return nil
}

// viaClient publishes one request at a time with Go's HTTP client until
// stop.
func viaClient(ctx context.Context, tr *http.Transport, addr, domain, topic, key string, body []byte, stop time.Time, cr *connResult) error {
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + addr + "/api/pub/" + domain + "/" + topic
	rd := bytes.NewReader(body)
	for time.Now().Before(stop) && ctx.Err() == nil {
		rd.Reset(body)
		req, err := http.NewRequestWithContext(ctx, "POST", url, rd)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/octet-stream")
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("HTTP publish: %w", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cr.lat.Record(int64(time.Since(t0)))
		if resp.StatusCode == http.StatusOK {
			cr.published++
		} else {
			cr.refused++
		}
	}
	return nil
}

// pipelined publishes over one raw TCP connection with up to depth
// requests in flight until stop, then reads the answers still due.
func pipelined(ctx context.Context, addr, domain, topic, key string, body []byte, depth int, stop time.Time, cr *connResult) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot connect: %w", err)
	}
	defer nc.Close()
	one := request(domain, topic, key, body)
	slots := make(chan struct{}, depth)
	sent := make(chan int64, depth) // send times, in order
	done := make(chan error, 1)
	go func() { done <- readAnswers(nc, slots, sent, cr) }()
	batch := make([]byte, 0, depth*len(one))
	for time.Now().Before(stop) && ctx.Err() == nil {
		// Wait for one free slot, then take every free one: one write
		// carries them all.
		select {
		case slots <- struct{}{}:
		case err := <-done:
			return err
		}
		n := 1
		for n < depth {
			select {
			case slots <- struct{}{}:
				n++
				continue
			default:
			}
			break
		}
		batch = batch[:0]
		now := time.Now().UnixNano()
		for range n {
			batch = append(batch, one...)
			sent <- now
		}
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(batch); err != nil {
			return fmt.Errorf("cannot write requests: %w", err)
		}
	}
	// Wait for the answers due: fill every slot.
	for range depth {
		select {
		case slots <- struct{}{}:
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("answers still due 10s after the end")
		}
	}
	nc.Close()
	<-done
	return nil
}

// readAnswers reads the hub's answers, in order, freeing a slot for each.
func readAnswers(nc net.Conn, slots chan struct{}, sent chan int64, cr *connResult) error {
	br := bufio.NewReaderSize(nc, 64<<10)
	for {
		nc.SetReadDeadline(time.Now().Add(15 * time.Second))
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("cannot read an answer: %w", err)
		}
		ok := bytes.HasPrefix(line, []byte("HTTP/1.1 200 "))
		length := -1
		for {
			h, err := br.ReadSlice('\n')
			if err != nil {
				return fmt.Errorf("cannot read an answer: %w", err)
			}
			if len(h) <= 2 {
				break
			}
			if name, value, found := bytes.Cut(h, []byte(":")); found && bytes.EqualFold(name, []byte("content-length")) {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(value)))
			}
		}
		if length < 0 {
			return fmt.Errorf("an answer without Content-Length: %q", line)
		}
		if _, err := br.Discard(length); err != nil {
			return fmt.Errorf("cannot read an answer: %w", err)
		}
		cr.lat.Record(time.Now().UnixNano() - <-sent)
		if ok {
			cr.published++
		} else {
			cr.refused++
		}
		<-slots
	}
}

// subscriber counts the messages of one topic.
type subscriber struct {
	conn  *websocket.Conn
	topic int
	got   atomic.Int64
	done  chan struct{}
}

func subscribe(ctx context.Context, addr, domain, topic string) (*subscriber, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, _, err := d.DialContext(ctx, "ws://"+addr+"/ws/sub/"+domain+"/"+topic, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot subscribe: %w", err)
	}
	s := &subscriber{conn: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
			s.got.Add(1)
		}
	}()
	return s, nil
}

func serverCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		if d, err := procfs.CPU(pid); err == nil {
			total += d
		}
	}
	return total
}

// Print writes r as a few lines of text.
func Print(w io.Writer, r *Result) {
	q := func(p float64) string {
		return time.Duration(r.Latency.H.ValueAtQuantile(p)).Round(time.Microsecond).String()
	}
	fmt.Fprintf(w, "%d connection(s), %s, %d in flight each, %d topic(s), %d B messages, %.1fs\n",
		r.Conns, r.Client, r.Depth, r.Topics, r.Size, r.Elapsed.Seconds())
	fmt.Fprintf(w, "  published %d (%.0f/s), refused %d; latency p50 %s, p99 %s, p99.9 %s\n",
		r.Published, r.PerSecond(), r.Refused, q(50), q(99), q(99.9))
	if r.ServerCPU > 0 && r.Published > 0 {
		fmt.Fprintf(w, "  server CPU %.2fs (%.2f cores): %.1f µs per publish; the bench's own CPU %.2f cores\n", r.ServerCPU.Seconds(),
			r.ServerCPU.Seconds()/r.Elapsed.Seconds(), float64(r.ServerCPU.Microseconds())/float64(r.Published), r.ClientCPU.Seconds()/r.Elapsed.Seconds())
	}
	if r.Subscribers > 0 {
		fmt.Fprintf(w, "  %d subscriber(s) got %d messages; lost %d\n", r.Subscribers, r.Delivered, r.Lost)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}
