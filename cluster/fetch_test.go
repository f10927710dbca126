package cluster

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/server"
	"github.com/wspubsub/wspubsub/topics"
)

func TestHistoryRequestRoundTrip(t *testing.T) {
	for _, q := range []historyRequest{
		{key: topics.Key{Domain: "test", Topic: "news"}, epoch: "AbC123", after: 3, before: 10},
		{key: topics.Key{Domain: "a.b", Topic: strings.Repeat("t", 300)}, epoch: "", after: 0, before: 0},
		{key: topics.Key{Domain: "d", Topic: "t"}, epoch: strings.Repeat("z", maxEpoch), after: ^uint64(0), before: ^uint64(0)},
	} {
		got, err := parseHistoryRequest(appendHistoryRequest(nil, q))
		if err != nil || got != q {
			t.Fatalf("%+v came back as %+v, %v", q, got, err)
		}
	}
	good := appendHistoryRequest(nil, historyRequest{key: topics.Key{Domain: "d", Topic: "t"}, epoch: "E"})
	for _, bad := range [][]byte{nil, {2}, good[:len(good)-1], append(good, 0),
		appendHistoryRequest(nil, historyRequest{key: topics.Key{Topic: "t"}}),
		appendHistoryRequest(nil, historyRequest{key: topics.Key{Domain: "d", Topic: "t"}, epoch: "a-b"})} {
		if _, err := parseHistoryRequest(bad); err == nil {
			t.Errorf("parsed % x", bad)
		}
	}
}

func TestHistoryReplyRoundTrip(t *testing.T) {
	now := time.Now().UnixNano()
	at := now - int64(1500*time.Millisecond)
	frame := func(s string) []byte { return append([]byte{0x81, byte(len(s))}, s...) }
	for _, p := range []server.HistoryPage{
		{},
		{Epoch: "E", Last: 9, Oldest: 1},
		{Epoch: "Ep0ch", Last: 9, Oldest: 2, Entries: []history.Entry{
			{Offset: 7, At: at, Frame: frame("seven")}, {Offset: 8, At: at, Frame: frame("")}, {Offset: 9, At: at, Frame: frame("nine")}}},
	} {
		got, err := parseHistoryReply(appendHistoryReply(nil, p, now), now)
		if err != nil || !reflect.DeepEqual(got, p) {
			t.Fatalf("%+v came back as %+v, %v", p, got, err)
		}
	}
	good := appendHistoryReply(nil, server.HistoryPage{Epoch: "E", Last: 2, Oldest: 1,
		Entries: []history.Entry{{Offset: 1, At: now, Frame: frame("a")}, {Offset: 2, At: now, Frame: frame("b")}}}, now)
	for _, bad := range [][]byte{nil, {2}, good[:len(good)-1], append(bytes.Clone(good), 0),
		appendHistoryReply(nil, server.HistoryPage{Epoch: "E", Last: 1, Entries: []history.Entry{{Offset: 1, Frame: frame("a")}, {Offset: 2, Frame: frame("b")}}}, now),
		appendHistoryReply(nil, server.HistoryPage{Last: 1, Entries: []history.Entry{{Offset: 1, Frame: frame("a")}}}, now),
		appendHistoryReply(nil, server.HistoryPage{Epoch: "E", Last: 1, Entries: []history.Entry{{Offset: 1, Frame: []byte{1}}}}, now)} {
		if _, err := parseHistoryReply(bad, now); err == nil {
			t.Errorf("parsed % x", bad)
		}
	}
}

func FuzzParseHistory(f *testing.F) {
	f.Add(appendHistoryRequest(nil, historyRequest{key: topics.Key{Domain: "d", Topic: "t"}, epoch: "E", after: 1, before: 5}))
	f.Add(appendHistoryReply(nil, server.HistoryPage{Epoch: "E", Last: 2, Oldest: 1,
		Entries: []history.Entry{{Offset: 1, Frame: []byte{0x82, 0}}, {Offset: 2, Frame: []byte{0x81, 1, 'x'}}}}, 0))
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := parseHistoryRequest(b); err == nil {
			if q.key.Domain == "" || q.key.Topic == "" || len(q.epoch) > maxEpoch {
				t.Fatalf("parsed %+v", q)
			}
		}
		p, err := parseHistoryReply(b, 0)
		if err != nil {
			return
		}
		for i, e := range p.Entries {
			if e.Offset != p.Entries[0].Offset+uint64(i) || e.Offset > p.Last || len(e.Frame) < 2 {
				t.Fatalf("parsed entry %d: offset %d (last %d), %d bytes", i, e.Offset, p.Last, len(e.Frame))
			}
		}
	})
}
