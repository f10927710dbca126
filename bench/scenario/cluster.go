package scenario

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/scrape"
)

// What a run against a cluster adds: the NATS traffic every node received
// (from the nodes' own /metrics, before the first message and after the
// last) and, in the reconnect scenario, a node killed mid-run.

// NATS counters of a node's /metrics (package cluster).
const (
	metricNATSRecvBytes = "wspubsub_cluster_received_bytes_total"
	metricNATSRecvMsgs  = "wspubsub_cluster_received_messages_total"
	metricNATSSentBytes = "wspubsub_cluster_sent_bytes_total"
)

// killDefaults checks the kill options: reconnect only (the subscribers
// must resume elsewhere with positions), never the publishers' node, at a
// time in the run.
func (o *Options) killDefaults() error {
	if o.KillNode == 0 {
		return nil
	}
	if o.Scenario != "reconnect" {
		return fmt.Errorf("cannot kill a node in %s: only reconnect's subscribers resume on another node", o.Scenario)
	}
	if o.KillNode < 2 {
		return fmt.Errorf("cannot kill node %d: node 1 holds the publishers; kill another (2 or more)", o.KillNode)
	}
	run := time.Duration(float64(o.Count) / o.Rate * float64(time.Second))
	if o.KillAt <= 0 {
		o.KillAt = run / 2
	}
	if o.KillAt >= run {
		return fmt.Errorf("cannot kill node %d at %v: the messages flow for %v", o.KillNode, o.KillAt, run)
	}
	return nil
}

// killResult is what killLater did.
type killResult struct {
	node       int
	at         time.Duration // after the first message
	cpu, sched time.Duration // the node's CPU time just before the kill
	err        error
}

// killLater kills node KillNode at KillAt after start, on a goroutine of
// its own; the channel gives what happened (at once when there is no
// kill).
func (ru *runner) killLater(ctx context.Context, start int64) <-chan killResult {
	out := make(chan killResult, 1)
	o := ru.o
	if o.KillNode == 0 {
		out <- killResult{}
		return out
	}
	go func() {
		due := time.Unix(0, start).Add(o.KillAt)
		select {
		case <-ctx.Done():
			out <- killResult{node: o.KillNode, err: fmt.Errorf("the run ended before the kill: %w", ctx.Err())}
			return
		case <-time.After(time.Until(due)):
		}
		var k killResult
		if pids := ru.t.Processes(); ru.r.ServerMeasured && o.KillNode <= len(pids) {
			k.sched, _ = procfs.SchedCPU(pids[o.KillNode-1])
			k.cpu, _ = procfs.CPU(pids[o.KillNode-1])
		}
		k.err = ru.t.Kill(o.KillNode - 1)
		k.node, k.at = o.KillNode, time.Since(time.Unix(0, start))
		out <- k
	}()
	return out
}

// scrapeNodes reads every node's /metrics when the target is a cluster;
// nil otherwise. A node that cannot be read has a nil entry, and the
// error says which.
func (ru *runner) scrapeNodes(ctx context.Context) ([]scrape.Metrics, error) {
	nodes := ru.t.Nodes
	if len(nodes) < 2 {
		return nil, nil
	}
	out := make([]scrape.Metrics, len(nodes))
	var errs []error
	for i, n := range nodes {
		m, err := scrape.New("http://" + n.String() + "/metrics").Scrape(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", i+1, err))
			continue
		}
		out[i] = m
	}
	return out, errors.Join(errs...)
}

// clusterStats turns the nodes' counters before and after the measured
// phase into the NATS traffic per published message; nil when the target
// is not a cluster.
func clusterStats(before, after []scrape.Metrics, published int64, kill killResult) *result.Cluster {
	if len(before) == 0 {
		return nil
	}
	c := &result.Cluster{
		Nodes:     len(before),
		Source:    "nodes' /metrics: " + metricNATSRecvBytes + ", " + metricNATSRecvMsgs,
		Published: published,
		Killed:    kill.node,
		KilledAt:  kill.at.Seconds(),
	}
	if kill.err != nil {
		c.KillErr = kill.err.Error()
	}
	delta := func(i int, name string) int64 {
		if i >= len(after) || after[i] == nil || before[i] == nil {
			return -1
		}
		return int64(after[i].Value(name) - before[i].Value(name))
	}
	for i := range before {
		c.ReceivedBytes = append(c.ReceivedBytes, delta(i, metricNATSRecvBytes))
		c.ReceivedMessages = append(c.ReceivedMessages, delta(i, metricNATSRecvMsgs))
		c.SentBytes = append(c.SentBytes, delta(i, metricNATSSentBytes))
		subs := int64(-1)
		if i < len(after) && after[i] != nil {
			subs = int64(after[i].Value("wspubsub_connections", "role", "subscriber"))
		}
		c.Subscribers = append(c.Subscribers, subs)
	}
	c.Fill()
	return c
}

// pubServers are the nodes the publishers are spread over: every node of a
// cluster (publisher i on node i mod n, so each node owns topics and
// holds its share of the sockets), but the one the run kills (kill,
// 1-based; 0 for none), whose publishers would end mid-run.
func pubServers(nodes []netip.AddrPort, kill int) []netip.AddrPort {
	if kill <= 0 || kill > len(nodes) || len(nodes) < 2 {
		return nodes
	}
	out := make([]netip.AddrPort, 0, len(nodes)-1)
	out = append(out, nodes[:kill-1]...)
	return append(out, nodes[kill:]...)
}
