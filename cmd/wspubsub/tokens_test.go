package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/wspubsub/wspubsub/keys/pgtest"
)

// subToken dials a subscriber of test/topic with token in the query and
// returns it, or the HTTP status of its refusal.
func subToken(addr, topic, token string) (*websocket.Conn, int, error) {
	u := fmt.Sprintf("ws://%s/ws/sub/test/%s", addr, topic)
	if token != "" {
		u += "?token=" + token
	}
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return nil, code, err
	}
	return c, 0, nil
}

func hs256(t *testing.T, secret, kid string, d time.Duration, topics ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(d).Unix(), "topics": topics})
	tok.Header["kid"] = kid
	s, err := tok.SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kidOf finds the kid in `keys token add`'s output.
func kidOf(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if kid, ok := strings.CutPrefix(line, "kid "); ok {
			return strings.Fields(kid)[0]
		}
	}
	t.Fatalf("no kid in %q", out)
	return ""
}

// TestServeTokens runs the real binary on the key file and on PostgreSQL:
// `keys token add` makes domain test private while the hub runs, a
// subscriber needs a token minted here with the printed secret, `keys
// token list` shows no secret, and `keys token revoke` closes the
// subscriber with 4002 within about a second and reopens the domain (no
// key left). The tokens never reach the hub's log.
func TestServeTokens(t *testing.T) {
	bin := buildBinary(t)
	for _, store := range []string{"file", "postgresql"} {
		t.Run(store, func(t *testing.T) {
			var flags []string
			if store == "file" {
				flags = []string{"--keys-file", filepath.Join(t.TempDir(), "keys.json")}
			} else {
				flags = []string{"--database-url", pgtest.Database(t)}
				runCLI(t, bin, append([]string{"keys", "migrate"}, flags...)...)
			}
			cli := func(args ...string) string {
				return runCLI(t, bin, append(append([]string{"keys"}, args...), flags...)...)
			}
			key := lastLine(cli("add", "--domain", "test"))
			addr := freePort(t)
			logs := startServe(t, bin, append([]string{"--listen", addr, "--ping-interval", "0"}, flags...)...)
			waitReady(t, addr)
			pub, open := connectPubSub(t, addr, key, "news")
			relay(t, pub, open, "open")

			out := cli("token", "add", "--domain", "test")
			secret, kid := lastLine(out), kidOf(t, out)
			if len(secret) != 43 {
				t.Fatalf("secret %q: want 43 characters of base64url", secret)
			}
			list := cli("token", "list")
			if !strings.Contains(list, kid) || !strings.Contains(list, "HS256") || strings.Contains(list, secret) {
				t.Fatalf("token list:\n%s", list)
			}
			// The hub sees the new key within a second or so.
			waitFor(t, "the domain to turn private", func() bool {
				c, code, _ := subToken(addr, "news", "")
				if c != nil {
					c.Close()
				}
				return code == 401
			})
			good := hs256(t, secret, kid, time.Minute, "news")
			bad := hs256(t, strings.Repeat("x", 43), kid, time.Minute, "news")
			if _, code, _ := subToken(addr, "news", bad); code != 401 {
				t.Fatalf("bad signature: %d, want 401", code)
			}
			if _, code, _ := subToken(addr, "news", hs256(t, secret, kid, time.Minute, "other")); code != 403 {
				t.Fatalf("other topic: %d, want 403", code)
			}
			sub, code, err := subToken(addr, "news", good)
			if err != nil {
				t.Fatalf("good token: %d %v", code, err)
			}
			defer sub.Close()
			relay(t, pub, sub, "private")

			// `wspubsub sub --token` subscribes too, and never prints the token.
			cs := startClient(t, bin, false, "sub", "--token", good, "ws://"+addr+"/ws/sub/test/news")
			cs.waitStderr(t, "subscribed to")
			relay(t, pub, sub, "to both")
			cs.waitStdout(t, "to both\n")
			if strings.Contains(cs.stderr.String(), good) {
				t.Fatalf("sub printed the token: %q", cs.stderr.String())
			}

			revoked := time.Now()
			cli("token", "revoke", kid)
			sub.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = sub.ReadMessage()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4002 {
				t.Fatalf("after revoke: %v, want close 4002", err)
			}
			if code := cs.exitCode(t); code != 1 || !strings.Contains(cs.stderr.String(), "4002") {
				t.Fatalf("sub after revoke: exit %d, stderr %q", code, cs.stderr.String())
			}
			t.Logf("%s: subscriber closed %v after the revoke command returned", store, time.Since(revoked).Round(time.Millisecond))
			if !strings.Contains(cli("token", "list"), "revoked") {
				t.Fatal("token list does not show the revocation")
			}
			// No key left: the domain is open again.
			waitFor(t, "the domain to open again", func() bool {
				c, _, _ := subToken(addr, "news", "")
				if c != nil {
					c.Close()
				}
				return c != nil
			})
			for _, tok := range []string{good, bad} {
				for _, part := range strings.Split(tok, ".") {
					if strings.Contains(logs.String(), part) {
						t.Fatalf("the hub's log holds part of a token:\n%s", logs.String())
					}
				}
			}
			if strings.Contains(logs.String(), secret) {
				t.Fatal("the hub's log holds the secret")
			}
		})
	}
}

