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
// # FileStore
//
// [FileStore] is the embedded store: a JSON file that needs no server. It is
// meant for one server process that checks keys, plus an occasional CLI
// process that changes them; writes from two processes at the same instant
// are not locked against each other (the later write wins).
//
// # Concurrency
//
// Every method of [FileStore] is safe to call from any number of goroutines.
// [FileStore.Check] takes no lock: it reads an immutable snapshot through an
// atomic pointer, does not allocate when the key is accepted, and never
// waits for another goroutine: at most once a second one caller stats the
// file (and re-reads it if another process changed it), skipping that if a
// writer is busy.
// The writing methods (Add, Revoke, SetActive, Reload) are serialised by one
// mutex, the only lock in the package; they do file I/O while holding it,
// so call them from CLI or admin paths, not from a hot loop.
package keys
