package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/keys/pgstore"
	"github.com/wspubsub/wspubsub/server"
)

// keysUsage is printed for `wspubsub keys help` and for bad usage.
const keysUsage = `usage: wspubsub keys <command> [flags]

Commands:
  add --domain D [--username U]   create a key for domain D and print it once
  list                            show every key: ID, domain, user, created, last used, status
  revoke KEY_OR_ID                revoke a key for good, by full key or by list ID
  deactivate --domain D           refuse every key of domain D until activated
  activate --domain D             accept the keys of domain D again
  migrate                         create or upgrade the PostgreSQL schema (PostgreSQL only)
  import-legacy [--table T]       import the original system's table T (default apikeys):
                                  keys are hashed, active kept, existing keys left alone;
                                  the table is only read (PostgreSQL only)
  token add --domain D [--public-key FILE]
                                  make domain D private: add a subscriber token verification
                                  key. Without --public-key, a new HS256 secret (32 random
                                  bytes, base64url without padding: use that text itself as
                                  the HMAC key) is printed once, as the last line, after the
                                  kid; --public-key stores a PEM public key (Ed25519: EdDSA,
                                  ECDSA P-256: ES256, RSA: RS256) and prints the kid last
  token list                      show every token key: kid, domain, alg, created, status
                                  (never a secret)
  token revoke KID                revoke a token key: its tokens are refused and the
                                  subscribers they admitted closed (4002) within a second
  help                            show this text

Every command takes:
  --database-url URL  keep keys in PostgreSQL (default $WSPUBSUB_DATABASE_URL); the
                      PG* environment variables fill in what the URL leaves out
  --keys-file PATH    otherwise, the key file (default $WSPUBSUB_KEYS_FILE, else
                      wspubsub-keys.json)
`

// keyStore is what the keys command needs from a store: filestore.Store, or
// pgstore.Store when a database URL is given.
type keyStore interface {
	Add(ctx context.Context, domain, username string) (string, error)
	List(ctx context.Context) ([]keys.Record, error)
	Revoke(ctx context.Context, keyOrID string) error
	SetActive(ctx context.Context, domain string, active bool) (int, error)
	Close() error
}

var (
	_ keyStore = (*filestore.Store)(nil)
	_ keyStore = (*pgstore.Store)(nil)
)

// storeFlags selects the store; every subcommand registers them.
type storeFlags struct {
	keysFile    string
	databaseURL string
}

func (sf *storeFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("WSPUBSUB_KEYS_FILE")
	if def == "" {
		def = "wspubsub-keys.json"
	}
	fs.StringVar(&sf.keysFile, "keys-file", def, "key file, used without --database-url (env WSPUBSUB_KEYS_FILE)")
	fs.StringVar(&sf.databaseURL, "database-url", os.Getenv("WSPUBSUB_DATABASE_URL"),
		"PostgreSQL URL: keep keys there instead of the key file; PG* variables fill in the rest (env WSPUBSUB_DATABASE_URL)")
}

