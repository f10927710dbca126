package server

import (
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

// TestBucketBurstAndSlowRate: the per-address handshake limit's bucket
// holds burst tokens and refills at a rate below one a second, adding up
// the fractions of calls between whole tokens.
func TestBucketBurstAndSlowRate(t *testing.T) {
	const rate, burst = 0.5, 2 // a token every 2s, up to 2
	var b bucket
	now := int64(0)
	b.fillBurst(burst, now)
	if !b.takeBurst(1, rate, burst, now) || !b.takeBurst(1, rate, burst, now) {
		t.Fatal("a full bucket refused one of its burst")
	}
	if b.takeBurst(1, rate, burst, now) {
		t.Fatal("an empty bucket gave a token")
	}
	for range 3 { // 1.5s in steps of 0.5s: three quarters of a token
		now += int64(500 * time.Millisecond)
		if b.takeBurst(1, rate, burst, now) {
			t.Fatalf("a token at %v, before 2s", time.Duration(now))
		}
	}
	now += int64(500 * time.Millisecond)
	if !b.takeBurst(1, rate, burst, now) {
		t.Fatal("no token after 2s at half a token a second")
	}
	now += int64(time.Hour)
	if b.takeBurst(burst+1, rate, burst, now) || !b.takeBurst(burst, rate, burst, now) {
		t.Fatal("an idle bucket did not hold exactly its burst")
	}
}
