package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wspubsub/wspubsub/keys"
)

// The names the schema gives to its objects. Every one starts with
// "wspubsub_" so that the store can share a database, and a schema on the
// search_path, with other tables (the original's apikeys among them).
const (
	pgKeysTable       = "wspubsub_api_keys"
	pgMigrationsTable = "wspubsub_schema_migrations"
	pgChannel         = "wspubsub_api_keys" // NOTIFY channel: "<hex hash> changed|revoked", or "* revoked"
	pgTokenKeysTable  = "wspubsub_token_keys"
	pgTokenChannel    = "wspubsub_token_keys" // NOTIFY channel: the kid of a token key that changed, or "*"
)

// pgMigrationLock is the transaction advisory lock that serialises
// migrations ("wspubsub" in ASCII).
const pgMigrationLock = 0x7773707562737562

// pgMigrations are the schema versions in order: pgMigrations[i] takes the
// schema from version i to i+1. Released entries are never edited; a change
// is a new entry.
var pgMigrations = []string{
	// 1: keys by hash, several per domain, with a NOTIFY on every change
	// that can affect Check (last_used_at and username writes notify
	// nobody).
	`
create table wspubsub_api_keys (
	key_hash     bytea primary key check (octet_length(key_hash) = 32),
	domain       text not null check (octet_length(domain) between 1 and 64 and strpos(domain, '/') = 0),
	username     text not null default '' check (octet_length(username) <= 256),
	created_at   timestamptz not null default now(),
	active       boolean not null default true,
	revoked_at   timestamptz,
	last_used_at timestamptz,
	legacy_id    bigint
);
comment on table wspubsub_api_keys is 'wspubsub API keys: SHA-256 of each key, never the key';
create index wspubsub_api_keys_domain on wspubsub_api_keys (domain);

create function wspubsub_api_keys_notify() returns trigger language plpgsql as $$
begin
	if tg_op = 'TRUNCATE' then
		perform pg_notify('wspubsub_api_keys', '* revoked');
		return null;
	end if;
	if tg_op = 'DELETE' then
		perform pg_notify('wspubsub_api_keys', encode(old.key_hash, 'hex') || ' revoked');
		return null;
	end if;
	if tg_op = 'UPDATE' then
		if old.key_hash = new.key_hash and old.domain = new.domain and old.active = new.active
				and old.revoked_at is not distinct from new.revoked_at then
			return null;
		end if;
		if old.key_hash <> new.key_hash or old.domain <> new.domain then
			perform pg_notify('wspubsub_api_keys', encode(old.key_hash, 'hex') || ' revoked');
		end if;
	end if;
	-- "revoked" when a key that could publish no longer can; any other
	-- change only drops the key from caches.
	perform pg_notify('wspubsub_api_keys', encode(new.key_hash, 'hex') ||
		case when tg_op = 'UPDATE' and old.active and old.revoked_at is null
			and not (new.active and new.revoked_at is null) then ' revoked' else ' changed' end);
	return null;
end
$$;
create trigger wspubsub_api_keys_notify
	after insert or delete or update of key_hash, domain, active, revoked_at on wspubsub_api_keys
	for each row execute function wspubsub_api_keys_notify();
create trigger wspubsub_api_keys_notify_truncate
	after truncate on wspubsub_api_keys
	for each statement execute function wspubsub_api_keys_notify();
`,
	// 2: token verification keys (private domains), with a NOTIFY of the
	// kid on every change: the hub holds them all in memory and reloads
	// them when told.
	`
create table wspubsub_token_keys (
	kid        text primary key check (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
	domain     text not null check (octet_length(domain) between 1 and 64 and strpos(domain, '/') = 0),
	alg        text not null check (alg in ('HS256', 'EdDSA', 'ES256', 'RS256')),
	secret     text,
	public_key text,
	created_at timestamptz not null default now(),
	revoked_at timestamptz,
	check ((alg = 'HS256') = (secret is not null) and (alg = 'HS256') = (public_key is null))
);
comment on table wspubsub_token_keys is 'wspubsub subscriber token verification keys: a domain with an unrevoked key is private';
create index wspubsub_token_keys_domain on wspubsub_token_keys (domain);

create function wspubsub_token_keys_notify() returns trigger language plpgsql as $$
begin
	if tg_op = 'TRUNCATE' then
		perform pg_notify('wspubsub_token_keys', '*');
	elsif tg_op = 'DELETE' then
		perform pg_notify('wspubsub_token_keys', old.kid);
	else
		perform pg_notify('wspubsub_token_keys', new.kid);
	end if;
	return null;
end
$$;
create trigger wspubsub_token_keys_notify
	after insert or update or delete on wspubsub_token_keys
	for each row execute function wspubsub_token_keys_notify();
create trigger wspubsub_token_keys_notify_truncate
	after truncate on wspubsub_token_keys
	for each statement execute function wspubsub_token_keys_notify();
`,
}

// ErrSchema means the database's schema is not the version this build
// uses: `wspubsub keys migrate` has not been run, or a newer build ran it.
var ErrSchema = errors.New("pgstore: the database schema is not at this build's version")

// SchemaVersion is the schema version this build creates and uses.
func SchemaVersion() int { return len(pgMigrations) }

// Migrate brings the schema up to SchemaVersion, applying each missing
// version in order, all in one transaction, and returns the versions before
// and after. Running it again changes nothing. Concurrent Migrates (two
// servers started with --migrate) wait for each other. A database already
// at a newer version is an error wrapping ErrSchema and is left alone.
func (s *Store) Migrate(ctx context.Context) (from, to int, err error) {
	if s.closed.Load() {
		return 0, 0, keys.ErrClosed
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, int64(pgMigrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `create table if not exists `+pgMigrationsTable+` (
			version    integer primary key,
			applied_at timestamptz not null default now())`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `select coalesce(max(version), 0) from `+pgMigrationsTable).Scan(&from); err != nil {
			return err
		}
		if from > len(pgMigrations) {
			return fmt.Errorf("%w: the database is at version %d, newer than %d", ErrSchema, from, len(pgMigrations))
		}
		for v := from + 1; v <= len(pgMigrations); v++ {
			if _, err := tx.Exec(ctx, pgMigrations[v-1]); err != nil {
				return fmt.Errorf("version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `insert into `+pgMigrationsTable+` (version) values ($1)`, v); err != nil {
				return fmt.Errorf("version %d: %w", v, err)
			}
		}
		return nil
	})
	if err != nil {
		return from, from, fmt.Errorf("cannot migrate the key database: %w", err)
	}
	return from, len(pgMigrations), nil
}

// CheckSchema returns nil if the database's schema is at SchemaVersion, and
// otherwise an error wrapping ErrSchema that says what to do.
func (s *Store) CheckSchema(ctx context.Context) error {
	if s.closed.Load() {
		return keys.ErrClosed
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	var v int
	err := s.pool.QueryRow(ctx, `select coalesce(max(version), 0) from `+pgMigrationsTable).Scan(&v)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		v = 0
	case err != nil:
		return fmt.Errorf("cannot read the key database's schema version: %w", err)
	}
	switch {
	case v < len(pgMigrations):
		return fmt.Errorf("%w: it is at version %d, want %d: run `wspubsub keys migrate` (or serve --migrate)", ErrSchema, v, len(pgMigrations))
	case v > len(pgMigrations):
		return fmt.Errorf("%w: it is at version %d, newer than this build's %d: upgrade wspubsub", ErrSchema, v, len(pgMigrations))
	}
	return nil
}
