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
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/server"
)

const usage = `wspubsub: a WebSocket publish/subscribe hub

usage:
  wspubsub serve [flags]      run the hub (wspubsub serve -h lists the flags)
  wspubsub keys <command>     manage API keys (wspubsub keys help)
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
	case "version", "--version":
		fmt.Fprintln(stdout, "wspubsub", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wspubsub: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// envOverrides sets every flag not given on the command line from its
// WSPUBSUB_* environment variable: --max-backlog from WSPUBSUB_MAX_BACKLOG.
func envOverrides(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := "WSPUBSUB_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok && !given[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("bad %s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wspubsub serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg server.Config
	var sf storeFlags
	sf.register(fs)
	var logLevel, logFormat string
	var migrate bool
	fs.BoolVar(&migrate, "migrate", false, "create or upgrade the PostgreSQL schema before serving (with --database-url)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "address to serve on")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", 1<<20, "largest message a publisher may send, in bytes (larger: close 1009)")
	fs.IntVar(&cfg.MaxBacklog, "max-backlog", 1<<20, "most bytes a subscriber may fall behind before it is closed with 4000")
	fs.DurationVar(&cfg.GracePeriod, "grace-period", 10*time.Second, "how long a topic outlives its publisher (0: none)")
	fs.BoolVar(&cfg.SubscribeWaits, "subscribe-waits", false, "let subscribers join a topic before its publisher starts it")
	fs.IntVar(&cfg.PublishersPerTopic, "publishers-per-topic", 1, "how many publishers a topic may have at once")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time from connecting to the end of the handshake")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", 8<<10, "largest upgrade request head, in bytes (larger: 431)")
	fs.DurationVar(&cfg.CloseTimeout, "close-timeout", 5*time.Second, "how long a closing connection may take to answer the close frame")
	fs.IntVar(&cfg.SubscriberInputLimit, "subscriber-input-limit", 64<<10, "bytes a subscriber may send per second before it is closed with 1008")
	fs.IntVar(&cfg.Pollers, "pollers", 0, "event loops (0: one per core)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := envOverrides(fs); err != nil {
		fmt.Fprintln(stderr, "wspubsub serve:", err)
		return 2
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = -1 // Config's zero value means the default; 0 here means none
	}
	log, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "wspubsub serve:", err)
		return 2
	}
	cfg.Logger = log

	openCtx, cancelOpen := context.WithTimeout(context.Background(), 30*time.Second)
	store, err := sf.openServe(openCtx, migrate, log)
	cancelOpen()
	if err != nil {
		log.Error("cannot open the key store", "err", err)
		return 1
	}
	defer store.Close()
	cfg.Keys = store

	srv, err := server.Start(cfg)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	store.serving(srv)
	log.Info("wspubsub serving", "addr", "ws://"+srv.Addr(), "keys", store.where, "version", version())
	if empty, err := store.empty(context.Background()); err != nil {
		log.Error("cannot count the API keys", "err", err)
	} else if empty {
		if err := firstKey(store, srv.Addr(), stdout); err != nil {
			log.Error("cannot create the first API key", "err", err)
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	got := <-sig
	log.Info("shutting down", "signal", got.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.CloseTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown was not clean", "err", err)
	}
	return 0
}

// firstKey creates a key for domain "test" in an empty store and prints it
// once, with a publisher and a subscriber to try.
func firstKey(store keyStore, addr string, out io.Writer) error {
	key, err := store.Add(context.Background(), "test", "first-start")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, `
The key store was empty: created an API key for domain "test" (shown once, store it now):

    %s

Try it (websocat is one client of many):
    publisher:  websocat ws://%s/ws/pub/%s/test/hello
    subscriber: websocat ws://%s/ws/sub/test/hello

`, key, addr, key, addr)
	return nil
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
