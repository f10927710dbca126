package scenario

import (
	"fmt"
	"testing"

	"github.com/wspubsub/wspubsub/bench/target"
)

// TestStorm: every subscriber is dropped once, at the same instant, comes
// back, and gets the message published after the storm; the figures are
// measured from the drop and ordered (back before receiving). Against our
// hub (reconnects with since) and the reference (plain), in one process and
// split over two.
func TestStorm(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tg    func(t *testing.T) *target.Target
		procs int
	}{
		{"ours", func(t *testing.T) *target.Target { return ourHub(t) }, 1},
		{"ours", func(t *testing.T) *target.Target { return ourHub(t) }, 2},
		{"reference", refTarget, 1},
	} {
		t.Run(fmt.Sprintf("%s/procs%d", tc.name, tc.procs), func(t *testing.T) {
			o := tiny("storm", tc.procs)
			o.SubsPerTopic = 25
			r := run(t, tc.tg(t), o)
			st, rc := r.Storm, r.Reconnect
			if st == nil || rc == nil {
				t.Fatalf("no storm or reconnect figures: %+v", r)
			}
			if st.Subscribers != 50 || rc.Cuts != 50 || rc.Reconnects != 50 || rc.Recovered != 50 || rc.Unrecovered != 0 {
				t.Fatalf("storm %+v, reconnect %+v", *st, *rc)
			}
			if r.Expected != 100 || r.Delivered != 100 || r.Lost != 0 {
				t.Errorf("expected %d delivered %d lost %d", r.Expected, r.Delivered, r.Lost)
			}
			if st.BackSeconds <= 0 || st.ReceivingSeconds < st.BackSeconds || st.ReceivingSeconds > 10 {
				t.Errorf("back after %v s, receiving after %v s", st.BackSeconds, st.ReceivingSeconds)
			}
			if ours := tc.name == "ours"; ours && rc.Resumed != 50 || !ours && rc.Plain != 50 {
				t.Errorf("reconnects with since %d, plain %d", rc.Resumed, rc.Plain)
			}
		})
	}
}
