package result

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record nanoseconds from 100 ns to 2 minutes with three
// significant digits; the per-bucket ones of a time series record
// microseconds with two, to stay small.
const (
	latLowest  = 100
	latHighest = 120e9
	latDigits  = 3

	seriesLowest  = 1
	seriesHighest = 120e6
	seriesDigits  = 2
)

// Hist is an HDR histogram that travels as JSON (base64 of the V2 compressed
// encoding) and merges by addition.
type Hist struct {
	H *hdrhistogram.Histogram
}

// NewLatency returns an empty histogram of latencies in nanoseconds.
func NewLatency() *Hist {
	return &Hist{H: hdrhistogram.New(latLowest, latHighest, latDigits)}
}

// NewSeriesLatency returns an empty histogram of latencies in microseconds,
// coarser, for one bucket of a time series.
func NewSeriesLatency() *Hist {
	return &Hist{H: hdrhistogram.New(seriesLowest, seriesHighest, seriesDigits)}
}

// Record adds one value, clamped to the histogram's range.
func (h *Hist) Record(v int64) {
	if v < h.H.LowestTrackableValue() {
		v = h.H.LowestTrackableValue()
	}
	if hi := h.H.HighestTrackableValue(); v > hi {
		v = hi
	}
	h.H.RecordValue(v)
}

// Merge adds the counts of o (which may be nil) to h.
func (h *Hist) Merge(o *Hist) {
	if o == nil || o.H == nil {
		return
	}
	h.H.Merge(o.H)
}

// Count returns the number of recorded values.
func (h *Hist) Count() int64 {
	if h == nil || h.H == nil {
		return 0
	}
	return h.H.TotalCount()
}

// Quantile returns the value at quantile q in [0, 100].
func (h *Hist) Quantile(q float64) int64 {
	if h.Count() == 0 {
		return 0
	}
	return h.H.ValueAtQuantile(q)
}

// Max returns the largest recorded value (to the histogram's precision).
func (h *Hist) Max() int64 {
	if h.Count() == 0 {
		return 0
	}
	return h.H.Max()
}

// MarshalJSON encodes the histogram compactly.
func (h *Hist) MarshalJSON() ([]byte, error) {
	if h == nil || h.H == nil {
		return []byte("null"), nil
	}
	b, err := h.H.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("cannot encode a histogram: %w", err)
	}
	return json.Marshal(string(b))
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (h *Hist) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		h.H = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("cannot decode a histogram: %w", err)
	}
	if raw, err := base64.StdEncoding.DecodeString(s); err != nil || len(raw) < 40 {
		return fmt.Errorf("cannot decode a histogram: not a V2 encoding (%v)", err)
	}
	d, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return fmt.Errorf("cannot decode a histogram: %w", err)
	}
	h.H = d
	return nil
}
