package main

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// dockerIgnored reports whether the .dockerignore patterns exclude name (a
// slash-separated path relative to the build context) the way Docker reads
// them: a pattern matches with path.Match, "**/" matches any number of
// leading directories, and a match on a directory excludes what it holds.
// (None of our patterns uses "!" re-inclusion, which this does not read.)
func dockerIgnored(patterns []string, name string) bool {
	parts := strings.Split(name, "/")
	for _, p := range patterns {
		for n := 1; n <= len(parts); n++ {
			prefix := parts[:n]
			if rest, ok := strings.CutPrefix(p, "**/"); ok {
				for i := range prefix {
					if m, _ := path.Match(rest, strings.Join(prefix[i:], "/")); m {
						return true
					}
				}
			} else if m, _ := path.Match(p, strings.Join(prefix, "/")); m {
				return true
			}
		}
	}
	return false
}

// TestDockerignore: the build context of deploy/Containerfile (the
// repository's root) leaves out binaries, key files, .git and test data, and
// keeps every other file the repository tracks.
func TestDockerignore(t *testing.T) {
	root := filepath.Join("..", "..")
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var patterns []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Fatalf("pattern %q: this test does not read re-inclusions", l)
			}
			patterns = append(patterns, strings.TrimPrefix(path.Clean(l), "/"))
		}
	}
	for _, name := range []string{
		"wspubsub", "wspubsub-bench", // make build
		"cmd/wspubsub/wspubsub.test", "cpu.prof",
		"wspubsub-keys.json", "deploy/wspubsub-keys.json", "prod-keys.json", "wspubsub-keys.json.last-used",
		"tls/hub.pem", "hub.key",
		".git/HEAD", ".git",
		"server/testdata/fuzz/FuzzParseTarget/x",
		"bench-results/fanout.json",
	} {
		if !dockerIgnored(patterns, name) {
			t.Errorf("%s goes into the build context", name)
		}
	}

	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git to list the tracked files")
	}
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	kept := 0
	for name := range strings.Lines(string(out)) {
		name = strings.TrimSpace(name)
		switch {
		case strings.Contains(name, "/testdata/"), name == ".gitignore", name == ".dockerignore", strings.HasPrefix(name, ".ci/"):
		case dockerIgnored(patterns, name):
			t.Errorf("tracked file %s is left out of the build context", name)
		default:
			kept++
		}
	}
	if kept < 100 {
		t.Errorf("only %d tracked files kept in the build context", kept)
	}
}
