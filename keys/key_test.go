package keys_test

import (
	"crypto/sha256"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/wspubsub/wspubsub/keys"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func mustGenerate(t testing.TB) string {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestGenerateFormat(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		k := mustGenerate(t)
		if len(k) != 42 || !strings.HasPrefix(k, keys.Prefix) {
			t.Fatalf("key %q: want %q + 38 characters", k, keys.Prefix)
		}
		for _, c := range k[len(keys.Prefix):] {
			if !strings.ContainsRune(base62, c) {
				t.Fatalf("key %q has non-base62 %q", k, c)
			}
		}
		// The last 6 characters are CRC-32/IEEE of the rest in base62.
		var sum uint64
		for _, c := range k[36:] {
			sum = sum*62 + uint64(strings.IndexRune(base62, c))
		}
		if want := crc32.ChecksumIEEE([]byte(k[:36])); sum != uint64(want) {
			t.Fatalf("key %q: checksum %d, want %d", k, sum, want)
		}
		if !keys.WellFormed(k) {
			t.Fatalf("WellFormed(%q) = false", k)
		}
		if seen[k] {
			t.Fatalf("duplicate key %q", k)
		}
		seen[k] = true
	}
}

func TestWellFormedRejectsAnyChangedCharacter(t *testing.T) {
	for range 20 {
		k := mustGenerate(t)
		for i := range len(k) {
			for _, c := range []byte(base62 + "_-+/=. \x00\xff") {
				if c == k[i] {
					continue
				}
				bad := k[:i] + string(c) + k[i+1:]
				if keys.WellFormed(bad) {
					t.Fatalf("WellFormed(%q) = true after changing position %d of %q", bad, i, k)
				}
			}
		}
		for _, bad := range []string{k[:41], k + "0", k[1:], " " + k, "WSP_" + k[4:], "wsp-" + k[4:]} {
			if keys.WellFormed(bad) {
				t.Fatalf("WellFormed(%q) = true", bad)
			}
		}
	}
}

func TestWellFormedLegacyUUID(t *testing.T) {
	good := []string{
		"f47ac10b-58cc-4372-a567-0e02b2c3d479",
		"F47AC10B-58CC-4372-A567-0E02B2C3D479",
		"F47ac10b-58CC-4372-a567-0e02B2c3d479",
		"00000000-0000-0000-0000-000000000000",
	}
	for _, k := range good {
		if !keys.WellFormed(k) {
			t.Errorf("WellFormed(%q) = false, want true", k)
		}
	}
	bad := []string{
		"",
		"f47ac10b-58cc-4372-a567-0e02b2c3d47",
		"f47ac10b-58cc-4372-a567-0e02b2c3d4790",
		"f47ac10b58cc-4372-a567-0e02b2c3d4790",
		"f47ac10b-58cc-4372-a567-0e02b2c3d47g",
		"{47ac10b-58cc-4372-a567-0e02b2c3d479}",
		"f47ac10b-58cc-4372-a567_0e02b2c3d479",
		"f47ac10bx58cc-4372-a567-0e02b2c3d479",
		"f47ac10b58cc4372a5670e02b2c3d479",
		"wsp_",
		"garbage",
	}
	for _, k := range bad {
		if keys.WellFormed(k) {
			t.Errorf("WellFormed(%q) = true, want false", k)
		}
	}
}

func TestWellFormedDoesNotAllocate(t *testing.T) {
	inputs := []string{mustGenerate(t), "f47ac10b-58cc-4372-a567-0e02b2c3d479", "garbage", strings.Repeat("x", 42)}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { keys.WellFormed(in) }); n != 0 {
			t.Errorf("WellFormed(%q) allocates %v times", in, n)
		}
	}
}

func TestHash(t *testing.T) {
	k := mustGenerate(t)
	if keys.Hash(k) != sha256.Sum256([]byte(k)) {
		t.Fatal("Hash is not SHA-256 of the key bytes")
	}
}

func TestRedact(t *testing.T) {
	k := mustGenerate(t)
	cases := []struct{ in, want string }{
		{k, k[:8] + "…"},
		{"f47ac10b-58cc-4372-a567-0e02b2c3d479", "f47a…"},
		{"", "…"},
		{"short", "…"},
		{"wsp_tooShort", "…"},
		{"\x1b[31mlong enough garbage", "…"},
		{"abcdefghijklmnopqrstuvwxyz", "abcd…"},
	}
	for _, c := range cases {
		got := keys.Redact(c.in)
		if got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
		if c.in != "" && strings.Contains(got, c.in) {
			t.Errorf("Redact(%q) = %q contains the key", c.in, got)
		}
	}
	for range 100 {
		k := mustGenerate(t)
		if r := keys.Redact(k); strings.Contains(r, k) || strings.Contains(r, k[8:]) {
			t.Fatalf("Redact(%q) = %q reveals the key", k, r)
		}
	}
}

func FuzzWellFormed(f *testing.F) {
	for range 5 {
		f.Add(mustGenerate(f))
	}
	k := mustGenerate(f)
	for _, s := range []string{
		"f47ac10b-58cc-4372-a567-0e02b2c3d479",
		"F47AC10B-58CC-4372-A567-0E02B2C3D479",
		"", "wsp_", "…", "garbage", "\x00\xff\xfe",
		k[:41], k + "0", k[:10] + "!" + k[11:],
		strings.Repeat("z", 42), strings.Repeat("-", 36),
		"wsp_" + strings.Repeat("0", 38),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := keys.WellFormed(s)
		if ok && len(s) != 42 && len(s) != 36 {
			t.Fatalf("WellFormed(%q) = true for length %d", s, len(s))
		}
		r := keys.Redact(s)
		// Inputs of up to 3 bytes can be part of "…" itself.
		if len(s) > len("…") && strings.Contains(r, s) {
			t.Fatalf("Redact(%q) = %q contains the input", s, r)
		}
		g, err := keys.Generate()
		if err != nil || !keys.WellFormed(g) {
			t.Fatalf("WellFormed(Generate()) = false for %q (%v)", g, err)
		}
	})
}
