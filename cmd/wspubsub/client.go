package main

// The hub's own command-line clients, `wspubsub sub` and `wspubsub pub`, as
// `nats sub` and `nats pub` are NATS's: enough to try a hub, watch a topic
// or publish from a script without installing a WebSocket tool. Messages
// go to stdout, everything about the connection to stderr.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/wspubsub/wspubsub/keys"
)

const subUsage = `usage: wspubsub sub [flags] ws://HOST/ws/sub/DOMAIN/TOPIC

Subscribes to a topic and prints each message on stdout: a text message as
is, followed by a newline; a binary message in hex on one line (--raw: its
bytes, with nothing added). With --meta, each message is preceded by its
position, "EPOCH:OFFSET ", and the hub's notices are printed as
"gap: EPOCH:FIRST-LAST" and "reset: EPOCH" lines.

The handshake's refusal (HTTP status and body) and the hub's close (code
and reason) are printed on stderr. Ctrl-C closes the connection with 1000.
Exit status: 0 when you end it, 1 when the hub refuses or closes it or the
connection fails, 2 for bad arguments.

flags:
`

const pubUsage = `usage: wspubsub pub [flags] ws://HOST/ws/pub/KEY/DOMAIN/TOPIC
       wspubsub pub --key KEY [flags] ws://HOST/ws/pub/DOMAIN/TOPIC

Publishes each line of stdin (without its line ending) as one message, or
with --file the whole file as one message. Messages are text frames, which
must be valid UTF-8, unless --binary. At the end of the input (or Ctrl-C)
it closes the connection with 1000 and waits for the hub's answer, which
comes once the hub has taken every message sent. A refusal (HTTP status
and body) or a close by the hub (code and reason) is printed on stderr.
Exit status: 0 when the hub took every message, 1 otherwise, 2 for bad
arguments.

flags:
`

// clientFlags are the flags sub and pub share.
type clientFlags struct {
	ca      string
	timeout time.Duration
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.ca, "ca", "", "for wss://, trust the CA certificates in this PEM file instead of the system's")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "how long the handshake, and the close, may take")
}

// dialer is a WebSocket dialer with the flags' TLS roots and timeout.
func (f *clientFlags) dialer() (*websocket.Dialer, error) {
	d := &websocket.Dialer{HandshakeTimeout: f.timeout, Proxy: http.ProxyFromEnvironment}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("cannot read --ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cannot read --ca %s: no PEM certificate in it", f.ca)
		}
		d.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	return d, nil
}

// clientURL parses a hub URL: ws:// or wss://, http:// and https:// taken
// as their WebSocket equivalents.
func clientURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %w", err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("bad URL %q: want ws://HOST/... or wss://HOST/...", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("bad URL %q: no host", raw)
	}
	return u, nil
}

// shownURL is u as it may be printed: an API key in a publisher's path and
// a subscriber's token in the query are redacted.
func shownURL(u *url.URL) string {
	if q := u.Query(); q.Has("token") {
		c := *u
		q.Set("token", "…")
		c.RawQuery = q.Encode()
		u = &c
	}
	s := u.String()
	seg := strings.Split(u.EscapedPath(), "/")
	if len(seg) == 6 && seg[1] == "ws" && seg[2] == "pub" { // /ws/pub/KEY/D/T
		k, err := url.PathUnescape(seg[3])
		if err != nil {
			k = seg[3]
		}
		s = strings.Replace(s, "/ws/pub/"+seg[3]+"/", "/ws/pub/"+keys.Redact(k)+"/", 1)
	}
	return s
}

// dialHub connects to u, and on failure says why on stderr: the HTTP status
// and body of a refusal, or the network or TLS error. A signal on sigs
// gives up at once (the dial, left behind, ends with the process).
func dialHub(d *websocket.Dialer, u *url.URL, h http.Header, sigs <-chan os.Signal, stderr io.Writer, cmd string) (*websocket.Conn, bool) {
	type result struct {
		conn *websocket.Conn
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, resp, err := d.Dial(u.String(), h)
		done <- result{conn, resp, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-sigs:
		fmt.Fprintf(stderr, "%s: interrupted while connecting\n", cmd)
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, false
	}
	conn, resp, err := r.conn, r.resp, r.err
	if err == nil {
		return conn, true
	}
	if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(stderr, "%s: refused: HTTP %s", cmd, resp.Status)
		if b := strings.TrimSpace(string(body)); b != "" {
			fmt.Fprintf(stderr, ": %s", b)
		}
		fmt.Fprintln(stderr)
		return nil, false
	}
	fmt.Fprintf(stderr, "%s: cannot connect to %s: %v\n", cmd, shownURL(u), err)
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		fmt.Fprintf(stderr, "%s: (the hub's certificate is not signed by a trusted CA: --ca FILE names one)\n", cmd)
	}
	return nil, false
}

