package result

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLeaks(t *testing.T) {
	tol := DefaultTolerance
	start := HubSample{Goroutines: 12, OpenFDs: 15, RSS: 14 << 20}
	ok := HubSample{Goroutines: 17, OpenFDs: 10, RSS: 22 << 20}
	if l := tol.Leaks(start, ok); len(l) != 0 {
		t.Errorf("within tolerance: %v", l)
	}
	// RSS: +8 MiB or +20%, whichever is more.
	if got := tol.RSSLimit(100 << 20); got != 120<<20 {
		t.Errorf("RSSLimit(100 MiB) = %v", got)
	}
	bad := HubSample{Goroutines: 18, OpenFDs: 9, RSS: 23 << 20, Connections: 2, Topics: 1}
	l := strings.Join(tol.Leaks(start, bad), "\n")
	for _, want := range []string{"goroutines 12 → 18", "open files 15 → 9", "RSS 14.0 MiB → 23.0 MiB", "2 connections left", "1 topics left"} {
		if !strings.Contains(l, want) {
			t.Errorf("leaks %q lack %q", l, want)
		}
	}
}

func TestRobustChecks(t *testing.T) {
	slow := &SlowConsumer{
		MaxBacklog: 1 << 20, KernelBuffer: 4 << 20, CutOff: true, CloseCode: 4000, QueuedBytes: 3 << 20,
		Disconnects: 1, Before: Latency{Count: 10, P99: 5000}, After: Latency{Count: 10, P99: 9000},
		MaxP99JumpUs: 5000, RSSBaseline: 20 << 20, RSSAfter: 21 << 20, Tolerance: DefaultTolerance,
	}
	r := &Result{Slow: slow}
	r.Check()
	if !r.Pass() {
		t.Fatalf("a good slow-consumer run failed: %v", r.Failures)
	}
	slow.After.P99 = 10001
	slow.QueuedBytes = 512 << 10
	slow.Disconnects = 0
	slow.RSSAfter = 40 << 20
	r.Check()
	all := strings.Join(r.Failures, "\n")
	for _, want := range []string{"p99 latency jumped", "before its bound", "grew by 0", "hub RSS 40.0 MiB"} {
		if !strings.Contains(all, want) {
			t.Errorf("failures %q lack %q", all, want)
		}
	}
	slow.CutOff = false
	r.Check()
	if len(r.Failures) != 1 || !strings.Contains(r.Failures[0], "not cut off") {
		t.Errorf("failures %q", r.Failures)
	}

	soak := &Soak{Start: HubSample{Goroutines: 10}, End: HubSample{T: 130, Goroutines: 10}, Tolerance: DefaultTolerance,
		Unexpected: map[string]int{"subscriber: closed by the hub with 1002": 2}, Gaps: 1}
	r = &Result{Soak: soak}
	r.Check()
	if len(r.Failures) != 2 {
		t.Errorf("soak failures %q", r.Failures)
	}
	// What --json prints comes back whole.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	back.Check()
	if len(back.Failures) != 2 || back.Soak.End.T != 130 {
		t.Errorf("round trip: %+v", back.Soak)
	}
}
