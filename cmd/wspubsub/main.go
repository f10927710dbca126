// Command wspubsub runs the WebSocket publish/subscribe hub and manages its
// API keys. `wspubsub help` lists the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/version"
)

const usage = `wspubsub: a WebSocket publish/subscribe hub

usage:
  wspubsub serve [flags]      run the hub (wspubsub serve -h lists the flags)
  wspubsub keys <command>     manage API keys (wspubsub keys help)
  wspubsub config <command>   print a default config file, or check one (wspubsub config help)
  wspubsub sub [flags] URL    print a topic's messages: wspubsub sub ws://127.0.0.1:8080/ws/sub/DOMAIN/TOPIC
  wspubsub pub [flags] URL    publish stdin's lines: wspubsub pub ws://127.0.0.1:8080/ws/pub/KEY/DOMAIN/TOPIC
                              (wspubsub sub -h, wspubsub pub -h)
  wspubsub version            print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "keys":
		return runKeys(args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "sub":
		return runSub(args[1:], stdout, stderr)
	case "pub":
		return runPub(args[1:], os.Stdin, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "wspubsub", version.String())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wspubsub: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// envOverrides sets every flag not given on the command line from its
// WSPUBSUB_* environment variable: --max-backlog from WSPUBSUB_MAX_BACKLOG.
func envOverrides(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v, ok := os.LookupEnv(name); ok && !given[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("bad %s=%q: %w%s", name, redact(v), e, want(f))
			}
		}
	})
	return err
}

// serveOptions are serve's settings, filled from flags and the environment.
type serveOptions struct {
	cfg             server.Config
	store           storeFlags
	migrate         bool
	logLevel        string
	logFormat       string
	metricsListen   string
	pprof           bool
	shutdownTimeout time.Duration
	natsURL         string
	nats            natsAuth
	nodeName        string
	clusterName     string
	tls             tlsOptions
	compression     bool
}

// serveFlags registers serve's flags on fs, each filling o.
func serveFlags(fs *flag.FlagSet, o *serveOptions) {
	cfg := &o.cfg
	o.store.register(fs)
	o.tls.register(fs)
	fs.BoolVar(&o.migrate, "migrate", false, "create or upgrade the PostgreSQL schema before serving (with --database-url)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address to serve on")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", 1<<20, "largest message a publisher may send, in bytes (larger: close 1009)")
	fs.IntVar(&cfg.MaxBacklog, "max-backlog", 1<<20, "most bytes a subscriber may fall behind before it is closed with 4000")
	fs.DurationVar(&cfg.GracePeriod, "grace-period", 10*time.Second, "how long a topic outlives its publisher (0: none)")
	fs.IntVar(&cfg.HistorySize, "history-size", 100, "messages each topic keeps for rewind and resume (0: no history)")
	fs.IntVar(&cfg.HistoryBytes, "history-bytes", 1<<20, "bytes each topic's history may hold (0: no bound but --history-size)")
	fs.DurationVar(&cfg.HistoryTTL, "history-ttl", 5*time.Minute, "how long a message is kept in history (0: no age bound)")
	fs.Int64Var(&cfg.HistoryMemory, "history-memory", 256<<20, "bytes the history of all topics may hold; past it the oldest entries of any topic go first (0: no bound)")
	fs.BoolVar(&cfg.SubscribeWaits, "subscribe-waits", false, "let subscribers join a topic before its publisher starts it")
	fs.IntVar(&cfg.PublishersPerTopic, "publishers-per-topic", 1, "how many publishers a topic may have at once, on any of the cluster's nodes")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time from connecting to the end of the handshake")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", 8<<10, "largest upgrade request head, in bytes (larger: 431)")
	fs.DurationVar(&cfg.CloseTimeout, "close-timeout", 5*time.Second, "how long a closing connection may take to answer the close frame")
	fs.IntVar(&cfg.SubscriberInputLimit, "subscriber-input-limit", 64<<10, "bytes a subscriber may send per second before it is closed with 1008")
	fs.IntVar(&cfg.Pollers, "pollers", 0, "event loops (0: one per core)")
	fs.DurationVar(&cfg.DrainPeriod, "drain-period", 5*time.Second, "at shutdown, spread the closing of subscribers over this long")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", 30*time.Second, "ping a connection that has sent nothing for this long; an EventSource stream gets ': ping' after this long with nothing sent (0: never)")
	fs.DurationVar(&cfg.PongTimeout, "pong-timeout", 10*time.Second, "close with 4003 a pinged connection silent for this long")
	fs.IntVar(&cfg.MaxConnections, "max-connections", 0, "most open connections; more get 503 (0: the open-file limit less 64)")
	fs.IntVar(&cfg.MaxConnectionsPerAddr, "max-connections-per-addr", 0, "most open connections from one IP address; more get 503 (0: no limit)")
	fs.Float64Var(&cfg.HandshakeRate, "handshake-rate", 0, "new connections a second from one IP address; more get 429 (0: no limit)")
	fs.IntVar(&cfg.HandshakeBurst, "handshake-burst", 0, "bursts allowed above --handshake-rate (0: one second's worth)")
	fs.IntVar(&cfg.MaxTopicsPerDomain, "max-topics-per-domain", 100_000, "most live topics of one domain; more get 429 (0: no limit)")
	fs.IntVar(&cfg.MaxPublishRate, "max-publish-rate", 0, "messages a second a WebSocket publisher may send (past it, close 4004), and an API key may publish over HTTP across its connections (past it, 429) (0: no limit)")
	fs.Var(proxyList{&cfg.TrustedProxies}, "trusted-proxies", "comma-separated addresses and CIDR prefixes of proxies whose word on the client's address is taken (PROXY header or X-Forwarded-For); from other peers neither is read (default: none)")
	fs.BoolVar(&cfg.ProxyProtocol, "proxy-protocol", false, "connections from --trusted-proxies start with a PROXY protocol header (v1 or v2), which gives the client's address instead of X-Forwarded-For")
	fs.BoolVar(&o.compression, "compression", true, "negotiate permessage-deflate with WebSocket clients that offer it: each message is compressed once per topic for all of them (false: never)")
	fs.IntVar(&cfg.CompressMinSize, "compress-min-size", 256, "smallest message compressed for permessage-deflate subscribers, in bytes; smaller ones go plain (0: every message)")
	fs.Var(originList{&cfg.AllowedOrigins}, "allowed-origins", "comma-separated Origins browsers may connect from: https://app.example, https://*.example, * (default: any)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 15*time.Second, "at shutdown, exit after this long whatever is left")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve /metrics (and /debug/pprof) on this address instead of --listen")
	fs.BoolVar(&o.pprof, "pprof", false, "serve the pprof endpoints under /debug/pprof/ beside /metrics")
	fs.StringVar(&o.natsURL, "nats-url", "", "make this hub a cluster node over the NATS server(s) at this URL, or comma-separated URLs, e.g. nats://127.0.0.1:4222 (JetStream required); nats://USER:PASSWORD@HOST or nats://TOKEN@HOST authenticates (never logged), tls:// requires TLS")
	o.nats.register(fs)
	fs.StringVar(&o.nodeName, "node-name", "", "this node's name in logs and topic ownership records (default: the host name)")
	fs.StringVar(&o.clusterName, "cluster-name", "wspubsub", "nodes with the same NATS and cluster name form one cluster: the prefix of their subjects and of their key-value bucket")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
}

// zeroMeansNone turns a flag's 0, which means none on the command line,
// into server.Config's way of saying none: a negative value.
func zeroMeansNone[T int | int64 | time.Duration](v *T) {
	if *v == 0 {
		*v = -1
	}
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wspubsub serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o serveOptions
	serveFlags(fs, &o)
	registerConfig(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := applyConfig(fs); err != nil { // the config file, then the environment
		fmt.Fprintln(stderr, "wspubsub serve:", err)
		return 2
	}
	cfg := o.cfg
	// Config's zero values mean its defaults; on the command line 0 means none.
	zeroMeansNone(&cfg.GracePeriod)
	zeroMeansNone(&cfg.PingInterval)
	zeroMeansNone(&cfg.MaxTopicsPerDomain)
	zeroMeansNone(&cfg.HistorySize)
	zeroMeansNone(&cfg.HistoryBytes)
	zeroMeansNone(&cfg.HistoryTTL)
	zeroMeansNone(&cfg.HistoryMemory)
	zeroMeansNone(&cfg.CompressMinSize)
	cfg.DisableCompression = !o.compression
	log, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "wspubsub serve:", err)
		return 2
	}
	cfg.Logger = log
	cfg.Version = version.String()
	if cfg.TLS, err = o.tls.load(); err != nil {
		fmt.Fprintln(stderr, "wspubsub serve:", err)
		return 2
	}
	if err := o.nats.check(o.natsURL); err != nil {
		fmt.Fprintln(stderr, "wspubsub serve:", err)
		return 2
	}

	openCtx, cancelOpen := context.WithTimeout(context.Background(), 30*time.Second)
	store, err := o.store.openServe(openCtx, o.migrate, log)
	cancelOpen()
	if err != nil {
		log.Error("cannot open the key store", "err", err)
		return 1
	}
	defer store.Close()
	cfg.Keys = store.checker
	cfg.Tokens = store.tokens

	var node *cluster.Node
	if o.natsURL != "" {
		if !validClusterName(o.clusterName) {
			log.Error("bad --cluster-name: want letters, digits, - and _", "cluster_name", o.clusterName)
			return 2
		}
		ccfg := cluster.Config{
			URL:    o.natsURL,
			Name:   o.nodeName,
			Prefix: o.clusterName,
			Bucket: o.clusterName + "_topics",
			Logger: log,
			// Publishers of one topic may be on any nodes (the topic's
			// record counts them across the cluster).
			PublishersPerTopic: cfg.PublishersPerTopic,
		}
		o.nats.apply(&ccfg)
		node, err = cluster.Connect(ccfg)
		if err != nil {
			log.Error("cannot join the cluster", "err", err)
			return 1
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := node.Close(ctx); err != nil {
				log.Warn("cannot leave the cluster cleanly", "err", err)
			}
		}()
		cfg.Cluster = node
	}

	// The main listener answers plain HTTP for health and, unless
	// --metrics-listen moves them, metrics and pprof.
	var hub atomic.Pointer[server.Server]
	mainMux, metricsMux := http.NewServeMux(), http.NewServeMux()
	obs := mainMux
	if o.metricsListen != "" {
		obs = metricsMux
		metricsMux.Handle("/healthz", lazy(&hub, (*server.Server).HealthHandler))
		metricsMux.Handle("/readyz", lazy(&hub, (*server.Server).ReadyHandler))
	}
	mainMux.Handle("/healthz", lazy(&hub, (*server.Server).HealthHandler))
	mainMux.Handle("/readyz", lazy(&hub, (*server.Server).ReadyHandler))
	obs.Handle("/metrics", lazy(&hub, (*server.Server).MetricsHandler))
	if o.pprof {
		obs.HandleFunc("/debug/pprof/", pprof.Index)
		obs.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		obs.HandleFunc("/debug/pprof/profile", pprof.Profile)
		obs.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		obs.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	cfg.HTTP = mainMux

	// An empty key file gets a first key before the hub serves, so that
	// no other process's `keys add` races with writing it.
	first, firstErr := "", error(nil)
	if empty, err := store.empty(context.Background()); err != nil {
		log.Error("cannot count the API keys", "err", err)
	} else if empty && store.pg != nil {
		// A first key is the key file's convenience for trying the hub out;
		// a database's keys are its administrator's to add or import.
		log.Warn("the key database holds no API keys: every publisher is refused until `wspubsub keys add` or `wspubsub keys import-legacy` adds some")
	} else if empty {
		first, firstErr = store.Add(context.Background(), "test", "first-start")
	}

	srv, err := server.Start(cfg)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	hub.Store(srv)
	defer reloadOnHangup(cfg.TLS, node, log)()
	store.serving(srv)
	log.Info("wspubsub serving", "addr", o.tls.scheme()+"://"+srv.Addr(), "keys", store.where, "version", version.String())
	if node != nil {
		log.Info("cluster node", "id", node.ID(), "nats", cluster.RedactURL(o.natsURL), "cluster_name", o.clusterName)
	}
	if o.metricsListen != "" {
		ms := &http.Server{Addr: o.metricsListen, Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}
		ln, err := net.Listen("tcp", o.metricsListen)
		if err != nil {
			log.Error("cannot listen for metrics", "addr", o.metricsListen, "err", err)
			srv.Shutdown(context.Background())
			return 1
		}
		go ms.Serve(ln)
		defer ms.Close()
		log.Info("metrics served", "addr", "http://"+ln.Addr().String()+"/metrics")
	}
	if firstErr != nil {
		log.Error("cannot create the first API key", "err", firstErr)
	} else if first != "" {
		printFirstKey(first, srv.Addr(), stdout)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	got := <-sig
	log.Info("draining", "signal", got.String(), "drain_period", cfg.DrainPeriod, "shutdown_timeout", o.shutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown was not clean", "err", err)
	}
	log.Info("stopped")
	return 0
}

// validClusterName reports whether name can prefix subjects and name a
// key-value bucket: letters, digits, '-' and '_'.
func validClusterName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// originList is the --allowed-origins flag: a comma-separated list.
type originList struct{ list *[]string }

func (o originList) String() string {
	if o.list == nil {
		return ""
	}
	return strings.Join(*o.list, ",")
}

func (o originList) Set(v string) error {
	*o.list = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*o.list = append(*o.list, s)
		}
	}
	return nil
}

// proxyList is the --trusted-proxies flag: comma-separated addresses and
// CIDR prefixes.
type proxyList struct{ list *[]netip.Prefix }

func (p proxyList) String() string {
	if p.list == nil {
		return ""
	}
	s := make([]string, len(*p.list))
	for i, pr := range *p.list {
		s[i] = pr.String()
	}
	return strings.Join(s, ",")
}

func (p proxyList) Set(v string) error {
	list, err := server.ParseTrustedProxies(v)
	if err != nil {
		return err
	}
	*p.list = list
	return nil
}

// lazy serves the handler h makes of the hub once it has started (the
// handlers exist before the hub does, since it is given them); before, 503.
func lazy(hub *atomic.Pointer[server.Server], h func(*server.Server) http.Handler) http.Handler {
	var once sync.Once
	var handler http.Handler
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv := hub.Load()
		if srv == nil {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		once.Do(func() { handler = h(srv) })
		handler.ServeHTTP(w, r)
	})
}

// printFirstKey shows the key created for domain "test" in an empty store,
// once, with a publisher and a subscriber to try.
func printFirstKey(key, addr string, out io.Writer) {
	fmt.Fprintf(out, `
The key store was empty: created an API key for domain "test" (shown once, store it now):

    %s

Try it, publisher first (a subscriber to a topic no publisher started gets 404):
    publisher (type lines):        %[2]s pub ws://%[3]s/ws/pub/%[1]s/test/hello
    subscriber (another terminal): %[2]s sub ws://%[3]s/ws/sub/test/hello

`, key, selfCommand(), addr)
}

// selfCommand is how the user ran this binary, to show commands they can
// paste: its path, or "go run ./cmd/wspubsub" for a binary go run built.
func selfCommand() string {
	self := os.Args[0]
	if strings.Contains(self, "go-build") {
		return "go run ./cmd/wspubsub"
	}
	return self
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, errors.New("bad --log-format: want text or json")
}
