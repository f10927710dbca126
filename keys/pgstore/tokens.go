package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wspubsub/wspubsub/keys"
)

// TokenKeys returns the usable token verification keys of domain, none for
// an open domain. It reads the keys Watch loaded (and reloads on every
// change the database notifies): no lock, no I/O, no allocation. Before
// Watch every domain is open.
func (s *Store) TokenKeys(domain string) []*keys.TokenKey {
	return s.tokens.Load().Domain(domain)
}

// OnTokenKeyRevoked sets the function called, on the watching goroutine,
// with the kid of every token verification key that was usable and is no
// longer (revoked or deleted). Set it before Watch; fn must not block for
// long.
func (s *Store) OnTokenKeyRevoked(fn func(kid string)) { s.onTokenRevoked.Store(&fn) }

// reloadTokens reads every token verification key and makes them the ones
// TokenKeys serves, reporting those no longer usable. A row that cannot be
// used (a public key that does not parse, written by hand) is logged and
// served without its Verify form: its domain stays private and its tokens
// are refused, rather than the domain turning open.
func (s *Store) reloadTokens(ctx context.Context) error {
	all, err := s.queryTokenKeys(ctx)
	if err != nil {
		return fmt.Errorf("cannot load token keys: %w", err)
	}
	for i := range all {
		if err := all[i].Prepare(); err != nil {
			all[i].Verify = nil
			s.log.Warn("keys: a token key cannot verify anything; its tokens are refused", "kid", all[i].KID, "err", err)
		}
	}
	next := keys.NewTokenSet(all)
	prev := s.tokens.Swap(next)
	if fn := s.onTokenRevoked.Load(); fn != nil {
		keys.RevokedSince(prev, next, *fn)
	}
	return nil
}

func (s *Store) queryTokenKeys(ctx context.Context) ([]keys.TokenKey, error) {
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `select kid, domain, alg, coalesce(secret, ''), coalesce(public_key, ''), created_at, revoked_at
		from `+pgTokenKeysTable+` order by domain, created_at, kid`)
	if err != nil {
		return nil, err
	}
	var out []keys.TokenKey
	var k keys.TokenKey
	var revoked *time.Time
	_, err = pgx.ForEachRow(rows, []any{&k.KID, &k.Domain, &k.Alg, &k.Secret, &k.PublicKey, &k.Created, &revoked}, func() error {
		r := k
		r.Created = r.Created.UTC()
		if revoked != nil {
			r.Revoked = revoked.UTC()
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// AddTokenKey stores a new token verification key for domain, which makes
// the domain private: with a new HMAC secret (HS256) when publicPEM is
// empty, else with that PEM public key (EdDSA, ES256 or RS256, from its
// type). It returns the key, secret included: show it once.
func (s *Store) AddTokenKey(ctx context.Context, domain string, publicPEM []byte) (keys.TokenKey, error) {
	if s.closed.Load() {
		return keys.TokenKey{}, keys.ErrClosed
	}
	for {
		k, err := keys.NewTokenKey(domain, publicPEM, nil)
		if err != nil {
			return keys.TokenKey{}, fmt.Errorf("cannot add a token key for domain %q: %w", domain, err)
		}
		var secret, pub *string
		if k.Secret != "" {
			secret = &k.Secret
		} else {
			pub = &k.PublicKey
		}
		qctx, cancel := s.queryCtx(ctx)
		err = s.pool.QueryRow(qctx, `insert into `+pgTokenKeysTable+` (kid, domain, alg, secret, public_key)
			values ($1, $2, $3, $4, $5) returning created_at`, k.KID, k.Domain, k.Alg, secret, pub).Scan(&k.Created)
		cancel()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			continue // a kid already taken: draw another
		}
		if err != nil {
			return keys.TokenKey{}, fmt.Errorf("cannot add a token key for domain %q: %w", domain, err)
		}
		k.Created = k.Created.UTC()
		return k, nil
	}
}

// ListTokenKeys returns every token verification key, revoked ones
// included, sorted by domain, then creation time.
func (s *Store) ListTokenKeys(ctx context.Context) ([]keys.TokenKey, error) {
	if s.closed.Load() {
		return nil, keys.ErrClosed
	}
	out, err := s.queryTokenKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list token keys: %w", err)
	}
	return out, nil
}

// RevokeTokenKey revokes the token verification key kid for good: the
// tokens it signed are refused, and every hub watching the database closes
// the subscribers they admitted. keys.ErrTokenKeyNotFound if no key has that
// kid; revoking a revoked key keeps its first revocation time.
func (s *Store) RevokeTokenKey(ctx context.Context, kid string) error {
	if s.closed.Load() {
		return keys.ErrClosed
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	var revoked *time.Time
	err := s.pool.QueryRow(ctx, `update `+pgTokenKeysTable+` set revoked_at = coalesce(revoked_at, now())
		where kid = $1 returning revoked_at`, kid).Scan(&revoked)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("cannot revoke token key %q: %w", kid, keys.ErrTokenKeyNotFound)
	case err != nil:
		return fmt.Errorf("cannot revoke token key %q: %w", kid, err)
	}
	return nil
}
