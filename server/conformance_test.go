package server_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wspubsub/wspubsub/server"
)

// The project's own WebSocket conformance table. It mirrors the protocol
// sections of the Autobahn TestSuite (fuzzingclient, cases 1 to 7: framing,
// pings and pongs, reserved bits, opcodes, fragmentation, UTF-8, closing),
// since neither Autobahn nor its Python and Docker run here. Each case is
// raw bytes a hand-driven TCP client writes after its 101, on the publisher
// endpoint and on the subscriber endpoint, and what the hub must answer.
//
// Where the hub differs from an echo server, the table says what it does
// instead: a publisher's messages are "echoed" to a subscriber of its topic
// (conf.fwd), and a subscriber's messages are read and dropped (a
// subscriber's text is not checked for UTF-8: it goes nowhere). Autobahn's
// cases 9 (performance), 10 (auto-fragmentation) and 12-13 (permessage-
// deflate, which the hub never negotiates) have no row; the other tests
// named in SECURITY.md cover the rest of the hostile input.

// confMsg is a message a subscriber must receive: its opcode and bytes.
type confMsg struct {
	op   byte
	data []byte
}

// conf is one conformance case.
type conf struct {
	id   string // the Autobahn case(s) it mirrors; "x" for cases of our own
	name string
	// send is the frames the client writes, in order; split says how:
	// wholeWrite, perFrame, or in pieces of that many bytes.
	send  [][]byte
	split int
	// pongs are the pongs the hub answers, in order.
	pongs [][]byte
	// fwd are the messages a subscriber of the topic gets when the client
	// is the publisher.
	fwd []confMsg
	// end is the code of the close frame the hub sends a publisher
	// (end[0]) and a subscriber (end[1]) after the pongs, or open (0): the
	// connection stays up. When the client sent a close frame, it is the
	// hub's echo.
	end [2]uint16
}

const (
	wholeWrite = 0  // all frames in one write
	perFrame   = -1 // one write per frame (Autobahn's "frame-wise chop")
)

// Outcomes for conf.end.
var open = [2]uint16{}

func both(code uint16) [2]uint16    { return [2]uint16{code, code} }
func pubOnly(code uint16) [2]uint16 { return [2]uint16{code, 0} }

// Frame builders: fr is a masked frame with FIN set when fin.
func fr(fin bool, op byte, payload []byte) []byte {
	if fin {
		op |= finBit
	}
	return masked(op, payload)
}

func txt(s string) []byte       { return fr(true, opText, []byte(s)) }
func bin(b []byte) []byte       { return fr(true, opBin, b) }
func ping(s string) []byte      { return fr(true, opPing, []byte(s)) }
func pong(s string) []byte      { return fr(true, opPong, []byte(s)) }
func closeF(code uint16) []byte { return fr(true, opClose, closePayload(code, "")) }
func closeR(code uint16, reason string) []byte {
	return fr(true, opClose, closePayload(code, reason))
}
func frames(fs ...[]byte) [][]byte { return fs }
func pongs(ps ...string) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = []byte(p)
	}
	return out
}
func textMsg(s string) []confMsg { return []confMsg{{opText, []byte(s)}} }
func binMsg(b []byte) []confMsg  { return []confMsg{{opBin, b}} }
func msgs(ms ...[]confMsg) []confMsg {
	var out []confMsg
	for _, m := range ms {
		out = append(out, m...)
	}
	return out
}

// rsv sets reserved bits (1 to 7) on a frame's first byte.
func rsv(bits byte, frame []byte) []byte {
	frame[0] |= bits << 4
	return frame
}

