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
// The bucket's MaxAge is ClaimTTL, and the owner rewrites
// its records every ClaimTTL/3; the record of a node that died lapses. Every
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
// Join, Leave and a claim's Publish, Continues and Release never wait for
// the network (Publish hands bytes to the NATS client's bounded buffer; the
// NATS client may make it wait for the socket, at most FlusherTimeout);
// they are called on the hub's event loops. Claim, Confirm, Keep, History
// and Forward make network round trips and are called off the loops. The
// callbacks into the hub (server.ClusterHub) come from goroutines of this
// package and of the NATS client, never under a lock of this package:
// Deliver for one topic from that topic's subscription goroutine, one call
// at a time, in the order the publishing node sent; History from the
// goroutine of the node's history subscription, one request at a time;
// PublishForwarded from goroutines of this package, at most maxForwards at
// once; TopicEnded and ClaimLost from the node's own goroutines. Lock order,
// outermost first: a lease's io mutex, then Node.mu; the view's and the
// interests' mutexes and a lease's posMu are leaves.
package cluster
