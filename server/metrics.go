package server

import (
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wspubsub/wspubsub/ws"
)

// refusal is why a handshake was refused; each has its HTTP status.
type refusal uint8

const (
	refBadRequest refusal = iota
	refUnauthorized
	refNoEndpoint
	refTopicNotStarted
	refMethodNotAllowed
	refConflict
	refUpgradeRequired
	refHeaderTooLarge
	refKeyStoreUnavailable
	refKeyChecksBusy
	refShuttingDown
	refHTTPBusy
	refClusterUnavailable
	refTooManyConnections
	refTooManyFromAddr
	refHandshakeRate
	refOriginForbidden
	refTooManyTopics
	refNotAcceptable     // an EventSource request whose Accept refuses text/event-stream
	refBadProxyHeader    // a trusted proxy's TLS connection without a good PROXY header: closed
	refHandshakeTimeout  // no answer: the connection is dropped
	refAbandoned         // the client left before the handshake ended
	refTokenUnauthorized // a private domain's subscriber without a good token
	refTokenForbidden    // a good token that does not grant the topic
	numRefusals
)

var refusals = [numRefusals]struct {
	status int
	label  string
}{
	refBadRequest:          {400, "bad_request"},
	refUnauthorized:        {401, "unauthorized"},
	refNoEndpoint:          {404, "no_endpoint"},
	refTopicNotStarted:     {404, "topic_not_started"},
	refMethodNotAllowed:    {405, "method_not_allowed"},
	refConflict:            {409, "topic_has_publisher"},
	refUpgradeRequired:     {426, "upgrade_required"},
	refHeaderTooLarge:      {431, "header_too_large"},
	refKeyStoreUnavailable: {503, "key_store_unavailable"},
	refKeyChecksBusy:       {503, "key_checks_busy"},
	refShuttingDown:        {503, "shutting_down"},
	refHTTPBusy:            {503, "http_busy"},
	refClusterUnavailable:  {503, "cluster_unavailable"},
	refTooManyConnections:  {503, "too_many_connections"},
	refTooManyFromAddr:     {503, "too_many_connections_from_address"},
	refHandshakeRate:       {429, "handshake_rate"},
	refOriginForbidden:     {403, "origin_forbidden"},
	refTooManyTopics:       {429, "too_many_topics"},
	refNotAcceptable:       {406, "not_acceptable"},
	refBadProxyHeader:      {0, "bad_proxy_header"},
	refHandshakeTimeout:    {0, "handshake_timeout"},
	refAbandoned:           {0, "abandoned"},
	refTokenUnauthorized:   {401, "token_unauthorized"},
	refTokenForbidden:      {403, "token_forbidden"},
}

// disconnect is why an upgraded connection ended.
type disconnect uint8

const (
	discClient disconnect = iota // the client closed or dropped it
	discSlowConsumer
	discIdleTimeout
	discKeyRevoked
	discTopicClosed
	discShutdown
	discProtocolError
	discMessageTooBig
	discFlood
	discPublishRate
	discTokenExpired
	numDisconnects
)

var disconnectLabels = [numDisconnects]string{
	"client", "slow_consumer", "idle_timeout", "key_revoked", "topic_closed",
	"shutdown", "protocol_error", "message_too_big", "flood", "publish_rate",
	"token_expired",
}

// disconnectOf maps the close code the hub sent to its reason.
func disconnectOf(code uint16) disconnect {
	switch code {
	case 0, ws.CloseNormal:
		return discClient
	case ws.CloseSlowConsumer:
		return discSlowConsumer
	case ws.CloseIdleTimeout:
		return discIdleTimeout
	case ws.CloseKeyRevoked:
		return discKeyRevoked
	case ws.CloseTopicClosed:
		return discTopicClosed
	case ws.CloseGoingAway:
		return discShutdown
	case ws.CloseMessageTooBig:
		return discMessageTooBig
	case ws.ClosePolicyViolation:
		return discFlood
	case ws.ClosePublishRate:
		return discPublishRate
	case ws.CloseTokenExpired:
		return discTokenExpired
	}
	return discProtocolError
}

// drop is why a message was not written to a subscriber.
type drop uint8

