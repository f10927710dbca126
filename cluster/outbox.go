package cluster

import "sync"

// outboxBytes bounds the bytes a node holds for NATS beyond what the NATS
// client buffers itself.
const outboxBytes = 8 << 20

// outbox is a node's bounded queue of messages for NATS, sent in order by
// one goroutine (send): a claim's Publish and Relay, called on the hub's
// event loops, put their message here and return, so no loop waits for
// the NATS client, which may wait up to FlusherTimeout for its socket. A
// message that would take the queue past outboxBytes is refused, and the
// caller counts it lost; nothing is ever reordered.
type outbox struct {
	mu    sync.Mutex
	q     []outMsg // FIFO from head
	head  int
	bytes int
	wake  chan struct{}
	sent  chan struct{} // closed when send has returned
	bufs  sync.Pool     // *[]byte
}

// outMsg is one message for NATS: a publish to other nodes (reply "") or
// a relayed run of l (reply: its ack subject).
type outMsg struct {
	subject, reply string
	data           *[]byte
	l              *lease // relay only
	last           bool   // publish: the last part of its batch
	msgs           int    // publish: the messages of its batch
}

func newOutbox() *outbox { return &outbox{wake: make(chan struct{}, 1), sent: make(chan struct{})} }

// push queues a copy of data; false when the queue is full.
func (o *outbox) push(subject, reply string, data []byte, l *lease, last bool, msgs int) bool {
	o.mu.Lock()
	if o.bytes+len(data) > outboxBytes && o.bytes > 0 {
		o.mu.Unlock()
		return false
	}
	o.bytes += len(data)
	o.mu.Unlock()
	bp, _ := o.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = append((*bp)[:0], data...)
	o.mu.Lock()
	o.q = append(o.q, outMsg{subject: subject, reply: reply, data: bp, l: l, last: last, msgs: msgs})
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

// pop takes the oldest message.
func (o *outbox) pop() (outMsg, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.head == len(o.q) {
		o.q, o.head = o.q[:0], 0
		return outMsg{}, false
	}
	m := o.q[o.head]
	o.q[o.head] = outMsg{}
	o.head++
	return m, true
}

// done gives m's buffer back once it is sent.
func (o *outbox) done(m outMsg) {
	o.mu.Lock()
	o.bytes -= len(*m.data)
	o.mu.Unlock()
	if cap(*m.data) <= 1<<20 {
		o.bufs.Put(m.data)
	}
}

// send is the node's outbox goroutine: it hands each message to the NATS
// client in order until the node closes, and sends what is left then.
func (n *Node) send() {
	o := n.out
	defer close(o.sent)
	for {
		quit := false
		select {
		case <-o.wake:
		case <-n.quit:
			quit = true
		}
		for {
			m, ok := o.pop()
			if !ok {
				break
			}
			if m.reply == "" {
				if err := n.nc.Publish(m.subject, *m.data); err != nil {
					// Counted as sent when queued: as a drop instead.
					n.stats.sentBytes.Add(-int64(len(*m.data)))
					if m.last {
						n.stats.sentBatches.Add(-1)
						n.stats.sentMessages.Add(-int64(m.msgs))
						n.stats.dropped[dropPublishError].Add(1)
					}
					n.publishFailed(err)
				}
			} else if err := n.nc.PublishRequest(m.subject, m.reply, *m.data); err != nil {
				n.relayFailed(m.l, err, 0, false)
			}
			o.done(m)
		}
		if quit {
			return
		}
	}
}
