// Package server is the hub: it speaks the wspubsub protocol over the
// connections that package loop owns, keeps topics in package topics and
// their recent messages in package history, and asks a KeyChecker whether
// a publisher's API key is good, and a TokenKeyring which domains are
// private (their subscribers' tokens are checked in the handshake, on the
// event loop: token.go).
//
// Concurrency: a connection's events arrive on the loop goroutine that owns
// it; a publisher's key is checked on a goroutine of its own for the length
// of the handshake only, and an HTTP publishing connection's requests are
// checked and published on one goroutine of its own while one is in
// flight, which takes client.mu only to answer (httppub.go). Each message
// a publisher sends is encoded once, and the frames from one read of its
// socket are written to each subscriber in one Send, on the publisher's
// loop goroutine; for a topic of asyncMin subscribers or more, by the
// fan-out pool's workers while the publisher's reads are paused, and the
// worker that writes the last slice releases the topic's Publishing mutex
// the publisher took (fanout.go). Lock order, outermost first:
// client.mu, a topic's Publishing mutex, loop.Conn's lock, the topic's
// history.Log mutex, the topics table's shard lock, the history Budget's
// lock; none takes a Publishing mutex holding a Conn's lock. A goroutine
// holds one client.mu at most: a subscriber whose backlog a fan-out finds
// full is only marked slow under the Publishing mutex (and the publisher's
// client.mu), and closed by the writer once it has released both
// (client.markSlow, slowSubs). The mutex of a cluster node's history
// fetches (fills) and a fan-out's slowSubs mutex are leaves.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/loop"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/version"
	"github.com/wspubsub/wspubsub/ws"
)

// KeyChecker says whether an API key may publish in a domain: nil if it may,
// an error wrapping keys.ErrRefused if it may not, any other error if it
// could not tell (the store is unreachable). Check may block; the hub calls
// it off the event loops.
type KeyChecker interface {
	Check(ctx context.Context, key, domain string) error
}

