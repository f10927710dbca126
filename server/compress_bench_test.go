package server

import (
	"bufio"
	"bytes"
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

	"github.com/klauspost/compress/flate"
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

// benchmarkJSON measures bursts of msgs messages of a JSON feed
// (bench/payload.Feeds: 1-2 KB, every one different) published to n
// subscribers that all negotiated permessage-deflate, or none did: the
// whole publish, compression included, and the bytes the subscribers
// read off their sockets per delivery.
func benchmarkJSON(b *testing.B, feed string, n, msgs int, deflate bool) {
	s, t, wire := zBenchHub(b, n, deflate)
	const bursts = 8 // rotated, so that consecutive bursts differ
	var bts [bursts]batch
	seq := uint64(0)
	for i := range bts {
		bt := &bts[i]
		for range msgs {
			m := payload.Feeds[feed](nil, seq)
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
	// Every message of the feeds compresses: the counters, summed over
	// the fan-out's chunks (9,000 subscribers take more than one core),
	// count each delivery, the warm-up's included.
	if want := int64(b.N+1) * int64(n*msgs); deflate && s.stats.CompressedDeliveries.Load() != want {
		b.Fatalf("%d compressed deliveries counted, want %d", s.stats.CompressedDeliveries.Load(), want)
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
// PublishJSON is the market-data feed (quotes), PublishScores the
// live-scores one.
func BenchmarkPublishJSON_9kSubs_Burst50_Plain(b *testing.B) {
	benchmarkJSON(b, "quotes", 9000, 50, false)
}
func BenchmarkPublishJSON_9kSubs_Burst50_Deflate(b *testing.B) {
	benchmarkJSON(b, "quotes", 9000, 50, true)
}
func BenchmarkPublishJSON_1kSubs_Burst50_Plain(b *testing.B) {
	benchmarkJSON(b, "quotes", 1000, 50, false)
}
func BenchmarkPublishJSON_1kSubs_Burst50_Deflate(b *testing.B) {
	benchmarkJSON(b, "quotes", 1000, 50, true)
}
func BenchmarkPublishScores_9kSubs_Burst50_Plain(b *testing.B) {
	benchmarkJSON(b, "scores", 9000, 50, false)
}
func BenchmarkPublishScores_9kSubs_Burst50_Deflate(b *testing.B) {
	benchmarkJSON(b, "scores", 9000, 50, true)
}
func BenchmarkPublishScores_1kSubs_Burst50_Plain(b *testing.B) {
	benchmarkJSON(b, "scores", 1000, 50, false)
}
func BenchmarkPublishScores_1kSubs_Burst50_Deflate(b *testing.B) {
	benchmarkJSON(b, "scores", 1000, 50, true)
}

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

// BenchmarkCompressLevel is each feed's messages compressed at each deflate
// level, 1 to 9, as the hub compresses them (a stream of its own, sync
// flush, the 4-byte tail dropped; klauspost/compress, the hub's library):
// wire-ratio is the compressed frames' bytes over the plain frames',
// headers included; ns/op is one message. The hub's level is
// ws.DeflateLevel.
func BenchmarkCompressLevel(b *testing.B) {
	for _, feed := range []string{"quotes", "scores"} {
		var msgs [256][]byte
		plain := 0
		for i := range msgs {
			msgs[i] = payload.Feeds[feed](nil, uint64(i))
			plain += len(ws.AppendFrame(nil, ws.OpText, msgs[i]))
		}
		for level := 1; level <= 9; level++ {
			b.Run(fmt.Sprintf("feed=%s/level=%d", feed, level), func(b *testing.B) {
				var out bytes.Buffer
				w, err := flate.NewWriter(&out, level)
				if err != nil {
					b.Fatal(err)
				}
				wire := 0
				for _, m := range msgs { // the ratio over every message
					out.Reset()
					w.Reset(&out)
					w.Write(m)
					w.Flush()
					n := out.Len() - 4
					wire += len(ws.AppendHeader(nil, ws.OpText, n)) + n
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					out.Reset()
					w.Reset(&out)
					w.Write(msgs[i%len(msgs)])
					w.Flush()
					i++
				}
				b.ReportMetric(float64(wire)/float64(plain), "wire-ratio")
			})
		}
	}
}
