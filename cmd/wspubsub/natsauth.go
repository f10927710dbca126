package main

import (
	"errors"
	"flag"

	"github.com/wspubsub/wspubsub/cluster"
)

// natsAuth are serve's NATS credential and TLS files, for a cluster node.
// A user and password or a token go in --nats-url itself.
type natsAuth struct {
	creds, nkey            string
	tlsCA, tlsCert, tlsKey string
}

func (a *natsAuth) register(fs *flag.FlagSet) {
	fs.StringVar(&a.creds, "nats-creds", "", "authenticate to NATS with this .creds file (user JWT and nkey seed; read again at every connection and on SIGHUP)")
	fs.StringVar(&a.nkey, "nats-nkey", "", "authenticate to NATS with the user nkey seed in this file (a seed with a new public key needs a restart)")
	fs.StringVar(&a.tlsCA, "nats-tls-ca", "", "require TLS to NATS and verify its certificate with the CA certificates in this PEM file (read again at every connection)")
	fs.StringVar(&a.tlsCert, "nats-tls-cert", "", "PEM client certificate for NATS servers that require one (mutual TLS; with --nats-tls-key; read again at every connection)")
	fs.StringVar(&a.tlsKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
}

// check reports settings that cannot go together; the files themselves are
// read by cluster.Connect.
func (a *natsAuth) check(natsURL string) error {
	switch {
	case natsURL == "" && *a != natsAuth{}:
		return errors.New("--nats-creds, --nats-nkey and --nats-tls-* need --nats-url")
	case a.creds != "" && a.nkey != "":
		return errors.New("give --nats-creds or --nats-nkey, not both (a .creds file holds its own nkey seed)")
	case (a.tlsCert == "") != (a.tlsKey == ""):
		return errors.New("give both --nats-tls-cert and --nats-tls-key, or neither")
	}
	return nil
}

func (a *natsAuth) apply(c *cluster.Config) {
	c.CredsFile, c.NkeyFile = a.creds, a.nkey
	c.TLSCA, c.TLSCert, c.TLSKey = a.tlsCA, a.tlsCert, a.tlsKey
}
