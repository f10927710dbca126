package filestore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/wspubsub/wspubsub/keys"
)

// decodeTokenKeys checks the token keys of a key file and prepares them.
func decodeTokenKeys(fks []fileTokenKey) ([]keys.TokenKey, error) {
	toks := make([]keys.TokenKey, 0, len(fks))
	seen := make(map[string]bool, len(fks))
	for i, fk := range fks {
		k := keys.TokenKey{KID: fk.KID, Domain: fk.Domain, Alg: fk.Alg, Secret: fk.Secret, PublicKey: fk.PublicKey, Created: fk.Created}
		if fk.Revoked != nil {
			if fk.Revoked.IsZero() {
				return nil, fmt.Errorf("token key %d: revoked time is zero", i)
			}
			k.Revoked = *fk.Revoked
		}
		if err := k.Prepare(); err != nil {
			return nil, fmt.Errorf("token key %d: %w", i, err)
		}
		if seen[k.KID] {
			return nil, fmt.Errorf("token key %d: duplicate kid %s", i, k.KID)
		}
		seen[k.KID] = true
		toks = append(toks, k)
	}
	return toks, nil
}

func encodeTokenKeys(toks []keys.TokenKey) []fileTokenKey {
	if len(toks) == 0 {
		return nil
	}
	out := make([]fileTokenKey, 0, len(toks))
	for _, k := range toks {
		fk := fileTokenKey{KID: k.KID, Domain: k.Domain, Alg: k.Alg, Secret: k.Secret, PublicKey: k.PublicKey, Created: k.Created}
		if !k.Revoked.IsZero() {
			t := k.Revoked
			fk.Revoked = &t
		}
		out = append(out, fk)
	}
	return out
}

// TokenKeys returns the usable token verification keys of domain, none for
// an open domain. It reads the loaded snapshot: no lock, no I/O, no
// allocation. The file is looked at again by Watch (every second) and by
// the store's own writes.
func (s *Store) TokenKeys(domain string) []*keys.TokenKey {
	return s.snap.Load().tokens.Domain(domain)
}

// OnTokenKeyRevoked sets the function called, under the store's lock, with
// the kid of every token verification key that was usable and is no longer
// (revoked or removed, in this process or by another one once Watch reads
// the file). Set it before Watch; fn must not call the store.
func (s *Store) OnTokenKeyRevoked(fn func(kid string)) { s.onTokenRevoked.Store(&fn) }

// AddTokenKey stores a new token verification key for domain, which makes
// the domain private: with a new HMAC secret (HS256) when publicPEM is
// empty, else with that PEM public key (EdDSA, ES256 or RS256, from its
// type). It returns the key, secret included: show it once.
func (s *Store) AddTokenKey(ctx context.Context, domain string, publicPEM []byte) (keys.TokenKey, error) {
	if err := s.usable(ctx); err != nil {
		return keys.TokenKey{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(false); err != nil {
		return keys.TokenKey{}, fmt.Errorf("cannot add a token key for domain %q: %w", domain, err)
	}
	cur := s.snap.Load()
	k, err := keys.NewTokenKey(domain, publicPEM, func(kid string) bool {
		return slices.ContainsFunc(cur.tokens.All(), func(t keys.TokenKey) bool { return t.KID == kid })
	})
	if err != nil {
		return keys.TokenKey{}, fmt.Errorf("cannot add a token key for domain %q: %w", domain, err)
	}
	toks := append(slices.Clone(cur.tokens.All()), k)
	if err := s.writeLocked(slices.Clone(cur.recs), toks); err != nil {
		return keys.TokenKey{}, fmt.Errorf("cannot add a token key for domain %q: %w", domain, err)
	}
	return k, nil
}

// ListTokenKeys returns every token verification key, revoked ones
// included, sorted by domain, then creation time.
func (s *Store) ListTokenKeys(ctx context.Context) ([]keys.TokenKey, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(false); err != nil {
		return nil, fmt.Errorf("cannot list token keys: %w", err)
	}
	return s.snap.Load().tokens.List(), nil
}

// RevokeTokenKey revokes the token verification key kid for good: the
// tokens it signed are refused, and the subscribers they admitted closed
// (see OnTokenKeyRevoked). keys.ErrTokenKeyNotFound if no key has that kid;
// revoking a revoked key keeps its first revocation time.
func (s *Store) RevokeTokenKey(ctx context.Context, kid string) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(false); err != nil {
		return fmt.Errorf("cannot revoke token key %s: %w", kid, err)
	}
	cur := s.snap.Load()
	i := slices.IndexFunc(cur.tokens.All(), func(t keys.TokenKey) bool { return t.KID == kid })
	switch {
	case i < 0:
		return fmt.Errorf("cannot revoke token key %q: %w", kid, keys.ErrTokenKeyNotFound)
	case !cur.tokens.All()[i].Revoked.IsZero():
		return nil
	}
	toks := slices.Clone(cur.tokens.All())
	toks[i].Revoked = time.Now().UTC().Round(0)
	if err := s.writeLocked(slices.Clone(cur.recs), toks); err != nil {
		return fmt.Errorf("cannot revoke token key %s: %w", kid, err)
	}
	return nil
}
