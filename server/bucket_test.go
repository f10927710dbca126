package server

import (
	"context"
	"testing"
	"time"
)

// TestBucketAddsUpFractions: calls closer together than one token's worth
// (here every half token) still refill the bucket, so a steady rate just
// under the limit is never refused. The bucket kept whole tokens before,
// and each such call reset its clock without adding anything.
func TestBucketAddsUpFractions(t *testing.T) {
	const rate = 100 // a token every 10ms
	var b bucket
	now := int64(0)
	b.fill(rate, now)
	for range rate {
		if !b.take(1, rate, now) {
			t.Fatal("a full bucket refused one of its tokens")
		}
	}
	if b.take(1, rate, now) {
		t.Fatal("an empty bucket gave a token")
	}
	// Calls every 5ms, one take every other call: 100 a second.
	for i := range 2000 {
		now += int64(5 * time.Millisecond)
		if i%2 == 1 && !b.take(1, rate, now) {
			t.Fatalf("call %d: refused at the bucket's own rate", i)
		}
	}
	// Faster than the rate: refused within a second's worth of calls.
	refused := false
	for range 2 * rate {
		now += int64(5 * time.Millisecond)
		if !b.take(1, rate, now) {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatal("twice the rate for a second was never refused")
	}
}

// TestBucketRefill: an idle bucket is full again after a second and holds
// no more than rate tokens; a refused take takes nothing.
func TestBucketRefill(t *testing.T) {
	const rate = 10
	var b bucket
	b.fill(rate, 0)
	if !b.take(rate, rate, 0) || b.take(1, rate, 0) {
		t.Fatal("a full bucket did not give exactly its rate")
	}
	now := int64(time.Hour)
	if b.take(rate+1, rate, now) {
		t.Fatal("a bucket gave more than it holds")
	}
	if !b.take(rate, rate, now) {
		t.Fatal("an idle bucket was not full again, or a refused take took tokens")
	}
	var huge bucket
	huge.fill(1<<62, 0)
	if !huge.take(1<<20, 1<<62, 0) || !huge.take(1, 1<<62, now) || huge.avail < 0 {
		t.Fatal("a huge rate overflowed")
	}
}

// TestKeyRatesBoundedAndSwept: the per-key table holds at most
// maxRateKeys keys (past it, new keys are not limited) and the sweep drops
// every key unused for a second.
func TestKeyRatesBoundedAndSwept(t *testing.T) {
	var k keyRates
	const rate = 1
	key := func(i int) [32]byte {
		var h [32]byte
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		return h
	}
	for i := range 2 * maxRateKeys {
		if !k.take(key(i), rate, 0) {
			t.Fatalf("key %d: refused its first message", i)
		}
	}
	n := 0
	for i := range k.shards {
		n += len(k.shards[i].m)
	}
	if n != maxRateKeys {
		t.Fatalf("%d keys tracked, want the bound %d", n, maxRateKeys)
	}
	if k.take(key(0), rate, 1) {
		t.Fatal("a tracked key got a second message within its second")
	}
	k.sweep(int64(time.Second) / 2)
	if k.take(key(0), rate, int64(time.Second)/2) {
		t.Fatal("the sweep dropped a key used within the second")
	}
	k.sweep(2 * int64(time.Second))
	for i := range k.shards {
		if len(k.shards[i].m) != 0 {
			t.Fatal("the sweep left idle keys")
		}
	}
}

// TestCheckCtx: the key check's context is a context: its deadline ends
// it with DeadlineExceeded, stop with Canceled, and a context nobody asked
// Done of ends without a timer.
func TestCheckCtx(t *testing.T) {
	c := &checkCtx{deadline: time.Now().Add(20 * time.Millisecond)}
	if c.Err() != nil {
		t.Fatal("ended before its deadline")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done did not close at the deadline")
	}
	if c.Err() != context.DeadlineExceeded {
		t.Fatalf("Err %v after the deadline", c.Err())
	}
	c.stop()
	if c.Err() != context.DeadlineExceeded {
		t.Fatalf("Err %v: stop after the deadline changed it", c.Err())
	}

	c = &checkCtx{deadline: time.Now().Add(time.Hour)}
	done := c.Done()
	c.stop()
	select {
	case <-done:
	default:
		t.Fatal("stop did not close Done")
	}
	if c.Err() != context.Canceled {
		t.Fatalf("Err %v after stop", c.Err())
	}

	c = &checkCtx{deadline: time.Now().Add(time.Hour)}
	c.stop()
	if c.timer != nil {
		t.Fatal("stop started a timer")
	}
	if _, ok := <-c.Done(); ok || c.Err() != context.Canceled {
		t.Fatalf("a stopped context: Done open or Err %v", c.Err())
	}
	// A context derived from it ends with it.
	c = &checkCtx{deadline: time.Now().Add(time.Hour)}
	child, cancel := context.WithTimeout(c, time.Hour)
	defer cancel()
	c.stop()
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a derived context did not end with its parent")
	}
}
