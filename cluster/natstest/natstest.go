// Package natstest runs a real NATS server with JetStream inside a test's
// process, on a free 127.0.0.1 port, so the cluster's tests run on any
// machine; it can be stopped and started again on the same port with the
// same storage, to test what a NATS restart does.
//
// StartWith starts one with options of the test's choosing: users, a token,
// nkeys, operator mode (Operator gives a memory resolver and .creds files)
// or TLS (CA gives a throwaway certificate authority).
//
// Concurrency: a Server's methods are for the test's goroutine.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an in-process NATS server.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
	// URL is the address clients connect to, nats://127.0.0.1:PORT. It
	// stays the same across Stop and Start.
	URL string
}

// Start runs a server with JetStream on a free port, storing in a
// temporary directory; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t)
}

// StartWith is Start with each of configure applied to the server's
// options first, to require authentication or TLS.
func StartWith(t testing.TB, configure ...func(*server.Options)) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	for _, c := range configure {
		c(&s.opts)
	}
	s.Start()
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	s.URL = s.srv.ClientURL()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, on the same port and storage.
func (s *Server) Start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("cannot create a NATS server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("the NATS server did not start within 10s")
	}
	s.srv = srv
}

// Stop shuts the server down; clients see their connections drop.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Running reports whether the server is up.
func (s *Server) Running() bool { return s.srv != nil }
