package server_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoKeyStore: the hub checks keys through KeyChecker and
// TokenKeyring, so package server links the key format (package keys) but
// neither store, and above all no database driver: a hub on a key file
// does not carry pgx. It asks the go command, as `go list -deps ./server`
// would.
func TestLinksNoKeyStore(t *testing.T) {
	goBin, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		t.Fatalf("no go command to list the dependencies with: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", "github.com/wspubsub/wspubsub/server").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	var sawKeys bool
	for _, d := range deps {
		switch {
		case d == "github.com/wspubsub/wspubsub/keys":
			sawKeys = true
		case strings.HasPrefix(d, "github.com/jackc/"),
			strings.HasPrefix(d, "github.com/wspubsub/wspubsub/keys/"):
			t.Errorf("package server links %s", d)
		}
	}
	if !sawKeys || len(deps) < 10 {
		t.Fatalf("go list printed %d packages, package keys among them: %v; is this the right module?", len(deps), sawKeys)
	}
}
