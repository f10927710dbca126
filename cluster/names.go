package cluster

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/wspubsub/wspubsub/topics"
)

// Names on the NATS side are derived from a topic's domain and name by
// base64url without padding, whose alphabet ([A-Za-z0-9_-]) holds neither a
// NATS separator ('.'), a wildcard ('*', '>') nor white space, and is a
// subset of what key-value keys allow. So no domain or topic can reach
// another topic's subject or key, and none can subscribe to a wildcard.

var b64 = base64.RawURLEncoding

// subjectOf is the NATS subject of topic k's messages under prefix:
// PREFIX.t.DOMAIN.TOPIC, each part encoded.
func subjectOf(prefix string, k topics.Key) string {
	var b strings.Builder
	b.Grow(len(prefix) + 4 + b64.EncodedLen(len(k.Domain)) + b64.EncodedLen(len(k.Topic)))
	b.WriteString(prefix)
	b.WriteString(".t.")
	b.WriteString(b64.EncodeToString([]byte(k.Domain)))
	b.WriteByte('.')
	b.WriteString(b64.EncodeToString([]byte(k.Topic)))
	return b.String()
}

// kvKeyOf is topic k's key in the ownership bucket: DOMAIN.TOPIC, encoded.
func kvKeyOf(k topics.Key) string {
	return b64.EncodeToString([]byte(k.Domain)) + "." + b64.EncodeToString([]byte(k.Topic))
}

var errBadName = errors.New("cluster: not an encoded topic name")

// topicOfKVKey decodes a key of the ownership bucket.
func topicOfKVKey(key string) (topics.Key, error) {
	d, t, ok := strings.Cut(key, ".")
	if !ok || d == "" || t == "" {
		return topics.Key{}, errBadName
	}
	domain, err := b64.DecodeString(d)
	if err != nil {
		return topics.Key{}, errBadName
	}
	topic, err := b64.DecodeString(t)
	if err != nil {
		return topics.Key{}, errBadName
	}
	return topics.Key{Domain: string(domain), Topic: string(topic)}, nil
}

// validPrefix reports whether p is usable as a subject prefix: one or more
// dot-separated tokens of letters, digits, '-' and '_'.
func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return false
		}
		for _, r := range tok {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
