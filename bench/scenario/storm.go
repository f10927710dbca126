package scenario

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wspubsub/wspubsub/bench/procfs"
	"github.com/wspubsub/wspubsub/bench/result"
)

// The storm scenario: the subscribers connect (the connect figures are
// those of idle), each publisher sends one message, and once every
// subscriber has it the load generator drops them all at one instant, with
// a reset and no close frame, and each reconnects at once: the storm a hub
// meets after a deploy or a network blip. The resumers of the reconnect
// scenario do it (one cut each, at the same nanosecond, no reconnect
// delay), with since on a hub that gives positions; nothing is published
// during the storm, so there is nothing to replay and the reference, which
// reconnects plainly, misses nothing. When every subscriber is back (seen
// every 10 ms), each publisher sends its second and last message; the storm
// is over when that has reached every subscriber. Its figures, from the
// drop: every subscriber back (101), and every one receiving.

// storm runs the storm scenario after the subscribers connected.
func (ru *runner) storm(ctx context.Context) error {
	o, r, t := ru.o, ru.r, ru.t
	if err := sleep(ctx, o.Settle); err != nil {
		return err
	}
	subs := int64(r.Subscribers)
	ru.expected = subs * int64(o.Count)
	start := time.Now().Add(50 * time.Millisecond).UnixNano()
	if err := ru.mark(ctx, start, int64(10*time.Millisecond)); err != nil {
		return err
	}
	self0 := procfs.SelfCPU()
	ru.setPhase("first")
	// The second message waits an hour, until PublishNow; one publisher's
	// stagger, so that every first message goes at start.
	if err := ru.pg.StartPublishing(ctx, start, int64(time.Hour), 1); err != nil {
		return err
	}
	if err := ru.await(ctx, "every subscriber to get the first message", func(p Progress) bool { return p.Received >= subs }); err != nil {
		return err
	}

	ru.setPhase("storm")
	_, sched0, _ := ru.serverCPU()
	cut := time.Now().Add(20 * time.Millisecond).UnixNano()
	// A slot of 1 ns puts every cut at cut; a delay of 1 ns reconnects at
	// once (jitter leaves it alone), and a failed dial is retried after
	// 2, 4, ... ns: the storm is as hard as the client can make it.
	plan := &CutPlan{Mode: "client", Cuts: 1, FromNs: cut, ToNs: cut + 1, StopNs: cut + int64(o.DrainTimeout), DelayNs: 1}
	err := ru.each(func(_ int, m member) error {
		_, err := m.call(ctx, Command{Op: "cuts", Cuts: plan})
		return err
	})
	if err != nil {
		return err
	}
	err = ru.await(ctx, "every subscriber to reconnect", func(p Progress) bool { return p.Cuts >= subs && p.Reconnects >= p.Cuts })
	if err != nil {
		return err
	}
	back := time.Now().UnixNano()

	ru.setPhase("after")
	if err := ru.pg.PublishNow(ctx); err != nil {
		return err
	}
	waitErr := ru.drain(ctx, back, 0)
	if err := ru.pg.PublisherError(ctx); err != nil {
		waitErr = errors.Join(waitErr, fmt.Errorf("a publisher ended mid-run: %w", err))
	}
	_, sched1, _ := ru.serverCPU()
	self1 := procfs.SelfCPU()
	if r.ServerMeasured {
		r.ServerRSSAfter, _ = serverRSS(t)
		r.ServerPeakRSS, _ = serverPeakRSS(t)
		r.RSSPerConn = float64(r.ServerRSSAfter-r.ServerRSSBefore) / float64(r.Subscribers)
	}
	ru.setPhase("finish")
	part, err := ru.finish(ctx)
	if err != nil {
		return errors.Join(waitErr, err)
	}
	r.Published = ru.total().Sent
	fillFlow(r, &part, start)
	r.ClientCPUSeconds = (self1 - self0).Seconds() + float64(part.ClientCPU)/1e9
	rc := part.Reconnect
	rc.Mode = "client"
	rc.CannotResume = t.Name == "reference"
	r.Reconnect = &rc
	st := &result.Storm{Subscribers: r.Subscribers, BackSeconds: float64(back-cut) / 1e9}
	if part.LastRecv > back {
		st.ReceivingSeconds = float64(part.LastRecv-cut) / 1e9
	}
	if r.ServerMeasured {
		st.ServerCPUSeconds = (sched1 - sched0).Seconds()
		if rc.Reconnects > 0 {
			st.ServerCPUPerReconnectUs = st.ServerCPUSeconds * 1e6 / float64(rc.Reconnects)
		}
	}
	r.Storm = st
	return waitErr
}

// await polls the run's progress every 10 ms until done reports true; it
// gives up when the progress has not moved for the longer of DrainTimeout
// and HandshakeTimeout (a reconnect may wait that long for a dial).
func (ru *runner) await(ctx context.Context, what string, done func(Progress) bool) error {
	stall := max(ru.o.DrainTimeout, ru.o.HandshakeTimeout)
	var last Progress
	lastMove := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p := ru.total()
		if done(p) {
			return nil
		}
		if p != last {
			last, lastMove = p, time.Now()
		} else if time.Since(lastMove) > stall {
			return fmt.Errorf("cannot wait for %s: nothing moved for %v (%+v)", what, stall, p)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot wait for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// PublishNow makes every publisher send what it has left at once.
func (g *Group) PublishNow(ctx context.Context) error {
	return g.each(ctx, func(c *client) {
		now := time.Now().UnixNano()
		for _, p := range c.pubs {
			if !p.done {
				p.interval = 0
				c.w.Schedule(p, now)
			}
		}
	})
}
