package keycache

import "time"

// SetClock replaces the cache's clock. Call it before the cache is shared.
func SetClock[V any](c *Cache[V], now func() time.Duration) {
	c.now = func() int64 { return int64(now()) }
}
