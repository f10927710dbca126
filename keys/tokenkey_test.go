package keys_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/keys/pgstore"
	"github.com/wspubsub/wspubsub/keys/pgtest"
)

func publicPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// tokenStore is what both stores offer for token keys.
type tokenStore interface {
	AddTokenKey(ctx context.Context, domain string, publicPEM []byte) (keys.TokenKey, error)
	ListTokenKeys(ctx context.Context) ([]keys.TokenKey, error)
	RevokeTokenKey(ctx context.Context, kid string) error
	TokenKeys(domain string) []*keys.TokenKey
	OnTokenKeyRevoked(fn func(kid string))
}

// TestTokenKeyStores: both stores add HS256 secrets and public keys of
// each alg, list them without losing anything, refuse what is not a usable
// public key, revoke by kid, and tell the hub of a revocation.
func TestTokenKeyStores(t *testing.T) {
	for _, name := range []string{"file", "pg"} {
		t.Run(name, func(t *testing.T) {
			var st tokenStore
			var watch func()
			if name == "file" {
				fs, _ := openTemp(t)
				st = fs
				watch = func() {}
			} else {
				pg := openPG(t, pgtest.Database(t), pgstore.Config{})
				st = pg
				watch = func() {
					if err := pg.Watch(context.Background(), func([32]byte) {}); err != nil {
						t.Fatal(err)
					}
				}
			}
			revoked := make(chan string, 8)
			st.OnTokenKeyRevoked(func(kid string) { revoked <- kid })
			watch()
			ctx := context.Background()
			if got := st.TokenKeys("priv"); len(got) != 0 {
				t.Fatalf("a new store has token keys: %v", got)
			}
			hs, err := st.AddTokenKey(ctx, "priv", nil)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := base64.RawURLEncoding.DecodeString(hs.Secret)
			if hs.Alg != keys.AlgHS256 || err != nil || len(raw) != 32 || hs.PublicKey != "" {
				t.Fatalf("HS256 key %+v: secret %q is not 32 bytes of base64url (%v)", hs, hs.Secret, err)
			}
			_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
			ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			rsaPriv, _ := rsa.GenerateKey(rand.Reader, 2048)
			want := map[string]string{hs.KID: keys.AlgHS256}
			for alg, pub := range map[string]any{keys.AlgEdDSA: edPriv.Public(), keys.AlgES256: ecPriv.Public(), keys.AlgRS256: rsaPriv.Public()} {
				k, err := st.AddTokenKey(ctx, "priv", publicPEM(t, pub))
				if err != nil || k.Alg != alg || k.Secret != "" {
					t.Fatalf("add %s: %+v, %v", alg, k, err)
				}
				want[k.KID] = alg
			}
			p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			small, _ := rsa.GenerateKey(rand.Reader, 1024)
			der, _ := x509.MarshalECPrivateKey(ecPriv)
			for what, data := range map[string][]byte{
				"P-384":       publicPEM(t, p384.Public()),
				"RSA 1024":    publicPEM(t, small.Public()),
				"private key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
				"not PEM":     []byte("hello"),
			} {
				if _, err := st.AddTokenKey(ctx, "priv", data); !errors.Is(err, keys.ErrBadPublicKey) {
					t.Errorf("add %s: %v, want ErrBadPublicKey", what, err)
				}
			}
			if _, err := st.AddTokenKey(ctx, "a/b", nil); !errors.Is(err, keys.ErrBadDomain) {
				t.Errorf("bad domain: %v", err)
			}
			waitTokens := func(n int) {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for len(st.TokenKeys("priv")) != n {
					if time.Now().After(deadline) {
						t.Fatalf("TokenKeys(priv) has %d keys, want %d", len(st.TokenKeys("priv")), n)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			waitTokens(4)
			for _, k := range st.TokenKeys("priv") {
				if k.Verify == nil || want[k.KID] != k.Alg {
					t.Fatalf("served key %+v", k)
				}
			}
			if got := st.TokenKeys("other"); len(got) != 0 {
				t.Fatalf("an open domain has keys: %v", got)
			}
			list, err := st.ListTokenKeys(ctx)
			if err != nil || len(list) != 4 {
				t.Fatalf("list: %d keys, %v", len(list), err)
			}
			if err := st.RevokeTokenKey(ctx, hs.KID); err != nil {
				t.Fatal(err)
			}
			select {
			case kid := <-revoked:
				if kid != hs.KID {
					t.Fatalf("revoked %q, want %q", kid, hs.KID)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no revocation reported")
			}
			waitTokens(3)
			if err := st.RevokeTokenKey(ctx, hs.KID); err != nil {
				t.Fatalf("revoking twice: %v", err)
			}
			if err := st.RevokeTokenKey(ctx, "tkNoSuch"); !errors.Is(err, keys.ErrTokenKeyNotFound) {
				t.Fatalf("unknown kid: %v", err)
			}
			list, _ = st.ListTokenKeys(ctx)
			for _, k := range list {
				if (k.KID == hs.KID) == k.Revoked.IsZero() {
					t.Fatalf("listed %s revoked at %v", k.KID, k.Revoked)
				}
			}
		})
	}
}

// TestTokenKeysOldFile: a key file written before token keys existed
// loads, with every domain open; one written with them keeps API keys as
// they were, and holds the secret only in a file of mode 0600.
func TestTokenKeysOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	old := `{"version": 1, "keys": [{"hash": "` + strings.Repeat("ab", 32) + `", "domain": "news", "created": "2026-01-02T03:04:05Z", "active": true}]}`
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.TokenKeys("news")) != 0 {
		t.Fatal("an old file has token keys")
	}
	k, err := s.AddTokenKey(context.Background(), "news", nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := s.List(context.Background())
	if len(recs) != 1 || recs[0].Domain != "news" {
		t.Fatalf("API keys after adding a token key: %+v", recs)
	}
	again, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got := again.TokenKeys("news"); len(got) != 1 || got[0].Secret != k.Secret {
		t.Fatalf("reopened: %+v", got)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", info.Mode())
	}
	// A corrupt token key makes the file corrupt, as a bad API key does.
	data, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(data), `"HS256"`, `"none"`, 1)), 0o600)
	if _, err := filestore.Open(path); !errors.Is(err, filestore.ErrCorrupt) {
		t.Fatalf("alg none in the file: %v, want ErrCorrupt", err)
	}
}