// Config is the hub's settings; the zero value of each field means the
// default it documents.
type Config struct {
	// Listen is the TCP address to serve on. Default 127.0.0.1:8080.
	Listen string
	// Keys checks publishers' API keys. Required. If it also implements
	// KeyCacheCounter or KeyStoreProber, the metrics export what they
	// report; pass the store itself, not a wrapper that hides them.
	Keys KeyChecker
	// MaxMessageSize is the largest message a publisher may send, in bytes;
	// a larger one closes it with 1009. Default 1 MiB.
	MaxMessageSize int
	// MaxBacklog is the most bytes a subscriber may fall behind before it
	// is closed with 4000 (slow consumer). Default 1 MiB.
	MaxBacklog int
	// GracePeriod is how long a topic outlives its publisher. Default 10s;
	// negative means none.
	GracePeriod time.Duration
	// SubscribeWaits lets subscribers join a topic before its publisher.
	SubscribeWaits bool
	// PublishersPerTopic is how many publishers a topic may have. Default 1.
	// On a cluster node, give the cluster the same limit: it holds across
	// the nodes (package cluster, Config.PublishersPerTopic).
	PublishersPerTopic int
	// HandshakeTimeout bounds the time from connecting to the 101. Default 10s.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds an upgrade request's head. Default 8 KiB.
	MaxHeaderBytes int
	// CloseTimeout is how long a closing connection may take to answer the
	// close frame (and read its backlog) before it is dropped. Default 5s.
	CloseTimeout time.Duration
	// SubscriberInputLimit is how many bytes a subscriber may send in one
	// second before it is closed with 1008. Default 64 KiB.
	SubscriberInputLimit int
	// MaxPendingKeyChecks bounds publisher handshakes waiting on the key
	// store; more get 503. Default 256.
	MaxPendingKeyChecks int
	// Pollers is the number of event loops. Default one per core.
	Pollers int
	// Logger receives the hub's logs. Default slog.Default().
	Logger *slog.Logger
	// Version is reported by the build_info metric. Default:
	// version.String(), the version stamped at build time.
	Version string
	// HTTP serves the plain HTTP requests the main listener gets for paths
	// outside /ws/ (health, metrics); nil answers them 404. It runs off the
	// event loops, at most MaxHTTPRequests at once.
	HTTP http.Handler
	// MaxHTTPRequests bounds the HTTP requests served at once; more get
	// 503. Default 16.
	MaxHTTPRequests int
	// DrainPeriod spreads the closing of subscribers at Shutdown, so that
	// they do not all reconnect at once. Default 0: all at once.
	DrainPeriod time.Duration
	// Cluster, if set, makes the hub a node of a cluster (package cluster):
	// messages cross to the other nodes, and topic ownership and the grace
	// period hold across them. Nil: a single hub, with no cluster work on
	// any path. Start binds it; the caller closes it after Shutdown.
	Cluster Cluster
	// TLS, if set, serves wss:// (and https:// for HTTP) with its
	// certificate, which KeyPair.Reload swaps without dropping connections.
	// A broadcast is still encoded once, but encrypted once per subscriber.
	// Default nil: plaintext.
	TLS *loop.KeyPair

	// PingInterval is how long an upgraded connection may send nothing
	// before the hub pings it; negative turns keepalive off. Default 30s.
	// An EventSource stream, which cannot answer, gets a comment line
	// after that long with nothing sent to it.
	PingInterval time.Duration
	// PongTimeout is how long a pinged connection has to send anything
	// (its pong) before it is closed with 4003; an EventSource stream, to
	// take its comment line off the hub. Default 10s.
	PongTimeout time.Duration
	// MaxConnections bounds open connections; more get 503. Default: the
	// process's open-file limit less 64.
	MaxConnections int
	// MaxConnectionsPerAddr bounds open connections from one IP address;
	// more get 503. Default 0: no bound (a hub behind a proxy sees one
	// address).
	MaxConnectionsPerAddr int
	// HandshakeRate bounds new connections a second from one IP address,
	// with bursts of HandshakeBurst; more get 429. Default 0: no bound.
	HandshakeRate  float64
	HandshakeBurst int
	// MaxTopicsPerDomain bounds a domain's live topics; a handshake that
	// would start one more gets 429. Default 100,000; negative: no bound.
	MaxTopicsPerDomain int
	// MaxPublishRate bounds the messages a second a publisher may send
	// (in bursts of as many); past it the publisher is closed with 4004.
	// Default 0: no bound.
	MaxPublishRate int
	// HistorySize is how many recent messages each topic keeps for rewind
	// and resume. Default 100; negative: no history (positions are still
	// assigned).
	HistorySize int
	// HistoryBytes bounds each topic's history in bytes (frames plus 48
	// bytes each). Default 1 MiB; negative: no bound but HistorySize.
	HistoryBytes int
	// HistoryTTL is how long a message is kept. Default 5m; negative: no
	// age bound.
	HistoryTTL time.Duration
	// HistoryMemory bounds the history of all topics together, in bytes;
	// past it the oldest entries of any topic go first. Default 256 MiB;
	// negative: no bound.
	HistoryMemory int64

	// Tokens, if set, makes the domains it has verification keys for
	// private: their subscribers (WebSocket and EventSource) must present
	// a JWT signed with one of them that grants the topic (token.go). Nil:
	// every domain is open.
	Tokens TokenKeyring
	// DisableCompression stops the hub from negotiating permessage-deflate
	// (RFC 7692). Default false: a WebSocket client that offers it gets it,
	// without context takeover either way, and each message of at least
	// CompressMinSize bytes is compressed once per topic for all such
	// subscribers; a compressed message a publisher sends is inflated, and
	// closed with 1009 as soon as it inflates past MaxMessageSize.
	DisableCompression bool
	// CompressMinSize is the smallest message compressed for subscribers
	// that negotiated permessage-deflate, in bytes; smaller ones go as
	// plain frames. Default 256; negative: every message.
	CompressMinSize int

	// AllowedOrigins lists the Origin headers browsers may connect with:
	// exact origins, "https://*.example.com" for subdomains, or "*".
	// Requests without Origin (not browsers) are always allowed. Default:
	// any origin.
	AllowedOrigins []string

	// TrustedProxies lists the peers (prefixes; an address is a /32 or
	// /128, see ParseTrustedProxies) that are proxies whose word on the
	// client's address is taken: from the PROXY header with ProxyProtocol,
	// else from X-Forwarded-For. The per-address limits, the logs and
	// their refusals then use the client's address (proxy.go). From other
	// peers neither is read. Default none: every peer is the client.
	TrustedProxies []netip.Prefix
	// ProxyProtocol makes every connection from a trusted proxy start
	// with a PROXY protocol header (v1 or v2); one that does not is
	// refused with 400, or, with TLS, where the header comes before the
	// TLS handshake (a proxy passing TLS through), closed without an
	// answer. Needs TrustedProxies.
	ProxyProtocol bool
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	def(&c.MaxMessageSize, 1<<20)
	def(&c.MaxBacklog, 1<<20)
	def(&c.PublishersPerTopic, 1)
	def(&c.MaxHeaderBytes, 8<<10)
	def(&c.SubscriberInputLimit, 64<<10)
	def(&c.MaxPendingKeyChecks, 256)
	def(&c.MaxHTTPRequests, 16)
	def(&c.MaxConnections, DefaultMaxConnections())
	def(&c.HandshakeBurst, max(1, int(c.HandshakeRate)))
	orNone(&c.MaxTopicsPerDomain, 100_000)
	orNone(&c.CompressMinSize, 256)
	orNone(&c.HistorySize, 100)
	orNone(&c.HistoryBytes, 1<<20)
	orNone(&c.HistoryTTL, 5*time.Minute)
	orNone(&c.HistoryMemory, 256<<20)
	orNone(&c.PingInterval, 30*time.Second)
	if c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.Version == "" {
		c.Version = version.String()
	}
	orNone(&c.GracePeriod, 10*time.Second)
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// orNone sets a setting whose zero value means its default d and whose
// negative values mean none (0 to the code that reads it).
func orNone[T int | int64 | time.Duration](v *T, d T) {
	switch {
	case *v == 0:
		*v = d
	case *v < 0:
		*v = 0
	}
}

// Server is a running hub.
type Server struct {
	cfg      Config
	log      *slog.Logger
	engine   *loop.Engine
	topics   *topics.Table[*client]
	checks   chan struct{} // semaphore of pending key checks
	https    chan struct{} // semaphore of HTTP requests being served
	clients  clientSet
	keyUsers keyUsers
	keyRates keyRates // HTTP publish's --max-publish-rate, per key
	stats    Stats
	metrics  metrics
	pool     *fanoutPool
	budget   *history.Budget // bounds every topic's history together
	cluster  Cluster         // nil on a single hub
	fills    fills           // a cluster node's fetches of history from other nodes

	limits *addrLimits

	tokenClients atomic.Int64 // subscribers admitted by a token, still open: the sweep looks for their exp

	draining atomic.Bool
	done     chan struct{} // closed when Shutdown returns
	stop     chan struct{} // closed when the loops stop: background work ends
}

// Start listens and serves until Shutdown.
func Start(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.Keys == nil {
		return nil, errors.New("cannot start the hub: no key store configured")
	}
	if cfg.ProxyProtocol && len(cfg.TrustedProxies) == 0 {
		return nil, errors.New("cannot start the hub: --proxy-protocol needs --trusted-proxies, the peers that send the header")
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		checks:  make(chan struct{}, cfg.MaxPendingKeyChecks),
		https:   make(chan struct{}, cfg.MaxHTTPRequests),
		metrics: newMetrics(),
		pool:    newFanoutPool(lanesFor(cfg.Pollers)),
		budget:  history.NewBudget(cfg.HistoryMemory),
		cluster: cfg.Cluster,
		done:    make(chan struct{}),
		stop:    make(chan struct{}),
		limits:  newAddrLimits(cfg.MaxConnectionsPerAddr, cfg.HandshakeRate, cfg.HandshakeBurst),
	}
	s.clients.init()
	s.keyUsers.m = make(map[*client][32]byte)
	s.fills.m = make(map[*topics.Topic[*client]]*fillCall)
	tc := topics.Config[*client]{
		MaxPublishers:      cfg.PublishersPerTopic,
		MaxTopicsPerDomain: cfg.MaxTopicsPerDomain,
		SubscribeWaits:     cfg.SubscribeWaits,
		GracePeriod:        cfg.GracePeriod,
		OnExpire:           s.expire,
		Kind:               func(c *client) int { return int(c.sub.kind) },
	}
	lim := history.Limits{Size: cfg.HistorySize, Bytes: cfg.HistoryBytes, TTL: cfg.HistoryTTL}
	tc.NewLog = func(topics.Key) *history.Log {
		// A cluster node learns a topic's epoch from its owner; a
		// single hub's topic gets its own at the first message.
		return history.NewLog(lim, s.budget, "")
	}
	if s.cluster != nil {
		tc.Started, tc.Keep = s.cluster.Started, s.cluster.Keep
	}
	s.topics = topics.New(tc)
	if s.cluster != nil {
		s.cluster.Bind((*clusterHub)(s), cfg.GracePeriod)
	}
	e, err := loop.Start(loop.Config{
		Addr:           cfg.Listen,
		Pollers:        cfg.Pollers,
		MaxBacklog:     cfg.MaxBacklog,
		ReadBufferSize: 64 << 10,
		HardLimit:      2*cfg.MaxBacklog + 2*cfg.MaxMessageSize + 1<<20,
		TLS:            cfg.TLS,
	}, s)
	if err != nil {
		s.pool.stop()
		return nil, fmt.Errorf("cannot start the hub: %w", err)
	}
	s.engine = e
	go s.keepalive()
	return s, nil
}

// Addr is the address the hub listens on.
func (s *Server) Addr() string { return s.engine.Addr() }

// Stats returns the hub's running totals.
func (s *Server) Stats() *Stats { return &s.stats }

// Topics is the number of live topics.
func (s *Server) Topics() int { return s.topics.Len() }

// errDraining is the hub's answer to readiness checks while it shuts down.
var errDraining = errors.New("server: shutting down")

// Shutdown drains the hub: new handshakes get 503 and readiness turns
// false at once; publishers are closed first, with 1001, so subscribers get
// every message already accepted; then subscribers are closed with 1001,
// spread over DrainPeriod. It waits for the connections to go until ctx
// ends, then stops the loops.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.draining.CompareAndSwap(false, true) {
		<-s.done
		return nil
	}
	defer close(s.done)
	const reason = "server shutting down"
	var rest []*client
	s.clients.each(func(c *client) {
		if c.isPublisher() {
			c.closeWith(ws.CloseGoingAway, reason)
		} else {
			rest = append(rest, c)
		}
	})
	// Close the rest in steps of 100ms over the drain period.
	steps := max(1, int(s.cfg.DrainPeriod/(100*time.Millisecond)))
	per := (len(rest) + steps - 1) / steps
	tick := time.NewTicker(max(s.cfg.DrainPeriod/time.Duration(steps), 10*time.Millisecond))
	defer tick.Stop()
	for len(rest) > 0 {
		n := min(per, len(rest))
		for _, c := range rest[:n] {
			c.closeWith(ws.CloseGoingAway, reason)
		}
		rest = rest[n:]
		if len(rest) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			per = len(rest) // out of time: close the rest now
		case <-tick.C:
		}
	}
	var err error
