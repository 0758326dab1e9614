package sqlitestore_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
	"github.com/otpless-events/otpless-events/server/store/sqlitestore"
)

// traffic makes webhooks like OTPLESS's: whole auth requests with random
// request ids (INITIATED, two to four delivery reports, SUCCESS), inflight
// of them in progress at once and interleaved, and 5% of webhooks retried
// a few webhooks later.
type traffic struct {
	rng      *rand.Rand
	inflight [][]store.Webhook // the webhooks each request has still to send
	retries  []store.Webhook
	at       time.Time
}

func newTraffic(seed uint64, inflight int) *traffic {
	t := &traffic{rng: rand.New(rand.NewPCG(seed, 7)), at: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	t.inflight = make([][]store.Webhook, inflight)
	for i := range t.inflight {
		t.inflight[i] = t.request()
	}
	return t
}

func (t *traffic) request() []store.Webhook {
	rid := fmt.Sprintf("%016x%016x", t.rng.Uint64(), t.rng.Uint64())
	session := fmt.Sprintf("as_%012x", t.rng.Uint64()>>16)
	trace := fmt.Sprintf("tr_%08x", t.rng.Uint32())
	phone := fmt.Sprintf("98%08d", t.rng.IntN(100_000_000))
	start := t.at
	ev := func(k int, kind eventsv1.EventKind, status, channel string) store.Webhook {
		e := &eventsv1.Event{
			EventId:       fmt.Sprintf("%s-%d-%016x", rid[:8], k, t.rng.Uint64()),
			RequestId:     rid,
			Kind:          kind,
			Status:        status,
			Channel:       channel,
			AuthSessionId: session,
			TraceId:       trace,
			EventTime:     timestamppb.New(start.Add(time.Duration(k) * 700 * time.Millisecond)),
			ReceiveTime:   timestamppb.New(start.Add(time.Duration(k)*700*time.Millisecond + 40*time.Millisecond)),
		}
		if kind == eventsv1.EventKind_EVENT_KIND_AUTH {
			e.AuthMethod = "OTP"
			e.AuthChannels = []string{"WHATSAPP"}
			e.Phone = &eventsv1.PhoneDetails{PhoneNumber: phone, CountryCode: "+91"}
		} else {
			e.Identity = "91" + phone
		}
		body := fmt.Appendf(nil, `{"data":{"requestId":%q,"authSessionId":%q,"traceId":%q,"status":%q,"channel":%q,"identity":"91%s","metaData":{}},"eventType":"DLR","timestamp":%d}`,
			rid, session, trace, status, channel, phone, e.EventTime.AsTime().UnixMilli())
		return store.Webhook{Body: body, Received: e.ReceiveTime.AsTime(), Events: []*eventsv1.Event{e}}
	}
	out := []store.Webhook{ev(0, eventsv1.EventKind_EVENT_KIND_AUTH, "INITIATED", "")}
	for k, s := range []string{"SENT", "DELIVERED", "READ"}[:1+t.rng.IntN(3)] {
		out = append(out, ev(k+1, eventsv1.EventKind_EVENT_KIND_DELIVERY, s, "WHATSAPP"))
	}
	return append(out, ev(len(out), eventsv1.EventKind_EVENT_KIND_AUTH, "SUCCESS", ""))
}

// next returns the next webhook: the next step of a random request in
// progress, or a retry.
func (t *traffic) next() store.Webhook {
	t.at = t.at.Add(50 * time.Microsecond)
	if len(t.retries) > 0 && t.rng.IntN(4) == 0 {
		wh := t.retries[0]
		t.retries = t.retries[1:]
		return wh
	}
	i := t.rng.IntN(len(t.inflight))
	wh := t.inflight[i][0]
	if t.inflight[i] = t.inflight[i][1:]; len(t.inflight[i]) == 0 {
		t.inflight[i] = t.request()
	}
	if t.rng.IntN(20) == 0 {
		t.retries = append(t.retries, wh)
	}
	return wh
}

// BenchmarkCommit measures store.Commit alone on realistic traffic, in
// batches of 32 webhooks (what the group commit makes of full load), with
// 256 requests in progress (all in the event cache) or 50,000 (mostly not),
// and with the event cache off; and in batches of 1 and 128, which show
// what a commit costs whatever its size (moderate rates make batches of one
// to four). One op is one webhook.
func BenchmarkCommit(b *testing.B) {
	for _, bc := range []struct {
		inflight, cache, batch int
	}{{256, 4096, 32}, {256, 0, 32}, {50_000, 4096, 32}, {256, 4096, 1}, {256, 4096, 128}} {
		b.Run(fmt.Sprintf("inflight=%d/cache=%d/batch=%d", bc.inflight, bc.cache, bc.batch), func(b *testing.B) {
			s, err := sqlitestore.Open(b.Context(), filepath.Join(b.TempDir(), "events.db"), sqlitestore.WithEventCache(bc.cache))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			tr := newTraffic(1, bc.inflight)
			// Warm up: a database that is not empty, requests in progress.
			const warmBatch = 32
			for range 20_000 / warmBatch {
				batch := make([]store.Webhook, warmBatch)
				for i := range batch {
					batch[i] = tr.next()
				}
				if _, _, err := s.Commit(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			whs := make([]store.Webhook, b.N)
			for i := range whs {
				whs[i] = tr.next()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for len(whs) > 0 {
				n := min(bc.batch, len(whs))
				if _, _, err := s.Commit(b.Context(), whs[:n]); err != nil {
					b.Fatal(err)
				}
				whs = whs[n:]
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
		})
	}
}

// BenchmarkListEvents reads the first page (100) of a request's events: a
// typical request of 6 events, and one of 2,000.
func BenchmarkListEvents(b *testing.B) {
	for _, n := range []int{6, 2000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			s, err := sqlitestore.Open(b.Context(), filepath.Join(b.TempDir(), "events.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			tr := newTraffic(1, 64)
			for range 200 { // other requests around it
				batch := make([]store.Webhook, 32)
				for i := range batch {
					batch[i] = tr.next()
				}
				if _, _, err := s.Commit(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			var batch []store.Webhook
			for k := range n {
				wh := deliveryHook("big", k)
				if batch = append(batch, wh); len(batch) == 64 || k == n-1 {
					if _, _, err := s.Commit(b.Context(), batch); err != nil {
						b.Fatal(err)
					}
					batch = nil
				}
			}
			b.ResetTimer()
			for b.Loop() {
				events, _, err := s.ListEvents(b.Context(), "big", store.Page{Size: 100})
				if err != nil || len(events) != min(n, 100) {
					b.Fatalf("ListEvents: %d events, %v", len(events), err)
				}
			}
		})
	}
}

func deliveryHook(rid string, k int) store.Webhook {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC).Add(time.Duration(k*7919%100_000) * time.Millisecond)
	e := &eventsv1.Event{
		EventId: fmt.Sprintf("%s-%d", rid, k), RequestId: rid, Kind: eventsv1.EventKind_EVENT_KIND_DELIVERY,
		Status: "SENT", Channel: "SMS", EventTime: timestamppb.New(at), ReceiveTime: timestamppb.New(at),
	}
	return store.Webhook{Body: []byte(fmt.Sprintf(`{"k":%d}`, k)), Received: at, Events: []*eventsv1.Event{e}}
}

// BenchmarkPurge measures PurgePII: retention removing the personal data of
// webhooks past their time, which at steady state must keep up with ingest
// (every webhook is purged once). One op is one webhook purged.
func BenchmarkPurge(b *testing.B) {
	s, err := sqlitestore.Open(b.Context(), filepath.Join(b.TempDir(), "events.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	tr := newTraffic(1, 1000)
	const batchSize = 32
	for n := 0; n < b.N; n += batchSize {
		batch := make([]store.Webhook, min(batchSize, b.N-n))
		for i := range batch {
			batch[i] = tr.next()
		}
		if _, _, err := s.Commit(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	purged, err := s.PurgePII(b.Context(), time.Now().Add(24*365*time.Hour), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if purged == 0 {
		b.Fatal("nothing purged")
	}
	b.ReportMetric(float64(purged)/b.Elapsed().Seconds(), "webhooks/s")
}