// TestTokenKeysOtherProcess: a hub's file store, watching, sees a token key
// another process (the CLI) added and revoked, and reports the revocation.
func TestTokenKeysOtherProcess(t *testing.T) {
	hub, path := openTemp(t)
	revoked := make(chan string, 1)
	hub.OnTokenKeyRevoked(func(kid string) { revoked <- kid })
	if err := hub.Watch(context.Background(), func([32]byte) {}); err != nil {
		t.Fatal(err)
	}
	cli, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	k, err := cli.AddTokenKey(context.Background(), "priv", nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(hub.TokenKeys("priv")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not see the new key")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cli.RevokeTokenKey(context.Background(), k.KID); err != nil {
		t.Fatal(err)
	}
	select {
	case kid := <-revoked:
		if kid != k.KID || len(hub.TokenKeys("priv")) != 0 {
			t.Fatalf("revoked %q, keys %v", kid, hub.TokenKeys("priv"))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the hub did not see the revocation")
	}
}

// TestTokenKeysNoAlloc: the hub's lookup, on its event loops for every
// subscriber handshake, allocates nothing, private domain or open.
func TestTokenKeysNoAlloc(t *testing.T) {
	s, _ := openTemp(t)
	if _, err := s.AddTokenKey(context.Background(), "priv", nil); err != nil {
		t.Fatal(err)
	}
	n := 0
	if a := testing.AllocsPerRun(100, func() { n += len(s.TokenKeys("priv")) + len(s.TokenKeys("open")) }); a != 0 || n == 0 {
		t.Fatalf("TokenKeys: %v allocations, %d keys", a, n)
	}
}

// TestPGTokenKeyUnusable: a row written by hand whose public key does not
// parse keeps its domain private (served without a Verify form, so its
// tokens are refused) instead of opening it.
func TestPGTokenKeyUnusable(t *testing.T) {
	url := pgtest.Database(t)
	s := openPG(t, url, pgstore.Config{})
	if err := s.Watch(context.Background(), func([32]byte) {}); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, url, `insert into wspubsub_token_keys (kid, domain, alg, public_key) values ('tkBroken', 'priv', 'RS256', 'garbage')`)
	deadline := time.Now().Add(5 * time.Second)
	for len(s.TokenKeys("priv")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the hand-written key was not loaded")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if k := s.TokenKeys("priv")[0]; k.KID != "tkBroken" || k.Verify != nil {
		t.Fatalf("served %+v", k)
	}
}

// openTemp opens a file store on a fresh path in a temporary directory.
func openTemp(t testing.TB) (*filestore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	s, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// openPG opens a PostgreSQL store on url, quiet, with its schema migrated.
func openPG(t testing.TB, url string, cfg pgstore.Config) *pgstore.Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := pgstore.Open(context.Background(), url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
