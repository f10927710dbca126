package pgstore

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wspubsub/wspubsub/keys/keycache"

	"github.com/wspubsub/wspubsub/keys"
)

// Config tunes a Store; the zero value of each field means the default
// it documents.
type Config struct {
	// CacheSize is the most keys Check remembers. Default 10000; negative
	// turns the cache off, so every Check queries the database.
	CacheSize int
	// CacheTTL is how long Check trusts a key it accepted without asking
	// the database again. Changes notified by the database (see Watch)
	// take effect at once regardless. Default 1 minute.
	CacheTTL time.Duration
	// NegativeTTL is how long Check trusts a refusal. Default 5 seconds.
	NegativeTTL time.Duration
	// MaxStale is how old a cached answer may be and still be used while
	// the database cannot be reached. Default 10 minutes; negative: never.
	MaxStale time.Duration
	// QueryTimeout bounds every query, connecting included. Default 3s.
	QueryTimeout time.Duration
	// LastUsedEvery is how often, at most, a key's last-used time is
	// written. The writes are batched off the Check path. Default 1 minute.
	LastUsedEvery time.Duration
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 3 * time.Second
	}
	if c.LastUsedEvery <= 0 {
		c.LastUsedEvery = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// pgKey is what the cache holds for a stored key.
type pgKey struct {
	hash    [32]byte
	domain  string
	usable  bool         // active and not revoked
	touched atomic.Int64 // UnixNano when Check last queued a last-used write
}

// Store keeps keys in PostgreSQL and serves Check from a cache. Create one
// with Open. See the package comment for the concurrency contract.
type Store struct {
	cfg   Config
	log   *slog.Logger
	pool  *pgxpool.Pool
	cache *keycache.Cache[*pgKey]
	fetch keycache.Fetch[*pgKey] // s.fetchKey, bound once so Check does not allocate

	down      atomic.Bool  // the last query failed
	downUntil atomic.Int64 // UnixNano before which misses fail without a query

	touchMu sync.Mutex
	pending map[[32]byte]struct{} // keys whose last-used time is to be written

	tokens         atomic.Pointer[keys.TokenSet] // loaded by Watch, reloaded on each NOTIFY
	onTokenRevoked atomic.Pointer[func(string)]  // set by OnTokenKeyRevoked

	watching atomic.Bool
	closed   atomic.Bool
	ctx      context.Context // cancelled by Close; stops the goroutines
	stop     context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
}

// maxPendingTouches bounds the last-used writes waiting for the next batch;
// beyond it they are dropped until the batch is written.
const maxPendingTouches = 1 << 16

// retryAfterFailure is how long Check answers misses with keys.ErrUnavailable,
// without a query, after a query failed.
const retryAfterFailure = time.Second

// Open connects to the database at url, a postgres:// URL or a
// "host=... dbname=..." string; the standard PG* environment variables
// supply whatever it leaves out. It checks that the database answers but
// not the schema: see Migrate and CheckSchema. The connection pool takes
// its settings from the URL (pool_max_conns and the like).
func Open(ctx context.Context, url string, cfg Config) (*Store, error) {
	cfg.setDefaults()
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("cannot parse the database URL: %w", err)
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "wspubsub"
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the key database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.QueryTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot connect to the key database: %w", err)
	}
	s := &Store{
		cfg:  cfg,
		log:  cfg.Logger,
		pool: pool,
		cache: keycache.New[*pgKey](keycache.Config{
			Size:        cfg.CacheSize,
			TTL:         cfg.CacheTTL,
			NegativeTTL: cfg.NegativeTTL,
			MaxStale:    cfg.MaxStale,
		}),
		pending: make(map[[32]byte]struct{}),
	}
	s.fetch = s.fetchKey
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Go(s.writeLastUsed)
	return s, nil
}

// queryCtx bounds one query by QueryTimeout.
func (s *Store) queryCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.QueryTimeout)
}

