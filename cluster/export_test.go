package cluster

// Crash stops the node as a crash would: no grace records are written, the
// NATS connection just goes, and its records lapse.
func (n *Node) Crash() {
	n.closeOnce.Do(func() {})
	n.nc.Close()
	close(n.quit)
	<-n.done
}
