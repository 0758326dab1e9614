package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

type failingIngester struct{ err error }

func (f failingIngester) Submit(context.Context, store.Webhook) (store.Result, error) {
	return store.Result{}, f.err
}

// A webhook refused as the store is unavailable, closed or overloaded, or
// whose caller is gone, gets no line of its own: the request's line says
// it, with its reason, and the cause is logged where it arises (failed
// commits when they begin and then every 10 s with a count, a failed
// attempt to reach the database once per attempt). At OTPLESS's retry rate a second line per request is noise. A
// fault nothing else explains is logged, with its cause.
func TestWebhookNotStoredIsLoggedOnlyForFaults(t *testing.T) {
	t.Parallel()
	body := []byte(`{"data":{"requestId":"r1","status":"SENT","channel":"WHATSAPP"},"eventType":"DLR","timestamp":1764153000000}`)
	req := new(eventsv1.IngestRequest)
	if err := protojson.Unmarshal(body, req); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err    error
		code   codes.Code
		logged bool
	}{
		{fmt.Errorf("server: ingest: %w: the database has not been reached yet", store.ErrUnavailable), codes.Unavailable, false},
		{fmt.Errorf("groupcommit: commit of 1 webhooks: %w: connection refused", store.ErrUnavailable), codes.Unavailable, false},
		{fmt.Errorf("groupcommit: submit: %w", store.ErrOverloaded), codes.Unavailable, false},
		{fmt.Errorf("groupcommit: submit: %w", store.ErrClosed), codes.Unavailable, false},
		{fmt.Errorf("groupcommit: submit: waiting for the commit: %w", context.Canceled), codes.Canceled, false},
		{errors.New("something unforeseen"), codes.Internal, true},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			t.Parallel()
			var logs strings.Builder
			s := NewWebhookServer(failingIngester{tc.err}, slog.New(slog.NewTextHandler(&logs, nil)))
			_, err := s.IngestBody(context.Background(), req, body)
			if status.Code(err) != tc.code {
				t.Errorf("IngestBody = %v, want %v", err, tc.code)
			}
			lines := strings.Count(logs.String(), "webhook not stored")
			if want := map[bool]int{false: 0, true: 1}[tc.logged]; lines != want {
				t.Errorf("%d lines saying the webhook was not stored, want %d:\n%s", lines, want, logs.String())
			}
			if tc.logged && !strings.Contains(logs.String(), tc.err.Error()) {
				t.Errorf("the line does not give the cause %q:\n%s", tc.err, logs.String())
			}
		})
	}
}
