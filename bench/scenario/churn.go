package scenario

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/wspubsub/wspubsub/bench/frame"
	"github.com/wspubsub/wspubsub/bench/poller"
)

// ChurnPlan makes subscribers come and go in one process: Rate new ones per
// second from Start until Stop (Unix ns), each closed Life ns after it was
// dialed, spread over Topics topics.
type ChurnPlan struct {
	Domain  string   `json:"domain"`
	Topics  int      `json:"topics"`
	Rate    float64  `json:"rate"`
	LifeNs  int64    `json:"life_ns"`
	StartNs int64    `json:"start_ns"`
	StopNs  int64    `json:"stop_ns"`
	Sources []string `json:"sources,omitempty"`
	// Seed shifts the topic choice so processes do not all pick the same.
	Seed int `json:"seed"`
}

// churner is a Timer on one worker that opens and closes churning
// subscribers. Its queue of live churners is bounded by Rate × Life.
type churner struct {
	c        *client
	plan     ChurnPlan
	srcs     []netip.Addr
	interval int64
	next     int64
	k        int
	live     []liveChurner
	head     int
}

type liveChurner struct {
	closeAt int64
	conn    *poller.Conn
}

// StartChurn starts churning on every worker.
func (g *Group) StartChurn(ctx context.Context, p ChurnPlan) error {
	if p.Rate <= 0 {
		return nil
	}
	srcs, err := parseSources(p.Sources)
	if err != nil {
		return err
	}
	W := int64(len(g.clients))
	interval := int64(float64(W) * 1e9 / p.Rate)
	if interval <= 0 {
		return fmt.Errorf("cannot churn at %g/s", p.Rate)
	}
	return g.each(ctx, func(c *client) {
		off := int64(c.idx)
		ch := &churner{c: c, plan: p, srcs: srcs, interval: interval, k: p.Seed + int(off)}
		ch.next = p.StartNs + off*interval/W
		c.churn = ch
		c.w.Schedule(ch, ch.next)
	})
}

// Fire implements poller.Timer.
func (ch *churner) Fire(now int64) int64 {
	for ch.head < len(ch.live) && (ch.live[ch.head].closeAt <= now || now >= ch.plan.StopNs) {
		ch.live[ch.head].conn.Close(frame.CloseNormal)
		ch.live[ch.head] = liveChurner{}
		ch.head++
	}
	if ch.head == len(ch.live) {
		ch.live, ch.head = ch.live[:0], 0
	} else if ch.head > 1024 && ch.head > len(ch.live)/2 {
		n := copy(ch.live, ch.live[ch.head:])
		clear(ch.live[n:])
		ch.live, ch.head = ch.live[:n], 0
	}
	if now >= ch.plan.StopNs {
		return 0
	}
	w := ch.c.w
	for ch.next <= now && ch.next < ch.plan.StopNs {
		topic := ch.k % ch.plan.Topics
		s := &subState{topic: uint32(topic), churner: true, seqTrack: seqTrack{seen: make([]uint64, (ch.c.count+63)/64)}}
		spec := poller.DialSpec{
			Server: ch.c.g.subTo[ch.k%len(ch.c.g.subTo)],
			Path:   "/ws/sub/" + ch.plan.Domain + "/" + topicName(topic),
			Data:   s,
		}
		if len(ch.srcs) > 0 {
			spec.Source = ch.srcs[ch.k%len(ch.srcs)]
		}
		ch.k++
		conn := w.Dial(spec)
		ch.live = append(ch.live, liveChurner{closeAt: now + ch.plan.LifeNs, conn: conn})
		ch.next += ch.interval
	}
	next := min(ch.next, ch.plan.StopNs)
	if ch.head < len(ch.live) {
		next = min(next, ch.live[ch.head].closeAt)
	}
	return max(next, now+1)
}
