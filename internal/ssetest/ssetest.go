// Package ssetest reads a text/event-stream block by block, as the tests of
// the gateway, the server and the binary need to.
package ssetest

import (
	"bufio"
	"io"
	"strings"
)

// Event is one block of the stream: an event, a retry hint, or comments
// only.
type Event struct {
	ID, Event, Data, Retry string
	HasID                  bool
	Comments               []string
}

// Reader reads the blocks of a stream.
type Reader struct{ r *bufio.Reader }

// NewReader reads from r, which it uses as it is when it is a
// *bufio.Reader.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &Reader{r: br}
}

// Next returns the next block: io.EOF at the end of the stream, and
// io.ErrUnexpectedEOF when it ends inside a block (a block ends with a
// blank line).
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []string
	started := false
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			if started && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if !started {
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		}
		started = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.Comments = append(ev.Comments, value)
		case "id":
			ev.ID, ev.HasID = value, true
		case "event":
			ev.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			ev.Retry = value
		}
	}
}

// NextEvent returns the next named event, skipping comments and retry
// hints.
func (r *Reader) NextEvent() (Event, error) {
	for {
		ev, err := r.Next()
		if err != nil || ev.Event != "" {
			return ev, err
		}
	}
}
