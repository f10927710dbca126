// Package procfs reads what the load generator reports about processes on
// this machine: CPU time and resident memory from /proc, the caller's own CPU
// time from getrusage, and the open-file limit.
//
// Concurrency contract: every function is safe from any goroutine; each call
// reads the kernel afresh and keeps no state.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// CPU returns the user plus system CPU time that process pid has used, all
// threads included, from /proc/PID/stat. Its resolution is 10 ms.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cannot read the CPU time of process %d: %w", pid, err)
	}
	// The command name is in parentheses and may hold spaces: fields are
	// counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat: no ')'", pid)
	}
	f := bytes.Fields(b[i+1:])
	// After ')': state is field 3 of the man page, utime 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cannot parse utime/stime in /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * (time.Second / clockTicks), nil
}

// RSS returns the resident set size of process pid in bytes (VmRSS of
// /proc/PID/status).
func RSS(pid int) (int64, error) {
	return statusField(pid, "VmRSS:")
}

// PeakRSS returns the peak resident set size of process pid in bytes (VmHWM).
func PeakRSS(pid int) (int64, error) {
	return statusField(pid, "VmHWM:")
}

func statusField(pid int, name string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("cannot read the memory of process %d: %w", pid, err)
	}
	i := bytes.Index(b, []byte(name))
	if i < 0 {
		return 0, fmt.Errorf("cannot find %s in /proc/%d/status", name, pid)
	}
	line := b[i+len(name):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) < 1 {
		return 0, fmt.Errorf("cannot parse %s in /proc/%d/status", name, pid)
	}
	kb, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %s in /proc/%d/status: %w", name, pid, err)
	}
	return kb << 10, nil
}

// SelfCPU returns the user plus system CPU time of the calling process, all
// threads included.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns the
// new soft limit.
func RaiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("cannot read the open-file limit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("cannot raise the open-file limit to %d: %w", rl.Max, err)
		}
	}
	return rl.Cur, nil
}

// Alive reports whether process pid exists.
func Alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// SchedCPU returns the time process pid's threads have been on a CPU, in
// nanoseconds, summed from /proc/PID/task/*/schedstat. Unlike CPU it is not
// rounded to the 10 ms tick, but threads that have exited are not counted;
// the long-lived threads of a server make that small.
func SchedCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("cannot list the threads of process %d: %w", pid, err)
	}
	var total int64
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := bytes.Fields(b)
		if len(f) < 1 {
			continue
		}
		ns, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cannot parse the schedstat of process %d: %w", pid, err)
		}
		total += ns
	}
	return time.Duration(total), nil
}