wait:
	for s.clients.len() > 0 {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("shutdown left %d connections to be dropped: %w", s.clients.len(), ctx.Err())
			break wait
		case <-tick.C:
		}
	}
	s.engine.Stop()
	s.pool.stop()
	close(s.stop)
	return err
}

// expire closes the subscribers of a topic whose grace period ran out.
func (s *Server) expire(t *topics.Topic[*client], subs []*client) {
	// A fan-out its publisher left in flight (fanout.go) holds the
	// topic's Publishing mutex until its last slice is written: wait for
	// it, so that 4001 comes after every message. Nothing publishes on an
	// expired topic, and the mutex is not held while closing (client.mu
	// comes first in the lock order).
	t.Publishing.Lock()
	t.Publishing.Unlock()
	s.closeTopic(t.Key(), subs)
}

// KeyRevoked closes, with 4002, every live publisher that presented the key
// whose SHA-256 is hash, and returns how many it closed. Key stores call it
// when a key is revoked or deactivated.
func (s *Server) KeyRevoked(hash [32]byte) int {
	users := s.keyUsers.of(hash)
	for _, c := range users {
		c.closeWith(ws.CloseKeyRevoked, "API key revoked or deactivated")
	}
	return len(users)
}

// keyUsers maps live publishers to the hash of the key they presented.
// Publishers are few, so a revocation scans them all.
type keyUsers struct {
	mu sync.Mutex
	m  map[*client][32]byte
}

