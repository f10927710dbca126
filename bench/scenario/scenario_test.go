package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/bench/refhub"
	"github.com/wspubsub/wspubsub/bench/result"
	"github.com/wspubsub/wspubsub/bench/target"
)

// TestMain lets the test binary serve as a worker process or a reference hub
// when the tests re-execute it, as the bench binary does.
func TestMain(m *testing.M) {
	if ok, err := RunHelper(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func refTarget(t *testing.T) *target.Target {
	t.Helper()
	tg, err := target.InProcess("bench", refhub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Stop() })
	return tg
}

func tiny(scenario string, procs int) Options {
	return Options{
		Scenario: scenario, Topics: 2, SubsPerTopic: 5, Count: 20, Size: 64,
		Procs: procs, Workers: 2, Hold: 200 * time.Millisecond,
		Settle: 50 * time.Millisecond, DrainTimeout: 3 * time.Second, Timeout: time.Minute,
		Sources: []string{"127.0.0.2", "127.0.0.3"},
	}
}

func run(t *testing.T, tg *target.Target, o Options) *result.Result {
	t.Helper()
	r, err := Run(context.Background(), tg, o)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Pass() {
		t.Fatalf("%s failed: errors %v, failures %v", o.Scenario, r.Errors, r.Failures)
	}
	// What --json prints must round-trip.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back result.Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return r
}

func checkFlow(t *testing.T, r *result.Result, want int64) {
	t.Helper()
	if r.Subscribers != 10 || r.Published != 40 {
		t.Errorf("subscribers %d published %d, want 10 and 40", r.Subscribers, r.Published)
	}
	if r.Expected != want || r.Delivered != want || r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 {
		t.Errorf("expected %d delivered %d lost %d dup %d ooo %d", r.Expected, r.Delivered, r.Lost, r.Duplicates, r.OutOfOrder)
	}
	if r.Latency.Count != r.Delivered || r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 || r.Latency.Max > 10e6 {
		t.Errorf("latency: %+v", r.Latency)
	}
	if r.DeliveriesPerSec <= 0 || r.PublishSeconds <= 0 || r.ClientCPUSeconds < 0 {
		t.Errorf("rates: %v/s over %v s", r.DeliveriesPerSec, r.PublishSeconds)
	}
	var series float64
	for _, p := range r.Series {
		series += p.Deliveries
	}
	if len(r.Series) == 0 || series <= 0 {
		t.Errorf("empty series")
	}
}

func TestFanout(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprint("procs", procs), func(t *testing.T) {
			r := run(t, refTarget(t), tiny("fanout", procs))
			checkFlow(t, r, 200)
		})
	}
}

func TestFanoutPaced(t *testing.T) {
	o := tiny("fanout", 1)
	o.Rate = 100
	r := run(t, refTarget(t), o)
	checkFlow(t, r, 200)
	if r.PublishSeconds < 0.15 {
		t.Errorf("20 messages at 100/s took %v s", r.PublishSeconds)
	}
}

func TestIdle(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprint("procs", procs), func(t *testing.T) {
			r := run(t, refTarget(t), tiny("idle", procs))
			if r.Subscribers != 10 || r.ConnectRate <= 0 {
				t.Errorf("subscribers %d connect rate %v", r.Subscribers, r.ConnectRate)
			}
		})
	}
}

func TestChurn(t *testing.T) {
	o := tiny("churn", 2)
	o.Rate = 100
	o.Count = 0
	o.Duration = time.Second
	o.ChurnRate = 40
	o.ChurnLife = 200 * time.Millisecond
	r := run(t, refTarget(t), o)
	if r.Expected != 10*100 || r.Lost != 0 {
		t.Errorf("expected %d lost %d", r.Expected, r.Lost)
	}
	if r.Churn == nil || r.Churn.Opened < 20 || r.Churn.Delivered == 0 {
		t.Errorf("churn: %+v", r.Churn)
	}
}

func TestRejectsNonLoopback(t *testing.T) {
	if _, err := target.Attach("ws://10.0.0.1:80", "d", "k", 0); err == nil {
		t.Fatal("non-loopback target accepted")
	}
	o := tiny("fanout", 1)
	o.Sources = []string{"192.168.1.1"}
	r, err := Run(context.Background(), refTarget(t), o)
	if err == nil && r.Pass() {
		t.Fatal("non-loopback source address accepted")
	}
}

func TestBadKey(t *testing.T) {
	tg := refTarget(t)
	tg.Key = "wrong"
	r, err := Run(context.Background(), tg, tiny("fanout", 1))
	if err != nil {
		t.Fatal(err)
	}
	if r.Pass() {
		t.Fatal("run with a bad key passed")
	}
}
