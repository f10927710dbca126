package scenario

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/target"
	"github.com/wspubsub/wspubsub/cluster/natstest"
)

// TestNodeOfSpreadsTopics: every node gets the same share of the
// subscribers, and of each topic's, also when the node count divides the
// topic count (where i mod n would put a topic on one node).
func TestNodeOfSpreadsTopics(t *testing.T) {
	for _, c := range []struct{ topics, subs, nodes int }{{10000, 20, 10}, {1, 1000, 10}, {1000, 45, 3}, {150, 20, 3}} {
		perNode := make([]int, c.nodes)
		perTopic := make([]map[int]int, c.topics)
		for i := range c.topics * c.subs {
			n := nodeOf(i, c.topics, c.nodes)
			perNode[n]++
			tp := i % c.topics
			if perTopic[tp] == nil {
				perTopic[tp] = map[int]int{}
			}
			perTopic[tp][n]++
		}
		want := c.topics * c.subs / c.nodes
		for n, got := range perNode {
			if got < want || got > want+1 {
				t.Errorf("%+v: node %d holds %d subscribers, want %d", c, n, got, want)
			}
		}
		if c.subs >= c.nodes {
			for tp, m := range perTopic {
				if len(m) != c.nodes {
					t.Fatalf("%+v: topic %d is on %d nodes, want all %d", c, tp, len(m), c.nodes)
				}
			}
		}
	}
}

func TestPubServers(t *testing.T) {
	var nodes []netip.AddrPort
	for i := range 4 {
		nodes = append(nodes, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i)))
	}
	if got := pubServers(nodes, 0); len(got) != 4 {
		t.Errorf("no kill: %v", got)
	}
	got := pubServers(nodes, 3)
	if len(got) != 3 || got[0] != nodes[0] || got[1] != nodes[1] || got[2] != nodes[3] {
		t.Errorf("kill 3: %v", got)
	}
	if got := pubServers(nodes[:1], 1); len(got) != 1 {
		t.Errorf("one node: %v", got)
	}
}

func TestKillDefaults(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Scenario: "fanout", KillNode: 2}, "only reconnect"},
		{Options{Scenario: "reconnect", KillNode: 1}, "node 1 holds the publishers"},
		{Options{Scenario: "reconnect", KillNode: 2, Count: 10, Rate: 2, KillAt: 5 * time.Second}, "flow for 5s"},
	} {
		err := c.o.defaults()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.o, err, c.want)
		}
	}
	o := Options{Scenario: "reconnect", KillNode: 2, Count: 10, Rate: 2}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	if o.KillAt != 2500*time.Millisecond || o.Cuts != 0 {
		t.Errorf("kill at %v with %d cuts, want half the run and none", o.KillAt, o.Cuts)
	}
}

func TestClusterFill(t *testing.T) {
	c := result.Cluster{
		ReceivedBytes:    []int64{0, 1750, -1, 1750},
		ReceivedMessages: []int64{0, 10, -1, 10},
		Published:        10,
	}
	c.Fill()
	if c.BytesPerMessage != 350 || c.Copies != 2 || c.BytesPerCopy != 175 || c.CopiesMax != 1 {
		t.Errorf("got %+v", c)
	}
	r := &result.Result{Cluster: &c}
	r.Check()
	if !r.Pass() {
		t.Errorf("one copy per node failed: %v", r.Failures)
	}
	c.ReceivedMessages[1] = 11
	c.Fill()
	r.Check()
	if r.Pass() {
		t.Error("a node with 11 messages of 10 published passed")
	}
}

// TestReconnectKillNode runs three real nodes of our hub over a NATS
// server, kills the second with SIGKILL while messages flow, and checks
// that its subscribers resumed on the other two with nothing lost.
func TestReconnectKillNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the hub and runs three nodes")
	}
	bin := filepath.Join(t.TempDir(), "wspubsub")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/wspubsub").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg, err := target.StartCluster(ctx, bin, 3, ns.URL, target.HubOptions{Domain: "bench"})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	o := tiny("reconnect", 2)
	o.Topics, o.SubsPerTopic, o.Count, o.Rate = 6, 10, 30, 10
	o.KillNode, o.KillAt = 2, time.Second
	o.ReconnectDelay = 50 * time.Millisecond
	r := run(t, tg, o)
	if r.Lost != 0 || r.Delivered != 60*30 {
		t.Errorf("lost %d, delivered %d of %d", r.Lost, r.Delivered, 60*30)
	}
	rc, c := r.Reconnect, r.Cluster
	// nodeOf puts 20 of the 60 subscribers on node 2.
	if rc == nil || rc.Moved != 20 || rc.Resumed != 20 || rc.Unrecovered != 0 {
		t.Errorf("reconnect: %+v", rc)
	}
	if c == nil || c.Killed != 2 || c.KillErr != "" || c.ReceivedBytes[1] != -1 {
		t.Fatalf("cluster: %+v", c)
	}
	// Node 2's 20 went to nodes 1 and 3, which had 20 each.
	if s := c.Subscribers; s[1] != -1 || s[0] < 20 || s[2] < 20 || s[0]+s[2] != 60 {
		t.Errorf("subscribers per node at the end: %v", s)
	}
	// Publishers on nodes 1 and 3: each message reaches the one other
	// live node, once.
	if c.CopiesMax > 1 || c.Copies < 0.9 || c.Copies > 1 || c.BytesPerCopy < float64(o.Size) {
		t.Errorf("NATS copies: %+v", c)
	}
	// The killed node's memory is out of both before and after, so the
	// two live nodes' growth is what is left.
	if r.ServerRSSBefore <= 0 || r.ServerRSSAfter <= r.ServerRSSBefore/2 || r.ServerCPUSeconds <= 0 {
		t.Errorf("server RSS %d → %d, CPU %.2f s", r.ServerRSSBefore, r.ServerRSSAfter, r.ServerCPUSeconds)
	}
	if tg.Exited() {
		t.Error("a node the run did not kill exited")
	}
}