const (
	dropNoSubscribers drop = iota // published to a topic nobody subscribes to
	dropSlowConsumer              // the subscriber's backlog was full
	dropClosing                   // the subscriber was closing
	dropMalformed                 // frames from another node did not parse
	numDrops
)

var dropLabels = [numDrops]string{"no_subscribers", "slow_consumer", "closing", "malformed"}

const (
	rolePublisher = iota
	roleSubscriber
	numRoles
)

var roleLabels = [numRoles]string{"publisher", "subscriber"}

const (
	keyAccepted = iota
	keyRefused
	keyError
	numKeyResults
)

var keyResultLabels = [numKeyResults]string{"accepted", "refused", "error"}

// What a subscriber that rewound or resumed got.
const (
	replayComplete  = iota // everything it asked for that is kept
	replayGap              // a gap or reset notice, then what is kept
	replayTruncated        // more than --max-backlog: part of it, then 4000
	numReplayResults
)

var replayResultLabels = [numReplayResults]string{"complete", "gap", "truncated"}

// Stats are the hub's running totals: atomics, updated off every lock and
// read by the metrics collector at scrape time.
type Stats struct {
	Publishers       atomic.Int64 // live publishers
	Subscribers      atomic.Int64 // live subscribers
	MessagesIn       atomic.Int64 // messages received from publishers
	BytesIn          atomic.Int64 // their payload bytes
	Deliveries       atomic.Int64 // messages written to subscribers
	DeliveredBytes   atomic.Int64 // their payload bytes
	Writes           atomic.Int64 // Sends to subscribers (each carries one or more frames)
	Refused          counters[refusal]
	SlowConsumers    atomic.Int64 // subscribers closed with 4000
	TopicsExpired    atomic.Int64 // topics ended by their grace period
	SubscriberFloods atomic.Int64 // subscribers closed with 1008
	Replayed         atomic.Int64 // messages sent from history to joining subscribers
	GapNotices       atomic.Int64 // gap and reset notices sent to joining subscribers

	// permessage-deflate: messages compressed, once per topic and variant
	// (plain, wspubsub.meta), with their payload bytes before and after;
	// deliveries of the compressed frames to subscribers, with their bytes
	// on the wire (frame headers included).
	Compressed           atomic.Int64
	CompressedIn         atomic.Int64
	CompressedOut        atomic.Int64
	CompressedDeliveries atomic.Int64
	CompressedWireBytes  atomic.Int64

	handshaking   atomic.Int64 // connections in stateHandshake or stateKeyCheck
	accepted      [numRoles]atomic.Int64
	disconnects   counters[disconnect]
	dropped       counters[drop]
	keyChecks     [numKeyResults]atomic.Int64
	replays       [numReplayResults]atomic.Int64
	httpPublishes counters[apiResult]
}

// counters is a counter per value of a small label set.
type counters[K ~uint8] [maxLabels]atomic.Int64

// maxLabels bounds every label set above; the compiler checks each fits.
const maxLabels = 32

var (
	_ [maxLabels - numRefusals]struct{}
	_ [maxLabels - numDisconnects]struct{}
	_ [maxLabels - numDrops]struct{}
	_ [maxLabels - numAPIResults]struct{}
)

func (c *counters[K]) add(k K, n int64) { c[k].Add(n) }

// Load is the total over every label.
func (c *counters[K]) Load() int64 {
	var n int64
	for i := range c {
		n += c[i].Load()
	}
	return n
}

// metrics holds what the collector needs besides Stats.
type metrics struct {
	fanout    prometheus.Histogram
	handshake prometheus.Histogram
}

func newMetrics() metrics {
	return metrics{
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "wspubsub", Name: "fanout_duration_seconds",
			Help:    "Time to write one read's messages to every subscriber of the topic.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12), // 1µs to ~4s
		}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "wspubsub", Name: "handshake_duration_seconds",
			Help:    "Time from a connection's accept to its 101 response (an EventSource stream's 200).",
			Buckets: prometheus.ExponentialBuckets(25e-6, 4, 10), // 25µs to ~6.5s
		}),
	}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("wspubsub_"+name, help, labels, nil)
}

