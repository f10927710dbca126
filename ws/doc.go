// Package ws holds the parts of HTTP/1.1 and RFC 6455 that the hub speaks:
// parsing an upgrade request's head, writing the handshake responses, and
// parsing and encoding WebSocket frames.
//
// It owns no sockets and starts no goroutines. The functions are pure and safe
// for concurrent use. A Reader holds the parsing state of one connection and
// must be used by one goroutine at a time. Parsers never panic on any input
// (they are fuzzed) and bound every buffer they keep.
//
// Frames produced here are server frames: final, unmasked, never compressed.
// Frames parsed here are client frames, which must be masked.
package ws
