package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

// Config is a node's settings; the zero value of each field means the
// default it documents.
type Config struct {
	// URL is the NATS server to connect to, or a comma-separated list of
	// servers of one NATS cluster. Required. It may hold a user and
	// password (nats://USER:PASSWORD@HOST) or a token (nats://TOKEN@HOST);
	// the node never logs them (see RedactURL). A tls:// URL requires TLS.
	URL string
	// CredsFile is a NATS .creds file (a user JWT and its nkey seed), read
	// again at every connection, so a rotated file is used at the next
	// one. Empty: none. Not with NkeyFile.
	CredsFile string
	// NkeyFile is a file holding a user nkey seed. Its public key is taken
	// at Connect; the seed is read again at every connection, so a new
	// seed with another public key needs a new Node. Empty: none.
	NkeyFile string
	// TLSCA is a PEM file of the certificate authorities that sign the
	// NATS server's certificate, read again at every connection; with it
	// the node requires TLS. Empty: the system's roots, and TLS only if
	// the server or a tls:// URL asks for it.
	TLSCA string
	// TLSCert and TLSKey are the PEM certificate (chain) and key this
	// node shows a NATS server that requires client certificates (mutual
	// TLS), read again at every connection. Both or neither.
	TLSCert, TLSKey string
	// Name names this node in logs and ownership records. Default: the
	// host name. A random suffix is added, so a restarted node is a new
	// owner.
	Name string
	// Prefix is the first token(s) of every subject; nodes sharing a prefix
	// (and Bucket) form one cluster. Default "wspubsub".
	Prefix string
	// Bucket is the JetStream key-value bucket of topic ownership. Default
	// "wspubsub_topics".
	Bucket string
	// Replicas of the bucket in a NATS cluster. Default 1.
	Replicas int
	// ClaimTTL is how long a node's claims on topics outlive the node: it
	// writes its heartbeat every ClaimTTL/3, and its records lapse when
	// none was heard for ClaimTTL (see liveness.go). Default 6s.
	ClaimTTL time.Duration
	// ClaimWait is how long a publisher's claim waits for a live record of
	// another node to turn into a grace record (that node's publisher just
	// left and is reconnecting here) before it is refused. Default 1s;
	// negative means no wait.
	ClaimWait time.Duration
	// ReconnectBuffer bounds the bytes published while NATS is unreachable,
	// sent once it is back; past it, messages for other nodes are dropped
	// (and counted). Default 8 MiB.
	ReconnectBuffer int
	// PendingBytes bounds the bytes of publishers' reads relayed to this
	// node (several publishers per topic) and not yet published; past it,
	// NATS drops (counted). A topic's messages from other nodes wait in
	// their delivery shard's queue instead (shardQueue messages, see
	// interest.go). Default 32 MiB.
	PendingBytes int
	// PublishersPerTopic is how many publishers a topic may have across
	// the cluster (the hub's --publishers-per-topic). Above 1, they may
	// be on any nodes: the topic's record counts them, and the publishers
	// on nodes other than the owner relay to it (see relay.go). Default 1:
	// a topic's publishers must share a node.
	PublishersPerTopic int
	// ConnectWait is how long Connect waits for NATS and the ownership view
	// before returning a node that is not ready yet (it keeps trying).
	// Default 5s.
	ConnectWait time.Duration
	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultName is Config.Name when it is empty: the host name, or "node" if
// it cannot be had.
func DefaultName() string {
	if name, _ := os.Hostname(); name != "" {
		return name
	}
	return "node"
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = DefaultName()
	}
	if c.Prefix == "" {
		c.Prefix = "wspubsub"
	}
	if c.Bucket == "" {
		c.Bucket = "wspubsub_topics"
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.ClaimTTL <= 0 {
		c.ClaimTTL = 6 * time.Second
	}
	switch {
	case c.ClaimWait == 0:
		c.ClaimWait = time.Second
	case c.ClaimWait < 0:
		c.ClaimWait = 0
	}
	if c.ReconnectBuffer <= 0 {
		c.ReconnectBuffer = 8 << 20
	}
	if c.PendingBytes <= 0 {
		c.PendingBytes = 32 << 20
	}
	if c.ConnectWait <= 0 {
		c.ConnectWait = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Node is a hub's membership of a cluster.
type Node struct {
	cfg   Config
	id    string // Name plus a random suffix
	log   *slog.Logger
	nc    *nats.Conn
	js    jetstream.JetStream
	hub   atomic.Pointer[hubRef]
	grace atomic.Int64 // the hub's grace period, in nanoseconds
	kv    atomic.Pointer[kvRef]
	hb    atomic.Pointer[kvRef] // the heartbeat bucket
	live  liveness
	stats stats

	// Ownership: the topics this node has publishers of.
	mu     sync.Mutex
	leases map[topics.Key]*lease
	dirty  []*lease // leases whose record must be written, guarded by mu

	// Authentication: see auth.go.
	secrets  []string // the URL's passwords and tokens, hidden from logs
	nkeyPub  string   // the public key NkeyFile had at Connect
	failures failureLog

	view      view
	interests interests
	replyBuf  []byte // the history subscription's answers, on its goroutine

	forwarding chan struct{} // semaphore of forwarded HTTP publishes being published

	relays  sync.Map // lease.sender → *lease: the leaseRemote leases, for their acknowledgements
	ackSubj string   // where owners acknowledge this node's relayed runs
	closing atomic.Bool
	relayMu sync.RWMutex // read-held while a relayed run is published; Close takes it to set closing
	// goneOwners are the nodes whose relays went unanswered: owner ID →
	// until when (Unix nanoseconds) claims here take their topics over.
	goneOwners sync.Map

	out       *outbox       // messages for NATS from the hub's loops
	kick      chan struct{} // wakes the worker: dirty leases
	reconnect chan struct{} // wakes the worker: set up the bucket and watch again
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type hubRef struct{ h server.ClusterHub }

type kvRef struct{ kv jetstream.KeyValue }

var _ server.Cluster = (*Node)(nil)

// Errors a claim or a subscription can fail with when the cluster cannot be
// reached; a claim refused because another node has the topic wraps
// topics.ErrHasPublisher instead.
var (
	ErrNotConnected = errors.New("cluster: not connected to NATS")
	ErrNotReady     = errors.New("cluster: topic ownership not loaded yet")
	errContention   = errors.New("cluster: topic claimed and released too often at once")
)

// Connect connects to NATS and starts the node: it sets up the ownership
// bucket and starts watching it. If NATS cannot be reached within
// ConnectWait it returns a node that is not Ready yet and keeps trying in
// the background; it fails only on a bad configuration. Close stops it.
func Connect(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if cfg.URL == "" {
		return nil, errors.New("cluster: no NATS URL")
	}
	if !validPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("cluster: bad subject prefix %q: want tokens of letters, digits, - and _ separated by dots", cfg.Prefix)
	}
	auth, err := cfg.loadAuth()
	if err != nil {
		return nil, err
	}
	authOpts, err := cfg.authOptions()
	if err != nil {
		return nil, err
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	n := &Node{
		cfg:       cfg,
		id:        cfg.Name + "#" + hex.EncodeToString(suffix[:]),
		log:       cfg.Logger.With("node", cfg.Name),
		secrets:   secrets(cfg.URL),
		nkeyPub:   auth.nkeyPub,
		leases:    make(map[topics.Key]*lease),
		out:       newOutbox(),
		kick:      make(chan struct{}, 1),
		reconnect: make(chan struct{}, 1),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),

		forwarding: make(chan struct{}, maxForwards),
	}
	n.ackSubj = ackSubject(cfg.Prefix, n.id)
	n.view.init()
	n.live.init()
	n.interests.init()
	n.stats.init()
	if len(auth.attrs) > 0 {
		n.log.Info("NATS credentials loaded", auth.attrs...)
	}
	opts := append([]nats.Option{
		nats.Name("wspubsub " + n.id),
		nats.NoEcho(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// A refused credential is retried like an unreachable server, so
		// that fixed files are taken up (nats.go gives up on the second
		// identical refusal otherwise).
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(cfg.ReconnectBuffer),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.FlusherTimeout(2 * time.Second),
		nats.ConnectHandler(n.onConnect),
		nats.ReconnectHandler(n.onReconnect),
		nats.DisconnectErrHandler(n.onDisconnect),
		nats.ReconnectErrHandler(n.onReconnectError),
		nats.ErrorHandler(n.onAsyncError),
	}, authOpts...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %w", RedactURL(cfg.URL), n.redactErr(err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot use JetStream: %w", err)
	}
	n.nc, n.js = nc, js
	if _, err := nc.Subscribe(historySubject(cfg.Prefix, n.id), n.answerHistory); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot subscribe to history requests: %w", err)
	}
	if _, err := nc.Subscribe(forwardSubject(cfg.Prefix, n.id), n.answerForward); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot subscribe to forwarded publishes: %w", err)
	}
	if _, err := nc.Subscribe(resyncSubject(cfg.Prefix), n.answerResync); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot subscribe to resync requests: %w", err)
	}
	if cfg.PublishersPerTopic > 1 {
		rsub, err := nc.Subscribe(relaySubject(cfg.Prefix, n.id), n.answerRelay)
		if err == nil {
			rsub.SetPendingLimits(-1, cfg.PendingBytes)
			_, err = nc.Subscribe(n.ackSubj+".*", n.answerAck)
		}
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("cannot subscribe to relayed publishes: %w", err)
		}
	}
	for _, ch := range n.interests.shards {
		go n.deliver(ch)
	}
	go n.work()
	go n.heartbeat()
	go n.send()
	if nc.IsConnected() {
		n.wake(n.reconnect)
	}
	deadline := time.Now().Add(cfg.ConnectWait)
	for n.Ready() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := n.Ready(); err != nil {
		n.log.Warn("cluster not ready yet; serving local topics, retrying", "url", RedactURL(cfg.URL), "err", err)
	}
	return n, nil
}

