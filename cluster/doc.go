// Package cluster makes a hub (package server) a node of a cluster of hubs
// over NATS: a message published on any node reaches the subscribers of its
// topic on every node, and a topic's single publisher and its grace period
// hold across the nodes. Node implements server.Cluster.
//
// Messages. A publisher's read, already encoded once as a run of complete
// WebSocket frames for local subscribers, is published as it is (after a
// small header, see wire.go) on the topic's subject, PREFIX.t.DOMAIN.TOPIC
// with DOMAIN and TOPIC base64url-encoded. The connection has NoEcho set,
// so a node never receives its own messages; it fans them out locally as a
// single hub does. A node subscribes to a topic's subject while it has local
// subscribers of the topic, and only then, so traffic follows interest.
//
// Ownership. Each topic started anywhere has a record in a JetStream
// key-value bucket (key DOMAIN.TOPIC, encoded as above; value: the owning
// node, its number of publishers, the end of the grace period once the
// last one left, and the topic's position as the owner last published).
// A record lives as long as its owner's heartbeat: every node writes one
// key of a second bucket every ClaimTTL/3, and the records of a node not
// heard of for ClaimTTL lapse (see liveness.go), so a record is written
// only when it changes, not to stay alive. Every
// write is a compare-and-set on the record's revision, so of two nodes that
// claim a topic at once exactly one wins. Every node watches the bucket and
// keeps a local view, which answers "is this topic started anywhere?" for
// subscribers without a network round trip, and tells a node when a topic
// whose publisher was elsewhere ended.
//
// Positions. The owner assigns every message's epoch and offset and sends
// them with the message, so every node keeps the topic's history under the
// same positions. A publisher that takes a topic over in its grace period
// goes on from the position in the record (final once the grace period
// started); one that takes over the record of a node that died starts a
// new epoch, since nobody can tell what that node assigned last.
//
// History. A node that lacks older messages of a topic, for a subscriber
// resuming there, asks the node that keeps them (the owner; on the owner,
// the node it took the topic over from) with a NATS request on that node's
// subject, PREFIX.h.NODE, and gets a page of its history (see fetch.go).
//
// Publishers on several nodes. With Config.PublishersPerTopic N above 1
// (the same on every node), a topic's publishers may be on any nodes; the
// rules (see relay.go for the wire):
//
//   - Counting. The record counts the owner's publishers (Pubs) and, in
//     Remote, each other node's, in an entry that node writes and
//     refreshes every ClaimTTL/3 (it lapses at its Until otherwise). Every
//     claim is a read, a check of the total against N and a
//     compare-and-set, on the owner as elsewhere, so at most N exist at
//     once across the cluster; the N+1-th is refused with
//     topics.ErrHasPublisher (409). A claim for one HTTP publish
//     (server.OneShot) is not counted, and is made on the owner only.
//   - Positions. One node, the owner, assigns them. A publisher elsewhere
//     relays each read to the owner, in order, on the node's one NATS
//     connection, without waiting; the owner publishes it as its own
//     (positions, history, its subscribers, the topic's subject), so every
//     node, the relaying one included, gets it from the owner: each
//     publisher's messages in its order, exactly once, in the owner's one
//     order. The relaying node writes nothing to its own subscribers.
//   - No silent loss. The owner acknowledges every relayed run. Runs not
//     acknowledged within relayTimeout, refused (the node no longer owns
//     the topic), too large for NATS, or refused by the NATS client's
//     bounded buffer are counted (dropped, reason relay) and the hub
//     closes that node's publishers of the topic with 1001; they
//     reconnect and claim again.
//   - The owner's last publisher leaving while other nodes have some
//     starts no grace period: the owner keeps the topic (Keep answers
//     true) and goes on publishing their runs. Ownership does not move
//     while the owner lives, so no run is ever published by two owners,
//     and none is in flight to a node that stopped publishing.
//   - The grace period starts when the last publisher anywhere left: the
//     owner learns it from its record (its watch) and writes "in grace
//     until T"; a publisher on any node takes the topic over as with one
//     publisher, going on from the record's position, which is final then.
//   - An owner that closes (Close, after the hub's Shutdown: nothing more
//     is published there) writes its records final, in grace with
//     OwnerUntil now: other nodes' publishers, closed with 1001 by their
//     lease's check, take the topic over at once, same epoch, next
//     offset.
//   - An owner that dies stops acknowledging and refreshing (NATS may
//     also answer a relayed run with no responders at once): its relaying
//     nodes close their publishers and, for ClaimTTL, take its topics
//     over when claimed rather than relay to it again; elsewhere its
//     OwnerUntil, which only the owner moves, passes (the other nodes'
//     refreshes keep the record, not the owner, alive). A takeover then
//     starts a new epoch: a record without publishers on its owner but
//     with some elsewhere is not final, since the owner may have
//     published past it. An owner that was only cut off finds, when back,
//     that the record moved, and closes its publishers (ClaimLost).
//
// Catching up. A node that misses offsets of a topic's stream (NATS away,
// a bound reached) fetches them from the owner's history before it
// delivers anything newer, on the topic's delivery shard's goroutine; see
// catchup.go. Only what the owner no longer keeps becomes a gap notice.
//
// HTTP publish. A node that takes an HTTP publish of a topic another node
// owns forwards the message to the owner with a request on its subject,
// PREFIX.p.NODE; the owner publishes it as its own and answers with the
// position (see forward.go). A topic nobody owns is claimed by the node
// that took the publish, and released at once.
//
// Authentication and TLS. Config's URL may hold a user and password or a
// token; CredsFile, NkeyFile, TLSCA, TLSCert and TLSKey name files that
// nats.go's own options read at every connection (see auth.go). A refused
// connection (credentials, a certificate) does not stop the node: it stays
// not Ready, retries, and logs one line per kind of failure per minute,
// naming what to check; ReloadAuth re-checks the files and retries at
// once. No password, token or seed is ever logged or put in an error.
//
// Concurrency. All exported methods are safe for concurrent use. Started,
// Join, Leave and a claim's Publish, Relay, Continues and Release never wait for
// the network (Publish and Relay copy their message into the node's
// outbox, bounded at 8 MiB, which one goroutine hands to the NATS client
// in order; the NATS client may make that goroutine, never a loop, wait
// for its socket, at most FlusherTimeout; a message the outbox has no room
// for is counted lost); they are called on the hub's event loops. Claim, Confirm, Keep, History
// and Forward make network round trips and are called off the loops. The
// callbacks into the hub (server.ClusterHub) come from goroutines of this
// package and of the NATS client, never under a lock of this package but
// an interest's mu: Deliver for one topic from its delivery shard's
// goroutine (see interest.go; or a catch-up from the owner's record), under the interest's
// mu, one call at a time, in the order the owner published; History from the
// goroutine of the node's history subscription, one request at a time;
// PublishForwarded from goroutines of this package, at most maxForwards at
// once; PublishRelayed from the goroutine of the node's relay
// subscription, in the order runs came; TopicEnded, ClaimLost and
// OwnerUnreachable from the node's own goroutines. Lock order, outermost
// first: an interest's mu (held across a catch-up's History round trips
// and Deliver calls), then a lease's io mutex, then Node.mu; the view's
// and the interests' mutexes and a lease's posMu are leaves.
package cluster
