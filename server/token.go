package server

import (
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/topics"
	"github.com/wspubsub/wspubsub/ws"
)

// Private domains: a domain with token verification keys (TokenKeyring)
// admits only subscribers that present a JWT signed with one of them,
// granting the topic. The check runs on the event loop, in the handshake,
// before the 101 (or the EventSource 200); it costs a few microseconds for
// HS256 (BenchmarkTokenCheck). An admitted subscriber keeps two words: the
// key that admitted it and the token's exp. The keepalive sweep closes it
// with 4005 once exp passes, and TokenKeyRevoked with 4002 when its key is
// revoked. The token itself is never kept, logged or put in a metric.

// TokenKeyring gives the hub the verification keys of subscriber tokens.
// filestore.Store and pgstore.Store implement it.
type TokenKeyring interface {
	// TokenKeys returns the usable verification keys of domain; none
	// means the domain is open. The hub calls it on its event loops for
	// every subscriber handshake: it must not block, and should not
	// allocate.
	TokenKeys(domain string) []*keys.TokenKey
}

// tokenClaims are the claims the hub reads: exp (required), nbf (honoured
// when present) and topics; any other is ignored (decoding only these
// keeps the check cheap).
type tokenClaims struct {
	Exp *jwt.NumericDate `json:"exp"`
	Nbf *jwt.NumericDate `json:"nbf"`
	// Topics lists the topics of the domain the token admits to: exact
	// names, or prefixes ending in '*' ("scores/*"; "*" is every topic).
	Topics []string `json:"topics"`
}

// The jwt.Claims the library validates: exp and nbf; the hub asks for no
// iat, iss, sub or aud.
func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.Exp, nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.Nbf, nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return "", nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return "", nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, nil }

// algBits are the algs a verification key may have; a set of them, as a
// bit mask, picks the parser that accepts exactly those.
var algBits = [...]string{keys.AlgHS256, keys.AlgEdDSA, keys.AlgES256, keys.AlgRS256}

// tokenParsers[mask] accepts the algs of mask only (jwt.WithValidMethods:
// never "none", never an alg no key of the domain has) and requires exp.
// A jwt.Parser is read-only once made: one serves every goroutine.
var tokenParsers = func() (p [1 << len(algBits)]*jwt.Parser) {
	for m := 1; m < len(p); m++ {
		var algs []string
		for i, a := range algBits {
			if m&(1<<i) != 0 {
				algs = append(algs, a)
			}
		}
		p[m] = jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithExpirationRequired())
	}
	return p
}()

func algMask(ks []*keys.TokenKey) int {
	m := 0
	for _, k := range ks {
		for i, a := range algBits {
			if k.Alg == a {
				m |= 1 << i
			}
		}
	}
	return m
}

// tokenGrant is what a verified token admits to: the key that verified it,
// and its exp.
type tokenGrant struct {
	key *keys.TokenKey
	exp int64 // UnixNano
}

// tokenRefusal is why a token was refused: the status (401 or 403) and a
// reason that never quotes the token.
type tokenRefusal struct {
	status int
	reason string
}

var (
	errUnknownKID  = errors.New("unknown kid")
	errNoKID       = errors.New("no kid, and the domain has several keys")
	errWrongKeyAlg = errors.New("alg is not its key's")
	errUnusableKey = errors.New("the key cannot verify")
)

// maxTokenLen bounds the token the hub parses; the request head is
// bounded anyway (MaxHeaderBytes).
const maxTokenLen = 4096

// verifyToken checks token against ks, the usable keys of a private
// domain, for topic. The kid header picks the key; a token without kid is
// verified with the domain's only key of its alg, and refused when there
// are several. The alg must be the key's. It is the one entry point of the
// token check (FuzzVerifyToken).
func verifyToken(ks []*keys.TokenKey, topic, token string) (tokenGrant, *tokenRefusal) {
	if token == "" {
		return tokenGrant{}, &tokenRefusal{401, "missing token: this domain is private, pass ?token= or Authorization: Bearer"}
	}
	if len(token) > maxTokenLen {
		return tokenGrant{}, &tokenRefusal{401, "malformed token: too long"}
	}
	mask := algMask(ks)
	if mask == 0 {
		return tokenGrant{}, &tokenRefusal{401, "no usable token key for this domain"}
	}
	var used *keys.TokenKey
	var cl tokenClaims
	_, err := tokenParsers[mask].ParseWithClaims(token, &cl, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		kid, hasKID := t.Header["kid"].(string)
		for _, k := range ks {
			switch {
			case hasKID && k.KID != kid:
				continue
			case k.Alg != alg && hasKID:
				return nil, errWrongKeyAlg
			case k.Alg != alg:
				continue
			case !hasKID && used != nil:
				return nil, errNoKID
			}
			used = k
			if hasKID {
				break
			}
		}
		switch {
		case used == nil:
			return nil, errUnknownKID
		case used.Verify == nil:
			return nil, errUnusableKey
		}
		return used.Verify, nil
	})
	if err != nil {
		return tokenGrant{}, &tokenRefusal{401, tokenErrReason(err)}
	}
	if !grants(cl.Topics, topic) {
		return tokenGrant{}, &tokenRefusal{403, "token does not grant this topic"}
	}
	return tokenGrant{key: used, exp: cl.Exp.UnixNano()}, nil
}

