// Package keys holds what every store of API keys shares: the key format
// ([Generate], [WellFormed], [Hash], [Redact]), the [Record] of a stored
// key, the verification keys of subscriber tokens ([TokenKey], [TokenSet])
// and the errors the stores return. The stores live in packages of their
// own, so that a program links only the one it uses: filestore (a JSON
// file) and pgstore (PostgreSQL). Package server checks keys through a
// small interface of its own and links neither.
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
// # Token verification keys
//
// Both stores also keep the verification keys of subscriber tokens
// ([TokenKey]): a domain with an unrevoked one is private. The key file
// holds them in a "token_keys" array (a file without it loads as before);
// PostgreSQL in the table wspubsub_token_keys (schema version 2), whose
// trigger NOTIFYs the kid of every change on the channel of the same name.
// They are few, so a store holds them all in an immutable [TokenSet]:
// TokenKeys answers from memory without a lock, I/O or allocation, and is
// safe on event loops. The file store's set is replaced when the file is
// (re)read; the PostgreSQL store's is loaded by Watch and reloaded on every
// notification and after every reconnection. OnTokenKeyRevoked's function
// receives the kid of each key that stops verifying.
//
// # Concurrency
//
// Everything in this package is a pure function or an immutable value:
// safe to call from any goroutine, event loops included. [WellFormed],
// [Hash], [Redact] and [TokenSet.Domain] do not allocate. A [TokenKey] or a
// [TokenSet] must not be changed once a store has published it.
package keys
