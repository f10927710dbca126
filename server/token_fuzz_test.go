package server

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/ws"
)

// fuzzKeys are a private domain's keys for the token fuzzer: an HS256 key
// and an RS256 one, whose public PEM an attacker knows.
func fuzzKeys(t testing.TB) (hs, rs *keys.TokenKey, rsPriv *rsa.PrivateKey) {
	t.Helper()
	rsPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rsPriv.PublicKey)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	secret := strings.Repeat("s", 43)
	hs = &keys.TokenKey{KID: "tkHS", Domain: "d", Alg: keys.AlgHS256, Secret: secret, Verify: []byte(secret)}
	rs = &keys.TokenKey{KID: "tkRS", Domain: "d", Alg: keys.AlgRS256, PublicKey: pemText, Verify: &rsPriv.PublicKey}
	return hs, rs, rsPriv
}

func fuzzMint(t testing.TB, m jwt.SigningMethod, key any, hdr map[string]any, claims jwt.MapClaims) string {
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// FuzzVerifyToken: verifyToken, the entry point of the token check, never
// panics, and never accepts a token whose alg is none or is not that of
// the key that verified it, or one that does not grant the topic.
func FuzzVerifyToken(f *testing.F) {
	hs, rs, rsPriv := fuzzKeys(f)
	ks := []*keys.TokenKey{hs, rs}
	exp := time.Now().Add(24 * time.Hour).Unix()
	claims := jwt.MapClaims{"exp": exp, "topics": []string{"news", "live/*"}}
	f.Add(fuzzMint(f, jwt.SigningMethodHS256, []byte(hs.Secret), map[string]any{"kid": "tkHS"}, claims), "news")
	f.Add(fuzzMint(f, jwt.SigningMethodHS256, []byte(hs.Secret), nil, claims), "live/1")
	f.Add(fuzzMint(f, jwt.SigningMethodRS256, rsPriv, map[string]any{"kid": "tkRS"}, claims), "news")
	f.Add(fuzzMint(f, jwt.SigningMethodHS256, []byte(rs.PublicKey), map[string]any{"kid": "tkRS"}, claims), "news")
	f.Add(fuzzMint(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": "tkHS"}, claims), "news")
	f.Add(fuzzMint(f, jwt.SigningMethodHS384, []byte(hs.Secret), map[string]any{"kid": "tkHS"}, claims), "news")
	f.Add(fuzzMint(f, jwt.SigningMethodHS256, []byte(hs.Secret), map[string]any{"kid": 7}, jwt.MapClaims{"exp": "x"}), "news")
	f.Add("eyJhbGciOiJub25lIn0.e30.", "news")
	f.Add("..", "")
	f.Add("", "news")
	f.Fuzz(func(t *testing.T, token, topic string) {
		g, r := verifyToken(ks, topic, token)
		if r != nil {
			if (r.status != 401 && r.status != 403) || r.reason == "" || (len(token) > 8 && strings.Contains(r.reason, token)) {
				t.Fatalf("refusal %+v", r)
			}
			return
		}
		if g.key == nil || g.exp == 0 {
			t.Fatalf("accepted without a key or exp: %+v", g)
		}
		head, rest, _ := strings.Cut(token, ".")
		raw, err := base64.RawURLEncoding.DecodeString(head)
		if err != nil {
			t.Fatalf("accepted a token whose header does not decode: %v", err)
		}
		var h struct {
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatalf("accepted a token whose header is not JSON: %v", err)
		}
		if strings.EqualFold(h.Alg, "none") || h.Alg != g.key.Alg {
			t.Fatalf("accepted alg %q with a %s key", h.Alg, g.key.Alg)
		}
		payload, _, _ := strings.Cut(rest, ".")
		raw, _ = base64.RawURLEncoding.DecodeString(payload)
		var cl struct {
			Topics []string `json:"topics"`
		}
		json.Unmarshal(raw, &cl)
		if !grants(cl.Topics, topic) {
			t.Fatalf("accepted topic %q not in %q", topic, cl.Topics)
		}
	})
}

// BenchmarkTokenCheck is what a private domain adds to a subscriber's
// handshake: finding the request's token and verifying it (HS256, kid,
// exp, topics), as admit does.
func BenchmarkTokenCheck(b *testing.B) {
	hs, _, _ := fuzzKeys(b)
	ks := []*keys.TokenKey{hs}
	tok := fuzzMint(b, jwt.SigningMethodHS256, []byte(hs.Secret), map[string]any{"kid": hs.KID},
		jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "topics": []string{"scores/*"}})
	req := ws.Request{Target: "/ws/sub/d/scores/live?token=" + tok}
	b.Run("HS256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, r := verifyToken(ks, "scores/live", tokenOf(&req)); r != nil {
				b.Fatal(r.reason)
			}
		}
	})
}

// TestVerifyTokenUnusableKey: a key the store could not prepare (no Verify
// form) refuses its tokens, whatever they are signed with.
func TestVerifyTokenUnusableKey(t *testing.T) {
	k := &keys.TokenKey{KID: "tkBroken", Domain: "d", Alg: keys.AlgHS256}
	tok := fuzzMint(t, jwt.SigningMethodHS256, []byte(""), map[string]any{"kid": k.KID},
		jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "topics": []string{"*"}})
	if _, r := verifyToken([]*keys.TokenKey{k}, "t", tok); r == nil || r.status != 401 {
		t.Fatalf("refusal %+v, want 401", r)
	}
}
