package filestore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// The key file's last-used times live in a file of their own beside it,
// PATH.last-used, written only by the hub that checks the keys: recording a
// use never rewrites the key file, so it can never race a CLI's Add, Revoke
// or SetActive, and older binaries read the key file as before. The file
// holds hashes and times, never a key:
//
//	{"version": 1, "last_used": {"<hex SHA-256>": "2026-12-04T17:44:00Z", ...}}
//
// Two hubs on one key file (not the intended set-up) each merge what they
// read into what they write, so a time can be lost only when their writes
// cross.

// lastUsedPath returns the last-used file of the key file at path.
func lastUsedPath(path string) string { return path + ".last-used" }

// lastUsedVersion is the only version of the last-used file this package
// writes and reads.
const lastUsedVersion = 1

// maxQueuedUses bounds the uses Check may queue for the writer; past it a
// use is dropped (that key's next minute is recorded).
const maxQueuedUses = 1024

type lastUsedData struct {
	Version  int                  `json:"version"`
	LastUsed map[string]time.Time `json:"last_used"`
}

// keyUse is one accepted Check, queued for the writer.
type keyUse struct {
	hash [32]byte
	at   int64 // UnixNano
}

// touch queues a use of snap.recs[i] if none was queued in the last
// lastUsedEvery. It never waits: the queue is a buffered channel, and a use
// that does not fit is dropped. It starts the writer on the first use.
func (s *Store) touch(snap *snapshot, i int, now int64) {
	u := &snap.used[i]
	last := u.Load()
	if now-last < int64(s.lastUsedEvery) || !u.CompareAndSwap(last, now) {
		return
	}
	if !s.writing.Load() && s.writing.CompareAndSwap(false, true) {
		go s.writeLastUsed()
	}
	select {
	case s.uses <- keyUse{hash: snap.recs[i].Hash, at: now}:
	default:
	}
}

// writeLastUsed gathers queued uses for lastUsedBatch after the first one,
// then writes them in one go; at Close it writes what is left and stops.
func (s *Store) writeLastUsed() {
	defer close(s.writerDone)
	pending := make(map[[32]byte]int64)
	var flush <-chan time.Time
	var failed bool // the last write failed; log the next failure at debug
	for {
		select {
		case u := <-s.uses:
			if u.at > pending[u.hash] {
				pending[u.hash] = u.at
			}
			if flush == nil {
				flush = time.After(s.lastUsedBatch)
			}
			continue
		case <-flush:
		case <-s.done:
			for more := true; more; {
				select {
				case u := <-s.uses:
					pending[u.hash] = max(pending[u.hash], u.at)
				default:
					more = false
				}
			}
			if len(pending) > 0 {
				s.flushLastUsed(pending, failed)
			}
			return
		}
		flush = nil
		failed = s.flushLastUsed(pending, failed) != nil
		clear(pending)
	}
}

// flushLastUsed merges pending into the last-used file. A write that fails
// is logged (at warn the first time in a row) and dropped: the time is a
// hint, not a record.
func (s *Store) flushLastUsed(pending map[[32]byte]int64, failedBefore bool) error {
	err := func() error {
		used, err := readLastUsed(s.usedPath)
		if err != nil {
			used = map[[32]byte]time.Time{} // a damaged file is replaced
		}
		for h, at := range pending {
			t := time.Unix(0, at).UTC().Truncate(time.Second)
			if t.After(used[h]) {
				used[h] = t
			}
		}
		fd := lastUsedData{Version: lastUsedVersion, LastUsed: make(map[string]time.Time, len(used))}
		for h, t := range used {
			fd.LastUsed[hex.EncodeToString(h[:])] = t
		}
		data, err := json.MarshalIndent(fd, "", "\t")
		if err != nil {
			return err
		}
		_, err = writeFileAtomic(s.usedPath, append(data, '\n'))
		return err
	}()
	if err != nil {
		level := slog.LevelWarn
		if failedBefore {
			level = slog.LevelDebug
		}
		slog.Log(context.Background(), level, "keys: cannot record when keys were last used", "path", s.usedPath, "keys", len(pending), "err", err)
	}
	return err
}

// readLastUsed reads a last-used file; a missing one holds no times.
func readLastUsed(path string) (map[[32]byte]time.Time, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[[32]byte]time.Time{}, nil
	}
	if err != nil {
		return nil, err
	}
	var fd lastUsedData
	if err := json.Unmarshal(data, &fd); err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	if fd.Version != lastUsedVersion {
		return nil, fmt.Errorf("%s: unsupported version %d (want %d)", path, fd.Version, lastUsedVersion)
	}
	used := make(map[[32]byte]time.Time, len(fd.LastUsed))
	for hs, t := range fd.LastUsed {
		var h [32]byte
		if len(hs) != 64 {
			continue
		}
		if _, err := hex.Decode(h[:], []byte(hs)); err != nil {
			continue
		}
		used[h] = t.UTC()
	}
	return used, nil
}
