package keys

import (
	"encoding/hex"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors returned by the stores (packages filestore and pgstore). Callers
// compare with errors.Is.
var (
	// ErrRefused is the only reason Check gives for refusing a key, so that
	// a caller cannot learn which of the conditions failed.
	ErrRefused = errors.New("keys: key is unknown, inactive, revoked or not for this domain")
	// ErrNotFound means no key matched the key, ID or domain given.
	ErrNotFound = errors.New("keys: no such key")
	// ErrBadDomain means a domain is not 1-64 bytes of valid UTF-8 without '/'.
	ErrBadDomain = errors.New("keys: domain must be 1-64 bytes of valid UTF-8 without '/'")
	// ErrBadUsername means a username is not at most 256 bytes of valid UTF-8.
	ErrBadUsername = errors.New("keys: username must be at most 256 bytes of valid UTF-8")
	// ErrClosed means a store was used after Close.
	ErrClosed = errors.New("keys: store is closed")
	// ErrUnavailable means a store's database could not answer. Check wraps
	// it when a key is not cached and the database is unreachable: the key
	// may well be good, so the hub answers 503, not 401.
	ErrUnavailable = errors.New("keys: key database unavailable")
)

// Record describes one stored key. It never holds the key itself.
type Record struct {
	ID       string    // first 12 hex digits of Hash, shown by `keys list` and accepted by Revoke
	Hash     [32]byte  // SHA-256 of the key, see Hash
	Domain   string    // the only domain the key may publish to
	Username string    // who the key was issued to; may be empty
	Created  time.Time // when the key was added
	Active   bool      // false while the key's domain is deactivated
	Revoked  time.Time // zero unless revoked; a revoked key is refused forever
	LastUsed time.Time // when a publisher last used it, to the minute; zero if never
}

// Usable reports whether the key of r may publish: it is active and not
// revoked.
func (r *Record) Usable() bool { return r.Active && r.Revoked.IsZero() }

// ValidDomain reports whether d can be stored as a key's domain: 1-64 bytes
// of valid UTF-8 without '/'.
func ValidDomain(d string) bool {
	return len(d) >= 1 && len(d) <= 64 && utf8.ValidString(d) && !strings.Contains(d, "/")
}

// ValidUsername reports whether u can be stored as a key's username: at
// most 256 bytes of valid UTF-8.
func ValidUsername(u string) bool {
	return len(u) <= 256 && utf8.ValidString(u)
}

// ID returns the Record.ID of the key whose hash is h: the first 12 hex
// digits of the hash, safe to log and to show.
func ID(h [32]byte) string { return hex.EncodeToString(h[:6]) }

// ParseID returns s as a Record.ID (12 hex digits, lower case) and true, or
// false if s is not one. Stores use it to accept an ID where a key is
// expected (Revoke).
func ParseID(s string) (string, bool) {
	if len(s) != 12 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return "", false
		}
	}
	return strings.ToLower(s), true
}
