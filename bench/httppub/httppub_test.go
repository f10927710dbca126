package httppub

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/bench/target"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/server"
)

// TestRun publishes for a moment with each client against a real hub: every
// publish is answered 200 and reaches every subscriber.
func TestRun(t *testing.T) {
	store, err := filestore.Open(filepath.Join(t.TempDir(), "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.Add(context.Background(), "bench", "b")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(server.Config{Listen: "127.0.0.1:0", Keys: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	addr, err := target.Loopback(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{Conns: 1, Depth: 1},
		{Conns: 4, Depth: 1, Topics: 2, Subs: 2},
		{Conns: 3, Depth: 8, Size: 1000},
		{Conns: 2, Depth: 4, Subs: -1},
	} {
		o.Server, o.Key, o.Duration = addr, key, 300*time.Millisecond
		r, err := Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		Print(&out, r)
		t.Log(out.String())
		if !r.Pass() || r.Published == 0 {
			t.Fatalf("%+v: did not pass", o)
		}
		subs := o.Subs
		if subs == 0 {
			subs = 1 // the default
		}
		if want := int64(max(subs, 0)) * r.Published; o.Topics <= 1 && r.Delivered != want {
			t.Fatalf("subscribers got %d messages, want %d", r.Delivered, want)
		}
	}
}