// ID is the node's identity in ownership records.
func (n *Node) ID() string { return n.id }

// Bind implements server.Cluster.
func (n *Node) Bind(h server.ClusterHub, grace time.Duration) {
	n.grace.Store(int64(grace))
	n.view.reset()
	n.hub.Store(&hubRef{h})
}

func (n *Node) theHub() server.ClusterHub {
	if r := n.hub.Load(); r != nil {
		return r.h
	}
	return nil
}

// Ready implements server.Cluster: connected to NATS, the ownership bucket
// set up, and its view loaded.
func (n *Node) Ready() error {
	switch {
	case !n.nc.IsConnected():
		if err := n.failures.why(); err != nil {
			return err // ErrNotConnected, with what refused the connection
		}
		return ErrNotConnected
	case n.kv.Load() == nil || !n.view.synced():
		return ErrNotReady
	}
	return nil
}

// Close stops the node: it writes what its claims must say (grace periods
// of publishers that left, so that they can take their topics over on
// another node), then closes the NATS connection. Call it after the hub's
// Shutdown. ctx bounds the wait: when it ends first, the connection is
// closed all the same and Close says what may not have been written.
func (n *Node) Close(ctx context.Context) error {
	if n.multi() {
		// The records say the owner is gone, so that the publishers on
		// other nodes take its topics over at once.
		n.relayMu.Lock()
		n.closing.Store(true)
		n.relayMu.Unlock()
		n.markAllDirty()
	}
	n.closeOnce.Do(func() { close(n.quit) })
	var err error
	select {
	case <-n.done:
	case <-ctx.Done():
		err = fmt.Errorf("cluster: closed before the topics' ownership records were written (other nodes see them when they expire): %w", context.Cause(ctx))
	}
	// What the hub's last publishes queued goes to NATS before the
	// connection closes (nc.Close flushes the client's own buffer).
	select {
	case <-n.out.sent:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("cluster: closed before the queued messages were sent to NATS: %w", context.Cause(ctx))
		}
	}
	n.nc.Close()
	return err
}

