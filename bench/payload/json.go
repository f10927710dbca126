package payload

import (
	"strconv"
)

// A realistic JSON feed, for measuring compression: each message is a
// market-data update of 1-2 KB, an object with a handful of quotes whose
// symbols, prices, sizes and times vary from message to message (a random
// walk seeded by the sequence number), as an exchange gateway or a
// sports-score feed would publish it. No two messages are the same.

var symbols = [...]struct{ sym, name, venue string }{
	{"AAPL", "Apple Inc.", "XNAS"}, {"MSFT", "Microsoft Corporation", "XNAS"},
	{"GOOGL", "Alphabet Inc. Class A", "XNAS"}, {"AMZN", "Amazon.com, Inc.", "XNAS"},
	{"NVDA", "NVIDIA Corporation", "XNAS"}, {"META", "Meta Platforms, Inc.", "XNAS"},
	{"TSLA", "Tesla, Inc.", "XNAS"}, {"JPM", "JPMorgan Chase & Co.", "XNYS"},
	{"V", "Visa Inc.", "XNYS"}, {"XOM", "Exxon Mobil Corporation", "XNYS"},
	{"UNH", "UnitedHealth Group Incorporated", "XNYS"}, {"KO", "The Coca-Cola Company", "XNYS"},
	{"PEP", "PepsiCo, Inc.", "XNAS"}, {"DIS", "The Walt Disney Company", "XNYS"},
	{"NFLX", "Netflix, Inc.", "XNAS"}, {"INTC", "Intel Corporation", "XNAS"},
}

// rng is a small xorshift generator: the feed is the same for a seed.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	*r = rng(x)
	return x
}

func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// appendPrice appends cents as a decimal price with two places.
func appendPrice(dst []byte, cents int) []byte {
	dst = strconv.AppendInt(dst, int64(cents/100), 10)
	dst = append(dst, '.')
	c := cents % 100
	return append(dst, byte('0'+c/10), byte('0'+c%10))
}

// appendTime appends an RFC 3339 time with milliseconds, ms after a
// fixed trading day's open.
func appendTime(dst []byte, ms int64) []byte {
	h, m, s, milli := 13+ms/3600000%8, ms/60000%60, ms/1000%60, ms%1000
	dst = append(dst, "2026-03-12T"...)
	dst = append(dst, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+m/10), byte('0'+m%10), ':', byte('0'+s/10), byte('0'+s%10), '.')
	dst = append(dst, byte('0'+milli/100), byte('0'+milli/10%10), byte('0'+milli%10))
	return append(dst, 'Z')
}

// AppendJSON appends message seq of the JSON feed: between about 1 and 2
// KB (4 to 7 quotes).
func AppendJSON(dst []byte, seq uint64) []byte {
	r := rng(seq*0x9E3779B97F4A7C15 + 1)
	r.next()
	ms := 3600000 + int64(seq)*137 + int64(r.intn(100))
	dst = append(dst, `{"type":"quotes","seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"timestamp":"`...)
	dst = appendTime(dst, ms)
	dst = append(dst, `","source":"consolidated-feed-3","status":"open","quotes":[`...)
	n := 4 + r.intn(4)
	first := r.intn(len(symbols))
	for i := range n {
		s := symbols[(first+i*3)%len(symbols)]
		base := 2000 + (first+i*7)%len(symbols)*2731 + r.intn(500)
		spread := 1 + r.intn(6)
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"symbol":"`...)
		dst = append(dst, s.sym...)
		dst = append(dst, `","name":"`...)
		dst = append(dst, s.name...)
		dst = append(dst, `","exchange":"`...)
		dst = append(dst, s.venue...)
		dst = append(dst, `","currency":"USD","bidPrice":`...)
		dst = appendPrice(dst, base)
		dst = append(dst, `,"askPrice":`...)
		dst = appendPrice(dst, base+spread)
		dst = append(dst, `,"bidSize":`...)
		dst = strconv.AppendInt(dst, int64(100*(1+r.intn(40))), 10)
		dst = append(dst, `,"askSize":`...)
		dst = strconv.AppendInt(dst, int64(100*(1+r.intn(40))), 10)
		dst = append(dst, `,"lastPrice":`...)
		dst = appendPrice(dst, base+r.intn(spread+1))
		dst = append(dst, `,"lastSize":`...)
		dst = strconv.AppendInt(dst, int64(1+r.intn(2000)), 10)
		dst = append(dst, `,"change":`...)
		chg := r.intn(600) - 300
		if chg < 0 {
			dst = append(dst, '-')
			chg = -chg
		}
		dst = appendPrice(dst, chg)
		dst = append(dst, `,"volume":`...)
		dst = strconv.AppendInt(dst, int64(100000+r.intn(90000000)), 10)
		dst = append(dst, `,"tradeTime":"`...)
		dst = appendTime(dst, ms-int64(r.intn(2000)))
		dst = append(dst, `","halted":false}`...)
	}
	return append(dst, "]}"...)
}

// Feed appends message seq of a realistic JSON feed to dst; no two
// messages of a feed are the same.
type Feed func(dst []byte, seq uint64) []byte

// Feeds are the JSON feeds by the name wspubsub-bench's --feed takes:
// "quotes" (AppendJSON, market data) and "scores" (AppendScores, live
// football).
var Feeds = map[string]Feed{"quotes": AppendJSON, "scores": AppendScores}

// FillJSON is FillFeed with the market-data feed (AppendJSON).
func FillJSON(b []byte, pub uint32, seq uint64, sentNs int64) {
	FillFeed(b, AppendJSON, pub, seq, sentNs)
}

// FillFeed is Fill with the padding taken from feed: message seq (and the
// next ones, if it is shorter than the padding), cut to fit, between a
// padding byte at each end (which Parse checks). It reads as any message;
// its content compresses like the feed.
func FillFeed(b []byte, feed Feed, pub uint32, seq uint64, sentNs int64) {
	Fill(b, pub, seq, sentNs)
	if len(b) < MinSize+2 {
		return
	}
	pad := b[25 : len(b)-9]
	var buf [4096]byte
	for s := seq; len(pad) > 0; s += 1 << 32 {
		pad = pad[copy(pad, feed(buf[:0], s)):]
	}
}
