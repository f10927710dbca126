package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/wspubsub/wspubsub/keys"
	"github.com/wspubsub/wspubsub/keys/filestore"
	"github.com/wspubsub/wspubsub/keys/pgstore"
)

// tokenKeyStore is what `keys token` needs from a store: filestore.Store, or
// pgstore.Store when a database URL is given.
type tokenKeyStore interface {
	AddTokenKey(ctx context.Context, domain string, publicPEM []byte) (keys.TokenKey, error)
	ListTokenKeys(ctx context.Context) ([]keys.TokenKey, error)
	RevokeTokenKey(ctx context.Context, kid string) error
	Close() error
}

var (
	_ tokenKeyStore = (*filestore.Store)(nil)
	_ tokenKeyStore = (*pgstore.Store)(nil)
)

// maxPublicKeyFile bounds the PEM file `keys token add --public-key` reads.
const maxPublicKeyFile = 64 << 10

// runKeysToken runs `wspubsub keys token ARGS...` and returns the exit
// code, as runKeys does.
func runKeysToken(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "wspubsub keys token: want add, list or revoke\n\n%s", keysUsage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "wspubsub keys token %s: %s\n\n%s", cmd, fmt.Sprintf(format, a...), keysUsage)
		return 2
	}
	fs := flag.NewFlagSet("wspubsub keys token "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var sf storeFlags
	sf.register(fs)
	var domain, publicKey *string
	nargs := 0
	switch cmd {
	case "add":
		domain = fs.String("domain", "", "domain to make private")
		publicKey = fs.String("public-key", "", "PEM public key file (EdDSA, ES256 or RS256); default: a new HS256 secret")
	case "list":
	case "revoke":
		nargs = 1
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
	var pemData []byte
	var err error
	if publicKey != nil && *publicKey != "" {
		if pemData, err = readPublicKey(*publicKey); err != nil {
			fmt.Fprintf(stderr, "wspubsub keys token %s: %v\n", cmd, err)
			return 1
		}
	}
	ctx := context.Background()
	ks, err := sf.open(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "wspubsub keys token %s: %v\n", cmd, err)
		return 1
	}
	st := ks.(tokenKeyStore)
	switch cmd {
	case "add":
		err = tokenAdd(ctx, st, *domain, pemData, stdout)
	case "list":
		if sf.databaseURL == "" {
			fmt.Fprintln(stderr, describeKeyFile(sf.keysFile))
		}
		err = tokenList(ctx, st, stdout)
	case "revoke":
		if err = st.RevokeTokenKey(ctx, pos[0]); err == nil {
			_, err = fmt.Fprintf(stdout, "revoked token key %s: hubs close the subscribers it admitted within a second\n", printable(pos[0]))
		}
	}
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("cannot close key store: %w", cerr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wspubsub keys token %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// readPublicKey reads a PEM public key file, refusing anything that is not
// one (a private key above all: the hub needs only the public half).
func readPublicKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the public key: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPublicKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the public key: %w", err)
	}
	if len(data) > maxPublicKeyFile {
		return nil, fmt.Errorf("public key file %s is larger than %d bytes", printable(path), maxPublicKeyFile)
	}
	if _, _, err := keys.ParsePublicKeyPEM(data); err != nil {
		return nil, fmt.Errorf("%s: %w", printable(path), err)
	}
	return data, nil
}

// tokenAdd adds a key and prints it: its kid, then the HMAC secret as the
// last line (shown this once), or the kid last for a public key.
func tokenAdd(ctx context.Context, st tokenKeyStore, domain string, pemData []byte, stdout io.Writer) error {
	k, err := st.AddTokenKey(ctx, domain, pemData)
	if err != nil {
		return err
	}
	if k.Alg != keys.AlgHS256 {
		_, err = fmt.Fprintf(stdout, "domain %s is private: its subscribers need a token signed with this %s key, kid in its header:\nkid\n%s\n",
			printable(domain), k.Alg, k.KID)
		return err
	}
	_, err = fmt.Fprintf(stdout, "domain %s is private: its subscribers need a token signed with this key\nkid %s (put it in the token's header)\nalg HS256, secret (use this text itself as the HMAC key; store it now, it is not shown again):\n%s\n",
		printable(domain), k.KID, k.Secret)
	return err
}

func tokenList(ctx context.Context, st tokenKeyStore, stdout io.Writer) error {
	ks, err := st.ListTokenKeys(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tDOMAIN\tALG\tCREATED\tSTATUS")
	for _, k := range ks {
		status := "active"
		if !k.Revoked.IsZero() {
			status = "revoked " + k.Revoked.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.KID, printable(k.Domain), k.Alg, k.Created.UTC().Format(time.RFC3339), status)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("cannot print token keys: %w", err)
	}
	return nil
}
