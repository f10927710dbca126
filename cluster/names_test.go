package cluster

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wspubsub/wspubsub/topics"
)

// A subject: the prefix, "t" and two tokens of the base64url alphabet.
var subjectRe = regexp.MustCompile(`^wspubsub\.t\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)

// The characters a JetStream key-value key may hold.
var kvKeyRe = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func checkNames(t *testing.T, k topics.Key) {
	t.Helper()
	subj := subjectOf("wspubsub", k)
	if !subjectRe.MatchString(subj) {
		t.Fatalf("subject %q of %q is not four safe tokens", subj, k)
	}
	key := kvKeyOf(k)
	if !kvKeyRe.MatchString(key) || strings.Count(key, ".") != 1 {
		t.Fatalf("key %q of %q is not a safe key-value key", key, k)
	}
	back, err := topicOfKVKey(key)
	if err != nil || back != k {
		t.Fatalf("key %q decodes to %q, %v; want %q", key, back, err, k)
	}
}

func TestNamesHoldNoWildcardOrSeparator(t *testing.T) {
	for _, k := range []topics.Key{
		{Domain: "test", Topic: "news"},
		{Domain: "a.b", Topic: "c.d"},
		{Domain: "*", Topic: ">"},
		{Domain: "a b", Topic: "\tc\r\n"},
		{Domain: "ü", Topic: "日本"},
		{Domain: ">", Topic: "*.>"},
		{Domain: "$SYS", Topic: "_INBOX.x"},
		{Domain: strings.Repeat("d", 64), Topic: strings.Repeat("t", 255)},
	} {
		checkNames(t, k)
	}
	if subjectOf("wspubsub", topics.Key{Domain: "a", Topic: "b.c"}) == subjectOf("wspubsub", topics.Key{Domain: "a.b", Topic: "c"}) {
		t.Fatal("two topics share a subject")
	}
	for _, bad := range []string{"", "x", ".x", "x.", "!.x", "eA.!"} {
		if _, err := topicOfKVKey(bad); err == nil {
			t.Errorf("key %q decoded", bad)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	for p, want := range map[string]bool{
		"wspubsub": true, "acme.hub-1": true, "a_b": true,
		"": false, "a..b": false, ".a": false, "a.": false, "a.*": false, "a.>": false, "a b": false,
	} {
		if got := validPrefix(p); got != want {
			t.Errorf("validPrefix(%q) = %v, want %v", p, got, want)
		}
	}
}

func FuzzNames(f *testing.F) {
	f.Add("test", "news")
	f.Add("a.b", "*>")
	f.Add("\x00", "\xff")
	f.Fuzz(func(t *testing.T, domain, topic string) {
		if domain == "" || topic == "" || !utf8.ValidString(domain+topic) {
			t.Skip()
		}
		checkNames(t, topics.Key{Domain: domain, Topic: topic})
	})
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []header{
		{sender: 1, seq: 1, sent: 42, msgs: 1, payload: 5, first: 1, epoch: "AbC123"},
		{more: true, sender: ^uint64(0), seq: 1 << 40, sent: -1, msgs: 1 << 20, payload: 1 << 35, first: ^uint64(0), epoch: strings.Repeat("z", maxEpoch)},
		{cont: true, more: true, first: 7, epoch: "e"},
		{cont: true, first: 1, epoch: "E"},
	} {
		b := appendHeader(nil, h)
		if len(b) > maxHeaderSize {
			t.Fatalf("header of %d bytes, more than %d", len(b), maxHeaderSize)
		}
		b = append(b, "frames"...)
		got, data, err := parseHeader(b)
		if err != nil || got != h || string(data) != "frames" {
			t.Fatalf("%+v came back as %+v %q, %v", h, got, data, err)
		}
	}
	for _, bad := range [][]byte{nil, {1}, bytes.Repeat([]byte{0}, 40), append([]byte{1, 0}, make([]byte, 30)...), append([]byte{2, 4}, make([]byte, 30)...),
		appendHeader(nil, header{first: 0, epoch: "E"}), appendHeader(nil, header{first: 1, epoch: ""}), appendHeader(nil, header{first: 1, epoch: "a-b"})} {
		if _, _, err := parseHeader(bad); err == nil {
			t.Errorf("parsed % x", bad)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(appendHeader(nil, header{sender: 7, seq: 3, sent: 1, msgs: 2, payload: 10, first: 3, epoch: "Ep0ch"}))
	f.Add([]byte{1, 3, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, data, err := parseHeader(b)
		if err != nil {
			return
		}
		if h.msgs < 0 || h.payload < 0 || len(data) > len(b) {
			t.Fatalf("parsed %+v with %d bytes of data from %d", h, len(data), len(b))
		}
	})
}
