package server

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/wspubsub/wspubsub/ws"
)

// maxHTTPResponse bounds what a plain HTTP handler may answer with.
const maxHTTPResponse = 64 << 20

// serveHTTP answers a plain HTTP request on the main listener (health,
// readiness, metrics) with Config.HTTP. The handler runs on a goroutine of
// its own, at most MaxHTTPRequests at once: a scrape or a profile must not
// hold up a loop. c.mu is held.
func (c *client) serveHTTP(req ws.Request) {
	s := c.srv
	select {
	case s.https <- struct{}{}:
	default:
		c.refuse(refHTTPBusy, "too many HTTP requests in progress")
		return
	}
	c.setState(stateHTTP)
	c.hs.buf = nil
	c.conn.SetDeadline(time.Now().Add(2 * time.Minute)) // a CPU profile takes its time
	go func() {
		defer func() { <-s.https }()
		var w responseBuffer
		r, err := http.NewRequest(req.Method, req.Target, nil)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
		} else {
			r.Host, r.RequestURI, r.RemoteAddr = req.Host, req.Target, c.conn.RemoteAddr().String()
			s.cfg.HTTP.ServeHTTP(&w, r)
		}
		c.conn.SendLast(w.response(req.Method == http.MethodHead), time.Second)
	}()
}

// responseBuffer is the http.ResponseWriter of serveHTTP: it keeps the
// whole response, then serializes it with Connection: close.
type responseBuffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

var errResponseTooLarge = errors.New("server: HTTP response too large")

func (w *responseBuffer) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *responseBuffer) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseBuffer) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.body.Len()+len(b) > maxHTTPResponse {
		return 0, errResponseTooLarge
	}
	return w.body.Write(b)
}

func (w *responseBuffer) response(head bool) []byte {
	w.WriteHeader(http.StatusOK)
	h := w.Header()
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	h.Del("Content-Length")
	h.Del("Connection")
	h.Del("Transfer-Encoding")
	out := make([]byte, 0, 256+w.body.Len())
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(w.status), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(w.status)...)
	out = append(out, "\r\n"...)
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, v := range h[name] {
			out = append(out, name...)
			out = append(out, ": "...)
			out = append(out, v...)
			out = append(out, "\r\n"...)
		}
	}
	out = append(out, "Content-Length: "...)
	out = strconv.AppendInt(out, int64(w.body.Len()), 10)
	out = append(out, "\r\nConnection: close\r\n\r\n"...)
	if !head {
		out = append(out, w.body.Bytes()...)
	}
	return out
}
