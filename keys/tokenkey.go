package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Token verification keys make a domain private: its subscribers must
// present a JWT signed with one of them (the hub verifies it, package
// server). A domain is private while it has at least one unrevoked key;
// several at once let a backend rotate its signing key, the JWT's kid
// header naming the key. The stores keep the HMAC secret itself (the hub
// needs it to verify), or only a public key.

// Token signing algorithms a verification key may have.
const (
	AlgHS256 = "HS256" // HMAC-SHA256 with a shared secret
	AlgEdDSA = "EdDSA" // Ed25519 public key
	AlgES256 = "ES256" // ECDSA P-256 public key
	AlgRS256 = "RS256" // RSA public key, 2048 bits or more
)

// Errors about token verification keys.
var (
	// ErrBadPublicKey means a PEM file holds no public key the hub can
	// verify tokens with.
	ErrBadPublicKey = errors.New("keys: want a PEM public key: Ed25519, ECDSA P-256 or RSA of 2048 bits or more")
	// ErrTokenKeyNotFound means no verification key has the kid given.
	ErrTokenKeyNotFound = errors.New("keys: no such token verification key")
)

// TokenKey is one verification key of a domain's subscriber tokens.
type TokenKey struct {
	KID       string    // generated, short and unique: the JWT's kid header
	Domain    string    // the domain whose subscribers present tokens signed with it
	Alg       string    // AlgHS256, AlgEdDSA, AlgES256 or AlgRS256
	Secret    string    // HS256: the HMAC key, its bytes used as they are; "" otherwise
	PublicKey string    // other algs: the public key, PEM; "" for HS256
	Created   time.Time // when it was added
	Revoked   time.Time // zero unless revoked; a revoked key verifies nothing

	// Verify is what a JWT library verifies with: []byte(Secret) for
	// HS256, else ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey.
	// Set by the stores when they load the key.
	Verify any
}

// Usable reports whether k verifies tokens: it is not revoked.
func (k *TokenKey) Usable() bool { return k.Revoked.IsZero() }

// Prepare checks a key a store loaded and sets its Verify form.
func (k *TokenKey) Prepare() error {
	switch {
	case !validKID(k.KID):
		return fmt.Errorf("token key %q: kid must be 1-64 letters, digits, '-' or '_'", k.KID)
	case !ValidDomain(k.Domain):
		return fmt.Errorf("token key %s: %w", k.KID, ErrBadDomain)
	}
	switch k.Alg {
	case AlgHS256:
		if len(k.Secret) < 32 || k.PublicKey != "" {
			return fmt.Errorf("token key %s: HS256 wants a secret of 32 bytes or more and no public key", k.KID)
		}
		k.Verify = []byte(k.Secret)
		return nil
	case AlgEdDSA, AlgES256, AlgRS256:
		alg, pub, err := ParsePublicKeyPEM([]byte(k.PublicKey))
		if err != nil {
			return fmt.Errorf("token key %s: %w", k.KID, err)
		}
		if alg != k.Alg || k.Secret != "" {
			return fmt.Errorf("token key %s: stored as %s but its public key is for %s", k.KID, k.Alg, alg)
		}
		k.Verify = pub
		return nil
	}
	return fmt.Errorf("token key %s: unknown alg %q", k.KID, k.Alg)
}

// validKID reports whether s can be a kid: 1-64 bytes of letters, digits,
// '-' and '_'.
func validKID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; base62Val[c] < 0 && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// ParsePublicKeyPEM reads a PEM public key ("PUBLIC KEY", PKIX; or "RSA
// PUBLIC KEY", PKCS #1) and returns the alg it verifies and the key.
func ParsePublicKeyPEM(data []byte) (alg string, key any, err error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return "", nil, fmt.Errorf("%w: no PEM block found", ErrBadPublicKey)
	}
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return "", nil, fmt.Errorf("%w: PEM block is %q (a private key? give the public half)", ErrBadPublicKey, block.Type)
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrBadPublicKey, err)
	}
	switch k := key.(type) {
	case ed25519.PublicKey:
		return AlgEdDSA, k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", nil, fmt.Errorf("%w: ECDSA curve %s (ES256 is P-256)", ErrBadPublicKey, k.Curve.Params().Name)
		}
		return AlgES256, k, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", nil, fmt.Errorf("%w: RSA key of %d bits", ErrBadPublicKey, k.N.BitLen())
		}
		return AlgRS256, k, nil
	}
	return "", nil, fmt.Errorf("%w: unsupported key type %T", ErrBadPublicKey, key)
}

