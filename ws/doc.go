// Package ws holds the parts of HTTP/1.1 and RFC 6455 that the hub speaks:
// parsing an upgrade request's head, writing the handshake responses, and
// parsing and encoding WebSocket frames.
//
// It owns no sockets and starts no goroutines. The functions are pure and safe
// for concurrent use. A Reader holds the parsing state of one connection and
// must be used by one goroutine at a time. Parsers never panic on any input
// (they are fuzzed) and bound every buffer they keep.
//
// Frames produced here are server frames: final and unmasked, compressed
// only by AppendCompressed (permessage-deflate, RFC 7692, without context
// takeover, so that one compressed frame serves every peer that negotiated
// it: see AcceptDeflate). Frames parsed here are client frames, which must
// be masked; a Reader with Deflate set inflates compressed messages within
// its MaxMessage limit.
package ws
