package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// benchHub starts a hub with a started topic bench/t and n raw TCP
// subscribers that read and discard everything into a fixed buffer.
func benchHub(b *testing.B, n int) (*Server, *topics.Topic[*client]) {
	return benchHubWith(b, n, 100, "")
}

// benchHubWith is benchHub with history of historySize messages (negative:
// off) and subscribers that offer the given subprotocol.
func benchHubWith(b *testing.B, n, historySize int, protocol string) (*Server, *topics.Topic[*client]) {
	b.Helper()
	store, err := filestore.Open(filepath.Join(b.TempDir(), "keys.json"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := Start(Config{Listen: "127.0.0.1:0", Keys: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxBacklog: 64 << 20,
		HistorySize: historySize, HistoryBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	k := topics.Key{Domain: "bench", Topic: "t"}
	t, err := s.topics.AddPublisher(k)
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		proto := ""
		if protocol != "" {
			proto = "Sec-WebSocket-Protocol: " + protocol + "\r\n"
		}
		fmt.Fprintf(c, "GET /ws/sub/bench/t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", proto)
		br := bufio.NewReaderSize(c, 64<<10)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			b.Fatalf("subscriber handshake: %v %v", resp, err)
		}
		go func() {
			buf := make([]byte, 64<<10)
			for {
				if _, err := br.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	for t.Len() != n {
		time.Sleep(time.Millisecond)
	}
	return s, t
}

// benchmarkFanout measures one fan-out of a run of frames to n subscribers:
// allocs/op must be 0 whatever n is.
func benchmarkFanout(b *testing.B, n, msgs, size int) {
	s, t := benchHub(b, n)
	var frames []byte
	for range msgs {
		frames = ws.AppendFrame(frames, ws.OpBinary, make([]byte, size))
	}
	subs := t.Subscribers()
	var fs fanoutState
	v := variants{kindPlain: frames}
	b.SetBytes(int64(len(frames) * n))
	b.ReportAllocs()
	for b.Loop() {
		s.fanout(&fs, nil, nil, subs, &v, msgs, msgs*size, false)
		fs.slow.cut()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n*msgs), "ns/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/write")
}

func BenchmarkFanout_1Sub(b *testing.B)           { benchmarkFanout(b, 1, 1, 128) }
func BenchmarkFanout_100Subs(b *testing.B)        { benchmarkFanout(b, 100, 1, 128) }
func BenchmarkFanout_1kSubs(b *testing.B)         { benchmarkFanout(b, 1000, 1, 128) }
func BenchmarkFanout_1kSubs_Burst50(b *testing.B) { benchmarkFanout(b, 1000, 50, 128) }

// BenchmarkPublishRead measures the whole path of one publisher read: parse
// and unmask 50 client frames, encode them once, write them to 100
// subscribers.
func BenchmarkPublishRead(b *testing.B) {
	s, t := benchHub(b, 100)
	c := &client{srv: s, topic: t, state: statePublisher, rd: ws.Reader{MaxMessage: 1 << 20}, pub: new(publisher)}
	var read []byte
	for range 50 {
		read = append(read, 0x82, 0x80|126, 0, 128, 1, 2, 3, 4)
		read = append(read, make([]byte, 128)...)
	}
	buf := make([]byte, len(read))
	t.Subscribers()
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, read)
		c.publish(buf)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100*50), "ns/delivery")
}

// benchmarkPublish measures the publish path as a publisher's read takes
// it: positions, history (historySize messages; negative: off), the
// variants the subscribers need (protocol "wspubsub.meta" or plain) and the
// fan-out of a burst of msgs messages to n subscribers. Allocations per op
// are the history's copy of each message, never one per delivery.
func benchmarkPublish(b *testing.B, n, msgs, size, historySize int, protocol string) {
	s, t := benchHubWith(b, n, historySize, protocol)
	var bt batch
	for range msgs {
		bt.starts = append(bt.starts, len(bt.frames))
		bt.frames = ws.AppendFrame(bt.frames, ws.OpBinary, make([]byte, size))
	}
	bt.payload = msgs * size
	t.Subscribers()
	sc := new(scratch)
	b.SetBytes(int64(len(bt.frames) * n))
	b.ReportAllocs()
	for b.Loop() {
		s.publish(sc, t, &bt, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n*msgs), "ns/delivery")
}

// Burst fan-out with history on (the default 100 messages) and off, same
// run: the bound is within 10% of each other.
func BenchmarkPublish_1kSubs_Burst50_HistoryOff(b *testing.B) {
	benchmarkPublish(b, 1000, 50, 128, -1, "")
}
func BenchmarkPublish_1kSubs_Burst50_HistoryOn(b *testing.B) {
	benchmarkPublish(b, 1000, 50, 128, 100, "")
}
func BenchmarkPublish_1kSubs_Burst50_Meta(b *testing.B) {
	benchmarkPublish(b, 1000, 50, 128, 100, metaProtocol)
}

// BenchmarkPublishRead_2kSubs_Detached is BenchmarkPublishRead on a topic
// large enough for the fan-out to be handed to the pool (asyncMin) and left
// to it: the publisher's next read waits for the last one, as the paused
// reads make it. 0 allocations per delivery still.
func BenchmarkPublishRead_2kSubs_Detached(b *testing.B) {
	const n = 2 * asyncMin
	s, t := benchHub(b, n)
	c := &client{srv: s, topic: t, state: statePublisher, rd: ws.Reader{MaxMessage: 1 << 20}, pub: new(publisher)}
	paused := 0
	c.pub.sc.fan.async = &asyncHooks{pause: func() { paused++ }, resume: func() {}}
	var read []byte
	for range 50 {
		read = append(read, 0x82, 0x80|126, 0, 128, 1, 2, 3, 4)
		read = append(read, make([]byte, 128)...)
	}
	buf := make([]byte, len(read))
	t.Subscribers()
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, read)
		c.publish(buf)
	}
	c.pub.sc.fan.done.Wait()
	if paused != b.N {
		b.Fatalf("%d of %d fan-outs detached", paused, b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n*50), "ns/delivery")
}
