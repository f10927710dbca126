package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHubBinFlagHelp: the flag help names --hub-bin's argument BIN, not
// "BIN keys add" (the flag package takes the first back-quoted word of a
// usage string as the argument's name).
func TestHubBinFlagHelp(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH")
	}
	bin := filepath.Join(t.TempDir(), "wspubsub-bench")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, cmd := range []string{"fanout", "httppub", "neighbor"} {
		out, _ := exec.Command(bin, cmd, "-h").CombinedOutput()
		var line string
		for l := range strings.Lines(string(out)) {
			if strings.HasPrefix(strings.TrimSpace(l), "-hub-bin") {
				line = strings.TrimSpace(l)
				break
			}
		}
		if line != "-hub-bin BIN" {
			t.Errorf("%s -h: the --hub-bin line is %q, want \"-hub-bin BIN\":\n%s", cmd, line, out)
		}
		if !strings.Contains(string(out), `"BIN keys add"`) {
			t.Errorf("%s -h: the --hub-bin text lost \"BIN keys add\":\n%s", cmd, out)
		}
	}
}

// TestKillNodeFlags: --kill-node needs nodes the bench starts, and one of
// them.
func TestKillNodeFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--kill-node", "2", "--cuts", "0"}, false},
		{[]string{"--hub-bin", "x", "--kill-node", "2"}, false},
		{[]string{"--hub-bin", "x", "--nodes", "3", "--kill-node", "4"}, false},
		{[]string{"--hub-bin", "x", "--nodes", "3", "--kill-node", "2", "--cuts", "0"}, true},
	} {
		f, err := parseFlags("reconnect", c.args)
		if (err == nil) != c.ok {
			t.Errorf("%v: got %v, want ok %v", c.args, err, c.ok)
			continue
		}
		if c.ok && (f.opt.KillNode != 2 || f.opt.Cuts != 0) {
			t.Errorf("%v: kill node %d, cuts %d", c.args, f.opt.KillNode, f.opt.Cuts)
		}
	}
}
