// Package pgstore keeps API keys (package keys) in PostgreSQL.
//
// [Store] keeps keys in PostgreSQL, in a schema of its own (tables and
// functions named wspubsub_*) that [Store.Migrate] creates and upgrades
// in order, recording each version in wspubsub_schema_migrations. A row
// holds the key's SHA-256, its domain, username, creation time, active
// flag, revocation time and last-used time; a domain may have any number of
// keys, so a key can be rotated without downtime. [Store.ImportLegacy]
// copies the original system's apikeys table, which it only reads.
//
// [Store.Check] answers from a bounded cache (package keycache) with
// separate times to live for accepted and refused keys; concurrent misses
// for one key share one query. A trigger NOTIFYs every change that can
// affect Check, and [Store.Watch] LISTENs on a dedicated connection: the
// key leaves the cache at once, and a key that can no longer publish is
// reported so that the hub closes its live publishers. If that connection
// drops, every cached answer becomes untrusted until queried again; while
// the database cannot answer, cached answers up to Config.MaxStale old
// are used and other keys get an error wrapping [keys.ErrUnavailable]. Last-used
// times are written in batches off the Check path, at most once a minute
// per key.
//
// # Concurrency
//
// Every method of [Store] is safe to call from any number of goroutines.
// A Check answered by the cache takes one shard's read lock, does not
// allocate and does no I/O; a miss waits for one query (bounded by
// Config.QueryTimeout), so call Check off event loops. Watch's callback
// is never called concurrently with itself. Close waits for the
// store's goroutines.
package pgstore
