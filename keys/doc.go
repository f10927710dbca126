// Package keys holds the API keys that publishers present to the hub.
//
// # Key format
//
// A key is [Prefix] followed by 32 base62 characters from crypto/rand and a
// 6-character base62 checksum (the CRC-32/IEEE of everything before it,
// most significant digit first, zero padded). [WellFormed] verifies the
// checksum, so a typo or garbage is refused without touching a store. Bare
// UUIDs (8-4-4-4-12 hex digits) are also well formed: they are the keys of
// the original system, which kept them in PostgreSQL.
//
// Stores never keep a plaintext key: a key is identified by its SHA-256
// [Hash], and shown to people as [Record.ID] or through [Redact].
//
// Legacy UUID keys are hashed exactly as presented, without changing their
// case: the original compared them exactly, so "F47AC10B-…" and
// "f47ac10b-…" are different keys here as they were there.
//
// # FileStore
//
// [FileStore] is the embedded store: a JSON file that needs no server. It is
// meant for one server process that checks keys, plus an occasional CLI
// process that changes them; writes from two processes at the same instant
// are not locked against each other (the later write wins). The server
// records when each key was last used, at most once a minute per key, in a
// file of its own beside the key file (PATH.last-used), so recording never
// rewrites the key file; List reads it.
//
// # PGStore
//
// [PGStore] keeps keys in PostgreSQL, in a schema of its own (tables and
// functions named wspubsub_*) that [PGStore.Migrate] creates and upgrades
// in order, recording each version in wspubsub_schema_migrations. A row
// holds the key's SHA-256, its domain, username, creation time, active
// flag, revocation time and last-used time; a domain may have any number of
// keys, so a key can be rotated without downtime. [PGStore.ImportLegacy]
// copies the original system's apikeys table, which it only reads.
//
// [PGStore.Check] answers from a bounded cache (package keycache) with
// separate times to live for accepted and refused keys; concurrent misses
// for one key share one query. A trigger NOTIFYs every change that can
// affect Check, and [PGStore.Watch] LISTENs on a dedicated connection: the
// key leaves the cache at once, and a key that can no longer publish is
// reported so that the hub closes its live publishers. If that connection
// drops, every cached answer becomes untrusted until queried again; while
// the database cannot answer, cached answers up to PGConfig.MaxStale old
// are used and other keys get an error wrapping [ErrUnavailable]. Last-used
// times are written in batches off the Check path, at most once a minute
// per key.
//
// # Token verification keys
//
// Both stores also keep the verification keys of subscriber tokens
// ([TokenKey]): a domain with an unrevoked one is private. The key file
// holds them in a "token_keys" array (a file without it loads as before);
// PostgreSQL in the table wspubsub_token_keys (schema version 2), whose
// trigger NOTIFYs the kid of every change on the channel of the same name.
// They are few, so a store holds them all in an immutable [TokenSet]:
// TokenKeys answers from memory without a lock, I/O or allocation, and is
// safe on event loops. The FileStore's set is replaced when the file is
// (re)read; the PGStore's is loaded by Watch and reloaded on every
// notification and after every reconnection. OnTokenKeyRevoked's function
// receives the kid of each key that stops verifying.
//
// # Concurrency
//
// Every method of [PGStore] is safe to call from any number of goroutines.
// A Check answered by the cache takes one shard's read lock, does not
// allocate and does no I/O; a miss waits for one query (bounded by
// PGConfig.QueryTimeout), so call Check off event loops. Watch's callback
// is never called concurrently with itself. Close waits for the
// store's goroutines.
//
// Every method of [FileStore] is safe to call from any number of goroutines.
// [FileStore.Check] of an accepted key takes no lock: it reads an immutable
// snapshot through an atomic pointer, does not allocate, and never waits
// for another goroutine: at most once a second one caller stats the file
// (and re-reads it if another process changed it), skipping that if a
// writer is busy; at most once a minute per key it queues the key's use on
// a buffered channel without blocking (dropped if full). A goroutine,
// started by the first use, writes the queued uses to the last-used file
// about a second later, in one write; Close writes what is left and waits
// for it. Before refusing a key, Check takes the lock and stats the file,
// re-reading it if it changed, so that a key added by another process is
// accepted as soon as that process has written it.
// The writing methods (Add, Revoke, SetActive, Reload) are serialised by one
// mutex, the only lock of FileStore; they do file I/O while holding it,
// so call them from CLI or admin paths, not from a hot loop.
package keys
