package result

import (
	"encoding/json"
	"testing"
)

func part(t *testing.T, lat []int64, series [][]int64, delivered int64) Part {
	t.Helper()
	p := Part{
		Subscribers: 3, DialFailed: 1, DialErrors: map[string]int{"HTTP 404": 1},
		FirstDial: 100, LastOpen: 200,
		Expected: 10, Delivered: delivered, Unique: delivered, Lost: 10 - delivered,
		Bytes: delivered * 128, CloseCodes: map[int]int{4000: 1},
		FirstRecv: 300, LastRecv: 400, ClientCPU: 5,
		Latency:     NewLatency(),
		SeriesStart: 1000, SeriesWidth: 1e8,
		Churn: Churn{Opened: 2, Delivered: 4, Errors: map[string]int{"timeout": 1}},
	}
	for _, v := range lat {
		p.Latency.Record(v)
	}
	for _, b := range series {
		bk := Bucket{Latency: NewSeriesLatency()}
		for _, v := range b {
			bk.Deliveries++
			bk.Bytes += 128
			bk.Latency.Record(v)
		}
		p.Series = append(p.Series, bk)
	}
	return p
}

// roundTrip sends a Part through JSON as a worker process does.
func roundTrip(t *testing.T, p Part) Part {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q Part
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

func TestMergeWorkerParts(t *testing.T) {
	a := roundTrip(t, part(t, []int64{10_000, 20_000, 30_000}, [][]int64{{10, 20}, {30}}, 7))
	b := roundTrip(t, part(t, []int64{1_000_000}, [][]int64{{5}, {}, {1000, 2000}}, 10))
	b.FirstDial, b.LastOpen, b.FirstRecv, b.LastRecv = 50, 250, 350, 500

	var m Part
	Merge(&m, &a)
	Merge(&m, &b)

	if m.Subscribers != 6 || m.DialFailed != 2 || m.DialErrors["HTTP 404"] != 2 {
		t.Errorf("connect counts: %+v", m)
	}
	if m.FirstDial != 50 || m.LastOpen != 250 || m.FirstRecv != 300 || m.LastRecv != 500 {
		t.Errorf("time bounds: dial %d..%d recv %d..%d", m.FirstDial, m.LastOpen, m.FirstRecv, m.LastRecv)
	}
	if m.Expected != 20 || m.Delivered != 17 || m.Lost != 3 || m.Bytes != 17*128 || m.ClientCPU != 10 {
		t.Errorf("delivery counts: %+v", m)
	}
	if m.CloseCodes[4000] != 2 || m.Churn.Opened != 4 || m.Churn.Delivered != 8 || m.Churn.Errors["timeout"] != 2 {
		t.Errorf("closes or churn: %+v %+v", m.CloseCodes, m.Churn)
	}
	if m.Latency.Count() != 4 {
		t.Fatalf("latency count %d, want 4", m.Latency.Count())
	}
	if mx := m.Latency.Max(); mx < 999_000 || mx > 1_001_000 {
		t.Errorf("latency max %d, want ~1e6", mx)
	}
	if p50 := m.Latency.Quantile(50); p50 < 19_900 || p50 > 20_100 {
		t.Errorf("latency p50 %d, want ~20000", p50)
	}
	if len(m.Series) != 3 {
		t.Fatalf("series length %d, want 3", len(m.Series))
	}
	want := []int64{3, 1, 2}
	for i, w := range want {
		if m.Series[i].Deliveries != w || m.Series[i].Latency.Count() != w {
			t.Errorf("bucket %d: %d deliveries, %d latencies, want %d", i, m.Series[i].Deliveries, m.Series[i].Latency.Count(), w)
		}
	}
	pts := Points(&m)
	if len(pts) != 3 || pts[0].Deliveries != 30 || pts[2].Max < 1990 || pts[2].Max > 2010 {
		t.Errorf("points: %+v", pts)
	}
}

func TestCheck(t *testing.T) {
	r := Result{Expected: 10, Delivered: 10}
	r.Check()
	if !r.Pass() {
		t.Fatalf("clean run fails: %v", r.Failures)
	}
	r.Lost, r.OutOfOrder = 1, 2
	r.Churn = &Churn{Gaps: 1}
	r.Check()
	if r.Pass() || len(r.Failures) != 3 {
		t.Fatalf("failures: %v", r.Failures)
	}
}

func TestReconnectMergeAndCheck(t *testing.T) {
	mk := func(lost int64, recover ...int64) Part {
		p := Part{Expected: 100, Delivered: 100 - lost, Unique: 100 - lost, Lost: lost, Latency: NewLatency()}
		rc := &p.Reconnect
		rc.Mode, rc.MetaSubs, rc.Planned, rc.Cuts, rc.Reconnects, rc.Resumed = "client", 1, 2, 2, 2, 2
		rc.CloseCodes = map[int]int{4003: 1}
		rc.DialErrors = map[string]int{"HTTP 503": 1}
		rc.RecoverHist, rc.ReopenHist = NewLatency(), NewLatency()
		for _, v := range recover {
			rc.RecoverHist.Record(v)
			rc.ReopenHist.Record(v / 2)
			rc.Recovered++
		}
		return p
	}
	var m Part
	for _, p := range []Part{mk(0, 1e6, 2e6), mk(3, 3e6, 4e6)} {
		p = roundTrip(t, p)
		Merge(&m, &p)
	}
	rc := m.Reconnect
	if rc.Mode != "client" || rc.MetaSubs != 2 || rc.Cuts != 4 || rc.Recovered != 4 || rc.CloseCodes[4003] != 2 || rc.DialErrors["HTTP 503"] != 2 {
		t.Fatalf("merged: %+v", rc)
	}
	if rc.RecoverHist.Count() != 4 || rc.ReopenHist.Count() != 4 || rc.RecoverHist.Max() < 3.9e6 {
		t.Fatalf("merged histograms: %d %d max %d", rc.RecoverHist.Count(), rc.ReopenHist.Count(), rc.RecoverHist.Max())
	}
	r := &Result{Lost: m.Lost, Expected: m.Expected, Reconnect: &rc}
	r.Check()
	if r.Pass() || r.Reconnect.Recover.Count != 4 || r.Reconnect.Reopen.P50 <= 0 {
		t.Fatalf("a resuming hub's loss passed, or no summary: %v %+v", r.Failures, r.Reconnect.Recover)
	}
	rc.CannotResume, rc.PlainSubs, rc.MetaSubs = true, 2, 0
	r.Check()
	if !r.Pass() {
		t.Errorf("the reference's loss failed: %v", r.Failures)
	}
	rc.CannotResume, rc.PlainSubs = false, 2
	r.Lost = 0
	r.Check()
	if r.Pass() {
		t.Error("a hub without positions passed")
	}
	rc.PlainSubs, rc.MetaSubs, rc.GapNotices, rc.ReportedLost = 0, 2, 1, 5
	r.Check()
	if r.Pass() {
		t.Error("gaps passed without AllowGaps")
	}
	rc.AllowGaps = true
	r.Check()
	if !r.Pass() {
		t.Errorf("gaps failed with AllowGaps: %v", r.Failures)
	}
}
