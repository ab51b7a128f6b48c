package roomserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// acceptAll stands in for the key ring: the federation edge checks
// signatures before the room server sees an event.
type acceptAll struct{}

func (acceptAll) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	return make([]gomatrixserverlib.VerifyJSONResult, len(reqs)), nil
}

// remoteServer makes events as another server would.
type remoteServer struct {
	t    *testing.T
	name spec.ServerName
	key  ed25519.PrivateKey
	ver  gomatrixserverlib.IRoomVersion
}

func (r *remoteServer) build(roomID, sender, typ string, stateKey *string, content any, prev []string, depth int64, auth []string) gomatrixserverlib.PDU {
	r.t.Helper()
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		PrevEvents: prev, AuthEvents: auth, Depth: depth}
	if err := proto.SetContent(content); err != nil {
		r.t.Fatal(err)
	}
	pdu, err := r.ver.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), r.name, "ed25519:r", r.key)
	if err != nil {
		r.t.Fatalf("build remote event: %v", err)
	}
	return pdu
}

// authIDs picks the auth events of a new event from the state the room
// server holds now.
func authIDs(t *testing.T, s *Service, roomID string, pdu *gomatrixserverlib.ProtoEvent) []string {
	t.Helper()
	rs, err := s.loadRoomState(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	b := rs.version.NewEventBuilderFromProtoEvent(pdu)
	if err := b.AddAuthEvents(rs); err != nil {
		t.Fatal(err)
	}
	return b.AuthEvents.([]string)
}

func timelineIDs(t *testing.T, s *Service, roomID, userID string) []string {
	t.Helper()
	evs, _, err := s.Timeline(context.Background(), roomID, userID, 0, s.CurrentPos(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.EventID())
	}
	return ids
}

// TestRemoteEvents: a user of another server joins a local room through
// make_join and send_join, then its events arrive on a branch of the DAG
// beside local ones (state resolved where they meet), after a ban (soft
// failed: stored, never shown), and with wrong auth events (rejected).
func TestRemoteEvents(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := spec.NewRoomID(roomID)
	_, rkey, _ := ed25519.GenerateKey(nil)
	remote := &remoteServer{t: t, name: "remote.test", key: rkey, ver: gomatrixserverlib.MustGetRoomVersion("12")}
	bob, _ := spec.NewUserID("@bob:remote.test", true)

	// make_join, then the remote server signs the template and send_joins.
	tmpl, err := s.MakeJoin(ctx, "remote.test", *rid, *bob, []gomatrixserverlib.RoomVersion{"12"})
	if err != nil {
		t.Fatalf("make_join: %v", err)
	}
	proto := tmpl.JoinTemplateEvent
	joinPDU, err := remote.ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "remote.test", "ed25519:r", rkey)
	if err != nil {
		t.Fatal(err)
	}
	join, state, chain, err := s.SendJoin(ctx, "remote.test", *rid, joinPDU.EventID(), joinPDU.JSON(), acceptAll{})
	if err != nil {
		t.Fatalf("send_join: %v", err)
	}
	if m, _ := s.Membership(ctx, roomID, bob.String()); m != "join" {
		t.Fatalf("bob's membership after send_join = %q", m)
	}
	if len(state) == 0 || len(chain) == 0 || slices.ContainsFunc(state, func(e *Event) bool { return e.EventID() == join.EventID() }) {
		t.Fatalf("send_join answered %d state events, %d auth events; the state must be from before the join", len(state), len(chain))
	}
	if !join.Forward {
		t.Fatal("a join received as the resident server must be sent on to the room's other servers")
	}

	// Both servers send at once: alice on top of the join, bob too.
	local, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"local"}`)})
	if err != nil {
		t.Fatal(err)
	}
	msgProto := &gomatrixserverlib.ProtoEvent{SenderID: bob.String(), RoomID: roomID, Type: "m.room.message"}
	auth := authIDs(t, s, roomID, msgProto)
	branch := remote.build(roomID, bob.String(), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "remote"},
		[]string{join.EventID()}, join.Depth()+1, auth)
	if _, err := s.IngestRemote(ctx, "remote.test", branch, false); err != nil {
		t.Fatalf("a remote event on a branch: %v", err)
	}
	ext, _ := s.Extremities(ctx, roomID)
	if !sameSet(ext, []string{local.EventID(), branch.EventID()}) {
		t.Fatalf("extremities %v, want the two branches %s and %s", ext, local.EventID(), branch.EventID())
	}
	// The next local event merges the branches.
	merge, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"merge"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(merge.PrevEventIDs(), []string{local.EventID(), branch.EventID()}) {
		t.Fatalf("merge prev_events %v", merge.PrevEventIDs())
	}
	// Sending it again is a no-op.
	if again, err := s.IngestRemote(ctx, "remote.test", branch, false); err != nil || again.EventID() != branch.EventID() {
		t.Fatalf("re-ingesting an event: %v", err)
	}

	// Alice bans bob; an event bob's server made before it learnt of the
	// ban is allowed where it was made but not now: soft-failed.
	if err := s.Ban(ctx, alice, roomID, bob.String(), ""); err != nil {
		t.Fatal(err)
	}
	late := remote.build(roomID, bob.String(), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "late"},
		[]string{branch.EventID()}, branch.Depth()+1, auth)
	if _, err := s.IngestRemote(ctx, "remote.test", late, false); err != nil {
		t.Fatalf("a soft-failed event is stored, not refused: %v", err)
	}
	tl := timelineIDs(t, s, roomID, alice)
	if slices.Contains(tl, late.EventID()) {
		t.Fatal("a soft-failed event is in the timeline")
	}
	for _, id := range []string{local.EventID(), branch.EventID(), merge.EventID()} {
		if !slices.Contains(tl, id) {
			t.Fatalf("timeline %v lacks %s", tl, id)
		}
	}
	if m, _ := s.Membership(ctx, roomID, bob.String()); m != "ban" {
		t.Fatalf("bob's membership after the ban and the late event = %q, want ban", m)
	}

	// An event whose auth events do not allow it (bob citing no
	// membership at all) is rejected, stored as such, and stays so.
	bad := remote.build(roomID, bob.String(), "m.room.message", nil, map[string]string{"body": "bad"},
		[]string{merge.EventID()}, merge.Depth()+1, auth[:1])
	_, err = s.IngestRemote(ctx, "remote.test", bad, false)
	var rej *RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("an unauthorised event: got %v, want a rejection", err)
	}
	if ok, _ := s.IsRejected(ctx, bad.EventID()); !ok {
		t.Fatal("the rejected event is not remembered")
	}
	if _, err := s.IngestRemote(ctx, "remote.test", bad, false); !errors.As(err, &rej) {
		t.Fatalf("a rejected event sent again: %v", err)
	}
	if slices.Contains(timelineIDs(t, s, roomID, alice), bad.EventID()) {
		t.Fatal("a rejected event is in the timeline")
	}

	// An event whose prev_events we lack is refused until they are fetched.
	orphan := remote.build(roomID, bob.String(), "m.room.message", nil, map[string]string{"body": "orphan"},
		[]string{"$unknown"}, 99, auth)
	var missing *MissingPrevEventsError
	if _, err := s.IngestRemote(ctx, "remote.test", orphan, false); !errors.As(err, &missing) || missing.IDs[0] != "$unknown" {
		t.Fatalf("an event with unknown prev_events: %v", err)
	}
}

// TestRemoteEventWithGivenState: an event whose prev_events we cannot get
// is stored from the state another server gave for it: the state events
// we lacked become outliers, the event joins the timeline on a new branch,
// and the room's state is resolved with that branch's.
func TestRemoteEventWithGivenState(t *testing.T) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(nil)
	s, _ := dagStart(t, dbtest.New(t), key)
	t.Cleanup(s.Close)
	alice := "@alice:dag.test"
	roomID, err := s.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := spec.NewRoomID(roomID)
	_, rkey, _ := ed25519.GenerateKey(nil)
	remote := &remoteServer{t: t, name: "remote.test", key: rkey, ver: gomatrixserverlib.MustGetRoomVersion("12")}
	bob, _ := spec.NewUserID("@bob:remote.test", true)
	tmpl, err := s.MakeJoin(ctx, "remote.test", *rid, *bob, []gomatrixserverlib.RoomVersion{"12"})
	if err != nil {
		t.Fatal(err)
	}
	proto := tmpl.JoinTemplateEvent
	joinPDU, err := remote.ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), "remote.test", "ed25519:r", rkey)
	if err != nil {
		t.Fatal(err)
	}
	join, _, _, err := s.SendJoin(ctx, "remote.test", *rid, joinPDU.EventID(), joinPDU.JSON(), acceptAll{})
	if err != nil {
		t.Fatal(err)
	}
	local, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"meanwhile"}`)})
	if err != nil {
		t.Fatal(err)
	}

	// On bob's server: a display name change we never receive, then a
	// message on top of it, which we do receive.
	msgAuth := authIDs(t, s, roomID, &gomatrixserverlib.ProtoEvent{SenderID: bob.String(), RoomID: roomID, Type: "m.room.message"})
	memberProto := &gomatrixserverlib.ProtoEvent{SenderID: bob.String(), RoomID: roomID, Type: "m.room.member", StateKey: ptrTo(bob.String())}
	if err := memberProto.SetContent(map[string]string{"membership": "join"}); err != nil {
		t.Fatal(err)
	}
	memberAuth := authIDs(t, s, roomID, memberProto)
	rename := remote.build(roomID, bob.String(), "m.room.member", ptrTo(bob.String()), map[string]string{"membership": "join", "displayname": "Bobby"},
		[]string{join.EventID()}, join.Depth()+1, memberAuth)
	msgAuth = append(slices.DeleteFunc(slices.Clone(msgAuth), func(id string) bool { return id == join.EventID() }), rename.EventID())
	msg := remote.build(roomID, bob.String(), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "from the gap"},
		[]string{rename.EventID()}, rename.Depth()+1, msgAuth)

	var missing *MissingPrevEventsError
	if _, err := s.IngestRemote(ctx, "remote.test", msg, false); !errors.As(err, &missing) {
		t.Fatalf("without the state: %v", err)
	}
	// The state before msg, as bob's server gives it: the room's state with
	// the rename in place of the join.
	var given []gomatrixserverlib.PDU
	st, err := s.StateAt(ctx, roomID, s.CurrentPos())
	if err != nil {
		t.Fatal(err)
	}
	for k, ev := range st {
		if k.Type == "m.room.member" && k.StateKey == bob.String() {
			continue
		}
		given = append(given, ev.PDU)
	}
	given = append(given, rename)
	if _, err := s.IngestRemoteWithState(ctx, "remote.test", msg, given, nil); err != nil {
		t.Fatalf("with the state: %v", err)
	}
	tl := timelineIDs(t, s, roomID, alice)
	if !slices.Contains(tl, msg.EventID()) {
		t.Fatalf("the event from the gap is not in the timeline %v", tl)
	}
	if slices.Contains(tl, rename.EventID()) {
		t.Fatal("a state event given as state is in the timeline")
	}
	ext, _ := s.Extremities(ctx, roomID)
	if !sameSet(ext, []string{local.EventID(), msg.EventID()}) {
		t.Fatalf("extremities %v, want %s and %s", ext, local.EventID(), msg.EventID())
	}
	if m, _ := s.Membership(ctx, roomID, bob.String()); m != "join" {
		t.Fatalf("bob's membership = %q", m)
	}
	cur, err := s.StateAt(ctx, roomID, s.CurrentPos())
	if err != nil {
		t.Fatal(err)
	}
	if ev := cur[StateKey{"m.room.member", bob.String()}]; ev == nil || ev.EventID() != rename.EventID() {
		t.Fatalf("bob's member event after resolution: %v, want the rename", ev)
	}
	// The next local event merges the branches.
	merge, err := s.Send(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"merged"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(merge.PrevEventIDs(), []string{local.EventID(), msg.EventID()}) {
		t.Fatalf("merge prev_events %v", merge.PrevEventIDs())
	}
}

func ptrTo[T any](v T) *T { return &v }