// onConnect and onReconnect log the URL with RedactURL: nats.go's
// ConnectedUrlRedacted hides a password but shows a token.

func (n *Node) onConnect(nc *nats.Conn) {
	n.failures.reset(true)
	n.log.Info("connected to NATS", "url", RedactURL(nc.ConnectedUrl()))
	n.wake(n.reconnect)
}

func (n *Node) onReconnect(nc *nats.Conn) {
	n.failures.reset(true)
	n.stats.reconnects.Add(1)
	n.log.Info("reconnected to NATS", "url", RedactURL(nc.ConnectedUrl()))
	n.wake(n.reconnect)
}

func (n *Node) onDisconnect(_ *nats.Conn, err error) {
	n.stats.disconnects.Add(1)
	n.view.unsync()
	if err != nil {
		n.log.Warn("lost NATS; serving local topics only until it is back", "err", n.redactErr(err))
	}
}

// onReconnectError hears of failed attempts to connect; what nats.go does
// not report here (a refused TLS handshake while reconnecting), work finds
// in the connection's last error.
func (n *Node) onReconnectError(nc *nats.Conn, err error) { n.noteFailure(nc, err) }

func (n *Node) onAsyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		n.interests.countDropped(sub, &n.stats)
		return
	}
	if n.cfg.explain(err).fatal {
		n.noteFailure(nc, err) // a refused credential while reconnecting comes here
		return
	}
	n.log.Warn("NATS error", "err", n.redactErr(err))
}

