package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wspubsub/wspubsub/cluster"
	"github.com/wspubsub/wspubsub/loop"
)

// tlsOptions are serve's TLS settings: both files or neither.
type tlsOptions struct {
	cert, key string
}

func (t *tlsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&t.cert, "tls-cert", "", "serve wss:// with this PEM certificate chain, leaf first (with --tls-key; both are read again on SIGHUP)")
	fs.StringVar(&t.key, "tls-key", "", "PEM private key of --tls-cert")
}

// load reads the key pair, or returns nil if TLS is off.
func (t *tlsOptions) load() (*loop.KeyPair, error) {
	switch {
	case t.cert == "" && t.key == "":
		return nil, nil
	case t.cert == "" || t.key == "":
		return nil, errors.New("cannot serve TLS: give both --tls-cert and --tls-key, or neither")
	}
	return loop.LoadKeyPair(t.cert, t.key)
}

// scheme is the WebSocket URL scheme served.
func (t *tlsOptions) scheme() string {
	if t.cert != "" {
		return "wss"
	}
	return "ws"
}

// reloadOnHangup reads kp's files again on every SIGHUP, logging the
// outcome; a failed reload keeps the certificate in use. It also has a
// cluster node check its NATS credential and TLS files again, and reconnect
// at once if it is not connected. With kp and node nil it only logs that
// there is nothing to reload. The returned function stops it.
func reloadOnHangup(kp *loop.KeyPair, node *cluster.Node, log *slog.Logger) (stop func()) {
	if kp != nil {
		logCert(log, "TLS certificate loaded", kp)
	}
	// SIGHUP is always caught, so that `systemctl reload` never kills a hub
	// that serves without TLS.
	hup := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				if node != nil {
					node.ReloadAuth() // it logs what it found
				}
				if kp == nil {
					if node == nil {
						log.Info("SIGHUP: nothing to reload (no --tls-cert, no --nats-url)")
					}
					continue
				}
				if err := kp.Reload(); err != nil {
					log.Error("cannot reload the TLS certificate, keeping the old one", "err", err)
					continue
				}
				logCert(log, "TLS certificate reloaded", kp)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// logCert logs msg with the current certificate, as a warning if it has
// expired.
func logCert(log *slog.Logger, msg string, kp *loop.KeyPair) {
	leaf := kp.Leaf()
	level := slog.LevelInfo
	if time.Now().After(leaf.NotAfter) {
		level, msg = slog.LevelWarn, msg+" (expired)"
	}
	log.Log(context.Background(), level, msg, "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames,
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
}
