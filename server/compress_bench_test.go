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
	"sync/atomic"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/bench/payload"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// zBenchHub starts a hub with history off and a started topic bench/t
// with n raw TCP subscribers, offering permessage-deflate if deflate,
// that read everything and count the bytes they get off their sockets.
func zBenchHub(b *testing.B, n int, deflate bool) (*Server, *topics.Topic[*client], *atomic.Int64) {
	b.Helper()
	store, err := filestore.Open(filepath.Join(b.TempDir(), "keys.json"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := Start(Config{Listen: "127.0.0.1:0", Keys: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MaxBacklog: 64 << 20, HistorySize: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	t, err := s.topics.AddPublisher(topics.Key{Domain: "bench", Topic: "t"})
	if err != nil {
		b.Fatal(err)
	}
	offer := ""
	if deflate {
		offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	}
	var wire atomic.Int64
	for range n {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /ws/sub/bench/t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", offer)
		br := bufio.NewReaderSize(c, 4096)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 || (resp.Header.Get("Sec-WebSocket-Extensions") != "") != deflate {
			b.Fatalf("subscriber handshake: %v %v", resp, err)
		}
		go func() {
			buf := make([]byte, 16<<10)
			for {
				k, err := br.Read(buf)
				wire.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	for t.Len() != n {
		time.Sleep(time.Millisecond)
	}
	return s, t, &wire
}

// benchmarkJSON measures bursts of msgs messages of the JSON feed
// (bench/payload.AppendJSON: 1-2 KB, every one different) published to n
// subscribers that all negotiated permessage-deflate, or none did: the
// whole publish, compression included, and the bytes the subscribers
// read off their sockets per delivery.
func benchmarkJSON(b *testing.B, n, msgs int, deflate bool) {
	s, t, wire := zBenchHub(b, n, deflate)
	const bursts = 8 // rotated, so that consecutive bursts differ
	var bts [bursts]batch
	seq := uint64(0)
	for i := range bts {
		bt := &bts[i]
		for range msgs {
			m := payload.AppendJSON(nil, seq)
			seq++
			bt.starts = append(bt.starts, len(bt.frames))
			bt.frames = ws.AppendFrame(bt.frames, ws.OpText, m)
			bt.payload += len(m)
		}
	}
	sc := new(scratch)
	s.publish(sc, t, &bts[0], nil) // warm the scratch and compressors
	settled(wire)
	wire.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		s.publish(sc, t, &bts[i%bursts], nil)
		i++
	}
	b.StopTimer()
	deliveries := float64(b.N * n * msgs)
	settled(wire) // the subscribers have read what was sent
	if cut := s.stats.SlowConsumers.Load(); cut > 0 {
		b.Fatalf("%d subscribers cut as slow consumers: the figures would not be deliveries", cut)
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e9/deliveries, "ns/delivery")
	b.ReportMetric(float64(wire.Load())/deliveries, "wire-B/delivery")
}

// settled waits until the subscribers' byte count stops moving for 100ms.
func settled(wire *atomic.Int64) {
	last := int64(-1)
	for w := wire.Load(); w != last; w = wire.Load() {
		last = w
		time.Sleep(100 * time.Millisecond)
	}
}

// The targets, same run: wire bytes per delivery with deflate at
// most 1/3 of plain; CPU (ns) per delivery at most 1.2x. 9,000
// subscribers, not 10,000: both ends of every socket are in this process,
// and the open-file limit here is 20,000 (the wspubsub-bench burst run has
// 10,000 against a hub in its own process).
func BenchmarkPublishJSON_9kSubs_Burst50_Plain(b *testing.B)   { benchmarkJSON(b, 9000, 50, false) }
func BenchmarkPublishJSON_9kSubs_Burst50_Deflate(b *testing.B) { benchmarkJSON(b, 9000, 50, true) }
func BenchmarkPublishJSON_1kSubs_Burst50_Plain(b *testing.B)   { benchmarkJSON(b, 1000, 50, false) }
func BenchmarkPublishJSON_1kSubs_Burst50_Deflate(b *testing.B) { benchmarkJSON(b, 1000, 50, true) }

// BenchmarkCompressJSON is the cost of compressing one message of the JSON
// feed, paid once per topic whatever its number of subscribers.
func BenchmarkCompressJSON(b *testing.B) {
	var msgs [64][]byte
	plain := 0
	for i := range msgs {
		msgs[i] = payload.AppendJSON(nil, uint64(i))
		plain += len(msgs[i])
	}
	dst := make([]byte, 0, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		dst = ws.AppendCompressed(dst[:0], ws.OpText, msgs[i%len(msgs)])
		i++
	}
	b.SetBytes(int64(plain / len(msgs)))
}
