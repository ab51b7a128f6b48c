package users

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Unit tests of the stream semantics /sync will rely on: account data and
// receipt positions, what AccountDataSince and ReceiptsSince return, and
// the receipt rules no HTTP endpoint shows yet.

func newTestService(t *testing.T) *Service {
	t.Helper()
	db := dbtest.Open(t)
	t.Cleanup(func() { db.Close() })
	s, err := New(context.Background(), db, Config{
		ServerName: "tessera.test",
		Passwords:  config.Passwords{HashMemoryKiB: 64, HashIterations: 1},
	})
	if err != nil {
		t.Fatalf("users.New: %v", err)
	}
	for _, l := range []string{"alice", "bob"} {
		if _, err := s.CreateAccount(context.Background(), NewAccount{Localpart: l}); err != nil {
			t.Fatalf("create %s: %v", l, err)
		}
	}
	return s
}

// fakeRooms is a room server with fixed memberships and events.
type fakeRooms struct {
	joined map[string]bool  // user IDs joined to the room
	events map[string]int64 // event ID -> stream position
}

func (f fakeRooms) Membership(_ context.Context, _, userID string) (string, error) {
	if f.joined[userID] {
		return "join", nil
	}
	return "", nil
}

func (f fakeRooms) VisibleEventPos(_ context.Context, _, _, eventID string) (int64, error) {
	if pos, ok := f.events[eventID]; ok {
		return pos, nil
	}
	return 0, mxerr.NotFound("Event not found")
}

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	me, ok := mxerr.As(err)
	if !ok || me.Status != status || me.Code != code {
		t.Fatalf("error = %v, want %d %s", err, status, code)
	}
}

type entry struct {
	room, typ, content string
	pos                int64
}

func entries(t *testing.T, s *Service, user string, since int64) []entry {
	t.Helper()
	es, err := s.AccountDataSince(context.Background(), user, since)
	if err != nil {
		t.Fatalf("AccountDataSince: %v", err)
	}
	out := []entry{}
	for _, e := range es {
		out = append(out, entry{e.RoomID, e.Type, string(e.Content), e.StreamPos})
	}
	return out
}

