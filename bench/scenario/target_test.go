package scenario

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/bench/target"
)

// TestSubprocessTargets runs a tiny fanout against the reference hub as a
// subprocess (so its CPU and memory come from /proc), and against a stand-in
// for our binary: a script that answers `keys add` and turns `serve` into
// the reference hub, which checks how StartOurs drives the binary.
func TestSubprocessTargets(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "fakehub")
	body := `#!/bin/sh
case "$1" in
keys) [ "$2" = add ] && [ "$3" = --domain ] || exit 3; echo "new key for $4:"; echo fakekey ;;
serve) shift
  while [ $# -gt 0 ]; do case "$1" in --listen) L=$2; shift 2;; --keys-file) shift 2;; *) shift;; esac; done
  WSPUBSUB_BENCH_ROLE=refhub exec "` + self + `" refhub --listen "$L" --key fakekey --domain bench ;;
*) exit 2 ;;
esac
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opt := target.HubOptions{Domain: "bench"}
	for _, start := range []func() (*target.Target, error){
		func() (*target.Target, error) { return target.StartReference(ctx, self, opt) },
		func() (*target.Target, error) { return target.StartOurs(ctx, script, opt) },
	} {
		tg, err := start()
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, tg, tiny("fanout", 1))
		if err := tg.Stop(); err != nil {
			t.Error(err)
		}
		if !r.ServerMeasured || r.ServerRSSBefore <= 0 || r.ServerRSSAfter <= 0 || r.ServerCPUSeconds < 0 {
			t.Errorf("%s: server not measured: %+v", tg.Name, r)
		}
		if r.Delivered != 200 {
			t.Errorf("%s: delivered %d", tg.Name, r.Delivered)
		}
	}
}
