package filestore

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wspubsub/wspubsub/keys"
)

// ErrCorrupt means the key file exists but cannot be understood.
var ErrCorrupt = errors.New("filestore: key file is corrupt")

// fileVersion is the only version of the file format this package writes
// and reads.
const fileVersion = 1

// snapshot is an immutable view of the keys; Check reads it without a lock.
type snapshot struct {
	recs   []keys.Record
	byHash map[[32]byte]int // index into recs
	// used[i] is when Check last queued a last-used time for recs[i]
	// (UnixNano); the only mutable part, carried over to the next snapshot.
	used []atomic.Int64
	// tokens are the token verification keys kept in the same file.
	tokens *keys.TokenSet
}

func newSnapshot(recs []keys.Record, toks []keys.TokenKey) *snapshot {
	s := &snapshot{recs: recs, byHash: make(map[[32]byte]int, len(recs)), used: make([]atomic.Int64, len(recs)), tokens: keys.NewTokenSet(toks)}
	for i, r := range recs {
		s.byHash[r.Hash] = i
	}
	return s
}

// stamp identifies one version of the key file on disk. A nil info means
// the file did not exist.
type stamp struct{ info fs.FileInfo }

func (a stamp) same(b stamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil
	}
	// Every write renames a new file into place, so the file identity
	// changes; size and mtime catch the rare reuse of an inode number.
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() &&
		a.info.ModTime().Equal(b.info.ModTime())
}

// Store keeps keys in a JSON file and serves Check from memory. Create
// one with Open. See the package comment for the concurrency contract.
type Store struct {
	path          string
	usedPath      string        // the last-used file beside it, see lastUsedPath
	reloadEvery   time.Duration // how often Check may stat the file; tests shorten it
	lastUsedEvery time.Duration // how often, at most, a key's use is recorded; tests shorten it
	lastUsedBatch time.Duration // how long uses gather before one write of the last-used file

	// Check queues the keys it accepts here, at most once per key per
	// lastUsedEvery, without waiting: when the queue is full the use is
	// dropped. The writer goroutine, started by the first use, gathers them
	// and writes the last-used file off the Check path.
	uses       chan keyUse
	writing    atomic.Bool   // the writer goroutine was started
	done       chan struct{} // closed by Close: the writer flushes and stops
	writerDone chan struct{} // closed by the writer when it stops
	closeOnce  sync.Once

	snap      atomic.Pointer[snapshot]
	lastStat  atomic.Int64 // UnixNano of the last stat on the Check path
	closed    atomic.Bool
	statGuard atomic.Bool // one Check at a time looks at the file

	onRevoked      atomic.Pointer[func([32]byte)] // set by Watch
	onTokenRevoked atomic.Pointer[func(string)]   // set by OnTokenKeyRevoked

	mu      sync.Mutex // serialises writers and file reads; guards the fields below
	stamp   stamp      // version of the file the snapshot came from
	loadErr error      // why the file at stamp could not be loaded, if it could not
}

