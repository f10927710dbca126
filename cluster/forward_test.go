package cluster

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wspubsub/wspubsub/topics"
)

func TestForwardRoundTrip(t *testing.T) {
	for _, q := range []forwardRequest{
		{key: topics.Key{Domain: "test", Topic: "news"}, payload: 5, frame: []byte{0x81, 5, 'h', 'e', 'l', 'l', 'o'}},
		{key: topics.Key{Domain: "d.e", Topic: strings.Repeat("t", 300)}, payload: 0, frame: []byte{0x82, 0}},
	} {
		got, err := parseForwardRequest(appendForwardRequest(nil, q))
		if err != nil || got.key != q.key || got.payload != q.payload || !bytes.Equal(got.frame, q.frame) {
			t.Fatalf("%+v came back as %+v, %v", q, got, err)
		}
	}
	good := appendForwardRequest(nil, forwardRequest{key: topics.Key{Domain: "d", Topic: "t"}, payload: 1, frame: []byte{0x81, 1, 'x'}})
	for _, bad := range [][]byte{nil, {2}, good[:6], appendForwardRequest(nil, forwardRequest{key: topics.Key{Domain: "d"}, frame: []byte{0x81, 0}}),
		appendForwardRequest(nil, forwardRequest{key: topics.Key{Domain: "d", Topic: "t"}, payload: 9, frame: []byte{0x81, 1, 'x'}})} {
		if _, err := parseForwardRequest(bad); err == nil {
			t.Errorf("parsed request % x", bad)
		}
	}
	for _, r := range []struct {
		status byte
		epoch  string
		offset uint64
	}{{forwardPublished, "AbC", 42}, {forwardTooMany, "", 0}, {forwardHasOwner, "", 0}, {forwardUnavailable, "", 0}} {
		s, e, o, err := parseForwardReply(appendForwardReply(nil, r.status, r.epoch, r.offset))
		if err != nil || s != r.status || e != r.epoch || o != r.offset {
			t.Fatalf("%+v came back as %d %q %d, %v", r, s, e, o, err)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {1, 4, 0, 0}, {1, 0, 0, 0}, appendForwardReply(nil, forwardPublished, "E", 0), append(appendForwardReply(nil, forwardTooMany, "", 0), 0)} {
		if _, _, _, err := parseForwardReply(bad); err == nil {
			t.Errorf("parsed reply % x", bad)
		}
	}
}

func FuzzParseForward(f *testing.F) {
	f.Add(appendForwardRequest(nil, forwardRequest{key: topics.Key{Domain: "d", Topic: "t"}, payload: 1, frame: []byte{0x81, 1, 'x'}}))
	f.Add(appendForwardReply(nil, forwardPublished, "Ep0ch", 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := parseForwardRequest(b); err == nil {
			if q.key.Domain == "" || q.key.Topic == "" || q.payload > len(q.frame) || len(q.frame) < 2 {
				t.Fatalf("parsed %+v", q)
			}
		}
		if s, e, o, err := parseForwardReply(b); err == nil && s == forwardPublished && (e == "" || o == 0) {
			t.Fatalf("parsed a publish at %q:%d", e, o)
		}
	})
}
