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

func TestAppendJSONVaries(t *testing.T) {
	seen := map[string]bool{}
	for i := range uint64(1000) {
		m := AppendJSON(nil, i)
		if !json.Valid(m) || len(m) < 1000 || len(m) > 2048 {
			t.Fatalf("message %d: %d bytes, valid %v", i, len(m), json.Valid(m))
		}
		if seen[string(m[30:])] {
			t.Fatalf("message %d repeats an earlier one", i)
		}
		seen[string(m[30:])] = true
	}
}
