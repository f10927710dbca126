package server

import (
	"bytes"
	"testing"

	"github.com/wspubsub/wspubsub/history"
	"github.com/wspubsub/wspubsub/ws"
)

// TestEncodedLenBoundsReplays: the size a replay is bounded by is never
// less than what the replay's encoding takes, in any variant, so that a
// replay never takes a subscriber past --max-backlog; nor much more, so
// that it is not cut short for nothing.
func TestEncodedLenBoundsReplays(t *testing.T) {
	const epoch = "AbCdEf123456"
	payloads := [][]byte{
		nil,
		[]byte("x"),
		[]byte("hello"),
		bytes.Repeat([]byte("\n"), 1000),
		bytes.Repeat([]byte("\r\n"), 500),
		bytes.Repeat([]byte("\r"), 999),
		bytes.Repeat([]byte("a\nb\r\nc\r"), 300),
		bytes.Repeat([]byte{0, 0xff, '\n'}, 400),
		bytes.Repeat([]byte("long line "), 5000),
	}
	for _, p := range payloads {
		for _, op := range []ws.Opcode{ws.OpText, ws.OpBinary} {
			e := history.Entry{Offset: 18446744073709551615, Frame: ws.AppendFrame(nil, op, p)}
			for kind := range numKinds {
				var got []byte
				switch kind {
				case kindMeta:
					got = appendMeta(nil, epoch, e.Offset, op, p)
				case kindSSE:
					got = appendSSE(nil, epoch, e.Offset, op, p)
				default:
					got = e.Frame
				}
				est := encodedLen(kind, epoch, &e)
				if est < len(got) || est > len(got)+64 {
					t.Errorf("kind %d, op %d, %d bytes: estimated %d, encoded %d", kind, op, len(p), est, len(got))
				}
			}
		}
	}
}
