package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// fedStart starts a room server named name on a fresh database.
func fedStart(t *testing.T, name spec.ServerName) *Service {
	t.Helper()
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	db := dbtest.Open(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	s, err := New(ctx, db, Config{ServerName: name, KeyID: "ed25519:test", PrivateKey: key, DefaultRoomVersion: "12"}, dagProfiles{}, log)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		db.Close()
	})
	return s
}

// localFetcher is a HistoryFetcher that asks another room server in the
// process, as origin, sending the events through their JSON as the
// network would.
type localFetcher struct {
	t      *testing.T
	from   *Service
	origin spec.ServerName
	// extra is added to every backfill answer; unredacted replaces
	// events by their originals (a server that missed their redaction).
	extra      []gomatrixserverlib.PDU
	unredacted map[string]gomatrixserverlib.PDU
	stateCalls int
}

func (f *localFetcher) reparse(evs []*Event) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, len(evs))
	for i, ev := range evs {
		p, err := gomatrixserverlib.MustGetRoomVersion(ev.Version()).NewEventFromUntrustedJSON(ev.JSON())
		if err != nil {
			f.t.Errorf("event %s does not survive the network: %v", ev.EventID(), err)
			continue
		}
		out[i] = p
	}
	return out
}

func (f *localFetcher) Backfill(ctx context.Context, _ spec.ServerName, roomID string, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	evs, err := f.from.BackfillForServer(ctx, f.origin, roomID, from, limit)
	if err != nil {
		return nil, err
	}
	out := f.reparse(evs)
	for i, p := range out {
		if orig := f.unredacted[p.EventID()]; orig != nil {
			out[i] = orig
		}
	}
	return append(out, f.extra...), nil
}

