package keys

import "time"

// SetReloadInterval changes how often Check may stat the file. Call it
// before the store is shared between goroutines.
func SetReloadInterval(s *FileStore, d time.Duration) { s.reloadEvery = d }
