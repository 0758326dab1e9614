package loadgen

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Mix shapes the generated auth requests. Every request starts with
// INITIATED and ends with SUCCESS, like the shipped scenarios.
type Mix struct {
	// Fallback is the share of requests whose WhatsApp message fails and
	// that fall back to SMS (FAILED, FALLBACK, then SMS DELIVERED).
	Fallback float64
	// Duplicate is the share of webhooks OTPLESS sends again (a byte-equal
	// retry a little later).
	Duplicate float64
	// Reorder is the chance, for each webhook of a request in turn, that
	// it trades places with the next one; the two are then not moved
	// again, so about Reorder/(1+Reorder) of neighbouring pairs arrive
	// swapped (9% at 0.1, at most half).
	Reorder float64
}

// DefaultMix is about 10% fallbacks, 5% retries and 10% reordering.
var DefaultMix = Mix{Fallback: 0.10, Duplicate: 0.05, Reorder: 0.10}

// Webhook is one body to post.
type Webhook struct {
	Body []byte
	// Key names the event the body carries, as a watcher sees it in an
	// UPDATE (EventKey).
	Key string
	// Retry marks a byte-equal repeat of an earlier body: it changes
	// nothing once that one was stored, and stores the event when that one
	// was refused.
	Retry bool
}

// EventKey is how a watcher recognises an event: its status and delivery
// channel. Within one generated request every event has its own key.
func EventKey(status, channel string) string { return status + "/" + channel }

// step is one event of a request before it becomes a body.
type step struct {
	status, channel string
	offset          time.Duration // event time after the request's start
}

// NewRequest returns the webhooks of one auth request with id, in the order
// they are to be sent. rng decides its shape; start is its INITIATED time.
func NewRequest(rng *rand.Rand, id string, start time.Time, mix Mix) []Webhook {
	var steps []step
	auth, fellBack := "WHATSAPP", false
	switch {
	case rng.Float64() < mix.Fallback:
		fellBack = true
		steps = []step{
			{"INITIATED", "", 0},
			{"SENT", "WHATSAPP", 300 * time.Millisecond},
			{"FAILED", "WHATSAPP", 2 * time.Second},
			{"FALLBACK", "", 2100 * time.Millisecond},
			{"DELIVERED", "SMS", 4 * time.Second},
		}
		auth = "SMS"
	case rng.Float64() < 0.3:
		steps = []step{{"INITIATED", "", 0}, {"DELIVERED", "SMS", 1500 * time.Millisecond}}
		auth = "SMS"
	default:
		steps = []step{{"INITIATED", "", 0}, {"SENT", "WHATSAPP", 300 * time.Millisecond}, {"DELIVERED", "WHATSAPP", 1500 * time.Millisecond}}
		if rng.Float64() < 0.8 {
			steps = append(steps, step{"READ", "WHATSAPP", 5 * time.Second})
			if rng.Float64() < 0.4 {
				steps = append(steps, step{"CLICKED", "WHATSAPP", 7 * time.Second})
			}
		}
	}
	steps = append(steps, step{"SUCCESS", "", 10 * time.Second})

	r := &request{
		id:       id,
		session:  fmt.Sprintf("as_%012x", rng.Uint64()>>16),
		trace:    fmt.Sprintf("tr_%08x", rng.Uint32()),
		phone:    fmt.Sprintf("98%08d", rng.IntN(100_000_000)),
		token:    fmt.Sprintf("tok_%016x", rng.Uint64()),
		auth:     auth,
		fellBack: fellBack,
		start:    start,
	}
	out := make([]Webhook, 0, len(steps)+2)
	for _, s := range steps {
		out = append(out, Webhook{Body: r.body(s), Key: EventKey(s.status, s.channel)})
	}
	// Retries come one to three webhooks later (or last).
	for i := len(out) - 1; i >= 0; i-- {
		if !out[i].Retry && rng.Float64() < mix.Duplicate {
			at := min(i+1+rng.IntN(3), len(out))
			out = append(out[:at], append([]Webhook{{Body: out[i].Body, Key: out[i].Key, Retry: true}}, out[at:]...)...)
		}
	}
	for i := 0; i+1 < len(out); i++ {
		if rng.Float64() < mix.Reorder {
			out[i], out[i+1] = out[i+1], out[i]
			i++
		}
	}
	return out
}

// request holds what every body of one auth request shares.
type request struct {
	id, session, trace, phone, token, auth string
	fellBack                               bool
	start                                  time.Time
}

// body renders one step in the current v2 format: epoch milliseconds on
// delivery reports and FALLBACK, epoch seconds on INITIATED and SUCCESS.
func (r *request) body(s step) []byte {
	at := r.start.Add(s.offset)
	switch s.status {
	case "INITIATED", "SUCCESS":
		channels := `["` + r.auth + `"]`
		if s.status == "INITIATED" && r.fellBack {
			channels = `["WHATSAPP","SMS"]`
		}
		token := ""
		if s.status == "SUCCESS" {
			token = `"token":"` + r.token + `",`
		}
		return fmt.Appendf(nil, `{"data":{"authSessionId":%q,"traceId":%q,%s"status":%q,"authenticationDetails":{"phone":{"requestId":%q,"method":"OTP","channel":%s,"phoneNumber":%q,"countryCode":"+91"},"email":{}}},"eventType":"AUTH","timestamp":%d}`,
			r.session, r.trace, token, s.status, r.id, channels, r.phone, at.Unix())
	case "FALLBACK":
		return fmt.Appendf(nil, `{"data":{"requestId":%q,"authSessionId":%q,"traceId":%q,"status":"FALLBACK","fromChannel":"WHATSAPP","toChannel":"SMS"},"eventType":"AUTH","timestamp":%d}`,
			r.id, r.session, r.trace, at.UnixMilli())
	}
	failure := ""
	if s.status == "FAILED" {
		failure = `,"errorCode":"033","errorMessage":"Mobile Number not OPT-IN"`
	}
	return fmt.Appendf(nil, `{"data":{"requestId":%q,"authSessionId":%q,"traceId":%q,"status":%q,"channel":%q,"identity":"91%s","metaData":{}%s},"eventType":"DLR","timestamp":%d}`,
		r.id, r.session, r.trace, s.status, s.channel, r.phone, failure, at.UnixMilli())
}