// utf8Samples are Autobahn's section 6 payloads (from Markus Kuhn's UTF-8
// decoder stress test): valid text must be forwarded as is, invalid text
// closes the publisher with 1007.
var utf8Samples = []struct {
	id    string
	s     string
	valid bool
}{
	{"6.2", "Hello-µ@ßöäüàá-UTF-8!!", true},
	{"6.3", "κόσμε\xed\xa0\x80edited", false},
	{"6.4.1", "κόσμε\xf4\x90\x80\x80edited", false},
	{"6.4.3", "κόσμε\xf4\x90\x80\x80\x80\x80", false},
	{"6.5.1", "κόσμε", true},
	{"6.5.2", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true},
	{"6.6", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", false},
	{"6.7.1", "\x00", true},
	{"6.7.2", "\xc2\x80", true},
	{"6.7.3", "\xe0\xa0\x80", true},
	{"6.7.4", "\xf0\x90\x80\x80", true},
	{"6.8.1", "\xf8\x88\x80\x80\x80", false},
	{"6.8.2", "\xfc\x84\x80\x80\x80\x80", false},
	{"6.9.1", "\x7f", true},
	{"6.9.2", "\xdf\xbf", true},
	{"6.9.3", "\xef\xbf\xbf", true},
	{"6.9.4", "\xf4\x8f\xbf\xbf", true},
	{"6.10.1", "\xf7\xbf\xbf\xbf", false},
	{"6.10.2", "\xfb\xbf\xbf\xbf\xbf", false},
	{"6.10.3", "\xfd\xbf\xbf\xbf\xbf\xbf", false},
	{"6.11.1", "\xed\x9f\xbf", true},
	{"6.11.2", "\xee\x80\x80", true},
	{"6.11.3", "\xef\xbf\xbd", true},
	{"6.11.4", "\xf4\x8f\xbf\xbf", true},
	{"6.11.5", "\xf4\x90\x80\x80", false},
	{"6.12.1", "\x80", false},
	{"6.12.2", "\xbf", false},
	{"6.12.3", "\x80\xbf", false},
	{"6.12.4", "\x80\xbf\x80", false},
	{"6.12.8", "\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f", false},
	{"6.13.1", "\xc0 \xc1 \xc2 \xdf ", false},
	{"6.13.2", "\xe0 \xef ", false},
	{"6.13.3", "\xf0 \xf7 ", false},
	{"6.13.4", "\xf8 \xfb ", false},
	{"6.13.5", "\xfc \xfd ", false},
	{"6.14.1", "\xc0", false},
	{"6.14.2", "\xe0\x80", false},
	{"6.14.3", "\xf0\x80\x80", false},
	{"6.14.6", "\xdf", false},
	{"6.14.7", "\xef\xbf", false},
	{"6.14.8", "\xf7\xbf\xbf", false},
	{"6.15.1", "\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf", false},
	{"6.16.1", "\xfe", false},
	{"6.16.2", "\xff", false},
	{"6.16.3", "\xfe\xfe\xff\xff", false},
	{"6.17.1", "\xc0\xaf", false},
	{"6.17.2", "\xe0\x80\xaf", false},
	{"6.17.3", "\xf0\x80\x80\xaf", false},
	{"6.18.1", "\xc1\xbf", false},
	{"6.18.2", "\xe0\x9f\xbf", false},
	{"6.18.3", "\xf0\x8f\xbf\xbf", false},
	{"6.19.1", "\xc0\x80", false},
	{"6.19.2", "\xe0\x80\x80", false},
	{"6.20.1", "\xed\xa0\x80", false},
	{"6.20.4", "\xed\xae\x80", false},
	{"6.20.7", "\xed\xbf\xbf", false},
	{"6.21.1", "\xed\xa0\x80\xed\xb0\x80", false},
	{"6.21.8", "\xed\xaf\xbf\xed\xbf\xbf", false},
	{"6.22.1", "\xef\xbf\xbe", true},
	{"6.22.2", "\xef\xbf\xbf", true},
	{"6.22.3", "\xf0\x9f\xbf\xbe", true},
	{"6.22.34", "\xf4\x8f\xbf\xbf", true},
	{"6.23.1", "\xef\xbf\xbd", true},
	{"x", "a\xf0\x9d\x84\x9e€é", true},
	{"x", strings.Repeat("é", 20) + "\xe2\x82", false},
}

// utf8Cases turns each sample into text messages sent whole, written a
// byte at a time, fragmented into one frame per byte, and fragmented into
// two frames cut at every byte: the hub must judge the message, never a
// fragment or a read.
func utf8Cases() []conf {
	var out []conf
	for _, u := range utf8Samples {
		p := []byte(u.s)
		c := conf{id: u.id, fwd: textMsg(u.s), end: open}
		if !u.valid {
			c.fwd, c.end = nil, pubOnly(1007)
		}
		add := func(how string, split int, fs ...[]byte) {
			c := c
			c.name, c.split, c.send = fmt.Sprintf("%.12q %s", u.s, how), split, fs
			out = append(out, c)
		}
		add("whole", wholeWrite, txt(u.s))
		add("written a byte at a time", 1, txt(u.s))
		var each [][]byte
		for i := range p {
			op := byte(opCont)
			if i == 0 {
				op = opText
			}
			each = append(each, fr(i == len(p)-1, op, p[i:i+1]))
		}
		add("a frame per byte", wholeWrite, each...)
		for k := 1; k < len(p); k++ {
			add(fmt.Sprintf("fragments cut at byte %d", k), perFrame, fr(false, opText, p[:k]), fr(true, opCont, p[k:]))
		}
	}
	return out
}

func confCases() []conf {
	star := func(n int) string { return strings.Repeat("*", n) }
	fe := func(n int) []byte { return bytes.Repeat([]byte{0xfe}, n) }
	big := strings.Repeat("0123456789abcdef", 4<<10) // 64 KiB
	var cases []conf

	// 1: framing. Text and binary of every length class, whole and in
	// chunks of 997 bytes.
	for i, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		cases = append(cases,
			conf{id: fmt.Sprintf("1.1.%d", i+1), name: fmt.Sprintf("text of %d bytes", n), send: frames(txt(star(n))), fwd: textMsg(star(n))},
			conf{id: fmt.Sprintf("1.2.%d", i+1), name: fmt.Sprintf("binary of %d bytes", n), send: frames(bin(fe(n))), fwd: binMsg(fe(n))})
	}
	cases = append(cases,
		conf{id: "1.1.8", name: "text of 65536 bytes in chunks of 997", send: frames(txt(star(65536))), split: 997, fwd: textMsg(star(65536))},
		conf{id: "1.2.8", name: "binary of 65536 bytes in chunks of 997", send: frames(bin(fe(65536))), split: 997, fwd: binMsg(fe(65536))},
		conf{id: "x", name: "64-bit length for a short payload", send: frames(append([]byte{finBit | opBin, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0}, 1, 2, 3)), fwd: binMsg([]byte{1, 2, 3})},
		conf{id: "x", name: "100 messages in one write", send: func() [][]byte {
			var fs [][]byte
			for i := range 100 {
				fs = append(fs, txt(fmt.Sprint(i)))
			}
			return fs
		}(), fwd: func() []confMsg {
			var ms []confMsg
			for i := range 100 {
				ms = append(ms, textMsg(fmt.Sprint(i))...)
			}
			return ms
		}()},
		conf{id: "x", name: "binary of 1 MiB + 1 (limit)", send: frames(bin(fe(1<<20 + 1))), end: both(1009)},
		conf{id: "x", name: "fragments adding up to 1 MiB + 1 (limit)", send: frames(fr(false, opBin, fe(1<<19)), fr(false, opCont, fe(1<<19)), fr(true, opCont, fe(1))), end: both(1009)},
		conf{id: "x", name: "length with its top bit set", send: frames([]byte{finBit | opBin, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}), end: both(1002)},
		conf{id: "x", name: "unmasked text", send: frames(unmasked(finBit|opText, []byte("hello"))), end: both(1002)},
		conf{id: "x", name: "unmasked ping after a message", send: frames(txt("first"), unmasked(finBit|opPing, nil)), fwd: textMsg("first"), end: both(1002)},
	)

	// 2: pings and pongs.
	binPing := string([]byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff})
	var ten, tenPongs []string
	for i := range 10 {
		ten = append(ten, fmt.Sprintf("payload-%d", i))
	}
	tenPongs = ten
	tenPings := func() [][]byte {
		var fs [][]byte
		for _, p := range ten {
			fs = append(fs, ping(p))
		}
		return fs
	}
	cases = append(cases,
		conf{id: "2.1", name: "ping without payload", send: frames(ping("")), pongs: pongs("")},
		conf{id: "2.2", name: "ping with a text payload", send: frames(ping("Hello, world!")), pongs: pongs("Hello, world!")},
		conf{id: "2.3", name: "ping with a binary payload", send: frames(ping(binPing)), pongs: pongs(binPing)},
		conf{id: "2.4", name: "ping of 125 bytes", send: frames(ping(star(125))), pongs: pongs(star(125))},
		conf{id: "2.5", name: "ping of 126 bytes", send: frames(ping(star(126))), end: both(1002)},
		conf{id: "2.6", name: "ping of 125 bytes a byte at a time", send: frames(ping(star(125))), split: 1, pongs: pongs(star(125))},
		conf{id: "2.7", name: "unsolicited pong without payload", send: frames(pong(""))},
		conf{id: "2.8", name: "unsolicited pong with payload", send: frames(pong("unsolicited pong payload"))},
		conf{id: "2.9", name: "unsolicited pong, then ping", send: frames(pong("unsolicited pong payload"), ping("ping payload")), pongs: pongs("ping payload")},
		conf{id: "2.10", name: "10 pings", send: tenPings(), pongs: pongs(tenPongs...)},
		conf{id: "2.11", name: "10 pings, frame by frame", send: tenPings(), split: perFrame, pongs: pongs(tenPongs...)},
		conf{id: "x", name: "10 pings a byte at a time", send: tenPings(), split: 1, pongs: pongs(tenPongs...)},
		conf{id: "x", name: "pings between messages", send: frames(txt("a"), ping("1"), bin([]byte("b")), ping("2")), pongs: pongs("1", "2"), fwd: msgs(textMsg("a"), binMsg([]byte("b")))},
	)

	// 3: reserved bits. A message before the bad frame is forwarded; the
	// ping after it is not answered.
	cases = append(cases,
		conf{id: "3.1", name: "RSV1 on a text", send: frames(rsv(1, txt("Hello"))), end: both(1002)},
		conf{id: "3.2", name: "text, RSV2 text, ping", send: frames(txt("Hello"), rsv(2, txt("Hello")), ping("")), fwd: textMsg("Hello"), end: both(1002)},
		conf{id: "3.3", name: "text, RSV3 text, ping, frame by frame", send: frames(txt("Hello"), rsv(3, txt("Hello")), ping("")), split: perFrame, fwd: textMsg("Hello"), end: both(1002)},
		conf{id: "3.4", name: "text, RSV4 text, ping, a byte at a time", send: frames(txt("Hello"), rsv(4, txt("Hello")), ping("")), split: 1, fwd: textMsg("Hello"), end: both(1002)},
		conf{id: "3.5", name: "RSV5 on a binary", send: frames(rsv(5, bin(fe(8)))), end: both(1002)},
		conf{id: "3.6", name: "RSV6 on a ping", send: frames(rsv(6, ping("Hello"))), end: both(1002)},
		conf{id: "3.7", name: "RSV7 on a close", send: frames(rsv(7, closeF(1000))), end: both(1002)},
		conf{id: "x", name: "RSV1 on a continuation", send: frames(fr(false, opText, []byte("a")), rsv(1, fr(true, opCont, []byte("b")))), end: both(1002)},
		conf{id: "x", name: "RSV1 on a pong", send: frames(rsv(1, pong(""))), end: both(1002)},
	)

	// 4: reserved opcodes.
	for _, reserved := range []struct {
		section string
		ops     []byte
	}{{"4.1", []byte{3, 4, 5, 6, 7}}, {"4.2", []byte{11, 12, 13, 14, 15}}} { // data, then control
		for i, op := range reserved.ops {
			c := conf{id: fmt.Sprintf("%s.%d", reserved.section, i+1), name: fmt.Sprintf("opcode %d", op), send: frames(fr(true, op, nil)), end: both(1002)}
			if i >= 1 {
				c.send = frames(fr(true, op, []byte("reserved")))
			}
			if i >= 2 {
				c.name = fmt.Sprintf("text, opcode %d, ping", op)
				c.send, c.fwd = frames(txt("Hello"), fr(true, op, []byte("reserved")), ping("")), textMsg("Hello")
			}
			if i == 4 {
				c.split = 1
			}
			cases = append(cases, c)
		}
	}

	// 5: fragmentation.
	f := func(fin bool, op byte, s string) []byte { return fr(fin, op, []byte(s)) }
	pingBetween := frames(f(false, opText, "fragment1"), ping("pongme!"), f(true, opCont, "fragment2"))
	noStart := frames(f(true, opCont, "non-continuation payload"), f(false, opText, "fragment1"), f(true, opCont, "fragment2"))
	noStartOpen := frames(f(false, opCont, "non-continuation payload"), f(false, opText, "fragment1"), f(true, opCont, "fragment2"))
	five := frames(f(false, opText, "fragment1"), f(false, opCont, "fragment2"), ping("pongme 1!"), f(false, opCont, "fragment3"),
		f(false, opCont, "fragment4"), ping("pongme 2!"), f(true, opCont, "fragment5"))
	cases = append(cases,
		conf{id: "5.1", name: "ping in 2 fragments", send: frames(f(false, opPing, "fragment1"), f(true, opCont, "fragment2")), end: both(1002)},
		conf{id: "5.2", name: "pong in 2 fragments", send: frames(f(false, opPong, "fragment1"), f(true, opCont, "fragment2")), end: both(1002)},
		conf{id: "5.3", name: "text in 2 fragments", send: frames(f(false, opText, "fragment1"), f(true, opCont, "fragment2")), fwd: textMsg("fragment1fragment2")},
		conf{id: "5.4", name: "text in 2 fragments, frame by frame", send: frames(f(false, opText, "fragment1"), f(true, opCont, "fragment2")), split: perFrame, fwd: textMsg("fragment1fragment2")},
		conf{id: "5.5", name: "text in 2 fragments, a byte at a time", send: frames(f(false, opText, "fragment1"), f(true, opCont, "fragment2")), split: 1, fwd: textMsg("fragment1fragment2")},
		conf{id: "5.6", name: "text in 2 fragments, ping between", send: pingBetween, pongs: pongs("pongme!"), fwd: textMsg("fragment1fragment2")},
		conf{id: "5.7", name: "text in 2 fragments, ping between, frame by frame", send: pingBetween, split: perFrame, pongs: pongs("pongme!"), fwd: textMsg("fragment1fragment2")},
		conf{id: "5.8", name: "text in 2 fragments, ping between, a byte at a time", send: pingBetween, split: 1, pongs: pongs("pongme!"), fwd: textMsg("fragment1fragment2")},
		conf{id: "5.9", name: "final continuation without a start", send: noStart, end: both(1002)},
		conf{id: "5.10", name: "final continuation without a start, frame by frame", send: noStart, split: perFrame, end: both(1002)},
		conf{id: "5.11", name: "final continuation without a start, a byte at a time", send: noStart, split: 1, end: both(1002)},
		conf{id: "5.12", name: "continuation without a start", send: noStartOpen, end: both(1002)},
		conf{id: "5.13", name: "continuation without a start, frame by frame", send: noStartOpen, split: perFrame, end: both(1002)},
		conf{id: "5.14", name: "continuation without a start, a byte at a time", send: noStartOpen, split: 1, end: both(1002)},
		conf{id: "5.15", name: "continuation after the message ended", send: frames(f(false, opText, "fragment1"), f(true, opCont, "fragment2"), f(false, opCont, "fragment3"), f(true, opText, "fragment4")), fwd: textMsg("fragment1fragment2"), end: both(1002)},
		conf{id: "5.16", name: "continuations around a text, twice", send: frames(f(false, opCont, "fragment1"), f(true, opCont, "fragment2"), f(false, opText, "fragment3"), f(true, opCont, "fragment4"), f(false, opCont, "fragment1"), f(true, opCont, "fragment2"), f(false, opText, "fragment3"), f(true, opCont, "fragment4")), end: both(1002)},
		conf{id: "5.17", name: "final continuations around a text, twice", send: frames(f(true, opCont, "fragment1"), f(true, opCont, "fragment2"), f(false, opText, "fragment3"), f(true, opCont, "fragment4"), f(true, opCont, "fragment1"), f(true, opCont, "fragment2"), f(false, opText, "fragment3"), f(true, opCont, "fragment4")), end: both(1002)},
		conf{id: "5.18", name: "text inside a fragmented text", send: frames(f(false, opText, "fragment1"), f(true, opText, "fragment2")), end: both(1002)},
		conf{id: "5.19", name: "text in 5 fragments with 2 pings", send: five, pongs: pongs("pongme 1!", "pongme 2!"), fwd: textMsg("fragment1fragment2fragment3fragment4fragment5")},
		conf{id: "5.20", name: "text in 5 fragments with 2 pings, frame by frame", send: five, split: perFrame, pongs: pongs("pongme 1!", "pongme 2!"), fwd: textMsg("fragment1fragment2fragment3fragment4fragment5")},
		conf{id: "x", name: "binary inside a fragmented text", send: frames(f(false, opText, "a"), f(true, opBin, "b")), end: both(1002)},
		conf{id: "x", name: "fragmented close", send: frames(fr(false, opClose, closePayload(1000, ""))), end: both(1002)},
		conf{id: "x", name: "binary in 3 fragments, the middle empty", send: frames(fr(false, opBin, []byte{1}), fr(false, opCont, nil), fr(true, opCont, []byte{2})), fwd: binMsg([]byte{1, 2})},
	)

	// 6: UTF-8. Empty text, then the samples in every split.
	cases = append(cases,
		conf{id: "6.1.1", name: "empty text", send: frames(txt("")), fwd: textMsg("")},
		conf{id: "6.1.2", name: "empty text in 3 empty fragments", send: frames(f(false, opText, ""), f(false, opCont, ""), f(true, opCont, "")), fwd: textMsg("")},
		conf{id: "6.1.3", name: "empty fragments around a payload", send: frames(f(false, opText, ""), f(false, opCont, "middle frame payload"), f(true, opCont, "")), fwd: textMsg("middle frame payload")},
		conf{id: "x", name: "invalid UTF-8 in a binary message is forwarded", send: frames(bin([]byte("\xff\xfe\xed\xa0\x80"))), fwd: binMsg([]byte("\xff\xfe\xed\xa0\x80"))},
	)
	cases = append(cases, utf8Cases()...)

	// 7: closing. The hub echoes a client's close code and ends the
	// connection; nothing after a close frame is read.
	cases = append(cases,
		conf{id: "7.1.1", name: "text, then close", send: frames(txt("Hello World!"), closeF(1000)), fwd: textMsg("Hello World!"), end: both(1000)},
		conf{id: "7.1.2", name: "close twice", send: frames(closeF(1000), closeF(1000)), end: both(1000)},
		conf{id: "7.1.3", name: "close, then ping", send: frames(closeF(1000), ping("Hello World!")), end: both(1000)},
		conf{id: "7.1.4", name: "close, then text", send: frames(closeF(1000), txt("Hello World!")), end: both(1000)},
		conf{id: "7.1.5", name: "close inside a fragmented text", send: frames(f(false, opText, "fragment1"), closeF(1000), f(true, opCont, "fragment2")), end: both(1000)},
		conf{id: "7.1.6", name: "3 × 64 KiB text, close, ping", send: frames(txt(big), txt(big), txt(big), closeF(1000), ping("Hello World!")), fwd: msgs(textMsg(big), textMsg(big), textMsg(big)), end: both(1000)},
		conf{id: "7.3.1", name: "close without payload", send: frames(fr(true, opClose, nil)), end: both(1000)},
		conf{id: "7.3.2", name: "close with a 1-byte payload", send: frames(fr(true, opClose, []byte{0x03})), end: both(1002)},
		conf{id: "7.3.3", name: "close 1000 without reason", send: frames(closeF(1000)), end: both(1000)},
		conf{id: "7.3.4", name: "close 1000 with a reason", send: frames(closeR(1000, "Hello World!")), end: both(1000)},
		conf{id: "7.3.5", name: "close with a 123-byte reason", send: frames(closeR(1000, star(123))), end: both(1000)},
		conf{id: "7.3.6", name: "close with a 124-byte reason", send: frames(closeR(1000, star(124))), end: both(1002)},
		conf{id: "7.5.1", name: "close with an invalid UTF-8 reason", send: frames(closeR(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")), end: both(1007)},
		conf{id: "x", name: "close with a reason cut inside a character", send: frames(closeR(1000, "é"[:1])), end: both(1007)},
	)
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cases = append(cases, conf{id: fmt.Sprintf("7.7.%d", i+1), name: fmt.Sprintf("close %d is echoed", code), send: frames(closeF(code)), end: both(code)})
	}
	for _, code := range []uint16{1012, 1013, 1014} {
		cases = append(cases, conf{id: "x", name: fmt.Sprintf("close %d (IANA-registered) is echoed", code), send: frames(closeF(code)), end: both(code)})
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999} {
		cases = append(cases, conf{id: fmt.Sprintf("7.9.%d", i+1), name: fmt.Sprintf("close %d is refused", code), send: frames(closeF(code)), end: both(1002)})
	}
	cases = append(cases,
		conf{id: "x", name: "close 1015 is refused", send: frames(closeF(1015)), end: both(1002)},
		conf{id: "7.13.1", name: "close 5000 is refused", send: frames(closeF(5000)), end: both(1002)},
		conf{id: "7.13.2", name: "close 65535 is refused", send: frames(closeF(65535)), end: both(1002)},
	)
	return cases
}

// TestConformance runs every case of the table against a publisher and a
// subscriber endpoint of one hub. The subscriber input limit is raised so
// the cases test the protocol, not the flood limit (TestSubscriberFloodIsClosed
// does that).
func TestConformance(t *testing.T) {
	h := startHub(t, func(c *server.Config) { c.SubscriberInputLimit = 64 << 20 })
	cases := confCases()
	seen := map[string]bool{}
	for i, c := range cases {
		name := c.id + " " + c.name
		if seen[name] {
			t.Fatalf("two cases named %q", name)
		}
		seen[name] = true
		for role, endpoint := range []string{"publisher", "subscriber"} {
			t.Run(name+"/"+endpoint, func(t *testing.T) {
				t.Parallel()
				runConf(t, h, c, role, fmt.Sprintf("conf%d-%s", i, endpoint))
			})
		}
	}
}

func runConf(t *testing.T, h *hub, c conf, role int, topic string) {
	// On the publisher endpoint a raw subscriber watches what is
	// forwarded; on the subscriber endpoint the topic's publisher must
	// hear nothing.
	pub := h.rawPub(t, "test", topic)
	var client, watcher *rawClient
	if role == 0 {
		client, watcher = pub, h.rawSub(t, "test", topic)
	} else {
		client = h.rawSub(t, "test", topic)
	}
	want := c.end[role]
	stream := c.send
	if want == 0 {
		stream = append(stream[:len(stream):len(stream)], ping("sync"))
	}
	var pieces [][]byte
	switch {
	case c.split == perFrame:
		pieces = stream
	case c.split > 0:
		all := bytes.Join(stream, nil)
		for i := 0; i < len(all); i += c.split {
			pieces = append(pieces, all[i:min(i+c.split, len(all))])
		}
	default:
		pieces = [][]byte{bytes.Join(stream, nil)}
	}
	client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, p := range pieces {
		if _, err := client.Write(p); err != nil {
			// Once the hub has failed the connection it may drop what
			// follows: a write can fail then, and only then.
			if want == 0 {
				t.Fatalf("write: %v", err)
			}
			break
		}
	}

	for _, p := range c.pongs {
		client.expectFrame(t, finBit|opPong, p)
	}
	if want == 0 {
		client.expectFrame(t, finBit|opPong, []byte("sync"))
	} else {
		client.expectClose(t, want)
		// Answer a close the hub started; after an echo the hub has
		// already gone, so the write may fail.
		client.SetWriteDeadline(time.Now().Add(time.Second))
		client.Write(closeF(1000))
		client.expectEnd(t)
	}

	if role == 0 {
		for _, m := range c.fwd {
			watcher.expectFrame(t, finBit|m.op, m.data)
		}
		next := pub
		if want != 0 {
			next = h.rawPub(t, "test", topic) // takes the topic over in its grace period
		}
		next.send(t, bin([]byte("marker")))
		watcher.expectFrame(t, finBit|opBin, []byte("marker"))
		return
	}
	pub.send(t, ping("publisher"))
	pub.expectFrame(t, finBit|opPong, []byte("publisher"))
	if want == 0 {
		pub.send(t, bin([]byte("marker")))
		client.expectFrame(t, finBit|opBin, []byte("marker"))
	}
}