// wake signals ch without blocking.
func (n *Node) wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// work is the node's goroutine: it sets the buckets and their watches up
// after each (re)connection, writes the claims' records when they change
// and every recordTTL/3 (every ClaimTTL/3 with several publishers per
// topic), and ages the view.
func (n *Node) work() {
	defer close(n.done)
	refresh := time.NewTicker(n.cfg.ClaimTTL / 3)
	defer refresh.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	setup, first := false, true
	var w, hw jetstream.KeyWatcher
	defer func() {
		if w != nil {
			w.Stop()
		}
		if hw != nil {
			hw.Stop()
		}
	}()
	for {
		select {
		case <-n.quit:
			n.flushLeases(2 * time.Second)
			return
		case <-n.reconnect:
			setup = true
		case <-n.kick:
		case <-refresh.C:
			if n.multi() {
				n.markAllDirty()
			} else {
				n.markWrittenBefore(time.Now().Add(-recordTTL(n.cfg.ClaimTTL) / 3))
			}
			n.forgetDead()
		case <-tick.C:
			n.view.sweep(n)
			n.checkRelays()
			if !n.nc.IsConnected() {
				n.noteFailure(n.nc, n.nc.LastError())
			}
		}
		if setup && n.nc.IsConnected() {
			nw, nhw, err := n.setup()
			if err != nil {
				n.stats.kvErrors.Add(1)
				n.log.Warn("cannot set up topic ownership; retrying", "bucket", n.cfg.Bucket, "err", err)
			} else {
				if w != nil {
					w.Stop()
				}
				if hw != nil {
					hw.Stop()
				}
				w, hw, setup = nw, nhw, false
				n.markAllDirty() // the records may have lapsed while NATS was away
				if !first && n.interests.len() > 0 {
					n.askResync()
				}
				first = false
			}
		}
		n.syncDirty()
	}
}

// setup creates (or adopts) the heartbeat and ownership buckets and starts
// watching them: the heartbeats are loaded first, so that the view judges
// no record before it knows which owners are alive.
func (n *Node) setup() (w, hw jetstream.KeyWatcher, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hkv, hw, err := n.setupLiveness(ctx)
	if err != nil {
		return nil, nil, err
	}
	n.hb.Store(&kvRef{hkv})
	kv, err := n.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      n.cfg.Bucket,
		Description: "wspubsub topic ownership: which hub node has a topic's publisher",
		History:     1,
		TTL:         recordTTL(n.cfg.ClaimTTL),
		Storage:     jetstream.FileStorage,
		Replicas:    n.cfg.Replicas,
	})
	if err != nil {
		hw.Stop()
		return nil, nil, fmt.Errorf("cannot create the key-value bucket: %w", err)
	}
	n.kv.Store(&kvRef{kv})
	gen := n.view.beginSync()
	w, err = kv.WatchAll(context.Background())
	if err != nil {
		hw.Stop()
		return nil, nil, fmt.Errorf("cannot watch the key-value bucket: %w", err)
	}
	go n.watch(w, gen)
	return w, hw, nil
}

// heartbeat is the goroutine that writes the node's heartbeat every
// ClaimTTL/3, apart from the worker, whose writes of many records must not
// delay it.
func (n *Node) heartbeat() {
	t := time.NewTicker(n.cfg.ClaimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
		}
		r := n.hb.Load()
		if r == nil || !n.nc.IsConnected() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ClaimTTL/3)
		if err := n.beat(ctx, r.kv); err != nil {
			n.stats.kvErrors.Add(1)
			n.log.Debug("cannot write the node's heartbeat; retrying", "err", err)
		}
		cancel()
	}
}

// askResync asks the other nodes to rewrite their records: this node is
// back on NATS with subscribers, and their records' positions tell it what
// it missed (catchup.go).
func (n *Node) askResync() {
	if err := n.nc.Publish(resyncSubject(n.cfg.Prefix), []byte(n.id)); err != nil {
		n.log.Debug("cannot ask the other nodes for their positions", "err", err)
	}
}

// answerResync rewrites this node's records for a node that came back.
func (n *Node) answerResync(*nats.Msg) { n.markAllDirty() }

func (n *Node) bucket() jetstream.KeyValue {
	if r := n.kv.Load(); r != nil {
		return r.kv
	}
	return nil
}

// watch feeds the view from one watcher until it stops.
func (n *Node) watch(w jetstream.KeyWatcher, gen uint64) {
	for e := range w.Updates() {
		if e == nil {
			n.view.endSync(n, gen)
			continue
		}
		n.view.apply(n, e, gen)
	}
}

// topicEnded tells the hub that k ended elsewhere.
func (n *Node) topicEnded(k topics.Key) {
	if h := n.theHub(); h != nil {
		h.TopicEnded(k)
	}
}

func (n *Node) graceFor() time.Duration { return time.Duration(n.grace.Load()) }
