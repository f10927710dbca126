package main

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeBuild builds the binaries the Makefile's way (make build) into a
// temporary directory, with vars added to make's command line, and returns
// the wspubsub binary.
func makeBuild(t *testing.T, vars ...string) string {
	t.Helper()
	for _, tool := range []string{"make", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on PATH", tool)
		}
	}
	dir := t.TempDir()
	args := append([]string{"-s", "-C", filepath.Join("..", ".."), "build", "BINDIR=" + dir}, vars...)
	if out, err := exec.Command("make", args...).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "wspubsub")
}

func binVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "wspubsub ")
	if !ok || v == "" {
		t.Fatalf("%s version printed %q, want \"wspubsub VERSION\"", bin, out)
	}
	return v
}

// TestMakeStampsVersion: `make build` stamps the version from git describe,
// `wspubsub version` prints it and /metrics' build_info carries it.
func TestMakeStampsVersion(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git on PATH")
	}
	out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		t.Skipf("not in a git repository: %v", err)
	}
	want := strings.TrimSpace(string(out))

	bin := makeBuild(t)
	if got := binVersion(t, bin); got != want {
		t.Fatalf("wspubsub version = %q, want git describe's %q", got, want)
	}

	listen := freePort(t)
	startServe(t, bin, "--listen", listen, "--keys-file", filepath.Join(t.TempDir(), "keys.json"))
	line := `wspubsub_build_info{goversion="`
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var code int
		if code, body = status("http://" + listen + "/metrics"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 200 from /metrics: %d %s", code, body)
		}
	}
	for l := range strings.Lines(body) {
		if strings.HasPrefix(l, line) {
			if !strings.Contains(l, `version="`+want+`"`) {
				t.Fatalf("build_info does not carry version %q: %s", want, l)
			}
			return
		}
	}
	t.Fatalf("no wspubsub_build_info in /metrics:\n%s", body)
}

// TestMakeVersionFallback: without git (GIT=false stands for it) make build
// still succeeds, and the binary reports what a plain go build reports; an
// explicit VERSION wins over git.
func TestMakeVersionFallback(t *testing.T) {
	plain := binVersion(t, buildBinary(t))
	if got := binVersion(t, makeBuild(t, "GIT=false")); got != plain {
		t.Errorf("make build without git: version %q, want the unstamped %q", got, plain)
	}
	if got := binVersion(t, makeBuild(t, "VERSION=v1.2.3-test")); got != "v1.2.3-test" {
		t.Errorf("make build VERSION=v1.2.3-test: version %q", got)
	}
}
