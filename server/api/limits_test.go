package api

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TakeAll takes every place or none: refused at one, it names that one and
// has given back those before it.
func TestTakeAll(t *testing.T) {
	t.Parallel()
	a, b := NewSlots(2), NewSlots(1)
	places := []Place{{Slots: a, Key: "x"}, {Slots: b, Key: "y"}}
	if i := TakeAll(places); i != -1 {
		t.Fatalf("TakeAll of free places = %d, want -1", i)
	}
	if i := TakeAll(places); i != 1 {
		t.Fatalf("TakeAll with the second place full = %d, want 1", i)
	}
	if !a.Take("x") || a.Take("x") {
		t.Fatal("a refused TakeAll kept its place in the first Slots, or gave back one it did not take")
	}
	a.Give("x")
	GiveAll(places)
	if i := TakeAll(places); i != -1 {
		t.Fatalf("TakeAll after GiveAll = %d, want -1", i)
	}
}

// Slots forgets a key once its last slot is given back: a key per request
// id watched would otherwise stay for good, a map every watch grows.
func TestSlotsForgetFreeKeys(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{0, 2} {
		s := NewSlots(limit)
		for _, key := range []string{"a", "b", "a"} {
			if !s.Take(key) {
				t.Fatalf("limit %d: Take(%q) refused", limit, key)
			}
		}
		s.Give("a")
		s.Give("b")
		if len(s.open) != 1 || s.open["a"] != 1 {
			t.Errorf("limit %d: after giving back all of b and one of a's two, open = %v, want a: 1", limit, s.open)
		}
		s.Give("a")
		if len(s.open) != 0 {
			t.Errorf("limit %d: every slot given back, open = %v, want none", limit, s.open)
		}
	}
}

// RetryDelay reads the RetryInfo that Exhausted gives, wherever it is
// among the details, and nothing from an error without a valid one.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	if d, ok := RetryDelay(Exhausted("too many")); !ok || d != RetryStreamAfter {
		t.Errorf("RetryDelay(Exhausted) = %v, %v, want %v", d, ok, RetryStreamAfter)
	}
	with := func(details ...protoadapt.MessageV1) error {
		st, err := status.New(codes.ResourceExhausted, "too many").WithDetails(details...)
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	if d, ok := RetryDelay(with(&errdetails.ErrorInfo{Reason: "LIMIT"}, &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})); !ok || d != time.Second {
		t.Errorf("RetryDelay of a RetryInfo after another detail = %v, %v, want 1s", d, ok)
	}
	for name, err := range map[string]error{
		"not a status":     errors.New("too many"),
		"no details":       status.Error(codes.ResourceExhausted, "too many"),
		"no RetryInfo":     with(&errdetails.ErrorInfo{Reason: "LIMIT"}),
		"a negative delay": with(&errdetails.RetryInfo{RetryDelay: durationpb.New(-time.Second)}),
		"an invalid delay": with(&errdetails.RetryInfo{RetryDelay: &durationpb.Duration{Seconds: 1, Nanos: -1}}),
		"no delay in it":   with(&errdetails.RetryInfo{}),
	} {
		if d, ok := RetryDelay(err); ok {
			t.Errorf("RetryDelay with %s = %v, true; want false", name, d)
		}
	}
}
