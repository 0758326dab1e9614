package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/loadgen"
	"github.com/otpless-events/otpless-events/server/auth"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/state"
	"github.com/otpless-events/otpless-events/server/store"
)

// BenchmarkWatchDelivery measures what one committed change costs to reach
// one connected gRPC watcher: the broker's publish, WatchRequest building
// the UPDATE (without personal data, as for bench's watchers, whose key has
// the watch scope only), the interceptors' stream and the stream's Send.
// Each op publishes one change of realistic traffic (a snapshot and its new
// events, as a commit makes them) and waits for the watcher to receive it,
// so every op is one UPDATE. The watcher reads only the type and revision
// of each message, not the whole message, so that allocs/op and B/op are,
// nearly all, the server's.
func BenchmarkWatchDelivery(b *testing.B) {
	const watcherKey = "bench-watcher-key"
	s := startOps(b, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
		c.MetricsAddr = ""
		keys, err := auth.ParseAPIKeys(auth.FormatAPIKey("watcher", watcherKey, []auth.Scope{auth.ScopeWatch}))
		if err != nil {
			b.Fatal(err)
		}
		c.Security = Security{
			APIKeys:        keys,
			WatchTokenKeys: [][]byte{[]byte("bench-watch-token-key-0123456789abcdef")},
			Webhook:        auth.WebhookConfig{Keys: []string{"bench-webhook-key-0123456789"}},
		}
	}, nil)
	const id = "req-watch-bench"
	script := watchScript(b, id)
	changes := make([]store.Change, b.N)
	for i := range changes {
		c := script[i%len(script)]
		r := proto.CloneOf(c.Request)
		r.Revision, r.UpdateTime = int64(i+1), timestamppb.Now()
		changes[i] = store.Change{Request: r, Events: c.Events}
	}

	conn, err := grpc.NewClient(s.GRPCAddr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.BearerCredentials{Token: watcherKey, Insecure: true}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(headerCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := eventsv1.NewRequestServiceClient(conn).WatchRequest(ctx, &eventsv1.WatchRequestRequest{RequestId: id})
	if err != nil {
		b.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_SNAPSHOT {
		b.Fatalf("first message = %v, %v; want the SNAPSHOT", m, err)
	}

	b.ReportAllocs()
	b.ResetTimer()
	for i := range changes {
		s.broker.Publish(changes[i : i+1])
		m, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if m.GetType() != eventsv1.WatchMessageType_WATCH_MESSAGE_TYPE_UPDATE || m.GetRevision() != int64(i+1) {
			b.Fatalf("message %d = %v at %d, want an UPDATE at %d", i, m.GetType(), m.GetRevision(), i+1)
		}
	}
}

// watchScript returns the changes that commits of realistic traffic make
// to a request in progress: each webhook of a few generated requests (all
// named id), normalized, with the snapshot of the events so far; the
// changes that finish a request, which would end the watch, are left out.
func watchScript(b *testing.B, id string) []store.Change {
	rng := rand.New(rand.NewPCG(1, 2))
	var script []store.Change
	for range 8 {
		var events []*eventsv1.Event
		for _, w := range loadgen.NewRequest(rng, id, time.Now(), loadgen.DefaultMix) {
			req, err := normalize.Decode(w.Body)
			if err != nil {
				b.Fatal(err)
			}
			added, err := normalize.Events(req, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			events = append(events, added...)
			snap := state.Fold(id, events)
			if state.Terminal(snap) {
				break
			}
			script = append(script, store.Change{Request: snap, Events: added})
		}
	}
	if len(script) == 0 {
		b.Fatal("no change in progress")
	}
	return script
}

// headerCodec is the proto codec, but for watch messages, of which it reads
// only the type and revision: the benchmark's watcher decodes nothing else.
type headerCodec struct{}

func (headerCodec) Name() string { return "proto" }

func (headerCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (headerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*eventsv1.WatchRequestResponse)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	for b := buf.ReadOnlyData(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if num == 1 {
				m.Type = eventsv1.WatchMessageType(v)
			} else {
				m.Revision = int64(v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}