// Check returns nil if key is well formed, stored, active, not revoked and
// issued for exactly domain, and keys.ErrRefused if not. It answers from the
// cache when it can; otherwise it queries the database, sharing the query
// with concurrent Checks of the same key. If the database cannot be reached
// it uses a cached answer up to MaxStale old, and otherwise returns an
// error wrapping keys.ErrUnavailable (keys.ErrClosed after Close). A cached accepted
// key costs no allocation and no query.
func (s *Store) Check(ctx context.Context, key, domain string) error {
	if !keys.WellFormed(key) {
		return keys.ErrRefused
	}
	if s.closed.Load() {
		return keys.ErrClosed
	}
	h := keys.Hash(key)
	k, ok, err := s.cache.Load(ctx, h, s.fetch)
	if err != nil {
		return err
	}
	// The cache is indexed by the hash; comparing it again in constant
	// time keeps the final decision free of data-dependent timing.
	if !ok || k == nil || subtle.ConstantTimeCompare(k.hash[:], h[:]) != 1 || !k.usable || k.domain != domain {
		return keys.ErrRefused
	}
	s.touch(k)
	return nil
}

// fetchKey reads one key's row for the cache: positive if the key may
// publish, negative (with a nil or unusable *pgKey) if not.
func (s *Store) fetchKey(ctx context.Context, h [32]byte) (*pgKey, bool, error) {
	if until := s.downUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		return nil, false, fmt.Errorf("%w: it failed less than %v ago", keys.ErrUnavailable, retryAfterFailure)
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	k := &pgKey{hash: h}
	err := s.pool.QueryRow(ctx,
		`select domain, active and revoked_at is null from `+pgKeysTable+` where key_hash = $1`,
		h[:]).Scan(&k.domain, &k.usable)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		s.reachable()
		return nil, false, nil
	case err != nil:
		s.unreachable(err)
		return nil, false, fmt.Errorf("%w: %w", keys.ErrUnavailable, err)
	}
	s.reachable()
	return k, k.usable, nil
}

// unreachable notes a failed query: misses fail fast for a moment, and the
// first failure of an outage is logged.
func (s *Store) unreachable(err error) {
	s.downUntil.Store(time.Now().Add(retryAfterFailure).UnixNano())
	s.markDown(err)
}

// markDown makes Ready fail until a query or a LISTEN succeeds again, and
// logs the first failure of an outage.
func (s *Store) markDown(err error) {
	if !s.down.Swap(true) {
		s.log.Warn("keys: cannot query the key database; cached keys keep working, unknown keys get 503 until it is back",
			"max_stale", s.cfg.MaxStale, "err", err)
	}
}

func (s *Store) reachable() {
	if s.down.Load() && s.down.Swap(false) {
		s.downUntil.Store(0)
		s.log.Info("keys: the key database answers again")
	}
}

// touch queues a last-used write for k if none was queued in the last
// LastUsedEvery. It takes a lock at most once per key per interval.
func (s *Store) touch(k *pgKey) {
	now := time.Now().UnixNano()
	last := k.touched.Load()
	if now-last < int64(s.cfg.LastUsedEvery) || !k.touched.CompareAndSwap(last, now) {
		return
	}
	s.touchMu.Lock()
	if len(s.pending) < maxPendingTouches {
		s.pending[k.hash] = struct{}{}
	}
	s.touchMu.Unlock()
}

// writeLastUsed writes the queued last-used times in one statement every
// quarter of LastUsedEvery, and once more when the store closes. A batch
// that cannot be written is dropped: the time is a hint, not a record.
func (s *Store) writeLastUsed() {
	tick := time.NewTicker(max(s.cfg.LastUsedEvery/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-s.ctx.Done():
			s.flushLastUsed(context.Background())
			return
		}
		s.flushLastUsed(s.ctx)
	}
}

func (s *Store) flushLastUsed(ctx context.Context) {
	s.touchMu.Lock()
	if len(s.pending) == 0 {
		s.touchMu.Unlock()
		return
	}
	batch := make([][]byte, 0, len(s.pending))
	for h := range s.pending {
		batch = append(batch, h[:])
	}
	clear(s.pending)
	s.touchMu.Unlock()
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	// The condition keeps the at-most-once-per-interval promise even when
	// the cache is off or several hubs share the database.
	_, err := s.pool.Exec(ctx, `update `+pgKeysTable+` set last_used_at = now()
		where key_hash = any($1) and (last_used_at is null or last_used_at < now() - $2::interval)`,
		batch, s.cfg.LastUsedEvery)
	if err != nil {
		s.log.Debug("keys: cannot write last-used times", "keys", len(batch), "err", err)
	}
}

