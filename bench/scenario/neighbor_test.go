package scenario

import (
	"context"
	"testing"
	"time"
)

// TestNeighborSmall: a tiny neighbor run against the reference hub, in
// this process, with its sink process (this test binary, see TestMain):
// both phases measured, every delivery of the small topics and of the big
// one counted.
func TestNeighborSmall(t *testing.T) {
	tg := refTarget(t)
	o := NeighborOptions{SmallTopics: 3, SmallSubs: 4, SmallRate: 20, BigSubs: 50, BigRate: 10, Phase: 500 * time.Millisecond, Timeout: time.Minute}
	r, err := Neighbor(context.Background(), tg, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	if r.Alone.Deliveries == 0 || r.Beside.Deliveries == 0 || r.Alone.P99 <= 0 || r.Beside.P99 <= 0 {
		t.Fatalf("a phase measured nothing: %+v", r)
	}
	if r.BigExpected == 0 || r.BigDelivery != r.BigExpected {
		t.Fatalf("big topic: %d of %d deliveries", r.BigDelivery, r.BigExpected)
	}
	if r.Ratio() <= 0 {
		t.Fatalf("ratio %v", r.Ratio())
	}
}
