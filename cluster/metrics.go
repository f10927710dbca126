package cluster

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	claimWon = iota
	claimConflict
	claimError
	numClaimResults
)

var claimLabels = [numClaimResults]string{"won", "conflict", "error"}

const (
	dropPublishError = iota // the NATS client refused it: NATS away and the reconnect buffer full, or closed
	dropSlowConsumer        // this node's subscription fell too far behind and NATS dropped it
	dropMalformed           // not a message of this protocol
	dropRelay               // a publisher's run for the topic's owner on another node, never acknowledged (its publishers are closed)
	numDrops
)

var dropLabels = [numDrops]string{"publish_error", "slow_consumer", "malformed", "relay"}

const (
	fetchOK = iota
	fetchError
	numFetchResults
)

var fetchLabels = [numFetchResults]string{"ok", "error"}

// stats are the node's running totals: atomics, read at scrape time.
type stats struct {
	sentBatches, sentMessages, sentBytes             atomic.Int64
	receivedBatches, receivedMessages, receivedBytes atomic.Int64
	lostBatches                                      atomic.Int64
	dropped                                          [numDrops]atomic.Int64
	reconnects, disconnects                          atomic.Int64
	claims                                           [numClaimResults]atomic.Int64
	claimsLost                                       atomic.Int64
	kvErrors                                         atomic.Int64
	historyFetches                                   [numFetchResults]atomic.Int64
	historyEntries, historyServed                    atomic.Int64
	forwards                                         [numFetchResults]atomic.Int64
	forwardsServed                                   atomic.Int64
	relayed, relaysServed                            atomic.Int64
	catchUps                                         [numFetchResults]atomic.Int64
	catchUpEntries                                   atomic.Int64
	lastPublishLog                                   atomic.Int64
	lag                                              prometheus.Histogram
}

func (s *stats) init() {
	s.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "wspubsub", Subsystem: "cluster", Name: "lag_seconds",
		Help:    "Time from a run of messages being published on another node to its fan-out here.",
		Buckets: prometheus.ExponentialBuckets(25e-6, 4, 10), // 25µs to ~6.5s
	})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("wspubsub_cluster_"+name, help, labels, nil)
}

var (
	descConnected     = desc("connected", "1 while the node is connected to NATS.")
	descReady         = desc("ready", "1 while cross-node traffic and topic ownership work (connected, ownership view loaded).")
	descReconnects    = desc("reconnects_total", "Reconnections to NATS.")
	descDisconnects   = desc("disconnects_total", "Losses of the NATS connection.")
	descSentBatches   = desc("sent_batches_total", "Runs of messages (one publisher read each) published to other nodes.")
	descSentMsgs      = desc("sent_messages_total", "Messages published to other nodes.")
	descSentBytes     = desc("sent_bytes_total", "Bytes published to other nodes (frames and headers).")
	descRecvBatches   = desc("received_batches_total", "Runs of messages received from other nodes.")
	descRecvMsgs      = desc("received_messages_total", "Messages received from other nodes.")
	descRecvBytes     = desc("received_bytes_total", "Bytes received from other nodes (frames and headers).")
	descLost          = desc("lost_batches_total", "NATS messages another node sent that never arrived here, told by their sequence numbers.")
	descDropped       = desc("dropped_batches_total", "NATS messages dropped, by reason.", "reason")
	descClaims        = desc("claims_total", "Publisher claims of topics, by result: won, conflict (409), error (503).", "result")
	descClaimsLost    = desc("claims_lost_total", "Topics with live publishers here that another node took over while NATS was away.")
	descKVErrors      = desc("kv_errors_total", "Failed writes of topic ownership records (retried).")
	descSubscriptions = desc("subscriptions", "NATS subscriptions: topics with local subscribers.")
	descOwned         = desc("owned_topics", "Topics this node owns (with publishers here, or in their grace period).")
	descKnown         = desc("known_topics", "Topics started anywhere in the cluster, as this node's view has them.")
	descFetches       = desc("history_fetches_total", "Requests for older messages of a topic to the node that keeps them, by result: ok, error.", "result")
	descFetched       = desc("history_fetched_messages_total", "Messages received from other nodes' history for subscribers resuming here.")
	descServed        = desc("history_requests_served_total", "Requests for a topic's history this node answered.")
	descForwards      = desc("forwarded_publishes_total", "HTTP publishes forwarded to the topic's owner, by result: ok, error.", "result")
	descForwardsTaken = desc("forwarded_publishes_served_total", "HTTP publishes other nodes forwarded to this node, as the topic's owner.")
	descRelayed       = desc("relayed_messages_total", "Messages of publishers here relayed to the topic's owner on another node.")
	descRelaysTaken   = desc("relayed_messages_served_total", "Messages other nodes' publishers relayed to this node, as the topic's owner, and published.")
	descCatchUps      = desc("catchup_fetches_total", "Fetches of offsets a topic's stream skipped here (NATS away, a drop), from the owner's history, by result: ok, error.", "result")
	descCaughtUp      = desc("catchup_messages_total", "Messages fetched from the owner's history to fill skipped offsets, delivered in order.")
)