// tokenErrReason says why the JWT library refused a token, in words that
// quote nothing of it.
func tokenErrReason(err error) string {
	switch {
	case errors.Is(err, errUnknownKID):
		return "unknown kid: no usable key of this domain has it"
	case errors.Is(err, errNoKID):
		return "token has no kid and the domain has several keys of its alg: put the kid in its header"
	case errors.Is(err, errWrongKeyAlg):
		return "token alg is not its key's"
	case errors.Is(err, errUnusableKey):
		return "the key of this kid cannot verify tokens (see the hub's log)"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad token signature, or an alg this domain has no key for"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no exp"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet (nbf)"
	}
	return "invalid token"
}

// grants reports whether a topics claim admits topic: an exact name, or a
// prefix ending in '*'.
func grants(claim []string, topic string) bool {
	for _, p := range claim {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(topic, prefix) {
				return true
			}
		} else if p == topic {
			return true
		}
	}
	return false
}

// tokenOf returns the token a subscriber's request carries: an
// Authorization: Bearer header, else the ?token= query parameter (which a
// browser's WebSocket and EventSource can send). "" if none.
func tokenOf(req *ws.Request) string {
	if scheme, bearer, ok := strings.Cut(req.Authorization, " "); ok && strings.EqualFold(scheme, "Bearer") {
		if bearer = strings.TrimSpace(bearer); bearer != "" {
			return bearer
		}
	}
	_, query, ok := strings.Cut(req.Target, "?")
	for ok && query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != "token" {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if u, err := url.QueryUnescape(v); err == nil {
				return u
			}
			return "\x00" // malformed, refused as such
		}
		return v
	}
	return ""
}

// admitToken checks a subscriber of a private domain: it refuses the handshake
// (401 or 403, with a WWW-Authenticate header) unless the request carries
// a token that admits it to k, and remembers what the token granted. An
// open domain costs one map lookup. It reports whether the handshake goes
// on. c.mu is held.
func (c *client) admitToken(k topics.Key, req *ws.Request) bool {
	s := c.srv
	if s.cfg.Tokens == nil {
		return true
	}
	ks := s.cfg.Tokens.TokenKeys(k.Domain)
	if len(ks) == 0 {
		return true
	}
	token := tokenOf(req)
	g, r := verifyToken(ks, k.Topic, token)
	switch {
	case r == nil:
	case r.status == 403:
		c.refuseWith(refTokenForbidden, r.reason, `WWW-Authenticate: Bearer error="insufficient_scope"`+"\r\n", 0)
		return false
	case token == "":
		c.refuseWith(refTokenUnauthorized, r.reason, "WWW-Authenticate: Bearer\r\n", 0)
		return false
	default:
		c.refuseWith(refTokenUnauthorized, r.reason, `WWW-Authenticate: Bearer error="invalid_token"`+"\r\n", 0)
		return false
	}
	c.sub.tok = &g
	s.tokenClients.Add(1)
	return true
}

// tokenExpired closes c with 4005 once its token's exp passed; the
// keepalive sweep calls it about once a second. It reports whether it
// closed c. c.mu is held.
func (c *client) tokenExpired(now int64) bool {
	if c.sub.tok == nil || now < c.sub.tok.exp {
		return false
	}
	c.closeLocked(ws.CloseTokenExpired, "token expired: fetch a new token and resume")
	return true
}

// TokenKeyRevoked closes every subscriber admitted by the token
// verification key kid (with 4002; an EventSource stream gets its close
// event and ends), and returns how many it closed. Key stores call it when
// the key is revoked. It looks at every connection: revocations are rare.
func (s *Server) TokenKeyRevoked(kid string) int {
	n := 0
	s.clients.each(func(c *client) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.sub.tok != nil && c.sub.tok.key.KID == kid && c.state != stateClosing && c.state != stateClosed {
			c.closeLocked(ws.CloseKeyRevoked, "token verification key revoked: fetch a new token")
			n++
		}
	})
	return n
}

// tokenSweepEvery is how often, at most, the keepalive sweep looks for
// expired tokens.
const tokenSweepEvery = time.Second
