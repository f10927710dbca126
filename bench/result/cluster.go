package result

// Cluster is what a run against several hub nodes measured of the cluster
// itself: the NATS traffic each node received, read from the nodes' own
// /metrics (wspubsub_cluster_received_bytes_total and
// wspubsub_cluster_received_messages_total, before the first message and
// after the last), and the node a run killed.
type Cluster struct {
	Nodes int `json:"nodes"`
	// Source says where the NATS figures come from.
	Source string `json:"source"`
	// Per node, in the order of the target's nodes (the first holds the
	// publishers): bytes and messages received from NATS during the
	// measured phase, and bytes sent. -1 for a node that could not be read
	// at the end (one the run killed).
	ReceivedBytes    []int64 `json:"received_bytes"`
	ReceivedMessages []int64 `json:"received_messages"`
	SentBytes        []int64 `json:"sent_bytes"`
	// Subscribers is each node's wspubsub_connections{role="subscriber"}
	// at the end (after a kill: where its subscribers went); -1 for a
	// node not read.
	Subscribers []int64 `json:"subscribers"`
	// Published is the messages the publishers sent in the phase.
	Published int64 `json:"published"`
	// BytesPerMessage is the bytes the nodes received from NATS, summed,
	// per published message; Copies the NATS messages they received per
	// published message (one per node with subscribers of its topic, but
	// the publisher's own: 9 on 10 nodes whatever their subscriber
	// counts); BytesPerCopy what one copy costs; CopiesMax the most
	// messages one node received per published message (at most 1: above
	// is a node getting a message more than once).
	BytesPerMessage float64 `json:"nats_bytes_per_message"`
	Copies          float64 `json:"nats_copies_per_message"`
	BytesPerCopy    float64 `json:"nats_bytes_per_copy"`
	CopiesMax       float64 `json:"copies_max"`
	// Killed is the node the run killed with SIGKILL (1-based; 0 for
	// none), KilledAt when, in seconds after the first message; KillErr
	// says why it could not.
	Killed   int     `json:"killed,omitempty"`
	KilledAt float64 `json:"killed_at_s,omitempty"`
	KillErr  string  `json:"kill_error,omitempty"`
}

// Fill computes the per-message figures from the per-node counts; nodes
// not read at the end (-1) are left out.
func (c *Cluster) Fill() {
	if c.Published <= 0 {
		return
	}
	var bytes, msgs int64
	for i, b := range c.ReceivedBytes {
		if b < 0 || i >= len(c.ReceivedMessages) || c.ReceivedMessages[i] < 0 {
			continue
		}
		bytes += b
		msgs += c.ReceivedMessages[i]
		c.CopiesMax = max(c.CopiesMax, float64(c.ReceivedMessages[i])/float64(c.Published))
	}
	c.BytesPerMessage = float64(bytes) / float64(c.Published)
	c.Copies = float64(msgs) / float64(c.Published)
	if msgs > 0 {
		c.BytesPerCopy = float64(bytes) / float64(msgs)
	}
}

// check fails a node that received a message from NATS more than once.
func (c *Cluster) check(add func(string, ...any)) {
	if c.CopiesMax > 1 {
		add("a node received %.2f NATS messages per published message: more than one copy", c.CopiesMax)
	}
	if c.KillErr != "" {
		add("cannot kill node %d: %s", c.Killed, c.KillErr)
	}
}
