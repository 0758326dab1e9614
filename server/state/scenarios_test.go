package state_test

import (
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/internal/fixtures"
	"github.com/otpless-events/otpless-events/server/normalize"
	"github.com/otpless-events/otpless-events/server/state"
)

var seedFlag = flag.Uint64("seed", 0, "seed of the permutation tests (0: from the clock)")

const permutations = 200

// scenario is one fixture scenario, normalized.
type scenario struct {
	name string
	// events are all the scenario's events in arrival order.
	events []*eventsv1.Event
	// byRequest holds each request's events in arrival order.
	byRequest map[string][]*eventsv1.Event
}

func loadScenarios(t *testing.T) []scenario {
	t.Helper()
	received := time.Unix(1764153000, 0)
	var out []scenario
	for _, fs := range fixtures.Scenarios(t) {
		s := scenario{name: fs.Name, byRequest: map[string][]*eventsv1.Event{}}
		for i, body := range fs.Bodies {
			req, err := normalize.Decode(body)
			if err != nil {
				t.Fatalf("%s line %d: Decode: %v", fs.Name, i+1, err)
			}
			evs, err := normalize.Events(req, received)
			if err != nil {
				t.Fatalf("%s line %d: Events: %v", fs.Name, i+1, err)
			}
			for _, e := range evs {
				s.events = append(s.events, e)
				if e.GetRequestId() != "" {
					s.byRequest[e.GetRequestId()] = append(s.byRequest[e.GetRequestId()], e)
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// newRand returns a generator for test name: seeded from -seed, else the
// clock, and the seed to report on failure.
func newRand(name string) (*rand.Rand, uint64) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64())), seed
}

// scramble returns events shuffled, with up to len(events) retried copies
// mixed in.
func scramble(rng *rand.Rand, events []*eventsv1.Event) []*eventsv1.Event {
	out := slices.Clone(events)
	for range rng.IntN(len(events) + 1) {
		out = append(out, proto.CloneOf(events[rng.IntN(len(events))]))
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestFoldScenariosOrderIndependent folds every fixture request from its
// events in arrival order, then from shuffled events of the whole scenario
// with retries mixed in, and expects the same snapshot.
func TestFoldScenariosOrderIndependent(t *testing.T) {
	t.Parallel()
	for _, s := range loadScenarios(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			rng, seed := newRand(t.Name())
			for id, evs := range s.byRequest {
				want := state.Fold(id, evs)
				for i := range permutations {
					input := scramble(rng, s.events)
					if got := state.Fold(id, input); !proto.Equal(got, want) {
						t.Fatalf("-seed=%d, permutation %d of %s: snapshot differs\n got: %v\nwant: %v\ninput: %s",
							seed, i, id, got, want, eventIDs(input))
					}
				}
			}
		})
	}
}

// TestFoldScenariosMonotonic feeds every request's events one at a time in
// random orders and expects no channel to move back along
// state.DeliveryStatuses, no request to leave SUCCESS, and no active
// channel known at SUCCESS to change after it (every SUCCESS of the current
// payloads names its channel).
func TestFoldScenariosMonotonic(t *testing.T) {
	t.Parallel()
	rank := map[eventsv1.DeliveryStatus]int{}
	for i, s := range state.DeliveryStatuses() {
		rank[s] = i
	}
	for _, s := range loadScenarios(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			rng, seed := newRand(t.Name())
			for id, evs := range s.byRequest {
				for i := range permutations {
					input := scramble(rng, evs)
					prev := state.Fold(id, nil)
					for k := 1; k <= len(input); k++ {
						next := state.Fold(id, input[:k])
						if state.Terminal(prev) && !state.Terminal(next) {
							t.Fatalf("-seed=%d, permutation %d of %s: left SUCCESS adding %s", seed, i, id, input[k-1].GetEventId())
						}
						if state.Terminal(prev) && prev.GetActiveChannel() != "" && next.GetActiveChannel() != prev.GetActiveChannel() {
							t.Fatalf("-seed=%d, permutation %d of %s: the active channel went from %s to %s after SUCCESS adding %s",
								seed, i, id, prev.GetActiveChannel(), next.GetActiveChannel(), input[k-1].GetEventId())
						}
						for _, c := range prev.GetChannels() {
							if after := channel(next, c.GetChannel()).GetStatus(); rank[after] < rank[c.GetStatus()] {
								t.Fatalf("-seed=%d, permutation %d of %s: %s went from %v to %v adding %s",
									seed, i, id, c.GetChannel(), c.GetStatus(), after, input[k-1].GetEventId())
							}
						}
						prev = next
					}
				}
			}
		})
	}
}