// open returns the store the flags select. A PostgreSQL store must have
// the schema of this build.
func (sf *storeFlags) open(ctx context.Context) (keyStore, error) {
	if sf.databaseURL == "" {
		s, err := filestore.Open(sf.keysFile)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := sf.openPG(ctx, pgstore.Config{})
	if err != nil {
		return nil, err
	}
	if err := s.CheckSchema(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openPG opens the PostgreSQL store, whatever its schema version.
func (sf *storeFlags) openPG(ctx context.Context, cfg pgstore.Config) (*pgstore.Store, error) {
	if sf.databaseURL == "" {
		return nil, errors.New("needs PostgreSQL: give --database-url or set WSPUBSUB_DATABASE_URL")
	}
	return pgstore.Open(ctx, sf.databaseURL, cfg)
}

// servedKeys is the store serve checks publishers' keys against. It is
// not a server.KeyChecker itself: the hub is given checker, the store
// itself, so that the metrics see what the store implements besides Check
// (a wrapper hid the PostgreSQL store's readiness and cache counts).
type servedKeys struct {
	keyStore
	checker server.KeyChecker   // the store itself: file or pg
	tokens  server.TokenKeyring // the store itself too: private domains' token keys
	file    *filestore.Store    // one of file and pg is set
	pg      *pgstore.Store
	where   string // what the log says about the store; never a URL that may hold a password
	hub     atomic.Pointer[server.Server]
	log     *slog.Logger
}

// The PostgreSQL store reports its health and cache to the hub's metrics
// (key_store_up, key_cache_lookups_total); the key file has neither.
var (
	_ server.KeyStoreProber  = (*pgstore.Store)(nil)
	_ server.KeyCacheCounter = (*pgstore.Store)(nil)
)

// openServe opens the store for serve. A PostgreSQL store is migrated
// first if migrate is set, must have this build's schema, and has its
// revocations wired to the hub given to serving, which closes the live
// publishers of the key.
func (sf *storeFlags) openServe(ctx context.Context, migrate bool, log *slog.Logger) (*servedKeys, error) {
	if sf.databaseURL == "" {
		if migrate {
			return nil, errors.New("--migrate needs --database-url")
		}
		s, err := filestore.Open(sf.keysFile)
		if err != nil {
			return nil, err
		}
		sk := &servedKeys{keyStore: s, checker: s, tokens: s, file: s, where: "file " + sf.keysFile, log: log}
		s.OnTokenKeyRevoked(sk.tokenRevoked)
		if err := s.Watch(context.Background(), sk.revoked); err != nil {
			return nil, err
		}
		return sk, nil
	}
	s, err := sf.openPG(ctx, pgstore.Config{Logger: log})
	if err != nil {
		return nil, err
	}
	sk := &servedKeys{keyStore: s, checker: s, tokens: s, pg: s, where: "postgresql", log: log}
	s.OnTokenKeyRevoked(sk.tokenRevoked)
	err = func() error {
		if migrate {
			from, to, err := s.Migrate(ctx)
			if err != nil {
				return err
			}
			log.Info("key database schema", "from_version", from, "version", to)
		}
		if err := s.CheckSchema(ctx); err != nil {
			return err
		}
		return s.Watch(ctx, sk.revoked)
	}()
	if err != nil {
		s.Close()
		return nil, err
	}
	return sk, nil
}

// revoked closes the live publishers of a key that can no longer publish.
func (sk *servedKeys) revoked(h [32]byte) {
	if srv := sk.hub.Load(); srv != nil {
		n := srv.KeyRevoked(h)
		sk.log.Info("API key revoked or deactivated", "key_id", keys.ID(h), "publishers_closed", n)
	}
}

// tokenRevoked closes the subscribers admitted by a token verification key
// that was revoked.
func (sk *servedKeys) tokenRevoked(kid string) {
	if srv := sk.hub.Load(); srv != nil {
		n := srv.TokenKeyRevoked(kid)
		sk.log.Info("token verification key revoked", "kid", kid, "subscribers_closed", n)
	}
}

// serving tells the store which hub to close revoked publishers on.
func (sk *servedKeys) serving(srv *server.Server) { sk.hub.Store(srv) }

// empty reports whether the store holds no keys at all.
func (sk *servedKeys) empty(ctx context.Context) (bool, error) {
	if sk.pg != nil {
		return sk.pg.Empty(ctx)
	}
	return sk.file.Empty(), nil
}

// describeKeyFile says which key file a command reads, as an absolute path,
// and whether it exists: `keys list` run from the wrong directory otherwise
// prints an empty table and nothing else.
func describeKeyFile(path string) string {
	shown := path
	if abs, err := filepath.Abs(path); err == nil {
		shown = abs
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("key file %s does not exist: no keys (--keys-file or WSPUBSUB_KEYS_FILE names another)", printable(shown))
	}
	return "key file " + printable(shown)
}

// runKeys runs `wspubsub keys ARGS...` and returns the exit code: 0 on
// success and for help, 1 when the command failed, 2 for bad usage.
func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wspubsub keys %s: %s\n\n%s", cmd, fmt.Sprintf(format, a...), keysUsage)
		return 2
	}
	fs := flag.NewFlagSet("wspubsub keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported below, with the usage text
	var sf storeFlags
	sf.register(fs)
	var domain, username, table *string
	nargs := 0
	switch cmd {
	case "add":
		domain = fs.String("domain", "", "domain the key may publish to")
		username = fs.String("username", "", "who the key is for")
	case "list":
	case "revoke":
		nargs = 1
	case "activate", "deactivate":
		domain = fs.String("domain", "", "domain whose keys change")
	case "migrate":
	case "import-legacy":
		table = fs.String("table", "apikeys", "the original's table, TABLE or SCHEMA.TABLE")
	case "token":
		return runKeysToken(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, keysUsage)
		return 0
	default:
		return usage("unknown command")
	}
	pos, code, done := parseCommand(fs, rest, nargs, domain, stdout, usage)
	if done {
		return code
	}

	ctx := context.Background()
	if cmd == "migrate" || cmd == "import-legacy" {
		err := keysPG(ctx, &sf, cmd, table, stdout, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "wspubsub keys %s: %v\n", cmd, err)
			return 1
		}
		return 0
	}
	st, err := sf.open(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "wspubsub keys %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "add":
		err = keysAdd(ctx, st, *domain, *username, stdout)
	case "list":
		if sf.databaseURL == "" {
			fmt.Fprintln(stderr, describeKeyFile(sf.keysFile))
		}
		err = keysList(ctx, st, stdout)
	case "revoke":
		err = keysRevoke(ctx, st, pos[0], stdout)
	case "activate", "deactivate":
		err = keysSetActive(ctx, st, *domain, cmd == "activate", stdout)
	}
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cannot close key store: %w", cerr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wspubsub keys %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// parseInterleaved parses flags that may come before or after positional
// arguments (`revoke KEY --keys-file F`) and returns the positional ones.
// Everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if used := len(args) - len(left); used > 0 && args[used-1] == "--" {
			return append(pos, left...), nil
		}
		if len(left) == 0 {
			return pos, nil
		}
		pos = append(pos, left[0])
		args = left[1:]
	}
}

