package payload

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{MinSize, 128, 256, 70000} {
		b := make([]byte, n)
		Fill(b, 7, 0, 1)
		Stamp(b, 42, 123456789)
		pub, seq, ns, err := Parse(b, n)
		if err != nil || pub != 7 || seq != 42 || ns != 123456789 {
			t.Fatalf("n=%d: got %d %d %d %v", n, pub, seq, ns, err)
		}
		if _, _, _, err := Parse(b[:n-1], 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("n=%d: truncated message accepted", n)
		}
		b[n-1] ^= 1
		if _, _, _, err := Parse(b, n); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("n=%d: altered trailer accepted", n)
		}
	}
}
