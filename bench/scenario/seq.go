package scenario

// seqTrack follows the sequence numbers one subscriber receives from one
// publisher: which arrived (a bitmap sized by its owner), the lowest, how
// many, and the one after the highest. It belongs to one worker goroutine.
type seqTrack struct {
	seen []uint64 // bitmap of sequence numbers received
	next uint64   // highest sequence number received + 1
	lo   uint64   // lowest sequence number received
	recv uint64   // distinct sequence numbers received
}

// record notes seq. A duplicate changes nothing and is reported as such;
// otherwise outOfOrder says whether a later number came before it.
func (t *seqTrack) record(seq uint64) (duplicate, outOfOrder bool) {
	word, bit := seq>>6, uint64(1)<<(seq&63)
	if t.seen[word]&bit != 0 {
		return true, false
	}
	t.seen[word] |= bit
	if t.recv == 0 || seq < t.lo {
		t.lo = seq
	}
	t.recv++
	if seq < t.next {
		return false, true
	}
	t.next = seq + 1
	return false, false
}

// gaps is how many numbers between the lowest and the highest received
// never arrived.
func (t *seqTrack) gaps() int64 {
	if t.recv == 0 {
		return 0
	}
	return int64(t.next - t.lo - t.recv)
}