// TestKeysTokenCLI: `keys token add --public-key` infers the alg, refuses
// a private key or garbage with a clear error, and bad usage exits 2.
func TestKeysTokenCLI(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pubFile := filepath.Join(dir, "ed.pub")
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	pder, _ := x509.MarshalPKCS8PrivateKey(priv)
	privFile := filepath.Join(dir, "ed.key")
	os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pder}), 0o600)

	code, out, errOut := keysCLI(t, "token", "add", "--domain", "d", "--public-key", pubFile, "--keys-file", keysFile)
	if code != 0 || !strings.Contains(out, "EdDSA") {
		t.Fatalf("add EdDSA: %d %q %q", code, out, errOut)
	}
	kid := lastLine(out)
	code, out, _ = keysCLI(t, "token", "list", "--keys-file", keysFile)
	if code != 0 || !strings.Contains(out, kid) || !strings.Contains(out, "EdDSA") || strings.Contains(out, "BEGIN") {
		t.Fatalf("list: %d %q", code, out)
	}
	if code, _, errOut = keysCLI(t, "token", "add", "--domain", "d", "--public-key", privFile, "--keys-file", keysFile); code != 1 || !strings.Contains(errOut, "public half") {
		t.Fatalf("a private key: %d %q", code, errOut)
	}
	if code, _, errOut = keysCLI(t, "token", "add", "--domain", "d", "--public-key", keysFile, "--keys-file", keysFile); code != 1 || !strings.Contains(errOut, "PEM") {
		t.Fatalf("not PEM: %d %q", code, errOut)
	}
	if code, _, _ = keysCLI(t, "token", "add", "--keys-file", keysFile); code != 2 {
		t.Fatalf("no --domain: %d, want 2", code)
	}
	if code, _, errOut = keysCLI(t, "token", "revoke", "tkNoSuchKid", "--keys-file", keysFile); code != 1 || !strings.Contains(errOut, "no such token") {
		t.Fatalf("revoke unknown: %d %q", code, errOut)
	}
	if code, out, _ = keysCLI(t, "token", "revoke", kid, "--keys-file", keysFile); code != 0 || !strings.Contains(out, kid) {
		t.Fatalf("revoke: %d %q", code, out)
	}
}

// TestShownURLRedactsToken: a token in a URL the clients print is
// redacted, whatever else the query holds.
func TestShownURLRedactsToken(t *testing.T) {
	u, err := clientURL("ws://127.0.0.1:8080/ws/sub/d/t?rewind=3&token=eyJhbGciOi.eyJleHAi.c2ln")
	if err != nil {
		t.Fatal(err)
	}
	got := shownURL(u)
	if strings.Contains(got, "eyJ") || !strings.Contains(got, "rewind=3") || !strings.Contains(got, "token=") {
		t.Fatalf("shownURL = %q", got)
	}
}
