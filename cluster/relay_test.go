package cluster

import (
	"bytes"
	"testing"

	"github.com/wspubsub/wspubsub/topics"
)

func TestRelayRoundTrip(t *testing.T) {
	in := relayRun{sender: 1 << 60, seq: 7, sent: 1_700_000_000_000_000_000, msgs: 2, payload: 2,
		key: topics.Key{Domain: "d", Topic: "t/x"}, frames: []byte{0x81, 1, 'a', 0x82, 1, 'b'}}
	b := appendRelay(nil, in)
	out, err := parseRelay(b)
	if err != nil || out.sender != in.sender || out.seq != in.seq || out.sent != in.sent || out.msgs != 2 ||
		out.payload != 2 || out.key != in.key || !bytes.Equal(out.frames, in.frames) {
		t.Fatalf("got %+v, %v; want %+v", out, err, in)
	}
	for i := range b {
		if _, err := parseRelay(b[:i]); err == nil && i < relayFixed {
			t.Errorf("parsed %d bytes", i)
		}
	}
}

func FuzzParseRelay(f *testing.F) {
	f.Add(appendRelay(nil, relayRun{sender: 1, seq: 1, sent: 1, msgs: 1, payload: 1,
		key: topics.Key{Domain: "d", Topic: "t"}, frames: []byte{0x81, 1, 'x'}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := parseRelay(b)
		if err != nil {
			return
		}
		if q.key.Domain == "" || q.key.Topic == "" || q.msgs == 0 || q.payload > len(q.frames) || len(q.frames) < 2 {
			t.Fatalf("parsed %+v", q)
		}
		if again, err := parseRelay(appendRelay(nil, q)); err != nil || again.key != q.key || !bytes.Equal(again.frames, q.frames) {
			t.Fatalf("round trip of %+v: %+v, %v", q, again, err)
		}
	})
}