// closeText is a close frame's code and reason as printed.
func closeText(ce *websocket.CloseError) string {
	if ce.Text == "" {
		return fmt.Sprint(ce.Code)
	}
	return fmt.Sprintf("%d %s", ce.Code, ce.Text)
}

// interrupts delivers SIGINT and SIGTERM until stop is called.
func interrupts() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	return ch, func() { signal.Stop(ch) }
}

func runSub(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wspubsub sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, subUsage); fs.PrintDefaults() }
	var cf clientFlags
	cf.register(fs)
	raw := fs.Bool("raw", false, "write binary messages as their bytes, with nothing added, instead of hex lines")
	meta := fs.Bool("meta", false, "offer the wspubsub.meta subprotocol and print each message's position and the hub's gap and reset notices")
	since := fs.String("since", "", "resume after this position, EPOCH:OFFSET (adds ?since=)")
	rewind := fs.String("rewind", "", "first get the last N kept messages (adds ?rewind=)")
	token := fs.String("token", os.Getenv("WSPUBSUB_TOKEN"), "a private domain's subscriber token (JWT), sent as Authorization: Bearer (env WSPUBSUB_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if *raw && *meta {
		fmt.Fprintln(stderr, "wspubsub sub: --raw and --meta cannot be used together")
		return 2
	}
	u, err := clientURL(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "wspubsub sub:", err)
		return 2
	}
	// The hub checks the values (400 with its reason), so the rule has one
	// copy. The URL's own query is kept as it is.
	add := url.Values{}
	if *since != "" {
		add.Set("since", *since)
	}
	if *rewind != "" {
		add.Set("rewind", *rewind)
	}
	if len(add) > 0 {
		if u.RawQuery != "" {
			u.RawQuery += "&"
		}
		u.RawQuery += add.Encode()
	}
	d, err := cf.dialer()
	if err != nil {
		fmt.Fprintln(stderr, "wspubsub sub:", err)
		return 2
	}
	if *meta {
		d.Subprotocols = []string{"wspubsub.meta"}
	}
	sigs, stop := interrupts()
	defer stop()
	var hdr http.Header
	if *token != "" {
		hdr = http.Header{"Authorization": {"Bearer " + *token}}
	}
	conn, ok := dialHub(d, u, hdr, sigs, stderr, "wspubsub sub")
	if !ok {
		return 1
	}
	defer conn.Close()
	if *meta && conn.Subprotocol() != "wspubsub.meta" {
		fmt.Fprintln(stderr, "wspubsub sub: the hub did not accept the wspubsub.meta subprotocol: it cannot send positions")
		return 1
	}
	fmt.Fprintf(stderr, "wspubsub sub: subscribed to %s (Ctrl-C to leave)\n", shownURL(u))

	p := subPrinter{w: bufio.NewWriter(stdout), raw: *raw, meta: *meta}
	ended := make(chan error, 1)
	go func() {
		for {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				ended <- err
				return
			}
			if err := p.print(typ, msg); err != nil {
				ended <- err
				return
			}
		}
	}()

	select {
	case err := <-ended:
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "wspubsub sub: closed by the hub:", closeText(ce))
		} else {
			fmt.Fprintln(stderr, "wspubsub sub: connection lost:", err)
		}
		return 1
	case <-sigs:
	}
	// Ours to end: close with 1000 and wait for the hub's answer.
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	// If this fails, the hub closed first or the connection broke: the
	// reader says which, below.
	conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cf.timeout))
	select {
	case err := <-ended:
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "wspubsub sub: closed:", closeText(ce))
			return 0
		}
		fmt.Fprintln(stderr, "wspubsub sub: connection lost while closing:", err)
		return 1
	case <-time.After(cf.timeout):
		fmt.Fprintf(stderr, "wspubsub sub: the hub did not answer the close within %s\n", cf.timeout)
		return 1
	}
}

// subPrinter writes the messages a subscriber gets, flushing each.
type subPrinter struct {
	w         *bufio.Writer
	raw, meta bool
}

func (p *subPrinter) print(typ int, msg []byte) error {
	if p.meta {
		// "id: POS\n\n<payload>", or a text notice "gap: ...\n\n", "reset: ...\n\n".
		head, body, ok := bytes.Cut(msg, []byte("\n\n"))
		switch {
		case ok && bytes.HasPrefix(head, []byte("id: ")):
			p.w.Write(head[len("id: "):])
			p.w.WriteByte(' ')
			msg = body
		case ok && typ == websocket.TextMessage && len(body) == 0:
			p.w.Write(head) // a notice, as the hub words it
			p.w.WriteByte('\n')
			return p.w.Flush()
		}
	}
	switch {
	case typ == websocket.TextMessage:
		p.w.Write(msg)
		p.w.WriteByte('\n')
	case p.raw:
		p.w.Write(msg)
	default:
		var buf [512]byte
		for len(msg) > 0 {
			n := min(len(msg), len(buf)/2)
			p.w.Write(hex.AppendEncode(buf[:0], msg[:n]))
			msg = msg[n:]
		}
		p.w.WriteByte('\n')
	}
	return p.w.Flush()
}

