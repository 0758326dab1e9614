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
