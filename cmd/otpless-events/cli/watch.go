package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/api"
)

func newWatch(stdout, stderr io.Writer) *cobra.Command {
	var (
		client  clientFlags
		w       watcher
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch REQUEST_ID",
		Short: "Follow a request live until it succeeds",
		Long: "Follows the request over gRPC and prints one line per change (the snapshot first), or with\n" +
			"--json the snapshot and each update as one JSON object per line.\n\n" +
			"FAILED is not final (OTPLESS may fall back to another channel, or the user may still\n" +
			"sign in), so watch keeps following until SUCCESS, --timeout, or an interrupt. It exits 0\n" +
			"on SUCCESS and 1 otherwise, saying the last status. When the server ends the stream with\n" +
			"RECONNECT (restart, maximum watch duration), the connection drops mid-stream, or a server that\n" +
			"is shutting down refuses a stream (the first one too) as UNAVAILABLE, watch reconnects and\n" +
			"resumes after the last revision it printed, waiting for the server to be back: at once after\n" +
			"a stream that worked (one that brought any message but RECONNECT, a heartbeat included, or\n" +
			"lasted 5 s), else after 0.1 s, doubled on each quick failure up to 5 s. A first connection\n" +
			"that cannot be made (nothing listens at the address) fails at once. A stream\n" +
			"that brings nothing, not even a heartbeat, for --idle-timeout counts as dropped: a connection\n" +
			"can die without a word (a network partition, a NAT that forgot it).\n\n" +
			"Needs an API key with the watch scope, or a watch token ($" + envAPIKey + " or --api-key-file),\n" +
			"when the server checks credentials.",
		Args: requestIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			if timeout < 0 || w.idle < 0 {
				return errors.New("--timeout and --idle-timeout must not be negative (0: never)")
			}
			conn, err := client.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			w.client = eventsv1.NewRequestServiceClient(conn)
			w.id, w.stdout, w.stderr = args[0], stdout, stderr
			return w.run(ctx)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&w.json, "json", false, "print each change as a JSON object (a WatchRequestResponse) on its own line")
	f.DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	f.DurationVar(&w.idle, "idle-timeout", time.Minute, "reconnect when the stream brings nothing, not even a heartbeat, for this long\n(keep it above the server's --watch-heartbeat; 0: never)")
	client.register(f, true)
	documentEnv(f)
	return cmd
}

// watcher follows one request across reconnects.
type watcher struct {
	client         eventsv1.RequestServiceClient
	id             string
	json           bool
	idle           time.Duration // a stream silent this long is dropped; 0: never
	stdout, stderr io.Writer

	after    int64                  // the last revision received
	status   eventsv1.RequestStatus // the last status printed
	last     *eventsv1.AuthRequest  // the last snapshot printed
	received bool                   // the current stream has delivered a message other than RECONNECT

	// now and sleep are the clock: time.Now and a timer unless a test
	// sets them. sleep returns false when ctx ends first.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool
}

// errReconnect asks run to open the stream again; errStopped says the
// timeout passed or the user interrupted; errSilent drops a stream that
// brought nothing for the idle timeout.
var (
	errReconnect = errors.New("reconnect")
	errStopped   = errors.New("stopped")
	errSilent    = errors.New("silent stream")
)

// retryAfter asks run to open the stream again after wait: the server
// refused it for a limit on open streams, saying when to try again.
type retryAfter struct {
	wait time.Duration
	why  string
}

func (r retryAfter) Error() string { return r.why }

// refusedForNow is the retryAfter of a refusal that says when to try
// again (RESOURCE_EXHAUSTED with a google.rpc.RetryInfo), else nil.
func refusedForNow(err error) error {
	if wait, ok := api.RetryDelay(err); ok && wait > 0 && status.Code(err) == codes.ResourceExhausted {
		return retryAfter{wait, statusMessage(err)}
	}
	return nil
}

// stopped reports whether err ends the watch because of ctx (timedOut).
func stopped(ctx context.Context, err error) bool {
	return ctx.Err() != nil || timedOut(ctx, err)
}

// timedOut reports whether err, a call's, comes of ctx's deadline: ctx says
// so, or err is DEADLINE_EXCEEDED and the deadline has passed (the server,
// which the deadline reaches as the time left rounded up, can end the call
// at it and be heard before ctx's own timer). A DEADLINE_EXCEEDED of a call
// without a deadline, or before it, is the server's (or a proxy's) own.
func timedOut(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && status.Code(err) == codes.DeadlineExceeded && !time.Now().Before(d)
}