// Open opens the key file at path. A missing file is an empty store, and
// nothing is created until the first write; a file that cannot be parsed is
// an error wrapping ErrCorrupt.
func Open(path string) (*Store, error) {
	s := &Store{
		path:          path,
		usedPath:      lastUsedPath(path),
		reloadEvery:   time.Second,
		lastUsedEvery: time.Minute,
		lastUsedBatch: time.Second,
		uses:          make(chan keyUse, maxQueuedUses),
		done:          make(chan struct{}),
		writerDone:    make(chan struct{}),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	recs, toks, st, err := s.readFile()
	if err != nil {
		return nil, err
	}
	s.stamp = st
	s.snap.Store(newSnapshot(recs, toks))
	s.lastStat.Store(time.Now().UnixNano())
	return s, nil
}

// Check returns nil if key is well formed, stored, active, not revoked and
// issued for exactly domain, and keys.ErrRefused otherwise (keys.ErrClosed after
// Close). It does not allocate when the key is accepted. ctx is not used:
// the lookup is in memory, but a refusal first looks whether the file
// changed (see the package comment). An accepted key's last-used time is
// queued for the writer at most once a minute, without waiting.
func (s *Store) Check(ctx context.Context, key, domain string) error {
	if !keys.WellFormed(key) {
		return keys.ErrRefused
	}
	if s.closed.Load() {
		return keys.ErrClosed
	}
	now := time.Now().UnixNano()
	s.maybeReload(now)
	h := keys.Hash(key)
	snap := s.snap.Load()
	if i, ok := snap.accepts(&h, domain); ok {
		s.touch(snap, i, now)
		return nil
	}
	// A key the CLI has just added (or a domain it has just activated) is
	// in a file this store may not have read yet: look again before
	// refusing, so that a script may add a key and connect at once. A
	// refusal costs a stat of the file, under the lock that serialises
	// reads of it.
	if s.refreshed(snap) {
		snap = s.snap.Load()
		if i, ok := snap.accepts(&h, domain); ok {
			s.touch(snap, i, now)
			return nil
		}
	}
	return keys.ErrRefused
}

// accepts reports whether the key whose hash is h may publish in domain,
// and its index in snap.
func (snap *snapshot) accepts(h *[32]byte, domain string) (int, bool) {
	i, ok := snap.byHash[*h]
	if !ok {
		return 0, false
	}
	r := &snap.recs[i]
	// The map lookup already matched the hash; comparing again in constant
	// time keeps the final decision free of data-dependent timing.
	match := subtle.ConstantTimeCompare(r.Hash[:], h[:]) == 1
	return i, match && r.Active && r.Revoked.IsZero() && r.Domain == domain
}

// refreshed reloads the key file if it changed since it was read, and
// reports whether the keys in force are no longer those of snap. Unlike
// maybeReload it waits for a writer of this process, which may be adding
// the very key being checked.
func (s *Store) refreshed(snap *snapshot) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	hadErr := s.loadErr
	if err := s.refreshLocked(false); err != nil && hadErr == nil {
		slog.Warn("keys: cannot reload key file, keeping the keys loaded before", "path", s.path, "err", err)
	}
	return s.snap.Load() != snap
}

// maybeReload stats the file at most once per reloadEvery and reloads it if
// another process replaced it. A file that cannot be loaded leaves the
// previous keys in force and is logged once. now is time.Now's UnixNano.
func (s *Store) maybeReload(now int64) {
	last := s.lastStat.Load()
	if now-last < int64(s.reloadEvery) || !s.statGuard.CompareAndSwap(false, true) {
		return
	}
	defer s.statGuard.Store(false)
	s.lastStat.Store(now)
	// A writer holding the lock publishes its own snapshot; do not wait
	// behind its fsync on the Check path, try again next time instead.
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	hadErr := s.loadErr
	if err := s.refreshLocked(false); err != nil && hadErr == nil {
		slog.Warn("keys: cannot reload key file, keeping the keys loaded before", "path", s.path, "err", err)
	}
}

// Reload re-reads the key file now, whether or not it seems to have
// changed. If it cannot be read the previous keys stay in force and the
// error says why.
func (s *Store) Reload() error {
	if s.closed.Load() {
		return keys.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshLocked(true)
}

// refreshLocked reloads the file if force is set or the file changed since
// it was last read. It returns the error of the current file version if that
// cannot be loaded. s.mu must be held.
func (s *Store) refreshLocked(force bool) error {
	info, err := os.Stat(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot check key file %s: %w", s.path, err)
	}
	if !force && s.stamp.same(stamp{info: info}) {
		return s.loadErr
	}
	recs, toks, st, err := s.readFile()
	if err != nil {
		// Remember this version so the Check path does not retry it every
		// second; writers keep refusing until the file changes again.
		if st.info == nil && info != nil {
			st = stamp{info: info}
		}
		s.stamp, s.loadErr = st, err
		return err
	}
	s.stamp, s.loadErr = st, nil
	s.publish(newSnapshot(recs, toks))
	return nil
}

// fileData is the on-disk form of the store. TokenKeys came later: a file
// without them loads as before, with every domain open.
type fileData struct {
	Version   int            `json:"version"`
	Keys      []fileRecord   `json:"keys"`
	TokenKeys []fileTokenKey `json:"token_keys,omitempty"`
}

// fileTokenKey is a token verification key on disk. The HMAC secret is
// kept as is (the hub verifies with it): the file is written mode 0600.
type fileTokenKey struct {
	KID       string     `json:"kid"`
	Domain    string     `json:"domain"`
	Alg       string     `json:"alg"`
	Secret    string     `json:"secret,omitempty"`
	PublicKey string     `json:"public_key,omitempty"`
	Created   time.Time  `json:"created"`
	Revoked   *time.Time `json:"revoked,omitempty"`
}

type fileRecord struct {
	Hash     string     `json:"hash"` // hex SHA-256; never the key
	Domain   string     `json:"domain"`
	Username string     `json:"username,omitempty"`
	Created  time.Time  `json:"created"`
	Active   bool       `json:"active"`
	Revoked  *time.Time `json:"revoked,omitempty"`
}

// readFile reads and validates the key file. The stamp is taken from the
// open file, so it describes exactly the bytes that were read.
func (s *Store) readFile() ([]keys.Record, []keys.TokenKey, stamp, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, stamp{}, nil
	}
	if err != nil {
		return nil, nil, stamp{}, fmt.Errorf("cannot open key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, stamp{}, fmt.Errorf("cannot stat key file %s: %w", s.path, err)
	}
	st := stamp{info: info}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, st, fmt.Errorf("cannot read key file %s: %w", s.path, err)
	}
	recs, toks, err := decode(data)
	if err != nil {
		return nil, nil, st, fmt.Errorf("cannot load keys from %s: %w: %w", s.path, ErrCorrupt, err)
	}
	return recs, toks, st, nil
}

