package server

import "github.com/wspubsub/wspubsub/ws"

// compressed returns run, a variant's frames, with every frame whose
// payload is at least Config.CompressMinSize bytes compressed
// (permessage-deflate, each a stream of its own), encoded into buf, which
// it returns for reuse. It is called once per publish for each deflate
// variant some subscriber has, so a message is compressed once however
// many subscribers get it. A frame that would not shrink, and every frame
// below the threshold, goes as it is (RFC 7692 lets any message go
// uncompressed); when no frame is compressed, run itself is returned.
// z counts the frames it compressed, for the fan-out's statistics, and the
// hub's compression counters are added to here, once per publish.
func (s *Server) compressed(buf, run []byte) (variant, scratch []byte, z zcount) {
	least := s.cfg.CompressMinSize
	buf = buf[:0]
	p, copied := 0, 0 // run[:copied] is in buf
	var in, out int64 // payload bytes of the frames compressed
	for p < len(run) {
		n, h, err := ws.FrameLen(run[p:])
		if err != nil {
			break // our own frames: cannot happen
		}
		if n-h >= least {
			f := run[p : p+n]
			buf = append(buf, run[copied:p]...)
			at := len(buf)
			buf = ws.AppendCompressed(buf, ws.Opcode(f[0]&0x0f), f[h:])
			if len(buf)-at >= n {
				buf = append(buf[:at], f...) // incompressible
			} else {
				_, zh, _ := ws.FrameLen(buf[at:])
				z.messages++
				z.wire += int64(len(buf) - at)
				in += int64(n - h)
				out += int64(len(buf) - at - zh)
			}
			copied = p + n
		}
		p += n
	}
	if z.messages > 0 {
		st := &s.stats
		st.Compressed.Add(z.messages)
		st.CompressedIn.Add(in)
		st.CompressedOut.Add(out)
	}
	if copied == 0 {
		return run, buf, z
	}
	buf = append(buf, run[copied:]...)
	return buf, buf, z
}

// zcount is what compressed put into one variant: the frames it
// compressed and their bytes on the wire (headers included). The fan-out
// multiplies it by the subscribers of the variant it wrote to, once per
// chunk, so that no counter moves per subscriber.
type zcount struct{ messages, wire int64 }