func (w *watcher) run(ctx context.Context) error {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	if w.now == nil {
		w.now = time.Now
	}
	if w.sleep == nil {
		w.sleep = sleep
	}
	backoff := minBackoff
	for attempt := 0; ; attempt++ {
		w.received = false
		began := w.now()
		err := w.follow(ctx, attempt > 0)
		var refused retryAfter
		switch {
		case err == nil:
			return nil // SUCCESS
		case errors.Is(err, errStopped):
			return w.gaveUp(ctx)
		case errors.As(err, &refused):
			fmt.Fprintf(w.stderr, "refused for now: %s; trying again in %s\n", refused.why, refused.wait)
			if !w.sleep(ctx, refused.wait) {
				return w.gaveUp(ctx)
			}
			backoff = minBackoff
		case !errors.Is(err, errReconnect):
			return err
		case w.received || w.now().Sub(began) >= maxBackoff:
			// The stream worked: it brought a message (a heartbeat will
			// do), or it lasted as long as the longest wait, as when the
			// server ends it after --max-watch-duration. Reconnect at once,
			// and back off from the start if that fails.
			backoff = minBackoff
		default:
			// The stream failed quickly, as when the server is down or
			// shutting down: do not hammer it.
			if !w.sleep(ctx, backoff) {
				return w.gaveUp(ctx)
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

// sleep waits d, or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// follow reads one stream. It returns nil on SUCCESS and errReconnect when
// the stream should be opened again after w.after.
func (w *watcher) follow(ctx context.Context, again bool) error {
	var opts []grpc.CallOption
	if again {
		opts = append(opts, grpc.WaitForReady(true)) // the server may be restarting
	}
	sctx, drop := context.WithCancelCause(ctx)
	defer drop(nil)
	stream, err := w.client.WatchRequest(sctx, &eventsv1.WatchRequestRequest{RequestId: w.id, AfterRevision: w.after}, opts...)
	if err != nil {
		if stopped(ctx, err) {
			return errStopped
		}
		if ra := refusedForNow(err); ra != nil {
			return ra
		}
		return rpcError("watch "+w.id, err)
	}
	var silent *time.Timer
	if w.idle > 0 {
		silent = time.AfterFunc(w.idle, func() { drop(errSilent) })
		defer silent.Stop()
	}
	for {
		msg, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			// The server ends a stream after the terminal snapshot, after
			// RECONNECT, or, resumed at a finished request's revision, after
			// the first HEARTBEAT; watch has returned on SUCCESS before that.
			return fmt.Errorf("watch %s: the server ended the stream at %s", w.id, statusWord(w.status))
		case err != nil && stopped(ctx, err):
			return errStopped
		case err != nil && errors.Is(context.Cause(sctx), errSilent):
			fmt.Fprintf(w.stderr, "nothing from the server for %s at revision %d: reconnecting\n", w.idle, w.after)
			return errReconnect
		case err != nil && status.Code(err) == codes.Unavailable:
			// A server took the stream: grpc-go reports a connection it
			// could not make (nothing listening, not gRPC) when the stream
			// is opened, above. So this is a server that is going away, on
			// the first stream too (one that shuts down refuses new streams
			// with UNAVAILABLE, as in a rolling deploy), or a connection
			// that dropped: wait for it.
			if w.received {
				fmt.Fprintf(w.stderr, "connection lost at revision %d: %s\n", w.after, statusMessage(err))
			} else {
				fmt.Fprintf(w.stderr, "unavailable at revision %d: %s; trying again\n", w.after, statusMessage(err))
			}
			return errReconnect
		case err != nil:
			if ra := refusedForNow(err); ra != nil {
				return ra
			}
			return rpcError("watch "+w.id, err)
		}
		if silent != nil {
			silent.Reset(w.idle)
		}
		if msg.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_RECONNECT {
			// Not counted as received: a server that is going away may
			// answer nothing else, and this is no proof the stream works.
			w.after = msg.GetRevision()
			fmt.Fprintf(w.stderr, "the server asked to reconnect at revision %d\n", w.after)
			return errReconnect
		}
		if !w.received && again {
			fmt.Fprintf(w.stderr, "reconnected; resuming after revision %d\n", w.after)
		}
		w.received = true
		// A stream resumed at revision 0 starts with the snapshot at 0 again:
		// printed once is enough.
		repeat := msg.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT && w.last != nil && msg.GetRevision() == w.after
		w.after = msg.GetRevision() // lower only when the server starts over (its store lost what we saw)
		switch msg.GetType() {
		case eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT, eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE:
			if repeat {
				continue
			}
			w.status, w.last = msg.GetRequest().GetStatus(), msg.GetRequest()
			if err := w.print(msg); err != nil {
				return err
			}
			if w.status == eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
				return nil
			}
		}
	}
}

// gaveUp is the error for a watch that ended without SUCCESS.
func (w *watcher) gaveUp(ctx context.Context) error {
	why := "timed out"
	if errors.Is(ctx.Err(), context.Canceled) {
		why = "interrupted"
	}
	msg := fmt.Sprintf("%s: request %s is %s, not SUCCESS", why, w.id, statusWord(w.status))
	if w.status == eventsv1.RequestStatus_REQUEST_STATUS_FAILED {
		if w.last.GetUnreachableTime() != nil {
			msg += " (OTPLESS reported the user unreachable)"
		} else if f := latestFailure(w.last); f != nil {
			msg += " (" + f.GetChannel() + " " + failureText(f.GetError()) + ")"
		}
	}
	return errors.New(printable(msg))
}

func (w *watcher) print(msg *eventsv1.WatchRequestResponse) error {
	if w.json {
		b, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(msg) // as the HTTP API writes it
		if err != nil {
			return err
		}
		var line bytes.Buffer
		if err := json.Compact(&line, b); err != nil {
			return err
		}
		line.WriteByte('\n')
		_, err = w.stdout.Write(printableJSON(line.Bytes()))
		return err
	}
	_, err := fmt.Fprintf(w.stdout, "rev %-3d %-12s %s\n", msg.GetRevision(), statusWord(msg.GetRequest().GetStatus()), printable(describeChange(msg)))
	return err
}

// printable escapes the control characters of s, as Go writes them in a
// string literal ("\x1b", "\n"): what a line says comes from webhook
// senders, who must not clear the terminal, set its title or start lines.
func printable(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printableJSON escapes in b, JSON that protojson wrote, the control
// characters it leaves as they are (DEL and the C1 controls, U+007F to
// U+009F; a terminal may take U+009B for ESC [) as \u escapes, which mean
// the same in JSON: they can only be within strings.
func printableJSON(b []byte) []byte {
	unescaped := func(r rune) bool { return r >= 0x7f && unicode.IsControl(r) }
	if !bytes.ContainsFunc(b, unescaped) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if unescaped(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

func statusWord(s eventsv1.RequestStatus) string {
	if s == eventsv1.RequestStatus_REQUEST_STATUS_UNSPECIFIED {
		return "UNKNOWN"
	}
	return strings.TrimPrefix(s.String(), "REQUEST_STATUS_")
}

// describeChange puts a SNAPSHOT or UPDATE in words.
func describeChange(msg *eventsv1.WatchRequestResponse) string {
	r := msg.GetRequest()
	if msg.GetType() == eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT {
		if r.GetRevision() == 0 {
			return "no event yet; waiting"
		}
		var chans []string
		for _, c := range r.GetChannels() {
			chans = append(chans, c.GetChannel()+" "+strings.TrimPrefix(c.GetStatus().String(), "DELIVERY_STATUS_"))
		}
		s := fmt.Sprintf("snapshot of %d events", r.GetEventCount())
		if r.GetEventCount() == 1 {
			s = "snapshot of 1 event"
		}
		if len(chans) > 0 {
			s += ": " + strings.Join(chans, ", ")
		}
		return s
	}
	parts := make([]string, len(msg.GetEvents()))
	for i, e := range msg.GetEvents() {
		parts[i] = clock(e.GetEventTime()) + " " + describeEvent(e)
	}
	return strings.Join(parts, "; ")
}

// clock is an event time, UTC to the millisecond.
func clock(ts *timestamppb.Timestamp) string {
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

func describeEvent(e *eventsv1.Event) string {
	switch e.GetStatus() {
	case "INITIATED":
		s := "INITIATED"
		if m := e.GetAuthMethod(); m != "" {
			s += " " + m
		}
		if ch := e.GetAuthChannels(); len(ch) > 0 {
			s += " via " + strings.Join(ch, ", ")
		}
		return s
	case "FALLBACK":
		from := e.GetFromChannel()
		if from == "" {
			from = "?"
		}
		return "FALLBACK " + from + " → " + e.GetToChannel()
	case "FAILED":
		return e.GetChannel() + " FAILED: " + failureText(e.GetError())
	}
	if e.GetChannel() != "" {
		return e.GetChannel() + " " + e.GetStatus()
	}
	return e.GetStatus()
}

var retriableWords = map[eventsv1.Retriable]string{
	eventsv1.Retriable_RETRIABLE_YES:          "retriable",
	eventsv1.Retriable_RETRIABLE_NO:           "not retriable",
	eventsv1.Retriable_RETRIABLE_AFTER_OPT_IN: "retriable once the user opts in",
	eventsv1.Retriable_RETRIABLE_CASE_BY_CASE: "retriable case by case",
}

// failureText puts a failure in words: what the code means, the code, and
// whether retrying can help.
func failureText(e *eventsv1.ErrorInfo) string {
	words := e.GetDescription()
	if words == "" {
		words = e.GetMessage()
	}
	if words == "" {
		words = "unknown failure"
	}
	var notes []string
	if e.GetCode() != "" {
		notes = append(notes, "code "+e.GetCode())
	}
	if r := retriableWords[e.GetRetriable()]; r != "" {
		notes = append(notes, r)
	}
	if len(notes) > 0 {
		words += " (" + strings.Join(notes, ", ") + ")"
	}
	return words
}

// latestFailure is the last failure on the request's active channel.
func latestFailure(r *eventsv1.AuthRequest) *eventsv1.Failure {
	fs := r.GetFailures()
	for i := len(fs) - 1; i >= 0; i-- {
		if fs[i].GetChannel() == r.GetActiveChannel() {
			return fs[i]
		}
	}
	return nil
}
