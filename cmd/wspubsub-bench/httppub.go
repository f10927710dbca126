package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/bench/httppub"
	"github.com/wspubsub/wspubsub/bench/target"
)

// runHTTPPub runs `wspubsub-bench httppub`: HTTP publishes a second on one
// keep-alive connection, then on more (--conns 1,50), against our hub.
func runHTTPPub(args []string) int {
	fs := flag.NewFlagSet("httppub", flag.ContinueOnError)
	hubBin := fs.String("hub-bin", "", "our hub's binary `BIN`: the bench runs \"BIN keys add\" and \"BIN serve\" on a free 127.0.0.1 port")
	url := fs.String("url", "", "a hub that is already running, ws://127.0.0.1:PORT (needs --key)")
	key := fs.String("key", "", "publisher key for --url")
	pid := fs.Int("server-pid", 0, "process id of the --url hub, to measure its CPU")
	domain := fs.String("domain", "bench", "domain of the topics")
	conns := fs.String("conns", "1,50", "comma-separated numbers of keep-alive connections: one run each")
	depth := fs.Int("depth", 1, "requests in flight per connection: 1 uses Go's net/http client; more pipeline raw HTTP/1.1")
	size := fs.Int("size", 128, "message size in bytes")
	topics := fs.Int("topics", 1, "topics the connections publish to (connection i to topic i mod N)")
	subs := fs.Int("subs", 1, "WebSocket subscribers per topic that check every message arrives (0: none)")
	duration := fs.Duration("duration", 5*time.Second, "how long each run publishes")
	var hubArgs multi
	fs.Var(&hubArgs, "hub-arg", "extra argument for our hub's serve command (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var counts []int
	for _, part := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "wspubsub-bench httppub: bad --conns %q: want counts of at least 1\n", *conns)
			return 2
		}
		counts = append(counts, n)
	}
	if (*hubBin == "") == (*url == "") {
		fmt.Fprintln(os.Stderr, "wspubsub-bench httppub: give --hub-bin or --url (with --key)")
		return 2
	}
	if *subs == 0 {
		*subs = -1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var t *target.Target
	var err error
	if *hubBin != "" {
		t, err = target.StartOurs(ctx, *hubBin, target.HubOptions{Domain: *domain, ExtraArgs: hubArgs})
	} else {
		t, err = target.Attach(*url, *domain, *key, *pid)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wspubsub-bench httppub:", err)
		return 1
	}
	defer t.Stop()
	code := 0
	for i, n := range counts {
		if i > 0 {
			fmt.Println()
		}
		r, err := httppub.Run(ctx, httppub.Options{
			Server: t.Server, Domain: t.Domain, Key: t.Key, Conns: n, Depth: *depth,
			Size: *size, Topics: *topics, Subs: *subs, Duration: *duration, PIDs: t.Processes(),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench httppub:", err)
			return 1
		}
		httppub.Print(os.Stdout, r)
		if !r.Pass() {
			code = 1
		}
	}
	return code
}