func decode(data []byte) ([]keys.Record, []keys.TokenKey, error) {
	var fd fileData
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fd); err != nil {
		return nil, nil, err
	}
	if dec.More() {
		return nil, nil, errors.New("trailing data after the JSON object")
	}
	if fd.Version != fileVersion {
		return nil, nil, fmt.Errorf("unsupported version %d (want %d)", fd.Version, fileVersion)
	}
	toks, err := decodeTokenKeys(fd.TokenKeys)
	if err != nil {
		return nil, nil, err
	}
	recs := make([]keys.Record, 0, len(fd.Keys))
	seen := make(map[[32]byte]bool, len(fd.Keys))
	for i, fr := range fd.Keys {
		var r keys.Record
		if len(fr.Hash) != 64 {
			return nil, nil, fmt.Errorf("key %d: hash is not 64 hex digits", i)
		}
		if _, err := hex.Decode(r.Hash[:], []byte(fr.Hash)); err != nil {
			return nil, nil, fmt.Errorf("key %d: hash: %w", i, err)
		}
		if seen[r.Hash] {
			return nil, nil, fmt.Errorf("key %d: duplicate hash", i)
		}
		seen[r.Hash] = true
		if !keys.ValidDomain(fr.Domain) {
			return nil, nil, fmt.Errorf("key %d: %w", i, keys.ErrBadDomain)
		}
		if !keys.ValidUsername(fr.Username) {
			return nil, nil, fmt.Errorf("key %d: %w", i, keys.ErrBadUsername)
		}
		r.ID = keys.ID(r.Hash)
		r.Domain, r.Username, r.Created, r.Active = fr.Domain, fr.Username, fr.Created, fr.Active
		if fr.Revoked != nil {
			if fr.Revoked.IsZero() {
				return nil, nil, fmt.Errorf("key %d: revoked time is zero", i)
			}
			r.Revoked = *fr.Revoked
		}
		recs = append(recs, r)
	}
	return recs, toks, nil
}

