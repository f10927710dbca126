package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wspubsub/wspubsub/cluster/natstest"
	"github.com/wspubsub/wspubsub/topics"
)

// BenchmarkPublish measures the publishing node's cluster work for one run
// of 50 frames of 128 bytes: the header, one copy, the NATS client's
// buffer. The allocations it reports are the in-process NATS server's
// (its parser): a -memprofile shows none on the publishing side.
func BenchmarkPublish(b *testing.B) {
	ns := natstest.Start(b)
	n, err := Connect(Config{URL: ns.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer n.nc.Close()
	l := n.newLease(topics.Key{Domain: "bench", Topic: "news"})
	frames := bytes.Repeat(append([]byte{0x82, 126}, make([]byte, 128)...), 50)
	b.SetBytes(int64(len(frames)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !l.publish("Ep0ch", 1, frames, 50, 50*128) {
			b.Fatal("publish failed")
		}
	}
}

// BenchmarkRelay measures what a publisher's node that does not own the
// topic (several publishers per topic) does for the same run: the relay
// header, one copy, the NATS client's buffer, as BenchmarkPublish. The
// owner's side is BenchmarkPublish's plus a 18-byte acknowledgement.
func BenchmarkRelay(b *testing.B) {
	ns := natstest.Start(b)
	n, err := Connect(Config{URL: ns.URL, PublishersPerTopic: 2, ClaimTTL: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer n.nc.Close()
	// An owner that takes the runs and does not answer.
	owner, err := nats.Connect(ns.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer owner.Close()
	if _, err := owner.Subscribe(relaySubject(n.cfg.Prefix, "elsewhere"), func(*nats.Msg) {}); err != nil {
		b.Fatal(err)
	}
	owner.Flush()
	l := n.newLease(topics.Key{Domain: "bench", Topic: "news"})
	l.owner = "elsewhere"
	l.rl.init(n, l)
	c := &claim{l: l}
	frames := bytes.Repeat(append([]byte{0x82, 126}, make([]byte, 128)...), 50)
	b.SetBytes(int64(len(frames)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !c.Relay(frames, 50, 50*128) || l.rl.failed.Load() {
			b.Fatal("relay failed")
		}
	}
}
