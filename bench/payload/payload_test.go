package payload

import (
	"bytes"
	"encoding/json"
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

func TestFillJSON(t *testing.T) {
	for _, n := range []int{MinSize, MinSize + 2, 100, 1536, 5000} {
		b := make([]byte, n)
		FillJSON(b, 7, 42, 1234)
		pub, seq, sent, err := Parse(b, n)
		if err != nil || pub != 7 || seq != 42 || sent != 1234 {
			t.Fatalf("n=%d: %d %d %d %v", n, pub, seq, sent, err)
		}
		if n >= 100 && !bytes.Contains(b, []byte(`{"type":"quotes","seq":42,`)) {
			t.Fatalf("n=%d: no JSON feed in %q", n, b)
		}
	}
}

// TestFeedsVary: every feed's messages are valid JSON of 1-2 KB, and none
// repeats an earlier one once its sequence number is left out.
func TestFeedsVary(t *testing.T) {
	for name, feed := range Feeds {
		seen := map[string]bool{}
		for i := range uint64(5000) {
			m := feed(nil, i)
			if !json.Valid(m) || len(m) < 1000 || len(m) > 2048 {
				t.Fatalf("%s message %d: %d bytes, valid %v: %s", name, i, len(m), json.Valid(m), m)
			}
			at := bytes.Index(m, []byte(`"seq":`))
			rest := m[at+bytes.IndexByte(m[at:], ','):]
			if at < 0 || seen[string(rest)] {
				t.Fatalf("%s message %d repeats an earlier one", name, i)
			}
			seen[string(rest)] = true
		}
	}
}

func TestFillScores(t *testing.T) {
	b := make([]byte, 1536)
	FillFeed(b, AppendScores, 7, 42, 1234)
	pub, seq, sent, err := Parse(b, len(b))
	if err != nil || pub != 7 || seq != 42 || sent != 1234 {
		t.Fatalf("%d %d %d %v", pub, seq, sent, err)
	}
	if !bytes.Contains(b, []byte(`{"type":"match_update","seq":42,`)) {
		t.Fatalf("no scores feed in %q", b)
	}
}