func encode(recs []keys.Record, toks []keys.TokenKey) ([]byte, error) {
	fd := fileData{Version: fileVersion, Keys: make([]fileRecord, 0, len(recs)), TokenKeys: encodeTokenKeys(toks)}
	for _, r := range recs {
		fr := fileRecord{
			Hash:     hex.EncodeToString(r.Hash[:]),
			Domain:   r.Domain,
			Username: r.Username,
			Created:  r.Created,
			Active:   r.Active,
		}
		if !r.Revoked.IsZero() {
			t := r.Revoked
			fr.Revoked = &t
		}
		fd.Keys = append(fd.Keys, fr)
	}
	data, err := json.MarshalIndent(fd, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// update applies fn to a copy of the records and, if fn reports a change,
// writes the file and publishes the new records. The file is re-read first
// if another process changed it, and a file that cannot be loaded is never
// overwritten.
func (s *Store) update(ctx context.Context, fn func(recs []keys.Record) ([]keys.Record, bool, error)) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshLocked(false); err != nil {
		return err
	}
	cur := s.snap.Load()
	recs, changed, err := fn(slices.Clone(cur.recs))
	if err != nil || !changed {
		return err
	}
	return s.writeLocked(recs, cur.tokens.All())
}

// writeLocked writes recs and toks to the file and publishes them. s.mu
// is held.
func (s *Store) writeLocked(recs []keys.Record, toks []keys.TokenKey) error {
	data, err := encode(recs, toks)
	if err != nil {
		return fmt.Errorf("cannot encode keys: %w", err)
	}
	info, err := writeFileAtomic(s.path, data)
	if err != nil {
		return err
	}
	s.stamp, s.loadErr = stamp{info: info}, nil
	s.publish(newSnapshot(recs, toks))
	return nil
}

// writeFileAtomic replaces path with data: it writes a temporary file in the
// same directory with mode 0600, syncs it, renames it over path and syncs
// the directory. It returns the file's info as written.
func writeFileAtomic(path string, data []byte) (info fs.FileInfo, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cannot write key file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return nil, fmt.Errorf("cannot set mode of %s: %w", tmp, err)
	}
	if _, err = f.Write(data); err != nil {
		return nil, fmt.Errorf("cannot write key file: %w", err)
	}
	if err = f.Sync(); err != nil {
		return nil, fmt.Errorf("cannot sync key file: %w", err)
	}
	if info, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("cannot stat key file: %w", err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("cannot write key file: %w", err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("cannot replace key file: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		derr = d.Sync()
		d.Close()
		if derr != nil {
			return info, fmt.Errorf("cannot sync directory of key file %s: %w", path, derr)
		}
	}
	return info, nil
}

// Add generates a key for domain, stores its hash, writes the file and
// returns the key. This is the only time the key is available: the store
// keeps only its hash.
func (s *Store) Add(ctx context.Context, domain, username string) (string, error) {
	if !keys.ValidDomain(domain) {
		return "", fmt.Errorf("cannot add key for domain %q: %w", domain, keys.ErrBadDomain)
	}
	if !keys.ValidUsername(username) {
		return "", fmt.Errorf("cannot add key for domain %q: %w", domain, keys.ErrBadUsername)
	}
	var key string
	err := s.update(ctx, func(recs []keys.Record) ([]keys.Record, bool, error) {
		for {
			k, err := keys.Generate()
			if err != nil {
				return nil, false, err
			}
			h := keys.Hash(k)
			if slices.ContainsFunc(recs, func(r keys.Record) bool { return r.Hash == h }) {
				continue // astronomically unlikely, but never store a duplicate
			}
			key = k
			return append(recs, keys.Record{
				ID:       keys.ID(h),
				Hash:     h,
				Domain:   domain,
				Username: username,
				Created:  time.Now().UTC().Round(0),
				Active:   true,
			}), true, nil
		}
	})
	if err != nil {
		return "", fmt.Errorf("cannot add key for domain %q: %w", domain, err)
	}
	return key, nil
}

// usable says why the store cannot take a call now: it is closed
// (keys.ErrClosed), or ctx ended.
func (s *Store) usable(ctx context.Context) error {
	if s.closed.Load() {
		return keys.ErrClosed
	}
	return ctx.Err()
}

// List returns every stored key, revoked ones included, sorted by domain and
// then by creation time.
func (s *Store) List(ctx context.Context) ([]keys.Record, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	err := s.refreshLocked(false)
	recs := slices.Clone(s.snap.Load().recs)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cannot list keys: %w", err)
	}
	// Last-used times are a hint: a last-used file that cannot be read
	// leaves them zero rather than failing the list.
	if used, err := readLastUsed(s.usedPath); err == nil {
		for i := range recs {
			if at, ok := used[recs[i].Hash]; ok {
				recs[i].LastUsed = at
			}
		}
	} else {
		slog.Debug("keys: cannot read last-used times", "path", s.usedPath, "err", err)
	}
	slices.SortFunc(recs, func(a, b keys.Record) int {
		if c := strings.Compare(a.Domain, b.Domain); c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return recs, nil
}

// Revoke revokes a key for good. keyOrID is either the full key or its
// keys.Record.ID; keys.ErrNotFound if nothing matches. Revoking a revoked key is not
// an error and keeps the first revocation time.
func (s *Store) Revoke(ctx context.Context, keyOrID string) error {
	match, what := matcher(keyOrID)
	err := s.update(ctx, func(recs []keys.Record) ([]keys.Record, bool, error) {
		found := -1
		for i := range recs {
			if match(&recs[i]) {
				if found >= 0 {
					return nil, false, errors.New("ID matches more than one key, give the full key")
				}
				found = i
			}
		}
		if found < 0 {
			return nil, false, keys.ErrNotFound
		}
		if !recs[found].Revoked.IsZero() {
			return recs, false, nil
		}
		recs[found].Revoked = time.Now().UTC().Round(0)
		return recs, true, nil
	})
	if err != nil {
		return fmt.Errorf("cannot revoke %s: %w", what, err)
	}
	return nil
}

// matcher returns a predicate selecting the record for keyOrID and a form
// of keyOrID that is safe to put in an error message.
func matcher(keyOrID string) (func(*keys.Record) bool, string) {
	if keys.WellFormed(keyOrID) {
		h := keys.Hash(keyOrID)
		return func(r *keys.Record) bool { return subtle.ConstantTimeCompare(r.Hash[:], h[:]) == 1 }, "key " + keys.Redact(keyOrID)
	}
	id, ok := keys.ParseID(keyOrID)
	if !ok {
		return func(*keys.Record) bool { return false }, "key " + keys.Redact(keyOrID)
	}
	return func(r *keys.Record) bool { return r.ID == id }, "key ID " + id
}

// SetActive activates or deactivates every key of domain and returns how
// many keys the domain has (revoked ones included; they stay refused).
// keys.ErrNotFound if the domain has no keys.
func (s *Store) SetActive(ctx context.Context, domain string, active bool) (int, error) {
	n := 0
	err := s.update(ctx, func(recs []keys.Record) ([]keys.Record, bool, error) {
		changed := false
		for i := range recs {
			if recs[i].Domain != domain {
				continue
			}
			n++
			if recs[i].Active != active {
				recs[i].Active = active
				changed = true
			}
		}
		if n == 0 {
			return nil, false, keys.ErrNotFound
		}
		return recs, changed, nil
	})
	if err != nil {
		verb := "deactivate"
		if active {
			verb = "activate"
		}
		return 0, fmt.Errorf("cannot %s keys of domain %q: %w", verb, domain, err)
	}
	return n, nil
}

// Empty reports whether the store holds no keys at all, revoked ones
// included. A server can use it to warn that every publisher will be
// refused.
func (s *Store) Empty() bool {
	if !s.closed.Load() {
		s.maybeReload(time.Now().UnixNano())
	}
	return len(s.snap.Load().recs) == 0
}

// publish makes next the snapshot Check reads, and tells Watch's callback
// of every key that could publish before and cannot now. s.mu is held.
func (s *Store) publish(next *snapshot) {
	prev := s.snap.Swap(next)
	if prev == nil {
		return
	}
	// Keep "at most once a minute" across reloads. A Check still reading
	// prev may queue one use more; the writer keeps the latest time.
	for i := range next.recs {
		if j, ok := prev.byHash[next.recs[i].Hash]; ok {
			next.used[i].Store(prev.used[j].Load())
		}
	}
	if fn := s.onTokenRevoked.Load(); fn != nil {
		keys.RevokedSince(prev.tokens, next.tokens, *fn)
	}
	fn := s.onRevoked.Load()
	if fn == nil {
		return
	}
	for _, r := range prev.recs {
		if !r.Usable() {
			continue
		}
		if i, ok := next.byHash[r.Hash]; !ok || !next.recs[i].Usable() {
			(*fn)(r.Hash)
		}
	}
}

// Watch makes revocations and deactivations take effect at once, even those
// made by another process (the keys CLI): it looks at the key file every
// second and calls onRevoked with the hash of every key that could publish
// and no longer can, under the store's lock, so onRevoked must not call the
// store. Watch may be called once; it stops when ctx ends or at Close.
func (s *Store) Watch(ctx context.Context, onRevoked func(hash [32]byte)) error {
	if !s.onRevoked.CompareAndSwap(nil, &onRevoked) {
		return errors.New("filestore: Watch called twice")
	}
	go func() {
		t := time.NewTicker(s.reloadEvery)
		defer t.Stop()
		for !s.closed.Load() {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.mu.Lock()
			hadErr := s.loadErr
			if err := s.refreshLocked(false); err != nil && hadErr == nil {
				slog.Warn("keys: cannot reload key file, keeping the keys loaded before", "path", s.path, "err", err)
			}
			s.mu.Unlock()
		}
	}()
	return nil
}

// Close marks the store closed; later calls fail with keys.ErrClosed. It writes
// the last-used times still queued, and waits for that write. The store
// holds no open files between calls, so Close always returns nil, and
// closing twice is harmless.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.closeOnce.Do(func() {
		close(s.done)
		if s.writing.Load() {
			<-s.writerDone
		}
	})
	return nil
}