var (
	descConnections    = desc("connections", "Open connections by role; EventSource subscribers are subscribers.", "role")
	descHandshaking    = desc("handshakes_in_progress", "Connections that have not finished their handshake.")
	descTopics         = desc("topics", "Live topics.")
	descAccepted       = desc("connections_accepted_total", "Handshakes completed, by role.", "role")
	descRefused        = desc("handshakes_refused_total", "Handshakes refused, by reason.", "reason")
	descDisconnects    = desc("disconnects_total", "Upgraded connections ended, by reason.", "reason")
	descMsgsIn         = desc("received_messages_total", "Messages received from publishers.")
	descBytesIn        = desc("received_bytes_total", "Payload bytes received from publishers.")
	descMsgsOut        = desc("delivered_messages_total", "Messages written to subscribers.")
	descBytesOut       = desc("delivered_bytes_total", "Payload bytes written to subscribers.")
	descWrites         = desc("subscriber_writes_total", "Writes to subscribers; one carries every message of a publisher's read.")
	descDropped        = desc("dropped_messages_total", "Messages not written to a subscriber, by reason.", "reason")
	descKeyChecks      = desc("key_checks_total", "Publisher API key checks, by result.", "result")
	descKeyCache       = desc("key_cache_lookups_total", "API key lookups of the key store's cache, by result.", "result")
	descTopicsExpired  = desc("topics_expired_total", "Topics ended because their publisher left and the grace period ran out.")
	descBuildInfo      = desc("build_info", "The running build; always 1.", "version", "goversion")
	descKeyStoreReady  = desc("key_store_up", "Whether the key store answers (1) or not (0).")
	descDrainingStatus = desc("draining", "1 while the hub is shutting down.")
	descReadyStatus    = desc("ready", "1 while /readyz answers 200 (see Ready), 0 while it answers 503.")
	descHistoryBytes   = desc("history_bytes", "Bytes the history of every topic holds, against --history-memory.")
	descReplays        = desc("replays_total", "Subscribers that joined with a rewind or a resume, by what they got.", "result")
	descReplayed       = desc("replayed_messages_total", "Messages sent from history to subscribers that rewound or resumed.")
	descGaps           = desc("gap_notices_total", "Gap and reset notices sent to subscribers that resumed.")
	descCompressed     = desc("compressed_messages_total", "Messages compressed for permessage-deflate subscribers, once per topic and variant.")
	descCompressedIn   = desc("compressed_input_bytes_total", "Payload bytes of the compressed messages before compression.")
	descCompressedOut  = desc("compressed_output_bytes_total", "Payload bytes of the compressed messages after compression.")
	descZDeliveries    = desc("compressed_deliveries_total", "Compressed messages written to subscribers; they count in delivered_messages_total too.")
	descZWireBytes     = desc("compressed_delivered_wire_bytes_total", "Bytes on the wire (frame headers included) of the compressed messages written to subscribers.")
	descHTTPPublishes  = desc("http_publishes_total", "HTTP publish requests answered (or left unanswered), by result.", "result")
)

// KeyCacheCounter is implemented by key stores with a cache: Config.Keys
// that implements it gets key_cache_lookups_total.
type KeyCacheCounter interface {
	CacheCounts() (hits, misses int64)
}

// KeyStoreProber is implemented by key stores that can be unreachable:
// Config.Keys that implements it gets key_store_up, 0 while Ready fails.
// Readiness (/readyz) does not depend on it: an outage of a shared key
// database hits every hub at once, and cached keys and every subscriber
// keep working through it.
type KeyStoreProber interface {
	Ready() error
}

type collector Server

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descHandshaking, descTopics, descAccepted, descRefused,
		descDisconnects, descMsgsIn, descBytesIn, descMsgsOut, descBytesOut, descWrites, descDropped, descKeyChecks,
		descKeyCache, descTopicsExpired, descBuildInfo, descKeyStoreReady, descDrainingStatus, descReadyStatus,
		descHistoryBytes, descReplays, descReplayed, descGaps, descHTTPPublishes,
		descCompressed, descCompressedIn, descCompressedOut, descZDeliveries, descZWireBytes} {
		ch <- d
	}
	c.metrics.fanout.Describe(ch)
	c.metrics.handshake.Describe(ch)
}

