// Package filestore keeps API keys (package keys) in a JSON file.
//
// [Store] is the embedded store: a JSON file that needs no server. It is
// meant for one server process that checks keys, plus an occasional CLI
// process that changes them; writes from two processes at the same instant
// are not locked against each other (the later write wins). The server
// records when each key was last used, at most once a minute per key, in a
// file of its own beside the key file (PATH.last-used), so recording never
// rewrites the key file; List reads it.
//
// # Concurrency
//
// Every method of [Store] is safe to call from any number of goroutines.
// [Store.Check] of an accepted key takes no lock: it reads an immutable
// snapshot through an atomic pointer, does not allocate, and never waits
// for another goroutine: at most once a second one caller stats the file
// (and re-reads it if another process changed it), skipping that if a
// writer is busy; at most once a minute per key it queues the key's use on
// a buffered channel without blocking (dropped if full). A goroutine,
// started by the first use, writes the queued uses to the last-used file
// about a second later, in one write; Close writes what is left and waits
// for it. Before refusing a key, Check takes the lock and stats the file,
// re-reading it if it changed, so that a key added by another process is
// accepted as soon as that process has written it.
// The writing methods (Add, Revoke, SetActive, Reload) are serialised by one
// mutex, the only lock of Store; they do file I/O while holding it,
// so call them from CLI or admin paths, not from a hot loop.
package filestore
