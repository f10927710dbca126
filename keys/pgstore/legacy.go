package pgstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wspubsub/wspubsub/keys"
)

// legacyImportTimeout bounds ImportLegacy's transaction: one statement per
// row of a table that may be large.
const legacyImportTimeout = 5 * time.Minute

// LegacyImport says what ImportLegacy did.
type LegacyImport struct {
	Read     int          // rows in the original's table
	Imported int          // keys added to the store
	Present  int          // keys the store already had, left as they are
	Skipped  []LegacySkip // rows that cannot be keys here
}

// LegacySkip is a row of the original's table that ImportLegacy could not
// import. It names the row by its id, never by its key.
type LegacySkip struct {
	ID     int64
	Reason string
}

// ImportLegacy copies the keys of the original system's table (by default
// "apikeys": id, domain, username, apikey, insert_ts, active, with plaintext
// UUID keys) into the store, in one transaction: each key is stored as the
// keys.Hash of the apikey column exactly as it is (not case-normalised, since the
// original compared keys exactly), with its domain, username, insert_ts as
// the creation time (read in the session's time zone, as the original wrote
// it) and its active flag. A key the store already has is left as it is, so
// importing again adds only new rows and never undoes a revocation or a
// deactivation made here. The original's table is only read. table may be
// schema-qualified ("legacy.apikeys"); it must be in the store's database.
func (s *Store) ImportLegacy(ctx context.Context, table string) (LegacyImport, error) {
	var res LegacyImport
	if s.closed.Load() {
		return res, keys.ErrClosed
	}
	ident, err := legacyTable(table)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, legacyImportTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select id, domain, username, apikey, insert_ts::timestamptz, active from `+
			ident.Sanitize()+` order by id`)
		if err != nil {
			return fmt.Errorf("cannot read %s: %w", table, err)
		}
		type row struct {
			id               int64
			domain, username string
			key              string
			created          time.Time
			active           bool
		}
		var all []row
		var r row
		_, err = pgx.ForEachRow(rows, []any{&r.id, &r.domain, &r.username, &r.key, &r.created, &r.active}, func() error {
			all = append(all, r)
			return nil
		})
		if err != nil {
			return fmt.Errorf("cannot read %s: %w", table, err)
		}
		res.Read = len(all)
		var b pgx.Batch
		for _, r := range all {
			why := ""
			switch {
			case !keys.WellFormed(r.key):
				why = "apikey is not a UUID or a wsp_ key"
			case !keys.ValidDomain(r.domain):
				why = keys.ErrBadDomain.Error()
			case !keys.ValidUsername(r.username):
				why = keys.ErrBadUsername.Error()
			}
			if why != "" {
				res.Skipped = append(res.Skipped, LegacySkip{ID: r.id, Reason: why})
				continue
			}
			h := keys.Hash(r.key)
			b.Queue(`insert into `+pgKeysTable+` (key_hash, domain, username, created_at, active, legacy_id)
				values ($1, $2, $3, $4, $5, $6) on conflict (key_hash) do nothing`,
				h[:], r.domain, r.username, r.created, r.active, r.id).Exec(func(ct pgconn.CommandTag) error {
				if ct.RowsAffected() == 1 {
					res.Imported++
				} else {
					res.Present++
				}
				return nil
			})
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return LegacyImport{}, fmt.Errorf("cannot import legacy keys: %w", err)
	}
	return res, nil
}

// legacyTable parses "table" or "schema.table" into a quoted identifier.
func legacyTable(table string) (pgx.Identifier, error) {
	parts := strings.Split(table, ".")
	if len(parts) > 2 || table == "" {
		return nil, fmt.Errorf("cannot import legacy keys: bad table name %q: want TABLE or SCHEMA.TABLE", table)
	}
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("cannot import legacy keys: bad table name %q: want TABLE or SCHEMA.TABLE", table)
		}
	}
	return pgx.Identifier(parts), nil
}
