// Package version holds the version of the build: the one `wspubsub version`
// prints, the hub logs at start and the wspubsub_build_info metric carries.
//
// The Makefile and deploy/Containerfile stamp it at link time from
// `git describe --tags --always --dirty`:
//
//	go build -ldflags "-X github.com/wspubsub/wspubsub/version.stamped=v1.2.3" ./cmd/wspubsub
//
// A plain `go build` leaves it unstamped; String then falls back to the
// module version the Go toolchain recorded, which is "(devel)" when it did no
// VCS stamping.
package version

import "runtime/debug"

// stamped is set with -ldflags -X at build time; empty when it was not.
var stamped string

// String returns the version of the running binary: the stamped one, else
// the module version in the build information, else "(devel)".
func String() string {
	if stamped != "" {
		return stamped
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
