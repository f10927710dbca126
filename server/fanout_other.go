//go:build !linux

package server

// lowerPriority does nothing here: threads have no nice value of their own.
func lowerPriority() {}