func (k *keyUsers) add(c *client, hash [32]byte) {
	k.mu.Lock()
	k.m[c] = hash
	k.mu.Unlock()
}

func (k *keyUsers) remove(c *client) {
	k.mu.Lock()
	delete(k.m, c)
	k.mu.Unlock()
}

func (k *keyUsers) all() []*client {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*client, 0, len(k.m))
	for c := range k.m {
		out = append(out, c)
	}
	return out
}

func (k *keyUsers) of(hash [32]byte) []*client {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*client
	for c, h := range k.m {
		if h == hash {
			out = append(out, c)
		}
	}
	return out
}

// DefaultMaxConnections is Config.MaxConnections when it is 0: the
// process's open-file limit less 64, for the listeners, log files, the key
// store's and the cluster's connections.
func DefaultMaxConnections() int { return openFileLimit() - 64 }

// openFileLimit is the process's soft limit on open files.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	return int(rl.Cur)
}

// clientSet holds every open connection, sharded to keep opens and closes
// from contending.
type clientSet struct {
	n      atomic.Int64
	shards [32]struct {
		mu sync.Mutex
		m  map[*client]struct{}
	}
}

func (cs *clientSet) init() {
	for i := range cs.shards {
		cs.shards[i].m = make(map[*client]struct{})
	}
}

