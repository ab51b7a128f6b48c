package federation_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// v1Put sends a signed PUT from b to a and decodes the answer, which the
// v1 endpoints give as [200, body].
func v1Put(t *testing.T, b, a *testserver.Server, uri string, content any) (int, []json.RawMessage, []byte) {
	t.Helper()
	key := signingKey(t, b)
	req := signedRequest(t, b.ServerName(), a.ServerName(), key.ID, key.PrivateKey, http.MethodPut, uri, content)
	resp, err := insecureHTTP.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", uri, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var arr []json.RawMessage
	_ = json.Unmarshal(raw, &arr)
	return resp.StatusCode, arr, raw
}

// TestV1MembershipEndpoints: an older server joins, leaves and invites
// through the deprecated v1 send_join, send_leave and invite, whose
// answers are [200, body].
func TestV1MembershipEndpoints(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	alice := a.Register("alice", "password-alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID.String()
	carol := "@carol:" + string(b.ServerName())
	fc := b.Server().FederationClient
	key := signingKey(t, b)
	build := func(proto gomatrixserverlib.ProtoEvent, ver gomatrixserverlib.RoomVersion) gomatrixserverlib.PDU {
		t.Helper()
		ev, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventBuilderFromProtoEvent(&proto).
			Build(time.Now(), b.ServerName(), key.ID, key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}

	mj, err := fc.MakeJoin(ctx, b.ServerName(), a.ServerName(), roomID, carol)
	if err != nil {
		t.Fatalf("make_join: %v", err)
	}
	join := build(mj.JoinEvent, mj.RoomVersion)
	status, arr, raw := v1Put(t, b, a, "/_matrix/federation/v1/send_join/"+url.PathEscape(roomID)+"/"+url.PathEscape(join.EventID()), json.RawMessage(join.JSON()))
	if status != http.StatusOK || len(arr) != 2 || string(arr[0]) != "200" {
		t.Fatalf("v1 send_join: %d %s; want 200 [200, {...}]", status, raw)
	}
	var joined struct {
		Origin    string            `json:"origin"`
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := json.Unmarshal(arr[1], &joined); err != nil || joined.Origin != string(a.ServerName()) || len(joined.State) == 0 || len(joined.AuthChain) == 0 {
		t.Fatalf("v1 send_join body: %s", arr[1])
	}
	waitMembership(t, alice, created.RoomID, id.UserID(carol), event.MembershipJoin)

	ml, err := fc.MakeLeave(ctx, b.ServerName(), a.ServerName(), roomID, carol)
	if err != nil {
		t.Fatalf("make_leave: %v", err)
	}
	leave := build(ml.LeaveEvent, ml.RoomVersion)
	status, arr, raw = v1Put(t, b, a, "/_matrix/federation/v1/send_leave/"+url.PathEscape(roomID)+"/"+url.PathEscape(leave.EventID()), json.RawMessage(leave.JSON()))
	if status != http.StatusOK || len(arr) != 2 || string(arr[0]) != "200" || string(arr[1]) != "{}" {
		t.Fatalf("v1 send_leave: %d %s; want 200 [200, {}]", status, raw)
	}
	waitMembership(t, alice, created.RoomID, id.UserID(carol), event.MembershipLeave)

	// An invite by v1 to a room A does not know (v1 serves room versions
	// 1 and 2): A signs it and returns it.
	otherRoom := "!older:" + string(b.ServerName())
	aliceID := alice.UserID.String()
	proto := gomatrixserverlib.ProtoEvent{SenderID: carol, RoomID: otherRoom, Type: spec.MRoomMember, StateKey: &aliceID, Depth: 5,
		PrevEvents: []any{}, AuthEvents: []any{}}
	if err := proto.SetContent(map[string]string{"membership": "invite"}); err != nil {
		t.Fatal(err)
	}
	if err := proto.SetUnsigned(map[string]any{"invite_room_state": []map[string]any{
		{"type": "m.room.name", "state_key": "", "sender": carol, "content": map[string]string{"name": "Old times"}},
	}}); err != nil {
		t.Fatal(err)
	}
	invite := build(proto, gomatrixserverlib.RoomVersionV1)
	status, arr, raw = v1Put(t, b, a, "/_matrix/federation/v1/invite/"+url.PathEscape(otherRoom)+"/"+url.PathEscape(invite.EventID()), json.RawMessage(invite.JSON()))
	if status != http.StatusOK || len(arr) != 2 || string(arr[0]) != "200" {
		t.Fatalf("v1 invite: %d %s; want 200 [200, {\"event\": ...}]", status, raw)
	}
	var signed struct {
		Event struct {
			EventID    string                       `json:"event_id"`
			Signatures map[string]map[string]string `json:"signatures"`
		} `json:"event"`
	}
	if err := json.Unmarshal(arr[1], &signed); err != nil || signed.Event.EventID != invite.EventID() || len(signed.Event.Signatures[string(a.ServerName())]) == 0 {
		t.Fatalf("v1 invite answer lacks A's signature: %s", arr[1])
	}
	syncUntil(t, alice, "the v1 invite", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[id.RoomID(otherRoom)]; return ok })
}