// Describe implements prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descReady, descReconnects, descDisconnects, descSentBatches,
		descSentMsgs, descSentBytes, descRecvBatches, descRecvMsgs, descRecvBytes, descLost, descDropped, descClaims,
		descClaimsLost, descKVErrors, descSubscriptions, descOwned, descKnown, descFetches, descFetched, descServed,
		descForwards, descForwardsTaken, descRelayed, descRelaysTaken, descCatchUps, descCaughtUp} {
		ch <- d
	}
	n.stats.lag.Describe(ch)
}

// Collect implements prometheus.Collector.
func (n *Node) Collect(ch chan<- prometheus.Metric) {
	st := &n.stats
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	b2i := func(b bool) int64 {
		if b {
			return 1
		}
		return 0
	}
	gauge(descConnected, b2i(n.nc.IsConnected()))
	gauge(descReady, b2i(n.Ready() == nil))
	counter(descReconnects, st.reconnects.Load())
	counter(descDisconnects, st.disconnects.Load())
	counter(descSentBatches, st.sentBatches.Load())
	counter(descSentMsgs, st.sentMessages.Load())
	counter(descSentBytes, st.sentBytes.Load())
	counter(descRecvBatches, st.receivedBatches.Load())
	counter(descRecvMsgs, st.receivedMessages.Load())
	counter(descRecvBytes, st.receivedBytes.Load())
	counter(descLost, st.lostBatches.Load())
	for i := range numDrops {
		counter(descDropped, st.dropped[i].Load(), dropLabels[i])
	}
	for i := range numClaimResults {
		counter(descClaims, st.claims[i].Load(), claimLabels[i])
	}
	counter(descClaimsLost, st.claimsLost.Load())
	counter(descKVErrors, st.kvErrors.Load())
	gauge(descSubscriptions, int64(n.interests.len()))
	n.mu.Lock()
	owned := 0
	for _, l := range n.leases {
		if l.state != leaseRemote { // a topic another node owns, relayed to
			owned++
		}
	}
	n.mu.Unlock()
	gauge(descOwned, int64(owned))
	gauge(descKnown, int64(n.view.len()))
	for i := range numFetchResults {
		counter(descFetches, st.historyFetches[i].Load(), fetchLabels[i])
	}
	counter(descFetched, st.historyEntries.Load())
	counter(descServed, st.historyServed.Load())
	for i := range numFetchResults {
		counter(descForwards, st.forwards[i].Load(), fetchLabels[i])
	}
	counter(descForwardsTaken, st.forwardsServed.Load())
	counter(descRelayed, st.relayed.Load())
	counter(descRelaysTaken, st.relaysServed.Load())
	for i := range numFetchResults {
		counter(descCatchUps, st.catchUps[i].Load(), fetchLabels[i])
	}
	counter(descCaughtUp, st.catchUpEntries.Load())
	st.lag.Collect(ch)
}

// Stats is a snapshot of a node's counters, for tests and tools.
type Stats struct {
	SentBatches, SentMessages         int64
	ReceivedBatches, ReceivedMessages int64
	LostBatches                       int64
	Reconnects                        int64
	ClaimsLost                        int64
}

// Stats returns a snapshot of the node's counters.
func (n *Node) Stats() Stats {
	st := &n.stats
	return Stats{
		SentBatches: st.sentBatches.Load(), SentMessages: st.sentMessages.Load(),
		ReceivedBatches: st.receivedBatches.Load(), ReceivedMessages: st.receivedMessages.Load(),
		LostBatches: st.lostBatches.Load(), Reconnects: st.reconnects.Load(), ClaimsLost: st.claimsLost.Load(),
	}
}
