package roomserver

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// remoteJoin has @bob:remote.test join roomID through make_join and
// send_join, and returns the server that signs bob's events and his join.
func remoteJoin(t *testing.T, s *Service, roomID string) (*remoteServer, *Event) {
	t.Helper()
	ctx := context.Background()
	rid, _ := spec.NewRoomID(roomID)
	ver, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	_, rkey, _ := ed25519.GenerateKey(nil)
	remote := &remoteServer{t: t, name: "remote.test", key: rkey, ver: gomatrixserverlib.MustGetRoomVersion(ver)}
	bob, _ := spec.NewUserID("@bob:remote.test", true)
	tmpl, err := s.MakeJoin(ctx, "remote.test", *rid, *bob, []gomatrixserverlib.RoomVersion{ver})
	if err != nil {
		t.Fatalf("make_join: %v", err)
	}
	proto := tmpl.JoinTemplateEvent
	joinPDU, err := remote.ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "remote.test", "ed25519:r", rkey)
	if err != nil {
		t.Fatal(err)
	}
	join, _, _, err := s.SendJoin(ctx, "remote.test", *rid, joinPDU.EventID(), joinPDU.JSON(), acceptAll{})
	if err != nil {
		t.Fatalf("send_join: %v", err)
	}
	return remote, join
}

func sendText(t *testing.T, s *Service, roomID, sender, body string) *Event {
	t.Helper()
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	ev, err := s.Send(context.Background(), SendRequest{RoomID: roomID, Sender: sender, Type: "m.room.message", Content: content})
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return ev
}

// TestMissingEventsForServer: get_missing_events walks prev_events back
// from latest_events (not included) to earliest_events (not included), at
// most limit events and none below min_depth, and answers them oldest
// first, redacting those the asking server may not see by the history
// visibility (here: joined, and its user joined after the first two).
func TestMissingEventsForServer(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: spec.MRoomHistoryVisibility, StateKey: ptrTo(""),
		Content: []byte(`{"history_visibility":"joined"}`)}); err != nil {
		t.Fatal(err)
	}
	before := sendText(t, s, roomID, alice, "before")
	secret1 := sendText(t, s, roomID, alice, "secret 1")
	secret2 := sendText(t, s, roomID, alice, "secret 2")
	_, join := remoteJoin(t, s, roomID)
	after := sendText(t, s, roomID, alice, "after")
	latest := sendText(t, s, roomID, alice, "latest")

	for _, tc := range []struct {
		name     string
		limit    int
		minDepth int64
		want     []*Event
	}{
		{"all back to earliest", 10, 0, []*Event{secret1, secret2, join, after}},
		{"limit keeps the newest", 2, 0, []*Event{join, after}},
		{"min_depth", 10, join.Depth(), []*Event{join, after}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := s.MissingEvents(ctx, "remote.test", roomID, []string{before.EventID()}, []string{latest.EventID()}, tc.limit, tc.minDepth)
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, ev := range evs {
				got = append(got, ev.EventID())
			}
			for _, ev := range tc.want {
				want = append(want, ev.EventID())
			}
			if !equalIDs(got, want) {
				t.Fatalf("events %v, want %v (oldest first)", got, want)
			}
			for _, ev := range evs {
				body := bodyOf(ev)
				hidden := ev.EventID() == secret1.EventID() || ev.EventID() == secret2.EventID()
				if hidden && body != "" {
					t.Errorf("%s (from before remote.test joined, history joined) sent with its body %q", ev.EventID(), body)
				}
				if ev.EventID() == after.EventID() && body != "after" {
					t.Errorf("%s sent without its body", ev.EventID())
				}
			}
		})
	}

	// A server with no member in the room gets nothing.
	if _, err := s.MissingEvents(ctx, "other.test", roomID, nil, []string{latest.EventID()}, 10, 0); err == nil {
		t.Fatal("a server outside the room was answered")
	}
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRejectedLocallyWithoutFetching: an event whose prev_events we lack
// but whose auth events we hold, and which those auth events do not
// allow, is rejected at once: fetching its prev_events or the state
// before it (get_missing_events, /state) could not change the verdict.
func TestRejectedLocallyWithoutFetching(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
	if err != nil {
		t.Fatal(err)
	}
	remote, join := remoteJoin(t, s, roomID)
	bob := "@bob:remote.test"
	auth := authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: roomID, Type: "m.room.power_levels", StateKey: ptrTo("")})

	// Bob (power 0) changes the power levels on top of events we never saw.
	pl := remote.build(roomID, bob, "m.room.power_levels", ptrTo(""), map[string]any{"users": map[string]int{bob: 100}},
		[]string{"$never-seen"}, join.Depth()+5, auth)
	_, err = s.IngestRemote(ctx, "remote.test", pl, false)
	var rej *RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("an event its own auth events forbid, with unknown prev_events: got %v, want a rejection without fetching", err)
	}
	// An event citing the rejected one among its auth events is rejected
	// too, whatever its prev_events.
	msgAuth := append(authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: roomID, Type: "m.room.message"}), pl.EventID())
	msg := remote.build(roomID, bob, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hi"},
		[]string{"$also-never-seen"}, join.Depth()+6, msgAuth)
	if _, err := s.IngestRemote(ctx, "remote.test", msg, false); !errors.As(err, &rej) {
		t.Fatalf("an event with a rejected auth event and unknown prev_events: got %v, want a rejection", err)
	}
	// An allowed event with unknown prev_events still asks for them.
	ok := remote.build(roomID, bob, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "fine"},
		[]string{"$never-seen"}, join.Depth()+6, msgAuth[:len(msgAuth)-1])
	var missing *MissingPrevEventsError
	if _, err := s.IngestRemote(ctx, "remote.test", ok, false); !errors.As(err, &missing) {
		t.Fatalf("an allowed event with unknown prev_events: got %v, want MissingPrevEventsError", err)
	}
}