// keysPG runs the commands that exist for PostgreSQL only.
func keysPG(ctx context.Context, sf *storeFlags, cmd string, table *string, stdout, stderr io.Writer) error {
	st, err := sf.openPG(ctx, pgstore.Config{})
	if err != nil {
		return err
	}
	defer st.Close()
	if cmd == "migrate" {
		from, to, err := st.Migrate(ctx)
		if err != nil {
			return err
		}
		if from == to {
			_, err = fmt.Fprintf(stdout, "schema already at version %d\n", to)
		} else {
			_, err = fmt.Fprintf(stdout, "schema migrated from version %d to %d\n", from, to)
		}
		return err
	}
	if err := st.CheckSchema(ctx); err != nil {
		return err
	}
	res, err := st.ImportLegacy(ctx, *table)
	if err != nil {
		return err
	}
	for _, sk := range res.Skipped {
		fmt.Fprintf(stderr, "skipped row id %d of %s: %s\n", sk.ID, printable(*table), sk.Reason)
	}
	_, err = fmt.Fprintf(stdout, "read %d row(s) of %s: imported %d key(s), %d already present, %d skipped\n",
		res.Read, printable(*table), res.Imported, res.Present, len(res.Skipped))
	return err
}

func keysAdd(ctx context.Context, st keyStore, domain, username string, stdout io.Writer) error {
	key, err := st.Add(ctx, domain, username)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "key for domain %s (store it now, it is not shown again):\n%s\n", printable(domain), key)
	return err
}

func keysList(ctx context.Context, st keyStore, stdout io.Writer) error {
	recs, err := st.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDOMAIN\tUSERNAME\tCREATED\tLAST USED\tSTATUS")
	for _, r := range recs {
		status := "active"
		switch {
		case !r.Revoked.IsZero():
			status = "revoked"
		case !r.Active:
			status = "inactive"
		}
		user := "-"
		if r.Username != "" {
			user = printable(r.Username)
		}
		used := "-"
		if !r.LastUsed.IsZero() {
			used = r.LastUsed.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, printable(r.Domain), user,
			r.Created.UTC().Format(time.RFC3339), used, status)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("cannot print keys: %w", err)
	}
	return nil
}

func keysRevoke(ctx context.Context, st keyStore, keyOrID string, stdout io.Writer) error {
	if err := st.Revoke(ctx, keyOrID); err != nil {
		return err
	}
	shown := keyOrID
	if keys.WellFormed(keyOrID) {
		shown = keys.Redact(keyOrID)
	}
	_, err := fmt.Fprintf(stdout, "revoked %s\n", shown)
	return err
}

func keysSetActive(ctx context.Context, st keyStore, domain string, active bool, stdout io.Writer) error {
	n, err := st.SetActive(ctx, domain, active)
	if err != nil {
		return err
	}
	verb := "deactivated"
	if active {
		verb = "activated"
	}
	_, err = fmt.Fprintf(stdout, "%s %d key(s) of domain %s\n", verb, n, printable(domain))
	return err
}

// printable quotes s if it holds anything that would break a table row or a
// terminal, such as tabs, newlines or escape sequences.
func printable(s string) string {
	if s == "" || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// parseCommand parses the flags and arguments of a `keys` (or `keys
// token`) command that takes nargs arguments and, if domain is not nil, a
// required --domain. done means the command ends with code: its help was
// printed (0) or usage reported a mistake (2).
func parseCommand(fs *flag.FlagSet, args []string, nargs int, domain *string, stdout io.Writer, usage func(string, ...any) int) (pos []string, code int, done bool) {
	pos, err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, keysUsage)
		return nil, 0, true
	case err != nil:
		return nil, usage("%v", err), true
	case len(pos) != nargs:
		return nil, usage("want %d argument(s), got %d", nargs, len(pos)), true
	case domain != nil && *domain == "":
		return nil, usage("--domain is required"), true
	}
	return pos, 0, false
}
