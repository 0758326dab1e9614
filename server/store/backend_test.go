package store_test

import (
	"testing"
	"testing/fstest"

	eventsv1 "github.com/otpless-events/otpless-events/gen/otpless/events/v1"
	"github.com/otpless-events/otpless-events/server/store"
)

func TestLoadMigrations(t *testing.T) {
	t.Parallel()
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ms, err := store.LoadMigrations(fstest.MapFS{
		"m/0002_b.sql": file("B"), "m/0001_a.sql": file("A"), "m/README": file("x"),
	}, "m/*.sql")
	if err != nil || len(ms) != 2 || ms[0].Name != "0001_a.sql" || ms[1].SQL != "B" || ms[1].Version != 2 {
		t.Fatalf("LoadMigrations = %+v, %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":      {"m/0001_a.sql": file("A"), "m/0003_c.sql": file("C")},
		"bad name": {"m/first.sql": file("A")},
		"zero":     {"m/0000_a.sql": file("A")},
	} {
		if _, err := store.LoadMigrations(fsys, "m/*.sql"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheckBatch(t *testing.T) {
	t.Parallel()
	ok := []store.Webhook{{Events: []*eventsv1.Event{{EventId: "e"}}}}
	if err := store.CheckBatch(ok); err != nil {
		t.Fatal(err)
	}
	bad := append(ok, store.Webhook{Events: []*eventsv1.Event{{EventId: "e"}, {}}})
	if err := store.CheckBatch(bad); err == nil {
		t.Fatal("an event without an id was accepted")
	}
}
