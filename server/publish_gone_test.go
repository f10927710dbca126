package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

type anyKey struct{}

func (anyKey) Check(context.Context, string, string) error { return nil }

// TestPublishToEndedTopicKeepsNothing: a publish that took its topic just
// before the topic ended (a cluster delivery after its Lookup, an HTTP
// publish after its Touch) must not keep its messages in the ended topic's
// history: nothing would ever drop them, and the hub's history memory
// would hold them until the budget overflowed.
func TestPublishToEndedTopicKeepsNothing(t *testing.T) {
	s, err := Start(Config{Listen: "127.0.0.1:0", Keys: anyKey{}, GracePeriod: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	k := topics.Key{Domain: "test", Topic: "gone"}
	tp, err := s.topics.Touch(k)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.topics.Has(k) {
		if time.Now().After(deadline) {
			t.Fatal("the topic did not end after its grace period")
		}
		time.Sleep(time.Millisecond)
	}
	b := batch{frames: ws.AppendFrame(nil, ws.OpText, []byte("late")), starts: []int{0}, payload: 4}
	s.publish(new(scratch), tp, &b, nil)
	if used := s.budget.Used(); used != 0 {
		t.Fatalf("the history holds %d bytes for a topic that ended", used)
	}
}