// TestStateResV21ConflictedPowerEvents: in a v12 room, a branch from
// another server meets ours where the join rules differ (a conflicted
// power event). gomatrixserverlib's v2.1 resolution panicked there
// ("missing resolved create event"); the event must be stored and the
// state resolved: the later join rules of the creator win, and the
// unconflicted state (bob's join, the name) stays.
func TestStateResV21ConflictedPowerEvents(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12"), Name: ptrTo("Room")})
	if err != nil {
		t.Fatal(err)
	}
	remote, join := remoteJoin(t, s, roomID)
	bob := "@bob:remote.test"
	msgAuth := authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: roomID, Type: "m.room.message"})
	jr, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: spec.MRoomJoinRules, StateKey: ptrTo(""),
		Content: []byte(`{"join_rule":"invite"}`)})
	if err != nil {
		t.Fatal(err)
	}
	// Bob's server has not seen the new join rules: its message forks
	// from bob's join, where the room was public.
	msg := remote.build(roomID, bob, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "fork"},
		[]string{join.EventID()}, join.Depth()+1, msgAuth)
	if _, err := s.IngestRemote(ctx, "remote.test", msg, false); err != nil {
		t.Fatalf("a branch meeting ours at conflicted join rules: %v", err)
	}
	ext, _ := s.Extremities(ctx, roomID)
	if !sameSet(ext, []string{jr.EventID(), msg.EventID()}) {
		t.Fatalf("extremities %v, want %s and %s", ext, jr.EventID(), msg.EventID())
	}
	// The room's current state, as the sequencer holds it.
	rs, err := s.loadRoomState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if ev := rs.get(spec.MRoomJoinRules, ""); ev == nil || ev.EventID() != jr.EventID() {
		t.Fatalf("join rules after resolution: %v, want %s", ev, jr.EventID())
	}
	if ev := rs.get(spec.MRoomMember, bob); ev == nil || ev.EventID() != join.EventID() {
		t.Fatalf("bob's membership after resolution: %v, want his join", ev)
	}
	if ev := rs.get(spec.MRoomName, ""); ev == nil {
		t.Fatal("the room name is lost in the resolution")
	}
	// The next local event merges the branches.
	merge := sendText(t, s, roomID, alice, "merged")
	if !sameSet(merge.PrevEventIDs(), []string{jr.EventID(), msg.EventID()}) {
		t.Fatalf("merge prev_events %v", merge.PrevEventIDs())
	}
}

// capturingInviter stands in for the invitee's server: it signs nothing
// (the invite goes back as it came) and keeps the invite_room_state.
type capturingInviter struct{ roomState []json.RawMessage }

func (c *capturingInviter) SignInvite(_ context.Context, invite gomatrixserverlib.PDU, roomState []json.RawMessage) (gomatrixserverlib.PDU, error) {
	c.roomState = roomState
	return invite, nil
}

// TestOutboundRoomStateIsFullPDUs: the invite_room_state we send with an
// invite and the knock_room_state we answer a knock with are full PDUs
// (signed, hashed, each checkable), the create event among them, as the
// spec requires since v1.16.
func TestOutboundRoomStateIsFullPDUs(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	inviter := &capturingInviter{}
	s.SetRemoteInviter(inviter)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "private_chat", RoomVersion: ptrTo("12"), Name: ptrTo("Full")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Invite(ctx, alice, roomID, "@bob:remote.test", "", false); err != nil {
		t.Fatalf("invite a remote user: %v", err)
	}
	knock, err := s.KnockRoomState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	ver := gomatrixserverlib.MustGetRoomVersion("12")
	for name, raws := range map[string][]json.RawMessage{"invite_room_state": inviter.roomState, "knock_room_state": knock} {
		types := map[string]bool{}
		for _, raw := range raws {
			pdu, err := ver.NewEventFromUntrustedJSON(raw)
			if err != nil {
				t.Fatalf("%s entry is not a full PDU: %v: %s", name, err, raw)
			}
			var fields struct {
				Signatures map[string]any `json:"signatures"`
				Hashes     map[string]any `json:"hashes"`
			}
			_ = json.Unmarshal(raw, &fields)
			if len(fields.Signatures) == 0 || len(fields.Hashes) == 0 || pdu.OriginServerTS() == 0 {
				t.Fatalf("%s entry lacks signatures or origin_server_ts: %s", name, raw)
			}
			if pdu.Type() == spec.MRoomCreate && "!"+pdu.EventID()[1:] != roomID {
				t.Fatalf("%s create event %s is not the room's (%s)", name, pdu.EventID(), roomID)
			}
			types[pdu.Type()] = true
		}
		for _, want := range []string{spec.MRoomCreate, spec.MRoomJoinRules, "m.room.name"} {
			if !types[want] {
				t.Errorf("%s lacks %s: has %v", name, want, types)
			}
		}
	}
}

