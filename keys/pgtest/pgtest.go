// Package pgtest gives tests a real PostgreSQL: a database of their own on
// the shared test server (Database), or a throwaway server they can stop and
// start (StartCluster).
//
// The shared server is reached through WSPUBSUB_TEST_DATABASE_URL (default
// DefaultURL), as a role allowed to create databases. Each call of Database
// creates a database named wspubsub_test_<random> and drops it when the test
// ends. Setting the variable to "skip" skips every test that needs
// PostgreSQL, those that run a throwaway server included; any other failure
// to reach the server fails them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EnvURL names the variable that points the tests at a PostgreSQL server.
const EnvURL = "WSPUBSUB_TEST_DATABASE_URL"

// DefaultURL is the server the tests use when EnvURL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL returns the URL of the shared test server, skipping the test if
// EnvURL is "skip".
func AdminURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	switch u {
	case "":
		return DefaultURL
	case "skip":
		t.Skipf("%s=skip: not testing against PostgreSQL", EnvURL)
	}
	return u
}

// Database creates an empty database on the shared test server, drops it
// (closing any connection left to it) when the test ends, and returns its
// URL.
func Database(t testing.TB) string {
	t.Helper()
	admin := AdminURL(t)
	name := "wspubsub_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("cannot reach the test PostgreSQL (set %s to a server where this role may create databases, or to \"skip\"): %v", EnvURL, err)
	}
	defer conn.Close(context.Background())
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "create database "+ident); err != nil {
		t.Fatalf("cannot create test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("cannot drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "drop database if exists "+ident+" with (force)"); err != nil {
			t.Errorf("cannot drop test database %s: %v", name, err)
		}
	})
	return WithDatabase(t, admin, name)
}

// WithDatabase returns connString with its database changed to name. It
// understands both URLs and "key=value" strings.
func WithDatabase(t testing.TB, connString, name string) string {
	t.Helper()
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			t.Fatalf("bad %s: %v", EnvURL, err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String()
	}
	return connString + " dbname=" + name
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Exec runs sql on the database at connString and fails the test on error.
func Exec(t testing.TB, connString, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%.60q: %v", sql, err)
	}
}

// OriginalDDL is the original system's key table, exactly as it was
// deployed, with its one sample row.
var OriginalDDL = []string{
	`create sequence apikeys_id_seq`,
	`create table "apikeys" (
    "id" integer not null default nextval('apikeys_id_seq'::regclass),
    "domain" varchar(64) not null,
    "username" varchar(254) not null,
    "apikey" varchar(36) not null,
    "insert_ts" timestamp not null default now(),
    "active" boolean not null default false,
    primary key ("id")
)`,
	// This one failed for the original too: the primary key's index is
	// already named apikeys_pkey.
	`create unique index "apikeys_pkey" on "apikeys" ("id")`,
	`create unique index "unique_id" on "apikeys" ("id")`,
	`create unique index "unique_domain" on "apikeys" ("domain")`,
	`create unique index "unique_apikey" on "apikeys" ("apikey")`,
	`insert into apikeys (domain, username, apikey) values('test', '[email protected]', 'f47ac10b-58cc-4372-a567-0e02b2c3d479')`,
}

// OriginalKey is the key of OriginalDDL's sample row, for domain "test".
// The row is inactive: the column's default is false.
const OriginalKey = "f47ac10b-58cc-4372-a567-0e02b2c3d479"

// CreateOriginalTable runs OriginalDDL on the database at connString,
// statement by statement, tolerating only the error the original got: the
// index name apikeys_pkey is taken (42P07).
func CreateOriginalTable(t testing.TB, connString string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, stmt := range OriginalDDL {
		_, err := conn.Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P07" && strings.Contains(stmt, `"apikeys_pkey"`) {
			continue
		}
		if err != nil {
			t.Fatalf("%.50q: %v", stmt, err)
		}
	}
}

// Cluster is a throwaway PostgreSQL server of the test's own, made with
// initdb and run with pg_ctl, so that a test can stop and start it.
type Cluster struct {
	t     testing.TB
	bin   string // directory holding initdb and pg_ctl
	dir   string // holds data/, the log and the socket
	port  int
	runas []string // prefix that runs a command as the postgres user, if we are root
	up    bool
}

// binDirs are where PostgreSQL's server programs are looked for, newest
// version first, before $PATH.
func binDirs() []string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	return append(dirs, "/usr/local/bin", "/usr/local/pgsql/bin")
}

func findBin() string {
	for _, d := range binDirs() {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(p); isExec(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// StartCluster creates and starts a server on a free port of 127.0.0.1
// with trust authentication for user postgres. It stops the server and
// deletes its files when the test ends. The test is skipped if initdb and
// pg_ctl cannot be found, or if it runs as root and there is no postgres
// user to run them as (initdb refuses root), or if EnvURL is "skip".
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv(EnvURL) == "skip" {
		t.Skipf("%s=skip: not testing against PostgreSQL", EnvURL)
	}
	bin := findBin()
	if bin == "" {
		t.Skipf("PostgreSQL server programs (initdb, pg_ctl) not found in %s or $PATH: cannot run a throwaway server", strings.Join(binDirs(), ", "))
	}
	c := &Cluster{t: t, bin: bin}
	dir, err := os.MkdirTemp("", "wspubsub-pgtest-*")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() {
		if c.up {
			c.pgctl("-m", "immediate", "stop")
		}
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres user to run initdb as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			t.Skipf("running as root and runuser is missing: %v", err)
		}
		c.runas = []string{runuser, "-u", "postgres", "--"}
	}
	c.port = freePort(t)
	c.run(filepath.Join(bin, "initdb"), "-D", c.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale", "C")
	c.Start()
	return c
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// URL is a connection URL for database postgres as user postgres.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off", c.port, c.dir)
	c.pgctl("-w", "-t", "60", "-l", filepath.Join(c.dir, "log"), "-o", opts, "start")
	c.up = true
}

// Stop shuts the server down the way an administrator would ("fast":
// sessions are ended with an error) and waits until it has stopped.
func (c *Cluster) Stop() {
	c.t.Helper()
	c.pgctl("-m", "fast", "-w", "-t", "60", "stop")
	c.up = false
}

func (c *Cluster) pgctl(args ...string) {
	c.t.Helper()
	c.run(filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.data()}, args...)...)
}

func (c *Cluster) run(prog string, args ...string) {
	c.t.Helper()
	argv := append(slices.Clone(c.runas), prog)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		c.t.Fatalf("%s: %v\n%s\nserver log:\n%s", strings.Join(argv, " "), err, out, log)
	}
}

// freePort returns a port of 127.0.0.1 that is free now, below the usual
// ephemeral range (32768 and up) so that client sockets of other tests do
// not take it while the server is stopped.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + mrand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port found for a throwaway PostgreSQL")
	return 0
}
