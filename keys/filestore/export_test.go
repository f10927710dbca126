package filestore

import "time"

// SetReloadInterval changes how often Check may stat the file. Call it
// before the store is shared between goroutines.
func SetReloadInterval(s *Store, d time.Duration) { s.reloadEvery = d }

// SetLastUsedIntervals changes how often a key's use is recorded at most and
// how long uses gather before a write. Call it before the first Check.
func SetLastUsedIntervals(s *Store, every, batch time.Duration) {
	s.lastUsedEvery, s.lastUsedBatch = every, batch
}

// LastUsedPath is the last-used file beside the key file at path.
func LastUsedPath(path string) string { return lastUsedPath(path) }