// recordingFetcher is a localFetcher that remembers what was asked.
type recordingFetcher struct {
	*localFetcher
	from [][]string
}

func (f *recordingFetcher) Backfill(ctx context.Context, srv spec.ServerName, roomID string, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	f.from = append(f.from, from)
	return f.localFetcher.Backfill(ctx, srv, roomID, from, limit)
}

// TestBackfillFillsTheLimit: our backfill asks from the prev_events we
// lack, so every event of the answer is one we did not have, and one
// round adds as many events as the limit allows (asking from our own
// events wasted a place of the limit on each).
func TestBackfillFillsTheLimit(t *testing.T) {
	ctx := context.Background()
	a, b := fedStart(t, "a.test"), fedStart(t, "b.test")
	alice := "@alice:a.test"
	roomID, err := a.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		sendText(t, a, roomID, alice, fmt.Sprintf("m%d", i))
	}
	rid, _ := spec.NewRoomID(roomID)
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
	var statePDUs, chainPDUs []gomatrixserverlib.PDU
	for _, ev := range state {
		statePDUs = append(statePDUs, ev.PDU)
	}
	for _, ev := range chain {
		chainPDUs = append(chainPDUs, ev.PDU)
	}
	if _, err := b.StoreRemoteJoin(ctx, "a.test", "12", join.PDU, statePDUs, chainPDUs); err != nil {
		t.Fatal(err)
	}

	f := &recordingFetcher{localFetcher: &localFetcher{t: t, from: a, origin: "b.test"}}
	const limit = 5
	n, err := b.Backfill(ctx, roomID, Token{Depth: math.MaxInt64, Stream: math.MaxInt64}, limit, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.from) != 1 || !sameSet(f.from[0], join.PrevEventIDs()) {
		t.Fatalf("backfill asked from %v, want the join's prev_events %v", f.from, join.PrevEventIDs())
	}
	if n != limit {
		t.Fatalf("one backfill of limit %d added %d events", limit, n)
	}
	if got := history(t, b, roomID); len(got) != 1+limit {
		t.Fatalf("B's history after one backfill: %d events, want the join and %d more", len(got), limit)
	}
}

// TestBackfillForServerWalksBranches: /backfill walks every prev_event
// from the given events, across both branches of a fork, up to limit,
// newest (deepest) first.
func TestBackfillForServerWalksBranches(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: ptrTo("12")})
	if err != nil {
		t.Fatal(err)
	}
	remote, join := remoteJoin(t, s, roomID)
	bob := "@bob:remote.test"
	auth := authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: bob, RoomID: roomID, Type: "m.room.message"})
	// Our branch: three messages; theirs, from the join: three more.
	var ours, theirs []string
	for i := range 3 {
		ours = append(ours, sendText(t, s, roomID, alice, fmt.Sprintf("ours %d", i)).EventID())
	}
	prev, depth := join.EventID(), join.Depth()
	for i := range 3 {
		depth++
		ev := remote.build(roomID, bob, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("theirs %d", i)},
			[]string{prev}, depth, auth)
		if _, err := s.IngestRemote(ctx, "remote.test", ev, false); err != nil {
			t.Fatalf("their branch, event %d: %v", i, err)
		}
		prev = ev.EventID()
		theirs = append(theirs, prev)
	}
	merge := sendText(t, s, roomID, alice, "merge")

	evs, err := s.BackfillForServer(ctx, "remote.test", roomID, []string{merge.EventID()}, 8)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.EventID())
	}
	want := append(append([]string{merge.EventID(), join.EventID()}, ours...), theirs...)
	if len(got) != 8 || !sameSet(got, want) {
		t.Fatalf("backfill from the merge: %v, want the merge, both branches and the join %v", got, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Depth() > evs[i-1].Depth() {
			t.Fatalf("backfill answer not newest first at %d: depth %d after %d", i, evs[i].Depth(), evs[i-1].Depth())
		}
	}
}
