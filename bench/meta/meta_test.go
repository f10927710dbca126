package meta

import (
	"bytes"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  Header
		epoch string
		body  string
	}{
		{in: "id: AbC123:1\n\nhello", want: Header{Kind: ID, Offset: 1}, epoch: "AbC123", body: "hello"},
		{in: "id: e:18446744073709551615\n\n", want: Header{Kind: ID, Offset: 1<<64 - 1}, epoch: "e"},
		{in: "id: e:7\n\n\n\nbody with \n\n inside", want: Header{Kind: ID, Offset: 7}, epoch: "e", body: "\n\nbody with \n\n inside"},
		{in: "gap: x9:4-17\n\n", want: Header{Kind: Gap, First: 4, Last: 17}, epoch: "x9"},
		{in: "gap: x9:5-5\n\n", want: Header{Kind: Gap, First: 5, Last: 5}, epoch: "x9"},
		{in: "reset: NEWEPOCH\n\n", want: Header{Kind: Reset}, epoch: "NEWEPOCH"},
	} {
		h, body, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if string(h.Epoch) != tc.epoch || string(body) != tc.body {
			t.Errorf("%q: epoch %q body %q, want %q %q", tc.in, h.Epoch, body, tc.epoch, tc.body)
		}
		if h.Kind != tc.want.Kind || h.Offset != tc.want.Offset || h.First != tc.want.First || h.Last != tc.want.Last {
			t.Errorf("%q: %+v, want %+v", tc.in, h, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"", "id: e:1", "id: e:1\n", "id: e:1\r\n\r\n", "id:e:1\n\n", "ID: e:1\n\n",
		"id: e:0\n\n", "id: e:01\n\n", "id: e:\n\n", "id: :1\n\n", "id: e\n\n", "id: e:1:2\n\n",
		"id: e:-1\n\n", "id: e:+1\n\n", "id: e:18446744073709551616\n\n", "id: e:1 \n\n",
		"id: e-f:1\n\n", "id: e f:1\n\n", "id: e:1\nx: y\n\n",
		"gap: e:5-4\n\n", "gap: e:0-4\n\n", "gap: e:4\n\n", "gap: e:4-\n\n", "gap: :4-5\n\n",
		"gap: e:4-5\n\nbody", "reset: \n\n", "reset: e\n\nbody", "reset: e:1\n\n",
		"hello: e\n\n", "plain published bytes",
		"id: " + string(bytes.Repeat([]byte("a"), MaxEpoch+1)) + ":1\n\n",
	} {
		if h, _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %+v", in, h)
		}
	}
}

func TestAppendPosition(t *testing.T) {
	if got := string(AppendPosition([]byte("since="), []byte("Ep0ch"), 12345)); got != "since=Ep0ch:12345" {
		t.Errorf("got %q", got)
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	msg := []byte("id: AbCdEf012345:123456\n\n0123456789abcdef0123456789abcdef")
	if n := testing.AllocsPerRun(100, func() { Parse(msg) }); n != 0 {
		t.Errorf("Parse allocates %v times", n)
	}
}

// FuzzParse checks that Parse never panics, that what it accepts is
// well-formed, and that a position it reads survives AppendPosition.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"id: AbC123:1\n\nhello", "gap: x9:4-17\n\n", "reset: NEWEPOCH\n\n",
		"id: e:0\n\n", "gap: e:5-4\n\n", "id: e:18446744073709551616\n\n", "\n\n", "id: ",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, body, err := Parse(msg)
		if err != nil {
			return
		}
		if !epoch(h.Epoch) {
			t.Fatalf("accepted epoch %q", h.Epoch)
		}
		switch h.Kind {
		case ID:
			if h.Offset == 0 {
				t.Fatal("accepted offset 0")
			}
			again, _, err := Parse(append(append([]byte("id: "), AppendPosition(nil, h.Epoch, h.Offset)...), "\n\n"...))
			if err != nil || again.Offset != h.Offset || !bytes.Equal(again.Epoch, h.Epoch) {
				t.Fatalf("position %s:%d does not round-trip", h.Epoch, h.Offset)
			}
		case Gap:
			if h.First == 0 || h.First > h.Last || len(body) != 0 {
				t.Fatalf("accepted gap %+v body %q", h, body)
			}
		case Reset:
			if len(body) != 0 {
				t.Fatalf("accepted reset with body %q", body)
			}
		default:
			t.Fatalf("kind %v", h.Kind)
		}
	})
}