// TestFoldScenarios checks each fixture request's final state.
func TestFoldScenarios(t *testing.T) {
	t.Parallel()
	want := map[string]map[string]string{
		"whatsapp-happy-path": {
			"b1f0c2d3e4a5968778695a4b3c2d1e0f": "SUCCESS active=WHATSAPP channels=[WHATSAPP:CLICKED(sent delivered read clicked)] " +
				"fallbacks=[] failures=[] events=6 token=tok_5f2a9c0e71d84b3a",
		},
		"out-of-order-arrival": {
			"d3b2e5f4a7c6b9d8e1f0a2b3c4d5e6f7": "SUCCESS active=WHATSAPP channels=[WHATSAPP:CLICKED(sent delivered read clicked)] " +
				"fallbacks=[] failures=[] events=6 token=tok_0d9e8f7a6b5c4d3e",
		},
		"whatsapp-fails-then-sms": {
			"c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6": "SUCCESS active=SMS " +
				"channels=[WHATSAPP:FAILED(sent failed=033/RETRIABLE_AFTER_OPT_IN) SMS:DELIVERED(sent* delivered)] " +
				"fallbacks=[WHATSAPP->SMS] failures=[WHATSAPP/033] events=6 token=tok_a81c03d5e2f94b10",
		},
		"silent-auth-falls-back": {
			"a7f6c9b8d1e0f3a2b5c4d6e7f8a9b0c1": "SUCCESS active=WHATSAPP channels=[WHATSAPP:DELIVERED(sent delivered)] " +
				"fallbacks=[SILENT_AUTH->WHATSAPP] failures=[] events=5 token=tok_1a2b3c4d5e6f7a8b",
		},
		"legacy-v1-whatsapp": {
			"9a8b7c6d5e4f30211203f4e5d6c7b8a9": "SUCCESS active=WHATSAPP channels=[WHATSAPP:READ(sent delivered read)] " +
				"fallbacks=[] failures=[] events=4 token=tok_9f8e7d6c5b4a3928",
		},
		"phone-and-email": {
			"f5d4a7b6c9e8d1f0a3b2c4d5e6f7a8b9": "SUCCESS active=SMS channels=[SMS:DELIVERED(sent* delivered)] " +
				"fallbacks=[] failures=[] events=3 token=tok_c4b3a2918f7e6d5c",
			"a6e5b8c7d0f9e2a1b4c3d5e6f7a8b9c0": "SUCCESS active=EMAIL channels=[EMAIL:DELIVERED(sent delivered)] " +
				"fallbacks=[] failures=[] events=4 token=tok_c4b3a2918f7e6d5c",
		},
		"provider-retries": {
			"e4c3f6a5b8d7c0e9f2a1b3c4d5e6f7a8": "SUCCESS active=VIBER channels=[VIBER:DELIVERED(sent delivered)] " +
				"fallbacks=[] failures=[] events=4 token=tok_7e6d5c4b3a291807",
		},
	}
	for _, s := range loadScenarios(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			w, ok := want[s.name]
			if !ok {
				t.Fatalf("no expected state for scenario %s", s.name)
			}
			if len(s.byRequest) != len(w) {
				t.Errorf("%d requests, want %d", len(s.byRequest), len(w))
			}
			for id, evs := range s.byRequest {
				if got := describe(state.Fold(id, evs)); got != w[id] {
					t.Errorf("request %s:\n got %s\nwant %s", id, got, w[id])
				}
			}
		})
	}
}

