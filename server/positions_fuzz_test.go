package server

import (
	"strconv"
	"strings"
	"testing"

	"github.com/wspubsub/wspubsub/history"
)

// FuzzParseResume feeds request targets to the ?rewind / ?since parser: it
// must never panic, and what it accepts must be what it says.
func FuzzParseResume(f *testing.F) {
	for _, seed := range []string{
		"/ws/sub/d/t", "/ws/sub/d/t?rewind=10", "/ws/sub/d/t?since=AbC123:42", "/ws/sub/d/t?since=e:0&x=1",
		"/ws/sub/d/t?since=a%3A1", "/ws/sub/d/t?rewind=1&since=a:1", "/ws/sub/d/t?since=:", "/ws/sub/d/t?rewind=-1",
		"/ws/sub/d/t?since=a:18446744073709551616", "/ws/sub/d/t?x=%zz&rewind=%31", "/?&&=&since", "/?since=a:01",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r, err := parseResume(target)
		if err != nil {
			if r != (resume{}) {
				t.Fatalf("%q: error %v with a result %+v", target, err, r)
			}
			return
		}
		switch r.mode {
		case resumeLive:
		case resumeRewind:
			if r.n < 0 || r.n > maxRewind || !strings.Contains(target, "rewind") {
				t.Fatalf("%q: rewind %d", target, r.n)
			}
		case resumeSince:
			if !history.ValidEpoch(r.epoch) || !strings.Contains(target, "since") {
				t.Fatalf("%q: since %q:%d", target, r.epoch, r.offset)
			}
			// The position prints back to what parsePosition accepts.
			back, err := parsePosition(r.epoch + ":" + strconv.FormatUint(r.offset, 10))
			if err != nil || back != r {
				t.Fatalf("%q: %+v does not round-trip: %+v, %v", target, r, back, err)
			}
		default:
			t.Fatalf("%q: mode %d", target, r.mode)
		}
	})
}
