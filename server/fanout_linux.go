package server

import (
	"runtime"
	"syscall"
)

// fanoutNice is how much lower than the hub's own the CPU priority of a
// fan-out worker's thread is: when the cores are short, the kernel runs the
// event loops (a small topic's delivery, a handshake) before the next slice
// of a large topic, rather than sharing time evenly between them.
const fanoutNice = 10

// lowerPriority locks the calling goroutine, a fan-out worker, to its
// thread and lowers that thread's priority by fanoutNice (Linux sets nice
// values per thread). A failure leaves the thread as it was.
func lowerPriority() {
	runtime.LockOSThread()
	tid := syscall.Gettid()
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid) // 20 - nice
	if err != nil {
		return
	}
	syscall.Setpriority(syscall.PRIO_PROCESS, tid, min(19, 20-raw+fanoutNice))
}