// Watch listens for changes to the keys, so that they take effect at once:
// each change drops the key from the cache, and onRevoked receives the hash
// of every key that can no longer publish where it could (revoked,
// deactivated, deleted, moved to another domain). It returns once the
// LISTEN is in place, or an error if it cannot be set up within ctx. From
// then on a goroutine holds a dedicated connection until Close; if that
// connection drops, every cached answer becomes untrusted (each key is
// queried again on its next use, and served stale only while the database
// cannot answer), and the goroutine reconnects with backoff. After each
// reconnection the cached keys are checked again, and onRevoked receives
// those that changed in the meantime. Watch may be called once; onRevoked
// is called by Watch itself and then by the watching goroutine, one call at
// a time, and must not block for long.
func (s *Store) Watch(ctx context.Context, onRevoked func(hash [32]byte)) error {
	if s.closed.Load() {
		return keys.ErrClosed
	}
	if !s.watching.CompareAndSwap(false, true) {
		return errors.New("pgstore: Watch called twice")
	}
	conn, err := s.listen(ctx)
	if err != nil {
		s.watching.Store(false)
		return fmt.Errorf("cannot listen for key changes: %w", err)
	}
	s.cache.ExpireAll() // Checks before Watch may have missed changes
	s.recheck(onRevoked)
	if err := s.reloadTokens(ctx); err != nil {
		conn.Close(context.Background())
		s.watching.Store(false)
		return err
	}
	s.wg.Go(func() { s.watch(conn, onRevoked) })
	return nil
}

// listen opens a connection of its own, outside the pool, and LISTENs.
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "listen "+pgChannel+"; listen "+pgTokenChannel); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// heartbeat is how long the watcher waits for a notification before it
// pings its connection, to notice a connection that died silently.
const heartbeat = 30 * time.Second

// watch receives notifications on conn until Close, reconnecting when the
// connection fails.
func (s *Store) watch(conn *pgx.Conn, onRevoked func(hash [32]byte)) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		err := s.receive(conn, onRevoked)
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(cctx)
		cancel()
		if s.ctx.Err() != nil {
			return
		}
		s.cache.ExpireAll()
		s.log.Warn("keys: lost the connection that listens for key changes; cached keys will be checked again, reconnecting", "err", err)
		for failures := 0; ; failures++ {
			// Full jitter keeps many hubs from reconnecting in step.
			select {
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			case <-s.ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			if conn, err = s.listen(s.ctx); err == nil {
				s.reachable()
				break
			}
			if s.ctx.Err() != nil {
				return
			}
			// While every key is cached no query fails, so the watcher is
			// what notices an outage (and Ready reports it).
			s.markDown(err)
			if failures%10 == 0 {
				s.log.Warn("keys: cannot listen for key changes yet, retrying", "retry_in", backoff, "err", err)
			}
		}
		backoff = minBackoff
		s.cache.ExpireAll() // notifications may have been missed before the LISTEN
		// A revocation missed while not listening is only found by the
		// recheck: retry it until it goes through.
		for wait := minBackoff; !s.recheck(onRevoked) || s.reloadTokens(s.ctx) != nil; wait = min(2*wait, maxBackoff) {
			select {
			case <-time.After(wait):
			case <-s.ctx.Done():
				return
			}
		}
		s.log.Info("keys: listening for key changes again")
	}
}

// receive handles notifications until the connection fails or Close.
func (s *Store) receive(conn *pgx.Conn, onRevoked func(hash [32]byte)) error {
	for {
		wctx, cancel := context.WithTimeout(s.ctx, heartbeat)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if s.ctx.Err() != nil {
			return s.ctx.Err()
		}
		if err != nil {
			if !pgconn.Timeout(err) {
				return err
			}
			pctx, cancel := s.queryCtx(s.ctx)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
			continue
		}
		if n.Channel == pgTokenChannel {
			// Token keys are few: reload them all. If that fails, the
			// connection is treated as lost and the reload retried.
			if err := s.reloadTokens(s.ctx); err != nil {
				return err
			}
			continue
		}
		s.notified(n.Payload, onRevoked)
	}
}

