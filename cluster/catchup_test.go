package cluster_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
)

// TestCutNodeCatchesUp: a node cut off from NATS while the owner publishes
// gets, once the link is back, every message it missed from the owner's
// history, in order, before anything newer, and no gap notice: whether
// nothing more is published (the owner's record names its last position)
// or publishing goes on (the next message's offset jumps).
func TestCutNodeCatchesUp(t *testing.T) {
	tc := newCluster(t)
	px := startProxy(t, strings.TrimPrefix(tc.nats.URL, "nats://"))
	a := tc.node(t, px.url())
	b := tc.node(t, "")
	p := b.pub(t, "cut")
	sa := a.metaSub(t, "cut", "")
	publishN(t, p, 1, 3, "m")
	it := next(t, sa)
	if it.kind != "id" || it.offset != 1 || string(it.data) != "m1" {
		t.Fatalf("got %v %q, want offset 1 m1", it, it.data)
	}
	epoch := it.epoch
	expectIDs(t, sa, epoch, 2, 3, "m")

	// Nothing published after the link is back.
	px.setCut(true)
	waitFor(t, "a to notice", func() bool { return a.Ready() != nil })
	publishN(t, p, 4, 10, "m")
	px.setCut(false)
	expectIDs(t, sa, epoch, 4, 10, "m")

	// Publishing goes on after the link is back.
	px.setCut(true)
	waitFor(t, "a to notice", func() bool { return a.Ready() != nil })
	publishN(t, p, 11, 20, "m")
	px.setCut(false)
	waitFor(t, "a to be ready", func() bool { return a.Ready() == nil })
	publishN(t, p, 21, 22, "m")
	expectIDs(t, sa, epoch, 11, 22, "m")

	if got := metric(t, a, "wspubsub_cluster_catchup_messages_total"); got != 17 {
		t.Fatalf("a caught %v messages up, want 17", got)
	}
}

// TestCutNodeBeyondHistory: what the owner no longer keeps when the cut
// node catches up reaches its subscribers as exactly one gap notice, just
// before the kept messages, in order.
func TestCutNodeBeyondHistory(t *testing.T) {
	tc := newCluster(t)
	small := func(s *server.Config, _ *cluster.Config) { s.HistorySize = 5 }
	px := startProxy(t, strings.TrimPrefix(tc.nats.URL, "nats://"))
	a := tc.node(t, px.url(), small)
	b := tc.node(t, "", small)
	p := b.pub(t, "far")
	sa := a.metaSub(t, "far", "")
	publishN(t, p, 1, 2, "m")
	it := next(t, sa)
	epoch := it.epoch
	expectIDs(t, sa, epoch, 2, 2, "m")

	px.setCut(true)
	waitFor(t, "a to notice", func() bool { return a.Ready() != nil })
	publishN(t, p, 3, 20, "m")
	px.setCut(false)
	waitFor(t, "a to be ready", func() bool { return a.Ready() == nil })
	publishN(t, p, 21, 21, "m")

	gap := next(t, sa)
	// The owner kept the last 5 when a asked: 16..20, or 17..21 if the
	// next message came first.
	if gap.kind != "gap" || gap.epoch != epoch || gap.offset != 3 || gap.last != 15 && gap.last != 16 {
		t.Fatalf("got %v, want one gap notice from offset 3 to 15 or 16", gap)
	}
	expectIDs(t, sa, epoch, gap.last+1, 21, "m")
	expectSilent(t, sa, 300*time.Millisecond)
}
