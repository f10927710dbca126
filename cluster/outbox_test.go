package cluster

import (
	"bytes"
	"testing"
)

// TestOutboxOrderAndBound: messages come out in the order they went in,
// each a copy; a message that would take the queue past outboxBytes is
// refused, and room comes back as messages are sent.
func TestOutboxOrderAndBound(t *testing.T) {
	o := newOutbox()
	msg := make([]byte, 1<<20)
	n := 0
	for o.push("s", "", msg, nil, true, 1) {
		n++
		msg[0]++ // the queue holds copies
		if n > outboxBytes>>20 {
			t.Fatalf("queued %d MiB past the %d MiB bound", n, outboxBytes>>20)
		}
	}
	if n != outboxBytes>>20 {
		t.Fatalf("queued %d messages of 1 MiB, want %d", n, outboxBytes>>20)
	}
	for i := range n {
		m, ok := o.pop()
		if !ok || (*m.data)[0] != byte(i) || len(*m.data) != len(msg) {
			t.Fatalf("message %d: ok %v, first byte %d", i, ok, (*m.data)[0])
		}
		o.done(m)
	}
	if _, ok := o.pop(); ok {
		t.Fatal("a message more than went in")
	}
	small := []byte("after")
	if !o.push("s", "r", small, nil, true, 1) {
		t.Fatal("refused once empty again")
	}
	m, ok := o.pop()
	if !ok || !bytes.Equal(*m.data, small) || m.reply != "r" {
		t.Fatalf("got %+v %v", m, ok)
	}
	o.done(m)
	// A message larger than the bound goes when the queue is empty.
	if !o.push("s", "", make([]byte, outboxBytes+1), nil, true, 1) {
		t.Fatal("a large message refused by an empty queue")
	}
}
