package server

import (
	"testing"
	"unsafe"
)

// TestClientSizeClass: every connection allocates one client, so its size
// is the hub's idle memory per connection. It was 368 bytes, in Go's
// 384-byte allocation class; private domains (tok) and trusted proxies
// (proxied) add one pointer each, allocated only for the connections that
// use them, and still fit. Crossing 384 moves every connection to
// the 416-byte class: do it on purpose, and update this bound and
// BENCHMARKS.md.
func TestClientSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(client{}); n > 384 {
		t.Fatalf("client is %d bytes, more than its 384-byte allocation class", n)
	}
}
