package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/bench/scenario"
	"github.com/wspubsub/wspubsub/bench/target"
)

// runNeighbor runs `wspubsub-bench neighbor`: small topics measured alone,
// then beside one large topic; with --compare against our hub and then the
// reference hub, same run.
func runNeighbor(args []string) int {
	fs := flag.NewFlagSet("neighbor", flag.ContinueOnError)
	hubBin := fs.String("hub-bin", "", "our hub's binary `BIN`: the bench runs \"BIN keys add\" and \"BIN serve\" on a free 127.0.0.1 port (none: the reference hub alone)")
	compare := fs.Bool("compare", false, "run against --hub-bin and then against the reference hub")
	rounds := fs.Int("rounds", 1, "with --compare: run ours, reference, ours, ... this many times each, interleaved (the machine may be shared)")
	domain := fs.String("domain", "bench", "domain of the topics")
	var o scenario.NeighborOptions
	fs.IntVar(&o.SmallTopics, "small-topics", 100, "small topics (one publisher each)")
	fs.IntVar(&o.SmallSubs, "small-subs", 20, "subscribers per small topic")
	fs.Float64Var(&o.SmallRate, "small-rate", 20, "messages a second per small topic")
	fs.IntVar(&o.BigSubs, "big-subs", 10000, "subscribers of the big topic")
	fs.Float64Var(&o.BigRate, "big-rate", 4, "messages a second on the big topic, second phase")
	fs.IntVar(&o.Size, "size", 128, "message size in bytes (at least 9)")
	fs.DurationVar(&o.Phase, "phase", 10*time.Second, "length of each phase")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "bound on one run")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	var hubArgs multi
	fs.Var(&hubArgs, "hub-arg", "extra argument for our hub's serve command (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *compare && *hubBin == "" {
		fmt.Fprintln(os.Stderr, "wspubsub-bench neighbor: --compare needs --hub-bin")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hub := target.HubOptions{Domain: *domain, ExtraArgs: hubArgs}
	var which []string
	switch {
	case *compare:
		for range max(*rounds, 1) {
			which = append(which, "ours", "reference")
		}
	case *hubBin != "":
		which = []string{"ours"}
	default:
		which = []string{"reference"}
	}
	var results []*scenario.NeighborResult
	failed := false
	for _, w := range which {
		var t *target.Target
		var err error
		if w == "ours" {
			t, err = target.StartOurs(ctx, *hubBin, hub)
		} else {
			self, serr := os.Executable()
			if serr != nil {
				fmt.Fprintln(os.Stderr, "wspubsub-bench neighbor:", serr)
				return 1
			}
			t, err = target.StartReference(ctx, self, hub)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench neighbor:", err)
			return 1
		}
		r, err := scenario.Neighbor(ctx, t, o)
		if serr := t.Stop(); serr != nil {
			fmt.Fprintln(os.Stderr, "wspubsub-bench neighbor:", serr)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "wspubsub-bench neighbor: %s: %v\n", w, err)
			return 1
		}
		r.Target = w
		failed = failed || len(r.Errors) > 0
		results = append(results, r)
		if !*asJSON {
			fmt.Printf("%-9s alone p50 %7.2f ms p99 %7.2f ms (%d)   beside p50 %7.2f ms p99 %7.2f ms (%d)   p99 ratio %5.2fx   big %d/%d %v\n",
				w, ms(r.Alone.P50), ms(r.Alone.P99), r.Alone.Deliveries, ms(r.Beside.P50), ms(r.Beside.P99), r.Beside.Deliveries,
				r.Ratio(), r.BigDelivery, r.BigExpected, r.Errors)
		}
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(results)
	}
	if failed {
		return 1
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
