package loadgen

import (
	"math/rand/v2"
	"testing"
	"time"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/state"
)

// Generated requests are what the normalizer reads as whole auth requests:
// every body one event of the request, every key the event's, each request
// ending in SUCCESS; and the mix comes out near what was asked.
func TestNewRequest(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 7))
	const n = 4000
	var webhooks, retries, fallbacks, reordered int
	for i := range n {
		id := RequestID(1, i, 0)
		script := NewRequest(rng, id, time.Unix(1764153000, 0), DefaultMix)
		keys := map[string]bool{}
		var events []*eventsv1.Event
		for j, wh := range script {
			req, err := normalize.Decode(wh.Body)
			if err != nil {
				t.Fatalf("request %d body %d: %v\n%s", i, j, err, wh.Body)
			}
			es, err := normalize.Events(req, time.Now())
			if err != nil || len(es) != 1 || es[0].GetRequestId() != id {
				t.Fatalf("request %d body %d: %v %v", i, j, es, err)
			}
			e := es[0]
			got := EventKey(e.GetStatus(), e.GetChannel())
			if wh.Retry {
				retries++
				if got != wh.Key {
					t.Fatalf("retry %s has key %q, want %q", wh.Body, wh.Key, got)
				}
				continue
			}
			if got != wh.Key || keys[got] {
				t.Fatalf("body %s has key %q, want %q, once", wh.Body, got, wh.Key)
			}
			keys[wh.Key] = true
			if len(events) > 0 && e.GetEventTime().AsTime().Before(events[len(events)-1].GetEventTime().AsTime()) {
				reordered++
			}
			events = append(events, e)
			if e.GetStatus() == "FALLBACK" {
				fallbacks++
			}
		}
		webhooks += len(script)
		if final := state.Fold(id, events); final.GetStatus() != eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS {
			t.Fatalf("request %d ends %v", i, final.GetStatus())
		}
	}
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"fallbacks per request", float64(fallbacks) / n, DefaultMix.Fallback},
		{"retries per webhook", float64(retries) / float64(webhooks), DefaultMix.Duplicate},
		{"webhooks per request", float64(webhooks) / n, 5},
	} {
		if c.got < c.want*0.7 || c.got > c.want*1.3 {
			t.Errorf("%s = %.3f, want about %.3f", c.what, c.got, c.want)
		}
	}
	if reordered == 0 {
		t.Error("nothing arrived out of order")
	}
}