// notified handles one notification: "<hex hash> changed|revoked", or
// "* revoked" when the table was truncated.
func (s *Store) notified(payload string, onRevoked func(hash [32]byte)) {
	hexHash, verdict, _ := strings.Cut(payload, " ")
	var h [32]byte
	if n, err := hex.Decode(h[:], []byte(hexHash)); err != nil || n != len(h) {
		if hexHash == "*" {
			s.log.Warn("keys: the key table was truncated, rechecking every cached key")
		} else {
			s.log.Warn("keys: unexpected key change notification, rechecking every cached key", "payload_len", len(payload))
		}
		s.cache.ExpireAll()
		s.recheck(onRevoked)
		return
	}
	if verdict != "revoked" {
		// Added or activated: ask the database again, but keep the
		// answer we had for a database outage (a key just added and
		// used must not be refused because the notice came after its
		// first use).
		s.cache.Expire(h)
		return
	}
	s.cache.Invalidate(h) // never served again, not even stale
	s.log.Info("keys: key revoked or deactivated", "key_id", keys.ID(h))
	onRevoked(h)
}

// recheck asks the database which cached accepted keys are still usable
// for their domain, and drops and reports the others. It reports false if
// the database could not answer.
func (s *Store) recheck(onRevoked func(hash [32]byte)) bool {
	hashes, vals := s.cache.Positive()
	if len(hashes) == 0 {
		return true
	}
	args := make([][]byte, len(hashes))
	for i := range hashes {
		args[i] = hashes[i][:]
	}
	ctx, cancel := s.queryCtx(s.ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `select key_hash, domain from `+pgKeysTable+`
		where key_hash = any($1) and active and revoked_at is null`, args)
	if err != nil {
		s.log.Warn("keys: cannot recheck cached keys yet", "err", err)
		return false
	}
	good := make(map[[32]byte]string, len(hashes))
	var hb []byte
	var domain string
	_, err = pgx.ForEachRow(rows, []any{&hb, &domain}, func() error {
		good[[32]byte(hb)] = domain
		return nil
	})
	if err != nil {
		s.log.Warn("keys: cannot recheck cached keys yet", "err", err)
		return false
	}
	for i, h := range hashes {
		if d, ok := good[h]; !ok || d != vals[i].domain {
			s.cache.Invalidate(h)
			s.log.Info("keys: key revoked or deactivated while not listening", "key_id", keys.ID(h))
			onRevoked(h)
		}
	}
	return true
}

// Add generates a key for domain, stores its hash and returns the key. This
// is the only time the key is available: the store keeps only its hash.
func (s *Store) Add(ctx context.Context, domain, username string) (string, error) {
	if !keys.ValidDomain(domain) {
		return "", fmt.Errorf("cannot add key for domain %q: %w", domain, keys.ErrBadDomain)
	}
	if !keys.ValidUsername(username) {
		return "", fmt.Errorf("cannot add key for domain %q: %w", domain, keys.ErrBadUsername)
	}
	if s.closed.Load() {
		return "", keys.ErrClosed
	}
	for {
		key, err := keys.Generate()
		if err != nil {
			return "", err
		}
		h := keys.Hash(key)
		qctx, cancel := s.queryCtx(ctx)
		_, err = s.pool.Exec(qctx, `insert into `+pgKeysTable+` (key_hash, domain, username) values ($1, $2, $3)`,
			h[:], domain, username)
		cancel()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			continue // astronomically unlikely, but never store a duplicate
		}
		if err != nil {
			return "", fmt.Errorf("cannot add key for domain %q: %w", domain, err)
		}
		return key, nil
	}
}