// TestFoldDocs folds each documented body alone, as the first webhook of
// its request, and checks the state it makes: every status, channel and
// legacy notificationType reaches the fold as the fold spells it (the
// golden files pin the normalizer's side, the fold's tests their own; only
// this joins them for the legacy FALLBACK_TRIGGERED and UNREACHABLE, which
// no scenario has). A body naming no request makes no state.
func TestFoldDocs(t *testing.T) {
	t.Parallel()
	want := map[string]string{
		"v1-dlr-sms-delivered":          "IN_PROGRESS active=SMS channels=[SMS:DELIVERED(sent* delivered)] fallbacks=[] failures=[] events=1 token=",
		"v1-dlr-sms-failed":             "FAILED active=SMS channels=[SMS:FAILED(failed=003/RETRIABLE_NO)] fallbacks=[] failures=[SMS/003] events=1 token=",
		"v1-dlr-whatsapp-delivered":     "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:DELIVERED(sent* delivered)] fallbacks=[] failures=[] events=1 token=",
		"v1-dlr-whatsapp-failed":        "FAILED active=WHATSAPP channels=[WHATSAPP:FAILED(failed=003/RETRIABLE_NO)] fallbacks=[] failures=[WHATSAPP/003] events=1 token=",
		"v1-dlr-whatsapp-read":          "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:READ(sent* delivered* read)] fallbacks=[] failures=[] events=1 token=",
		"v1-dlr-whatsapp-sent":          "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:SENT(sent)] fallbacks=[] failures=[] events=1 token=",
		"v1-system-approval-action":     "SUCCESS active= channels=[] fallbacks=[] failures=[] events=1 token=580884110b1b46668baa1d46a65f46d9",
		"v1-system-fallback-triggered":  "IN_PROGRESS active=SMS channels=[] fallbacks=[WHATSAPP->SMS] failures=[] events=1 token=580884110b1b46668baa1d46a65f46d9",
		"v1-system-unreachable-bare":    "",
		"v1-system-unreachable":         "FAILED active= channels=[] fallbacks=[] failures=[] events=1 token=580884110b1b46668baa1d46a65f46d9 unreachable",
		"v2-auth-fallback":              "IN_PROGRESS active=SMS channels=[] fallbacks=[WHATSAPP->SMS] failures=[] events=1 token=",
		"v2-auth-initiated-email":       "IN_PROGRESS active=EMAIL channels=[] fallbacks=[] failures=[] events=1 token=",
		"v2-auth-initiated-phone-email": "IN_PROGRESS active=WHATSAPP channels=[] fallbacks=[] failures=[] events=1 token=",
		"v2-auth-initiated-phone":       "IN_PROGRESS active=WHATSAPP channels=[] fallbacks=[] failures=[] events=1 token=",
		"v2-auth-initiated-social":      "IN_PROGRESS active=GOOGLE channels=[] fallbacks=[] failures=[] events=1 token=",
		"v2-auth-success-email":         "SUCCESS active=EMAIL channels=[] fallbacks=[] failures=[] events=1 token=unique_token",
		"v2-auth-success-phone-email":   "SUCCESS active=WHATSAPP channels=[] fallbacks=[] failures=[] events=1 token=unique_token",
		"v2-auth-success-phone":         "SUCCESS active=WHATSAPP channels=[] fallbacks=[] failures=[] events=1 token=unique_token",
		"v2-auth-success-social":        "SUCCESS active=GOOGLE channels=[] fallbacks=[] failures=[] events=1 token=unique_token",
		"v2-dlr-email-delivered":        "IN_PROGRESS active=EMAIL channels=[EMAIL:DELIVERED(sent* delivered)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-email-failed":           "FAILED active=EMAIL channels=[EMAIL:FAILED(failed=/RETRIABLE_UNSPECIFIED)] fallbacks=[] failures=[EMAIL/] events=1 token=",
		"v2-dlr-email-read":             "IN_PROGRESS active=EMAIL channels=[EMAIL:READ(sent* delivered* read)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-email-sent":             "IN_PROGRESS active=EMAIL channels=[EMAIL:SENT(sent)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-sms-clicked":            "IN_PROGRESS active=SMS channels=[SMS:CLICKED(sent* delivered* read* clicked)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-sms-delivered":          "IN_PROGRESS active=SMS channels=[SMS:DELIVERED(sent* delivered)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-sms-failed":             "FAILED active=SMS channels=[SMS:FAILED(failed=/RETRIABLE_UNSPECIFIED)] fallbacks=[] failures=[SMS/] events=1 token=",
		"v2-dlr-viber-clicked":          "IN_PROGRESS active=VIBER channels=[VIBER:CLICKED(sent* delivered* read* clicked)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-viber-delivered":        "IN_PROGRESS active=VIBER channels=[VIBER:DELIVERED(sent* delivered)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-viber-failed":           "FAILED active=VIBER channels=[VIBER:FAILED(failed=/RETRIABLE_UNSPECIFIED)] fallbacks=[] failures=[VIBER/] events=1 token=",
		"v2-dlr-viber-read":             "IN_PROGRESS active=VIBER channels=[VIBER:READ(sent* delivered* read)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-viber-sent":             "IN_PROGRESS active=VIBER channels=[VIBER:SENT(sent)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-whatsapp-clicked":       "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:CLICKED(sent* delivered* read* clicked)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-whatsapp-delivered":     "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:DELIVERED(sent* delivered)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-whatsapp-failed":        "FAILED active=WHATSAPP channels=[WHATSAPP:FAILED(failed=/RETRIABLE_UNSPECIFIED)] fallbacks=[] failures=[WHATSAPP/] events=1 token=",
		"v2-dlr-whatsapp-read":          "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:READ(sent* delivered* read)] fallbacks=[] failures=[] events=1 token=",
		"v2-dlr-whatsapp-sent":          "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:SENT(sent)] fallbacks=[] failures=[] events=1 token=",
		"v2early-auth-fallback":         "IN_PROGRESS active=SMS channels=[] fallbacks=[WHATSAPP->SMS] failures=[] events=1 token=",
		"v2early-auth-success-phone":    "SUCCESS active=WHATSAPP channels=[] fallbacks=[] failures=[] events=1 token=",
		"v2early-dlr-whatsapp-clicked":  "IN_PROGRESS active=WHATSAPP channels=[WHATSAPP:CLICKED(sent* delivered* read* clicked)] fallbacks=[] failures=[] events=1 token=",
	}
	docs := fixtures.Docs(t)
	if len(docs) != len(want) {
		t.Errorf("%d documented bodies, %d expected states", len(docs), len(want))
	}
	for _, f := range docs {
		w, ok := want[f.Name]
		if !ok {
			t.Errorf("no expected state for %s", f.Name)
			continue
		}
		events := fixtures.Events(t, f.Body)
		var ids []string
		for _, e := range events {
			if id := e.GetRequestId(); id != "" && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		var got []string
		for _, id := range ids {
			got = append(got, describe(state.Fold(id, events)))
		}
		if g := strings.Join(got, "; "); g != w {
			t.Errorf("%s:\n got %s\nwant %s", f.Name, g, w)
		}
	}
}

// TestFoldHappyPath checks one fixture request field by field.
func TestFoldHappyPath(t *testing.T) {
	t.Parallel()
	const id = "b1f0c2d3e4a5968778695a4b3c2d1e0f"
	ms := func(ms int64) *timestamppb.Timestamp { return timestamppb.New(time.UnixMilli(ms)) }
	want := &eventsv1.AuthRequest{
		RequestId:     id,
		Status:        eventsv1.RequestStatus_REQUEST_STATUS_SUCCESS,
		AuthSessionId: "as_7c1e9a2b4d6f",
		TraceId:       "tr_0a1b2c3d",
		ActiveChannel: "WHATSAPP",
		Channels: []*eventsv1.ChannelProgress{{
			Channel:   "WHATSAPP",
			Status:    eventsv1.DeliveryStatus_DELIVERY_STATUS_CLICKED,
			Sent:      &eventsv1.Step{Time: ms(1764153000400)},
			Delivered: &eventsv1.Step{Time: ms(1764153001900)},
			Read:      &eventsv1.Step{Time: ms(1764153007300)},
			Clicked:   &eventsv1.Step{Time: ms(1764153009100)},
			Identity:  "919812345678",
		}},
		AuthMethod:     "OTP",
		AuthChannels:   []string{"WHATSAPP"},
		Phone:          &eventsv1.PhoneDetails{PhoneNumber: "9812345678", CountryCode: "+91"},
		Token:          "tok_5f2a9c0e71d84b3a",
		SuccessTime:    ms(1764153010000),
		FirstEventTime: ms(1764153000000),
		LastEventTime:  ms(1764153010000),
		EventCount:     6,
	}
	for _, s := range loadScenarios(t) {
		if s.name == "whatsapp-happy-path" {
			assertSnapshot(t, state.Fold(id, s.byRequest[id]), want)
			return
		}
	}
	t.Fatal("no whatsapp-happy-path scenario")
}

// TestFoldFailsThenRecovers follows whatsapp-fails-then-sms in arrival
// order: FAILED when WhatsApp fails, back in progress on the fallback.
func TestFoldFailsThenRecovers(t *testing.T) {
	t.Parallel()
	const id = "c2a1d4e3f6b5a8c7d0e9f1a2b3c4d5e6"
	want := []string{"IN_PROGRESS", "IN_PROGRESS", "FAILED", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS"}
	for _, s := range loadScenarios(t) {
		if s.name != "whatsapp-fails-then-sms" {
			continue
		}
		var got []string
		for k := range s.byRequest[id] {
			got = append(got, requestStatus(state.Fold(id, s.byRequest[id][:k+1])))
		}
		if !slices.Equal(got, want) {
			t.Errorf("statuses %v, want %v", got, want)
		}
		return
	}
	t.Fatal("no whatsapp-fails-then-sms scenario")
}

// describe summarizes the shape of r: statuses, steps (* when implied),
// fallbacks, failures, event count, token, and whether OTPLESS reported
// the user unreachable.
func describe(r *eventsv1.AuthRequest) string {
	var channels, fallbacks, failures []string
	for _, c := range r.GetChannels() {
		var steps []string
		for _, st := range []struct {
			name string
			step *eventsv1.Step
		}{{"sent", c.GetSent()}, {"delivered", c.GetDelivered()}, {"read", c.GetRead()}, {"clicked", c.GetClicked()}} {
			switch {
			case st.step.GetImplied():
				steps = append(steps, st.name+"*")
			case st.step != nil:
				steps = append(steps, st.name)
			}
		}
		if c.GetFailed() != nil {
			steps = append(steps, "failed="+c.GetError().GetCode()+"/"+c.GetError().GetRetriable().String())
		}
		status := strings.TrimPrefix(c.GetStatus().String(), "DELIVERY_STATUS_")
		channels = append(channels, fmt.Sprintf("%s:%s(%s)", c.GetChannel(), status, strings.Join(steps, " ")))
	}
	for _, f := range r.GetFallbacks() {
		fallbacks = append(fallbacks, f.GetFromChannel()+"->"+f.GetToChannel())
	}
	for _, f := range r.GetFailures() {
		failures = append(failures, f.GetChannel()+"/"+f.GetError().GetCode())
	}
	unreachable := ""
	if r.GetUnreachableTime() != nil {
		unreachable = " unreachable"
	}
	return fmt.Sprintf("%s active=%s channels=[%s] fallbacks=[%s] failures=[%s] events=%d token=%s%s",
		requestStatus(r), r.GetActiveChannel(), strings.Join(channels, " "),
		strings.Join(fallbacks, " "), strings.Join(failures, " "), r.GetEventCount(), r.GetToken(), unreachable)
}

func requestStatus(r *eventsv1.AuthRequest) string {
	return strings.TrimPrefix(r.GetStatus().String(), "REQUEST_STATUS_")
}

func channel(r *eventsv1.AuthRequest, name string) *eventsv1.ChannelProgress {
	for _, c := range r.GetChannels() {
		if c.GetChannel() == name {
			return c
		}
	}
	return nil
}

func eventIDs(events []*eventsv1.Event) string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.GetEventId()
	}
	return strings.Join(ids, " ")
}