func (cs *clientSet) shard(c *client) int { return int(c.id % uint64(len(cs.shards))) }

func (cs *clientSet) add(c *client) {
	sh := &cs.shards[cs.shard(c)]
	sh.mu.Lock()
	sh.m[c] = struct{}{}
	sh.mu.Unlock()
	cs.n.Add(1)
}

func (cs *clientSet) remove(c *client) {
	sh := &cs.shards[cs.shard(c)]
	sh.mu.Lock()
	if _, ok := sh.m[c]; ok {
		delete(sh.m, c)
		cs.n.Add(-1)
	}
	sh.mu.Unlock()
}

func (cs *clientSet) len() int { return int(cs.n.Load()) }

// each calls f for every client, holding no lock during the call.
func (cs *clientSet) each(f func(c *client)) { cs.eachInto(nil, f) }

// eachInto is each with a buffer to reuse, which it returns.
func (cs *clientSet) eachInto(batch []*client, f func(c *client)) []*client {
	for i := range cs.shards {
		sh := &cs.shards[i]
		sh.mu.Lock()
		batch = batch[:0]
		for c := range sh.m {
			batch = append(batch, c)
		}
		sh.mu.Unlock()
		for _, c := range batch {
			f(c)
		}
	}
	clear(batch[:cap(batch)]) // keep no client alive through the buffer
	return batch[:0]
}