// Collect implements prometheus.Collector: it reads the atomics now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := &c.stats
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	pubs, subs := st.Publishers.Load(), st.Subscribers.Load()
	gauge(descConnections, pubs, "publisher")
	gauge(descConnections, subs, "subscriber")
	gauge(descHandshaking, st.handshaking.Load())
	gauge(descTopics, int64(c.topics.Len()))
	for r := range numRoles {
		counter(descAccepted, st.accepted[r].Load(), roleLabels[r])
	}
	for r := range numRefusals {
		counter(descRefused, st.Refused[r].Load(), refusals[r].label)
	}
	for d := range numDisconnects {
		counter(descDisconnects, st.disconnects[d].Load(), disconnectLabels[d])
	}
	counter(descMsgsIn, st.MessagesIn.Load())
	counter(descBytesIn, st.BytesIn.Load())
	counter(descMsgsOut, st.Deliveries.Load())
	counter(descBytesOut, st.DeliveredBytes.Load())
	counter(descWrites, st.Writes.Load())
	for d := range numDrops {
		counter(descDropped, st.dropped[d].Load(), dropLabels[d])
	}
	for r := range numKeyResults {
		counter(descKeyChecks, st.keyChecks[r].Load(), keyResultLabels[r])
	}
	if kc, ok := c.cfg.Keys.(KeyCacheCounter); ok {
		hits, misses := kc.CacheCounts()
		counter(descKeyCache, hits, "hit")
		counter(descKeyCache, misses, "miss")
	}
	counter(descTopicsExpired, st.TopicsExpired.Load())
	gauge(descBuildInfo, 1, c.cfg.Version, runtime.Version())
	up := int64(1)
	if r, ok := c.cfg.Keys.(KeyStoreProber); ok && r.Ready() != nil {
		up = 0
	}
	gauge(descKeyStoreReady, up)
	draining := int64(0)
	if c.draining.Load() {
		draining = 1
	}
	gauge(descDrainingStatus, draining)
	ready := int64(1)
	if (*Server)(c).Ready() != nil {
		ready = 0
	}
	gauge(descReadyStatus, ready)
	gauge(descHistoryBytes, c.budget.Used())
	for r := range numReplayResults {
		counter(descReplays, st.replays[r].Load(), replayResultLabels[r])
	}
	counter(descReplayed, st.Replayed.Load())
	counter(descGaps, st.GapNotices.Load())
	for r := range numAPIResults {
		counter(descHTTPPublishes, st.httpPublishes[r].Load(), apiResults[r].label)
	}
	counter(descCompressed, st.Compressed.Load())
	counter(descCompressedIn, st.CompressedIn.Load())
	counter(descCompressedOut, st.CompressedOut.Load())
	counter(descZDeliveries, st.CompressedDeliveries.Load())
	counter(descZWireBytes, st.CompressedWireBytes.Load())
	c.metrics.fanout.Collect(ch)
	c.metrics.handshake.Collect(ch)
}

// Registry returns a registry with the hub's metrics and the Go and process
// collectors, for MetricsHandler or a caller's own exposition.
func (s *Server) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister((*collector)(s), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c, ok := s.cluster.(prometheus.Collector); ok {
		reg.MustRegister(c) // the cluster's own metrics
	}
	return reg
}

// MetricsHandler serves the hub's metrics in the Prometheus formats.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.Registry(), promhttp.HandlerOpts{ErrorLog: nil})
}

// Ready says whether the hub accepts new connections: not while it drains,
// nor while a cluster node cannot reach the rest of its cluster. A key store
// that cannot answer does not make the hub unready (see KeyStoreProber):
// taking every hub out of a load balancer because their shared database is
// down would drop the publishers and subscribers that still work.
func (s *Server) Ready() error {
	if s.draining.Load() {
		return errDraining
	}
	if s.cluster != nil {
		return s.cluster.Ready()
	}
	return nil
}

// HealthHandler answers 200 while the process serves (/healthz).
func (s *Server) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
}

// ReadyHandler answers 200 when Ready and 503 with the reason when not
// (/readyz).
func (s *Server) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := s.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
}

func since(start int64) float64 { return float64(time.Now().UnixNano()-start) / 1e9 }
