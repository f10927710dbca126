package server

import (
	"strings"
	"testing"
)

func TestAcceptsEventStream(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                                    true,
		"  ":                                  true,
		"text/event-stream":                   true,
		"Text/Event-Stream":                   true,
		"*/*":                                 true,
		"text/*":                              true,
		"text/event-stream; charset=utf-8":    true,
		"text/html, */*;q=0.1":                true,
		"text/html,text/event-stream;q=0.001": true,
		"text/event-stream;q=1.000":           true,
		"text/event-stream ; Q=0.5":           true,
		"text/event-stream;q=0, text/event-stream": true,
		"text/*;q=0, text/event-stream":            true,
		"text/event-stream;q=0.5, text/*;q=0":      true,
		"text/html":                                false,
		"application/json, text/plain":             false,
		"image/*":                                  false,
		"text/event-stream;q=0":                    false,
		"text/event-stream;q=0.000, */*":           false,
		"text/*;q=0, */*":                          false,
		"*/*;q=0":                                  false,
		"text/event-stream;q=2":                    false, // malformed weight: the range is ignored
		"text/event-stream;q=1.5":                  false,
		"text/event-stream;q=0.1234":               false,
		"text/event-stream;q=":                     false,
		"text/event-stream;q=.5":                   false,
		"text/event-stream;q=x, text/html":         false,
		"*/event-stream":                           false,
		"garbage":                                  false,
		",,,":                                      false,
	} {
		if got := acceptsEventStream(accept); got != want {
			t.Errorf("%q: %v, want %v", accept, got, want)
		}
	}
}

// FuzzAcceptsEventStream: any header is read without panicking, without
// regard to case, and naming text/event-stream with no weight always
// admits it.
func FuzzAcceptsEventStream(f *testing.F) {
	for _, s := range []string{"", "text/event-stream", "*/*", "text/*;q=0.5", "text/html, */*;q=0.1",
		"text/event-stream;q=0, */*", "text/event-stream;q=1.000;level=1", "a/b;q=0.;x=\"y,z\"", ";;,;q=", "text/event-stream;q=0.0000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		got := acceptsEventStream(accept)
		if upper := acceptsEventStream(strings.ToUpper(accept)); upper != got {
			t.Fatalf("%q: %v, but %v in upper case", accept, got, upper)
		}
		if !acceptsEventStream(accept + ",text/event-stream") {
			t.Fatalf("%q with text/event-stream added: refused", accept)
		}
	})
}