func (f *localFetcher) StateBefore(ctx context.Context, _ spec.ServerName, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error) {
	f.stateCalls++
	st, chain, err := f.from.StateForServer(ctx, f.origin, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	return f.reparse(st), f.reparse(chain), nil
}

// history lists a room's history as /messages would page through it with
// backfilled events included, newest first.
func history(t *testing.T, s *Service, roomID string) []string {
	t.Helper()
	rows, err := s.db.QueryContext(context.Background(), `SELECT e.event_id FROM events e WHERE e.room_id = $1 AND `+HistorySQL+`
		ORDER BY e.depth DESC, e.stream_pos DESC`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func stateIDsBefore(t *testing.T, s *Service, origin spec.ServerName, roomID, eventID string) []string {
	t.Helper()
	st, _, err := s.StateForServer(context.Background(), origin, roomID, eventID)
	if err != nil {
		t.Fatalf("state before %s on %s: %v", eventID, s.cfg.ServerName, err)
	}
	ids := make([]string, len(st))
	for i, ev := range st {
		ids[i] = ev.EventID()
	}
	slices.Sort(ids)
	return ids
}

func bodyOf(ev *Event) string {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Body
}

// TestBackfillFromAnotherServer: server B joins a room of server A, then
// fetches the room's history from before its join, a few events at a
// time, until it has all of A's. The history comes in as outliers (no
// stream position sync could see), each with the same state as on A,
// with redactions applied across the join, a forged event rejected, and B
// can serve it on.
func TestBackfillFromAnotherServer(t *testing.T) {
	ctx := context.Background()
	a, b := fedStart(t, "a.test"), fedStart(t, "b.test")
	alice := "@alice:a.test"
	roomID, err := a.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := spec.NewRoomID(roomID)
	send := func(typ string, stateKey *string, content string) *Event {
		t.Helper()
		ev, err := a.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: typ, StateKey: stateKey, Content: json.RawMessage(content)})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var msgs []*Event
	for i := range 10 {
		if i == 4 {
			empty := ""
			send("m.room.topic", &empty, `{"topic":"halfway"}`)
		}
		msgs = append(msgs, send("m.room.message", nil, fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i)))
	}
	red5, err := a.Redact(ctx, roomID, alice, msgs[5].EventID(), "", nil)
	if err != nil {
		t.Fatal(err)
	}

	// bob of B joins through A, and B stores the room as a join over
	// federation does.
	_, bkey, _ := ed25519.GenerateKey(nil)
	ver := gomatrixserverlib.MustGetRoomVersion("12")
	bob, _ := spec.NewUserID("@bob:b.test", true)
	tmpl, err := a.MakeJoin(ctx, "b.test", *rid, *bob, []gomatrixserverlib.RoomVersion{"12"})
	if err != nil {
		t.Fatal(err)
	}
	proto := tmpl.JoinTemplateEvent
	joinPDU, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "b.test", "ed25519:b", bkey)
	if err != nil {
		t.Fatal(err)
	}
	join, state, chain, err := a.SendJoin(ctx, "b.test", *rid, joinPDU.EventID(), joinPDU.JSON(), acceptAll{})
	if err != nil {
		t.Fatal(err)
	}
	pdus := func(evs []*Event) []gomatrixserverlib.PDU {
		out := make([]gomatrixserverlib.PDU, len(evs))
		for i, ev := range evs {
			out[i] = ev.PDU
		}
		return out
	}
	if _, err := b.StoreRemoteJoin(ctx, "a.test", "12", join.PDU, pdus(state), pdus(chain)); err != nil {
		t.Fatal(err)
	}
	// After the join: a message, and the redaction of one B never had.
	after := send("m.room.message", nil, `{"msgtype":"m.text","body":"after"}`)
	red, err := a.Redact(ctx, roomID, alice, msgs[7].EventID(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []*Event{after, red} {
		if _, err := b.IngestRemote(ctx, "a.test", ev.PDU, false); err != nil {
			t.Fatalf("B ingests %s: %v", ev.Type(), err)
		}
	}
	if got := history(t, b, roomID); !slices.Equal(got, []string{red.EventID(), after.EventID(), join.EventID()}) {
		t.Fatalf("B's history before backfill: %v", got)
	}

	// A forged event hides in the answers: a message from a server with
	// nobody in the room.
	_, ekey, _ := ed25519.GenerateKey(nil)
	evil := &remoteServer{t: t, name: "evil.test", key: ekey, ver: ver}
	create, _ := a.StateEvent(ctx, roomID, alice, spec.MRoomCreate, "")
	power, _ := a.StateEvent(ctx, roomID, alice, spec.MRoomPowerLevels, "")
	forged := evil.build(roomID, "@mallory:evil.test", "m.room.message", nil, map[string]any{"body": "forged"},
		[]string{msgs[0].EventID()}, msgs[0].Depth()+1, []string{create.EventID(), power.EventID()})

	pos := b.CurrentPos()
	ext, _ := b.Extremities(ctx, roomID)
	// The redacted messages come as they were sent, from a server that
	// missed their redactions: B must strip them itself.
	f := &localFetcher{t: t, from: a, origin: "b.test", extra: []gomatrixserverlib.PDU{forged},
		unredacted: map[string]gomatrixserverlib.PDU{msgs[5].EventID(): msgs[5].PDU, msgs[7].EventID(): msgs[7].PDU}}
	const limit = 4
	rounds := 0
	for {
		n, err := b.Backfill(ctx, roomID, Token{Depth: math.MaxInt64, Stream: math.MaxInt64}, limit, f)
		if err != nil {
			t.Fatalf("backfill round %d: %v", rounds, err)
		}
		if n > limit {
			t.Fatalf("backfill round %d added %d events, more than the limit %d", rounds, n, limit)
		}
		if n == 0 {
			break
		}
		if rounds++; rounds > 50 {
			t.Fatal("backfill never ends")
		}
	}
	if f.stateCalls == 0 || f.stateCalls > rounds {
		t.Errorf("%d /state requests for %d rounds; want one a round at most (for the oldest event of each)", f.stateCalls, rounds)
	}

	aHistory := history(t, a, roomID)
	if got := history(t, b, roomID); !slices.Equal(got, aHistory) {
		t.Fatalf("B's history after backfill:\n%v\nA's:\n%v", got, aHistory)
	}
	if got := b.CurrentPos(); got != pos {
		t.Errorf("backfill moved B's stream from %d to %d: sync would see old events as new", pos, got)
	}
	if got, _ := b.Extremities(ctx, roomID); !slices.Equal(got, ext) {
		t.Errorf("backfill changed B's forward extremities from %v to %v", ext, got)
	}
	if rej, _ := b.IsRejected(ctx, forged.EventID()); !rej {
		t.Error("the forged event was not rejected")
	}
	if _, err := b.event(ctx, forged.EventID()); err == nil {
		t.Error("the forged event was stored")
	}

	vf, err := b.newVisibilityFilter(ctx, roomID, bob.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range aHistory {
		ev, err := b.event(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains([]string{red.EventID(), after.EventID(), join.EventID()}, id) {
			continue
		}
		if ev.StreamPos >= 0 {
			t.Errorf("backfilled %s (%s) has stream position %d; want an outlier's", id, ev.Type(), ev.StreamPos)
		}
		// The same state as on A before every event.
		if got, want := stateIDsBefore(t, b, "a.test", roomID, id), stateIDsBefore(t, a, "b.test", roomID, id); !slices.Equal(got, want) {
			t.Errorf("state before %s (%s) on B %v, on A %v", id, ev.Type(), got, want)
		}
		if ok, err := vf.allowed(ctx, ev); err != nil || !ok {
			t.Errorf("bob may not see backfilled %s (%s) of a room with shared history: %v", id, ev.Type(), err)
		}
	}

	tests := []struct {
		name       string
		ev         *Event
		body       string
		redacted   bool
		redactedBy string
	}{
		{"message", msgs[2], "m2", false, ""},
		{"redacted before the join", msgs[5], "", true, red5.EventID()},
		{"redacted after the join", msgs[7], "", true, red.EventID()},
		{"last before the join", msgs[9], "m9", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := b.event(ctx, tc.ev.EventID())
			if err != nil {
				t.Fatal(err)
			}
			if bodyOf(ev) != tc.body || ev.Redacted() != tc.redacted {
				t.Errorf("body %q, redacted %v; want %q, %v", bodyOf(ev), ev.Redacted(), tc.body, tc.redacted)
			}
			if tc.redactedBy != "" && ev.RedactedBy != tc.redactedBy {
				t.Errorf("redacted by %q, want %q", ev.RedactedBy, tc.redactedBy)
			}
		})
	}

	// B serves the history on to others, as A does.
	served, err := b.BackfillForServer(ctx, "a.test", roomID, []string{red.EventID()}, MaxBackfill)
	if err != nil {
		t.Fatal(err)
	}
	var servedIDs []string
	for _, ev := range served {
		servedIDs = append(servedIDs, ev.EventID())
	}
	if !slices.Equal(servedIDs, aHistory) {
		t.Errorf("B serves %v, want %v", servedIDs, aHistory)
	}
}
