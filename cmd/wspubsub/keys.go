package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/wspubsub/wspubsub/keys"
)

// keysUsage is printed for `wspubsub keys help` and for bad usage.
const keysUsage = `usage: wspubsub keys <command> [flags]

Commands:
  add --domain D [--username U]   create a key for domain D and print it once
  list                            show every key: ID, domain, user, created, status
  revoke KEY_OR_ID                revoke a key for good, by full key or by list ID
  deactivate --domain D           refuse every key of domain D until activated
  activate --domain D             accept the keys of domain D again
  help                            show this text

Every command takes:
  --keys-file PATH   key file (default $WSPUBSUB_KEYS_FILE, else wspubsub-keys.json)
`

// keyStore is what the keys command needs from a store. FileStore is the
// only one today; a PostgreSQL store will be chosen by a --database-url flag.
type keyStore interface {
	Add(ctx context.Context, domain, username string) (string, error)
	List(ctx context.Context) ([]keys.Record, error)
	Revoke(ctx context.Context, keyOrID string) error
	SetActive(ctx context.Context, domain string, active bool) (int, error)
	Close() error
}

var _ keyStore = (*keys.FileStore)(nil)

// storeFlags selects the store; every subcommand registers them.
type storeFlags struct {
	keysFile string
}

func (sf *storeFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("WSPUBSUB_KEYS_FILE")
	if def == "" {
		def = "wspubsub-keys.json"
	}
	fs.StringVar(&sf.keysFile, "keys-file", def, "key file (env WSPUBSUB_KEYS_FILE)")
}

// open returns the store the flags select.
func (sf *storeFlags) open() (keyStore, error) {
	s, err := keys.OpenFile(sf.keysFile)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// runKeys runs `wspubsub keys ARGS...` and returns the exit code: 0 on
// success, 1 when the command failed, 2 for bad usage or help.
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
	var domain, username *string
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
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, keysUsage)
		return 2
	default:
		return usage("unknown command")
	}
	pos, err := parseInterleaved(fs, rest)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, keysUsage)
		return 2
	case err != nil:
		return usage("%v", err)
	case len(pos) != nargs:
		return usage("want %d argument(s), got %d", nargs, len(pos))
	case domain != nil && *domain == "":
		return usage("--domain is required")
	}

	st, err := sf.open()
	if err != nil {
		fmt.Fprintf(stderr, "wspubsub keys %s: %v\n", cmd, err)
		return 1
	}
	ctx := context.Background()
	switch cmd {
	case "add":
		err = keysAdd(ctx, st, *domain, *username, stdout)
	case "list":
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
	fmt.Fprintln(tw, "ID\tDOMAIN\tUSERNAME\tCREATED\tSTATUS")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, printable(r.Domain), user,
			r.Created.UTC().Format(time.RFC3339), status)
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
