package result

// Reconnect is what subscribers that were cut and came back saw: the
// reconnect scenario. Every subscriber is cut Planned / subscribers times;
// after each cut it reconnects, with since=EPOCH:OFFSET of the last
// message it got when the hub gives positions (wspubsub.meta), plainly
// when it does not. The loss a run reports beside it (Part.Lost) is
// silent loss: sequence numbers that never arrived and that no gap notice
// covered.
type Reconnect struct {
	// Mode is how subscribers are cut: "client" (the client drops its TCP
	// connection, with a reset or a FIN, and no close frame) or "hub" (the
	// client stops answering pings until the hub closes it, 4003).
	Mode string `json:"mode"`
	// CannotResume is set for a hub that keeps no history (the
	// reference): its subscribers reconnect plainly, and what they miss is
	// reported, not failed.
	CannotResume bool `json:"cannot_resume,omitempty"`
	// AllowGaps accepts gap notices: for runs with a history too short
	// for the outages on purpose. Otherwise a reported loss fails the run,
	// as a hub that could have replayed what it said it lost.
	AllowGaps bool `json:"allow_gaps,omitempty"`

	// MetaSubs and PlainSubs count subscribers whose hub did and did not
	// accept the wspubsub.meta subprotocol.
	MetaSubs  int `json:"meta_subs"`
	PlainSubs int `json:"plain_subs"`

	// Planned cuts, Cuts made, and Skipped ones (due too late in the run,
	// or before the subscriber had a position).
	Planned int64 `json:"planned"`
	Cuts    int64 `json:"cuts"`
	Skipped int64 `json:"skipped"`
	// HubClosed counts connections the hub ended, with their CloseCodes;
	// Unplanned those of them no cut asked for (in hub mode, a close of a
	// subscriber that was still answering pings); HubMissed the muted
	// subscribers the hub did not close in time (the client dropped them).
	HubClosed  int64       `json:"hub_closed"`
	Unplanned  int64       `json:"unplanned"`
	HubMissed  int64       `json:"hub_missed"`
	CloseCodes map[int]int `json:"close_codes,omitempty"`

	// Reconnects are upgrades after a cut: Resumed with since, Plain
	// without. DialFailed counts reconnect attempts that failed (each is
	// retried), grouped by reason in DialErrors.
	Reconnects int64 `json:"reconnects"`
	// Moved counts reconnects that went to another node of a cluster,
	// because the subscriber's node closed it unasked or refused the dial
	// (a node that died).
	Moved      int64          `json:"moved,omitempty"`
	Resumed    int64          `json:"resumed"`
	Plain      int64          `json:"plain"`
	DialFailed int64          `json:"dial_failed"`
	DialErrors map[string]int `json:"dial_errors,omitempty"`

	// Recovered outages ended with a message; Unrecovered were still open
	// when the run ended. RecoverHist is the time from a cut (the drop, or
	// the hub's close) to the first message after the reconnect, in ns;
	// Recover its summary in µs.
	Recovered   int64   `json:"recovered"`
	Unrecovered int64   `json:"unrecovered"`
	RecoverHist *Hist   `json:"recover_hist,omitempty"`
	Recover     Latency `json:"recover"`
	// ReopenHist is the part of it until the reconnect's upgrade (the
	// delay, the connect and the handshake), in ns; Reopen its summary.
	ReopenHist *Hist   `json:"reopen_hist,omitempty"`
	Reopen     Latency `json:"reopen"`

	// GapNotices counts gap notices and ReportedLost the messages they
	// cover (the sum of their sizes); GapDelivered the messages a gap
	// covered that arrived all the same; Resets the reset notices.
	GapNotices   int64 `json:"gap_notices"`
	ReportedLost int64 `json:"reported_lost"`
	GapDelivered int64 `json:"gap_delivered"`
	Resets       int64 `json:"resets"`
	// Replayed counts deliveries of messages published before the
	// connection that brought them was open: what since gave back (and,
	// from a hub that joins a subscriber before its 101, what was queued
	// for it during the handshake). They are left out of the latency
	// figures; their wait is the time to recover.
	Replayed int64 `json:"replayed"`
	// BadPositions counts messages whose position is wrong: an offset
	// that does not follow the publisher's sequence in its epoch, or a new
	// epoch without a reset notice.
	BadPositions int64 `json:"bad_positions"`
}

