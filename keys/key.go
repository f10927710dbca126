package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
)

// Prefix starts every key made by [Generate].
const Prefix = "wsp_"

const (
	randLen  = 32                    // base62 characters of randomness
	sumLen   = 6                     // base62 characters of checksum; 62^6 > 2^32
	bodyLen  = len(Prefix) + randLen // the part the checksum covers
	keyLen   = bodyLen + sumLen      // length of a new-format key
	uuidLen  = 36                    // 8-4-4-4-12
	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// base62Val maps a byte to its base62 digit value, or -1.
var base62Val = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// Generate returns a new random key in the format described in the package
// comment. It fails only if the system's random source fails.
func Generate() (string, error) {
	var out [keyLen]byte
	copy(out[:], Prefix)
	n := len(Prefix)
	var buf [64]byte
	for n < bodyLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("cannot generate key: %w", err)
		}
		for _, b := range buf {
			// 248 = 4*62: rejecting larger bytes keeps every digit equally likely.
			if b >= 248 {
				continue
			}
			out[n] = alphabet[b%62]
			n++
			if n == bodyLen {
				break
			}
		}
	}
	sum := checksum(string(out[:bodyLen]))
	for i := keyLen - 1; i >= bodyLen; i-- {
		out[i] = alphabet[sum%62]
		sum /= 62
	}
	return string(out[:]), nil
}

// checksum is CRC-32/IEEE of s, computed over the string without converting
// it to a byte slice so that callers do not allocate.
func checksum(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crc32.IEEETable[byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

// WellFormed reports whether key is a new-format key with a valid checksum,
// or a legacy bare UUID (8-4-4-4-12 hex digits, any case). It does not
// allocate, so it can refuse garbage before any lookup.
func WellFormed(key string) bool {
	switch len(key) {
	case keyLen:
		return wellFormedNew(key)
	case uuidLen:
		return wellFormedUUID(key)
	}
	return false
}

func wellFormedNew(key string) bool {
	if key[:len(Prefix)] != Prefix {
		return false
	}
	for i := len(Prefix); i < bodyLen; i++ {
		if base62Val[key[i]] < 0 {
			return false
		}
	}
	var sum uint64
	for i := bodyLen; i < keyLen; i++ {
		v := base62Val[key[i]]
		if v < 0 {
			return false
		}
		sum = sum*62 + uint64(v)
	}
	return sum == uint64(checksum(key[:bodyLen]))
}

func wellFormedUUID(key string) bool {
	for i := 0; i < uuidLen; i++ {
		c := key[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Hash returns the SHA-256 of the key's bytes: the only form in which a
// store keeps a key.
func Hash(key string) [32]byte {
	// Copying a key of normal length into a stack buffer avoids the heap
	// allocation of a []byte conversion, keeping Check allocation free.
	var buf [64]byte
	if len(key) <= len(buf) {
		n := copy(buf[:], key)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(key))
}

// Redact returns a form of key that is safe to log and never contains the
// whole key: the prefix and first 4 random characters of a new-format key
// ("wsp_AbC1…"), the first 4 characters of a UUID or of other long input
// ("f47a…"), and just "…" for anything short or odd.
func Redact(key string) string {
	switch {
	case len(key) == keyLen && wellFormedNew(key):
		return key[:len(Prefix)+4] + "…"
	case len(key) >= 16 && plainASCII(key[:4]):
		return key[:4] + "…"
	}
	return "…"
}

// plainASCII reports whether s holds only letters, digits, '-' and '_', so
// that a redacted prefix cannot carry control characters into a log.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if base62Val[c] < 0 && c != '-' && c != '_' {
			return false
		}
	}
	return true
}