func TestAccountDataStream(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t)
	const alice, bob, room = "@alice:tessera.test", "@bob:tessera.test", "!r:tessera.test"
	pos := func() int64 {
		p, err := s.AccountDataPos(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := pos(); p != 0 {
		t.Fatalf("initial position %d", p)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetAccountData(ctx, alice, "", "a.one", []byte(`{ "x" : 1 }`)))
	must(s.SetAccountData(ctx, alice, room, "a.two", []byte(`{}`)))
	must(s.SetAccountData(ctx, bob, "", "b.one", []byte(`{}`)))
	must(s.SetAccountData(ctx, alice, "", "a.one", []byte(`{"x":2}`)))
	if p := pos(); p != 4 {
		t.Fatalf("position %d after four changes", p)
	}
	// Each entry once, with its latest content and position, compacted.
	want := []entry{{room, "a.two", `{}`, 2}, {"", "a.one", `{"x":2}`, 4}}
	if got := entries(t, s, alice, 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("since 0: %v, want %v", got, want)
	}
	if got := entries(t, s, alice, 2); !reflect.DeepEqual(got, want[1:]) {
		t.Fatalf("since 2: %v", got)
	}
	if got := entries(t, s, alice, 4); len(got) != 0 {
		t.Fatalf("since 4: %v", got)
	}

	// Tags: a change takes a position, a change that changes nothing not.
	must(s.SetTag(ctx, alice, room, "u.work", []byte(`{"order":5e-1}`)))
	must(s.SetTag(ctx, alice, room, "u.work", []byte(`{"order":0.5}`)))
	must(s.DeleteTag(ctx, alice, room, "u.none"))
	if p := pos(); p != 5 {
		t.Fatalf("position %d after one real tag change", p)
	}
	want = []entry{{room, "m.tag", `{"tags":{"u.work":{"order":0.5}}}`, 5}}
	if got := entries(t, s, alice, 4); !reflect.DeepEqual(got, want) {
		t.Fatalf("tags: %v, want %v", got, want)
	}

	// Refusals write nothing.
	wantCode(t, s.SetAccountData(ctx, alice, "", "m.fully_read", []byte(`{}`)), 405, "M_BAD_JSON")
	wantCode(t, s.SetAccountData(ctx, alice, "bad", "x", []byte(`{}`)), 400, "M_INVALID_PARAM")
	wantCode(t, s.SetAccountData(ctx, alice, "", "x", []byte(`[]`)), 400, "M_BAD_JSON")
	if p := pos(); p != 5 {
		t.Fatalf("position %d after refusals", p)
	}
}

func TestReceiptsStream(t *testing.T) {
	ctx := context.Background()
	s := newTestService(t)
	const alice, bob, room = "@alice:tessera.test", "@bob:tessera.test", "!r:tessera.test"
	rooms := fakeRooms{
		joined: map[string]bool{alice: true, bob: true},
		events: map[string]int64{"$e1": 10, "$e2": 20, "$e3": 30},
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	since := func(viewer string, from int64) []Receipt {
		t.Helper()
		rs, err := s.ReceiptsSince(ctx, viewer, []string{room, "!other:tessera.test"}, from)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rs {
			rs[i].TS = 0
		}
		return rs
	}

	must(s.SendReceipt(ctx, rooms, alice, room, ReceiptRead, "$e2", nil))
	// Receipts only move forward: an older or the same event is ignored.
	must(s.SendReceipt(ctx, rooms, alice, room, ReceiptRead, "$e1", []byte(`{}`)))
	must(s.SendReceipt(ctx, rooms, alice, room, ReceiptRead, "$e2", []byte(`{}`)))
	// Threads and private receipts are separate.
	must(s.SendReceipt(ctx, rooms, alice, room, ReceiptRead, "$e1", []byte(`{"thread_id":"main"}`)))
	must(s.SetReadMarkers(ctx, rooms, alice, room, ReadMarkers{ReadPrivate: "$e3", FullyRead: "$e1"}))
	must(s.SetReadMarkers(ctx, rooms, bob, room, ReadMarkers{Read: "$e3"}))

	aliceRead := Receipt{RoomID: room, UserID: alice, Type: ReceiptRead, EventID: "$e2", StreamPos: 1}
	aliceThread := Receipt{RoomID: room, UserID: alice, Type: ReceiptRead, ThreadID: "main", EventID: "$e1", StreamPos: 2}
	alicePrivate := Receipt{RoomID: room, UserID: alice, Type: ReceiptReadPrivate, EventID: "$e3", StreamPos: 3}
	bobRead := Receipt{RoomID: room, UserID: bob, Type: ReceiptRead, EventID: "$e3", StreamPos: 4}
	if got, want := since(alice, 0), []Receipt{aliceRead, aliceThread, alicePrivate, bobRead}; !reflect.DeepEqual(got, want) {
		t.Fatalf("alice sees %+v, want %+v", got, want)
	}
	// Nobody else sees alice's private receipt.
	if got, want := since(bob, 0), []Receipt{aliceRead, aliceThread, bobRead}; !reflect.DeepEqual(got, want) {
		t.Fatalf("bob sees %+v, want %+v", got, want)
	}
	if got, want := since(bob, 3), []Receipt{bobRead}; !reflect.DeepEqual(got, want) {
		t.Fatalf("bob since 3 sees %+v", got)
	}
	if p, err := s.ReceiptsPos(ctx); err != nil || p != 4 {
		t.Fatalf("receipts position %d, %v", p, err)
	}
	// The fully read marker is account data, not a receipt.
	if got := entries(t, s, alice, 0); len(got) != 1 || got[0].typ != TypeFullyRead || got[0].content != `{"event_id":"$e1"}` {
		t.Fatalf("account data: %v", got)
	}

	// Refusals: not joined, unknown event (with nothing of the request
	// stored), bad thread IDs.
	wantCode(t, s.SendReceipt(ctx, fakeRooms{events: rooms.events}, alice, room, ReceiptRead, "$e3", nil), 403, "M_FORBIDDEN")
	wantCode(t, s.SetReadMarkers(ctx, rooms, alice, room, ReadMarkers{FullyRead: "$e3", Read: "$nope"}), 404, "M_NOT_FOUND")
	wantCode(t, s.SendReceipt(ctx, rooms, alice, room, TypeFullyRead, "$e3", []byte(`{"thread_id":"main"}`)), 400, "M_INVALID_PARAM")
	wantCode(t, s.SendReceipt(ctx, rooms, alice, room, ReceiptRead, "$e3", []byte(`{"thread_id":null}`)), 400, "M_INVALID_PARAM")
	if p, _ := s.ReceiptsPos(ctx); p != 4 {
		t.Fatalf("receipts position %d after refusals", p)
	}
	if got := entries(t, s, alice, 0); got[0].content != `{"event_id":"$e1"}` {
		t.Fatalf("fully read moved by a refused request: %v", got)
	}

	// The m.receipt content.
	content, _ := json.Marshal(ReceiptContent([]Receipt{
		{UserID: alice, Type: ReceiptRead, EventID: "$e2", TS: 5},
		{UserID: bob, Type: ReceiptRead, ThreadID: "main", EventID: "$e2", TS: 6},
	}))
	want := `{"$e2":{"m.read":{"@alice:tessera.test":{"ts":5},"@bob:tessera.test":{"thread_id":"main","ts":6}}}}`
	if string(content) != want {
		t.Fatalf("receipt content %s, want %s", content, want)
	}
}

func TestDirectoryMatching(t *testing.T) {
	cases := []struct {
		term, userID, name string
		want               bool
	}{
		{"ali", "@alice:x.org", "", true},
		{"ALICE", "@alice:x.org", "", true},
		{"smi", "@a:x.org", "Alice Smith", true},
		{"alice smi", "@a:x.org", "Alice Smith", true},
		{"alice jones", "@a:x.org", "Alice Smith", false},
		{"lice", "@alice:x.org", "", false},
		{"zoë", "@z:x.org", "Zoë Zed", true},
		{"x.org", "@a:x.org", "", true},
	}
	for _, c := range cases {
		ok := true
		for _, w := range searchWords(c.term) {
			if matchWord(w, searchWords(c.userID)) == 0 && matchWord(w, searchWords(c.name)) == 0 {
				ok = false
			}
		}
		if ok != c.want {
			t.Errorf("%q against %s (%q): %v, want %v", c.term, c.userID, c.name, ok, c.want)
		}
	}
}