// NewTokenKey makes a verification key for domain: from a PEM public key,
// or with a new HMAC secret when publicPEM is empty. Its kid is new and
// not in taken.
func NewTokenKey(domain string, publicPEM []byte, taken func(kid string) bool) (TokenKey, error) {
	if !ValidDomain(domain) {
		return TokenKey{}, ErrBadDomain
	}
	k := TokenKey{Domain: domain, Created: time.Now().UTC().Round(0)}
	if len(publicPEM) > 0 {
		alg, _, err := ParsePublicKeyPEM(publicPEM)
		if err != nil {
			return TokenKey{}, err
		}
		k.Alg, k.PublicKey = alg, string(publicPEM)
	} else {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return TokenKey{}, fmt.Errorf("cannot generate a secret: %w", err)
		}
		k.Alg, k.Secret = AlgHS256, base64.RawURLEncoding.EncodeToString(b[:])
	}
	for {
		kid, err := newKID()
		if err != nil {
			return TokenKey{}, err
		}
		if taken == nil || !taken(kid) {
			k.KID = kid
			break
		}
	}
	if err := k.Prepare(); err != nil {
		return TokenKey{}, err
	}
	return k, nil
}

// newKID returns "tk" and 8 random base62 characters.
func newKID() (string, error) {
	var out [10]byte
	copy(out[:], "tk")
	n := 2
	var buf [32]byte
	for n < len(out) {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("cannot generate a kid: %w", err)
		}
		for _, b := range buf {
			if b >= 248 || n == len(out) {
				continue
			}
			out[n] = alphabet[b%62]
			n++
		}
	}
	return string(out[:]), nil
}

// TokenSet is an immutable view of the verification keys, built when a
// store loads them; lookups take no lock and do not allocate.
type TokenSet struct {
	all      []TokenKey             // every key, revoked ones included
	byDomain map[string][]*TokenKey // the usable keys of each private domain
}

// NewTokenSet indexes all, which must be prepared (see Prepare); the set
// keeps the slice, so do not change it afterwards.
func NewTokenSet(all []TokenKey) *TokenSet {
	ts := &TokenSet{all: all, byDomain: make(map[string][]*TokenKey)}
	for i := range ts.all {
		k := &ts.all[i]
		if k.Usable() {
			ts.byDomain[k.Domain] = append(ts.byDomain[k.Domain], k)
		}
	}
	return ts
}

// Domain returns the usable verification keys of domain: none for an open
// domain. The slice is shared: do not change it.
func (ts *TokenSet) Domain(domain string) []*TokenKey {
	if ts == nil {
		return nil
	}
	return ts.byDomain[domain]
}

// All returns every key, revoked ones included, in the order the set was
// built from. The slice is shared: do not change it.
func (ts *TokenSet) All() []TokenKey {
	if ts == nil {
		return nil
	}
	return ts.all
}

// List returns a copy of every key, revoked ones included, sorted by
// domain, then creation time, then kid.
func (ts *TokenSet) List() []TokenKey {
	if ts == nil {
		return nil
	}
	out := slices.Clone(ts.all)
	slices.SortFunc(out, func(a, b TokenKey) int {
		if c := strings.Compare(a.Domain, b.Domain); c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.KID, b.KID)
	})
	return out
}

// RevokedSince calls fn with the kid of every key usable in prev and not in
// next (revoked or gone).
func RevokedSince(prev, next *TokenSet, fn func(kid string)) {
	if prev == nil || fn == nil {
		return
	}
	still := make(map[string]bool)
	if next != nil {
		for _, ks := range next.byDomain {
			for _, k := range ks {
				still[k.KID+"\x00"+k.Domain] = true
			}
		}
	}
	for _, ks := range prev.byDomain {
		for _, k := range ks {
			if !still[k.KID+"\x00"+k.Domain] {
				fn(k.KID)
			}
		}
	}
}