func runPub(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("wspubsub pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, pubUsage); fs.PrintDefaults() }
	var cf clientFlags
	cf.register(fs)
	key := fs.String("key", "", "the API key, sent as Authorization: Bearer (for a URL without one)")
	file := fs.String("file", "", "publish this file's bytes as one message (-: all of stdin)")
	binary := fs.Bool("binary", false, "send binary frames instead of text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	u, err := clientURL(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "wspubsub pub:", err)
		return 2
	}
	d, err := cf.dialer()
	if err != nil {
		fmt.Fprintln(stderr, "wspubsub pub:", err)
		return 2
	}
	var whole []byte // with --file, the one message
	if *file != "" {
		if *file == "-" {
			whole, err = io.ReadAll(stdin)
		} else {
			whole, err = os.ReadFile(*file)
		}
		if err != nil {
			fmt.Fprintln(stderr, "wspubsub pub: cannot read the message:", err)
			return 1
		}
		if !*binary && !utf8.Valid(whole) {
			fmt.Fprintln(stderr, "wspubsub pub: the file is not valid UTF-8: send it with --binary")
			return 1
		}
	}
	var h http.Header
	if *key != "" {
		h = http.Header{"Authorization": {"Bearer " + *key}}
	}
	sigs, stop := interrupts()
	defer stop()
	conn, ok := dialHub(d, u, h, sigs, stderr, "wspubsub pub")
	if !ok {
		return 1
	}
	defer conn.Close()
	hint := ""
	if f, ok := stdin.(*os.File); ok && *file == "" {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			hint = " (type messages, one a line; Ctrl-D to end)"
		}
	}
	fmt.Fprintf(stderr, "wspubsub pub: publishing to %s%s\n", shownURL(u), hint)

	// What the hub sends is read only for its close (and its pings).
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.NextReader(); err != nil {
				ended <- err
				return
			}
		}
	}()
	msgs := make(chan []byte)
	if whole != nil {
		go func() { msgs <- whole; close(msgs) }()
	} else {
		go readLines(stdin, msgs)
	}
	typ := websocket.TextMessage
	if *binary {
		typ = websocket.BinaryMessage
	}

	hubClosed := func(err error) int {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, "wspubsub pub: closed by the hub:", closeText(ce))
		} else {
			fmt.Fprintln(stderr, "wspubsub pub: connection lost:", err)
		}
		return 1
	}
	failed := false
	n := 0
send:
	for {
		select {
		case m, more := <-msgs:
			if !more {
				break send
			}
			n++
			if typ == websocket.TextMessage && !utf8.Valid(m) {
				fmt.Fprintf(stderr, "wspubsub pub: line %d is not valid UTF-8, not sent (--binary sends bytes)\n", n)
				failed = true
				break send
			}
			if err := conn.WriteMessage(typ, m); err != nil {
				select {
				case err := <-ended:
					return hubClosed(err)
				case <-time.After(cf.timeout):
					fmt.Fprintln(stderr, "wspubsub pub: cannot send:", err)
					return 1
				}
			}
		case err := <-ended:
			return hubClosed(err)
		case <-sigs:
			break send
		}
	}
	// The hub answers a close once it has read, and fanned out, everything
	// before it: its answer means every message was taken.
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(cf.timeout)); err != nil {
		// Most likely the hub closed first, and the reader is reporting it.
		select {
		case err := <-ended:
			return hubClosed(err)
		case <-time.After(cf.timeout):
			fmt.Fprintln(stderr, "wspubsub pub: cannot close:", err)
			return 1
		}
	}
	select {
	case err := <-ended:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
			return hubClosed(err)
		}
	case <-time.After(cf.timeout):
		fmt.Fprintf(stderr, "wspubsub pub: the hub did not answer the close within %s: messages may be lost\n", cf.timeout)
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// readLines sends each line of r, without its "\n" or "\r\n", to out, and
// closes out at the end of r. A last line without a newline counts.
func readLines(r io.Reader, out chan<- []byte) {
	defer close(out)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if err == nil || len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			out <- bytes.TrimSuffix(line, []byte("\r"))
		}
		if err != nil {
			return
		}
	}
}
