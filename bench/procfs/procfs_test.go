package procfs

import (
	"os"
	"testing"
	"time"
)

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	// Burn a little CPU so the 10 ms tick counter has something to show.
	for SelfCPU() < 50*time.Millisecond {
	}
	if cpu, err := CPU(pid); err != nil || cpu <= 0 {
		t.Fatalf("CPU: %v %v", cpu, err)
	}
	if rss, err := RSS(pid); err != nil || rss < 1<<20 {
		t.Fatalf("RSS: %v %v", rss, err)
	}
	if peak, err := PeakRSS(pid); err != nil || peak < 1<<20 {
		t.Fatalf("PeakRSS: %v %v", peak, err)
	}
	if sc, err := SchedCPU(pid); err != nil || sc < 50*time.Millisecond {
		t.Fatalf("SchedCPU: %v %v", sc, err)
	}
	if SelfCPU() <= 0 {
		t.Fatal("SelfCPU is zero")
	}
	if _, err := RaiseNoFile(); err != nil {
		t.Fatal(err)
	}
}