// List returns every stored key, revoked ones included, sorted by domain and
// then by creation time.
func (s *Store) List(ctx context.Context) ([]keys.Record, error) {
	if s.closed.Load() {
		return nil, keys.ErrClosed
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	rows, err := s.pool.Query(ctx, `select key_hash, domain, username, created_at, active, revoked_at, last_used_at
		from `+pgKeysTable+` order by domain, created_at, key_hash`)
	if err != nil {
		return nil, fmt.Errorf("cannot list keys: %w", err)
	}
	var recs []keys.Record
	var (
		hb                []byte
		r                 keys.Record
		revoked, lastUsed *time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&hb, &r.Domain, &r.Username, &r.Created, &r.Active, &revoked, &lastUsed}, func() error {
		if len(hb) != len(r.Hash) {
			return errors.New("a stored hash is not 32 bytes")
		}
		rec := r
		rec.Hash = [32]byte(hb)
		rec.ID = keys.ID(rec.Hash)
		rec.Created = rec.Created.UTC()
		if revoked != nil {
			rec.Revoked = revoked.UTC()
		}
		if lastUsed != nil {
			rec.LastUsed = lastUsed.UTC()
		}
		recs = append(recs, rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list keys: %w", err)
	}
	return recs, nil
}

// Revoke revokes a key for good. keyOrID is either the full key or its
// keys.Record.ID; keys.ErrNotFound if nothing matches. Revoking a revoked key is not
// an error and keeps the first revocation time.
func (s *Store) Revoke(ctx context.Context, keyOrID string) error {
	if s.closed.Load() {
		return keys.ErrClosed
	}
	lo, hi, what, ok := hashRange(keyOrID)
	if !ok {
		return fmt.Errorf("cannot revoke %s: %w", what, keys.ErrNotFound)
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select key_hash from `+pgKeysTable+`
			where key_hash between $1 and $2 limit 2 for update`, lo[:], hi[:])
		if err != nil {
			return err
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		switch {
		case err != nil:
			return err
		case len(found) == 0:
			return keys.ErrNotFound
		case len(found) > 1:
			return errors.New("ID matches more than one key, give the full key")
		}
		_, err = tx.Exec(ctx, `update `+pgKeysTable+` set revoked_at = now()
			where key_hash = $1 and revoked_at is null`, found[0])
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot revoke %s: %w", what, err)
	}
	return nil
}

// hashRange returns the range of hashes keyOrID selects (one hash for a
// key, every hash starting with the ID's 6 bytes for an ID), a form of
// keyOrID safe to put in an error message, and false if it is neither.
func hashRange(keyOrID string) (lo, hi [32]byte, what string, ok bool) {
	if keys.WellFormed(keyOrID) {
		h := keys.Hash(keyOrID)
		return h, h, "key " + keys.Redact(keyOrID), true
	}
	id := strings.ToLower(keyOrID)
	if len(id) != 12 {
		return lo, hi, "key " + keys.Redact(keyOrID), false
	}
	if _, err := hex.Decode(lo[:6], []byte(id)); err != nil {
		return lo, hi, "key " + keys.Redact(keyOrID), false
	}
	hi = lo
	for i := 6; i < len(hi); i++ {
		hi[i] = 0xff
	}
	return lo, hi, "key ID " + id, true
}

// SetActive activates or deactivates every key of domain and returns how
// many keys the domain has (revoked ones included; they stay refused).
// keys.ErrNotFound if the domain has no keys.
func (s *Store) SetActive(ctx context.Context, domain string, active bool) (int, error) {
	if s.closed.Load() {
		return 0, keys.ErrClosed
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `select count(*) from `+pgKeysTable+` where domain = $1`, domain).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return keys.ErrNotFound
		}
		_, err := tx.Exec(ctx, `update `+pgKeysTable+` set active = $2 where domain = $1 and active <> $2`, domain, active)
		return err
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
// included.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	if s.closed.Load() {
		return false, keys.ErrClosed
	}
	ctx, cancel := s.queryCtx(ctx)
	defer cancel()
	var empty bool
	if err := s.pool.QueryRow(ctx, `select not exists (select from `+pgKeysTable+`)`).Scan(&empty); err != nil {
		return false, fmt.Errorf("cannot count keys: %w", err)
	}
	return empty, nil
}

// CacheStats returns the running totals of Check's cache.
func (s *Store) CacheStats() keycache.Stats { return s.cache.Stats() }

// CacheCounts is how many lookups the cache answered (hits, stale answers
// during an outage included) and how many went to the database (misses).
func (s *Store) CacheCounts() (hits, misses int64) {
	st := s.cache.Stats()
	return st.Hits + st.Stale, st.Fetches
}

// Ready returns keys.ErrUnavailable while the database cannot be reached: from
// a failed query, or a failed attempt of Watch to listen again, until a
// query or a LISTEN succeeds. Cached keys still work meanwhile, unknown
// keys get 503.
func (s *Store) Ready() error {
	if s.down.Load() {
		return keys.ErrUnavailable
	}
	return nil
}

// Close stops watching, writes the queued last-used times and closes the
// connections; later calls fail with keys.ErrClosed. Closing twice is harmless.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		s.stop()
		s.wg.Wait()
		s.pool.Close()
	})
	return nil
}

// Compile-time checks that both stores serve the same calls.
var (
	_ io.Closer = (*Store)(nil)
	_ interface {
		Check(ctx context.Context, key, domain string) error
		Add(ctx context.Context, domain, username string) (string, error)
		List(ctx context.Context) ([]keys.Record, error)
		Revoke(ctx context.Context, keyOrID string) error
		SetActive(ctx context.Context, domain string, active bool) (int, error)
	} = (*Store)(nil)
)
