package api

import "testing"

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