// merge adds s into r.
func (r *Reconnect) merge(s *Reconnect) {
	if r.Mode == "" {
		r.Mode = s.Mode
	}
	r.CannotResume = r.CannotResume || s.CannotResume
	r.MetaSubs += s.MetaSubs
	r.PlainSubs += s.PlainSubs
	r.Planned += s.Planned
	r.Cuts += s.Cuts
	r.Skipped += s.Skipped
	r.HubClosed += s.HubClosed
	r.Unplanned += s.Unplanned
	r.HubMissed += s.HubMissed
	for k, v := range s.CloseCodes {
		if r.CloseCodes == nil {
			r.CloseCodes = map[int]int{}
		}
		r.CloseCodes[k] += v
	}
	r.Reconnects += s.Reconnects
	r.Moved += s.Moved
	r.Resumed += s.Resumed
	r.Plain += s.Plain
	r.DialFailed += s.DialFailed
	r.DialErrors = mergeCounts(r.DialErrors, s.DialErrors)
	r.Recovered += s.Recovered
	r.Unrecovered += s.Unrecovered
	r.RecoverHist = mergeHist(r.RecoverHist, s.RecoverHist)
	r.ReopenHist = mergeHist(r.ReopenHist, s.ReopenHist)
	r.GapNotices += s.GapNotices
	r.ReportedLost += s.ReportedLost
	r.GapDelivered += s.GapDelivered
	r.Resets += s.Resets
	r.Replayed += s.Replayed
	r.BadPositions += s.BadPositions
}

// check adds what a reconnect run failed: positions refused or wrong, cuts
// not made, outages that did not end. Silent loss is Result.Check's.
func (r *Reconnect) check(add func(string, ...any)) {
	if !r.CannotResume && r.PlainSubs > 0 {
		add("%d subscribers got no positions: the hub did not accept the %s subprotocol", r.PlainSubs, "wspubsub.meta")
	}
	if r.Cuts < r.Planned/2 || r.Cuts == 0 && r.Planned > 0 {
		add("only %d of %d planned cuts were made (%d skipped)", r.Cuts, r.Planned, r.Skipped)
	}
	if r.Mode == "hub" && r.HubMissed > 0 {
		add("the hub did not close %d silent subscribers in time", r.HubMissed)
	}
	// A hub that cannot resume sends nothing to a subscriber that comes
	// back after the last message: only a hub that can must recover all.
	if r.Unrecovered > 0 && !r.CannotResume {
		add("%d subscribers had not recovered from a cut when the run ended", r.Unrecovered)
	}
	if r.ReportedLost > 0 && !r.AllowGaps {
		add("%d messages reported lost by %d gap notices (a history too short for the outages? --allow-gaps accepts them)", r.ReportedLost, r.GapNotices)
	}
	if r.GapDelivered > 0 {
		add("%d messages arrived although a gap notice said they would not", r.GapDelivered)
	}
	if r.BadPositions > 0 {
		add("%d messages came with a wrong position", r.BadPositions)
	}
}

// mergeHist adds src (which may be nil) to dst, made when nil.
func mergeHist(dst, src *Hist) *Hist {
	if src == nil {
		return dst
	}
	if dst == nil {
		dst = NewLatency()
	}
	dst.Merge(src)
	return dst
}

// summarize fills Recover and Reopen from their histograms.
func (r *Reconnect) summarize() {
	if r.RecoverHist != nil {
		r.Recover = Summarize(r.RecoverHist)
	}
	if r.ReopenHist != nil {
		r.Reopen = Summarize(r.ReopenHist)
	}
}
