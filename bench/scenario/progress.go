package scenario

import (
	"fmt"
	"time"
)

// progressStart starts the goroutine that prints the live progress line, if
// Options.Progress is set: every 250 ms rewritten in place on a terminal,
// every 2 s as a new line otherwise.
func (ru *runner) progressStart() {
	if ru.o.Progress == nil {
		return
	}
	ru.stopProg = make(chan struct{})
	ru.progDone = make(chan struct{})
	every := 2 * time.Second
	if ru.o.ProgressTTY {
		every = 250 * time.Millisecond
	}
	go func() {
		defer close(ru.progDone)
		t := time.NewTicker(every)
		defer t.Stop()
		var prev Progress
		prevT := time.Now()
		for {
			select {
			case <-ru.stopProg:
				if ru.o.ProgressTTY {
					fmt.Fprint(ru.o.Progress, "\r\033[K")
				}
				return
			case now := <-t.C:
				p := ru.total()
				dt := now.Sub(prevT).Seconds()
				rate := float64(p.Delivered-prev.Delivered) / dt
				conn := float64(p.Opened-prev.Opened) / dt
				prev, prevT = p, now
				ru.mu.Lock()
				phase := ru.phase
				ru.mu.Unlock()
				total := ru.o.Topics * ru.o.SubsPerTopic
				line := fmt.Sprintf("[%s %s] %-10s subs %d/%d (%s/s) failed %d",
					ru.o.Scenario, ru.t.Name, phase, p.Opened, total, human(conn), p.Failed)
				if ru.o.Scenario != "idle" {
					line += fmt.Sprintf("  sent %s/%s  recv %s/%s (%s/s)",
						human(float64(p.Sent)), human(float64(ru.o.Topics*ru.o.Count)),
						human(float64(p.Delivered)), human(float64(total*ru.o.Count)), human(rate))
				}
				if ru.o.Scenario == "churn" {
					line += fmt.Sprintf("  churned %d", p.Churned)
				}
				if ru.o.Scenario == "reconnect" || ru.o.Scenario == "storm" {
					line += fmt.Sprintf("  cuts %d reconnects %d", p.Cuts, p.Reconnects)
				}
				if ru.o.ProgressTTY {
					fmt.Fprintf(ru.o.Progress, "\r\033[K%s", line)
				} else {
					fmt.Fprintln(ru.o.Progress, line)
				}
			}
		}
	}()
}

func (ru *runner) progressStop() {
	if ru.stopProg == nil {
		return
	}
	close(ru.stopProg)
	<-ru.progDone
}

// human prints a count with a k/M suffix.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
