package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"
)

// TestAdminRooms covers the room admin API's reads: the list with search,
// order and paging, details, members, state, forward extremities.
func TestAdminRooms(t *testing.T) {
	srv, root, alice, bob := adminWithUsers(t)
	ac := adminClient(srv, root)
	tok := root.AccessToken

	big, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Big Room", RoomAliasName: "big",
		Topic: "everyone", Visibility: "public"})
	must(t, err, "create big room")
	_, err = bob.JoinRoom(ctx, string(big.RoomID), nil)
	must(t, err, "bob joins")
	small, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Attic",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
	must(t, err, "create small room")

	t.Run("list", func(t *testing.T) {
		list, err := ac.ListRooms(ctx, synapseadmin.ReqListRoom{})
		must(t, err, "list rooms")
		if list.TotalRooms != 2 || len(list.Rooms) != 2 || list.Rooms[0].RoomID != small.RoomID {
			t.Fatalf("by name: %+v", list)
		}
		b := list.Rooms[1]
		if b.Name != "Big Room" || b.CanonicalAlias != "#big:tessera.test" || b.JoinedMembers != 2 || b.JoinedLocalMembers != 2 ||
			b.Creator != alice.UserID || !b.Public || b.JoinRules != event.JoinRulePublic || !b.Federatable || b.StateEvents < 6 ||
			b.HistoryVisibility != event.HistoryVisibilityShared || b.Version == "" {
			t.Fatalf("big room: %+v", b)
		}
		if a := list.Rooms[0]; a.Encryption != id.AlgorithmMegolmV1 || a.Public || a.JoinedMembers != 1 {
			t.Fatalf("small room: %+v", a)
		}
		list, err = ac.ListRooms(ctx, synapseadmin.ReqListRoom{OrderBy: "joined_members", Limit: 1})
		must(t, err, "by members")
		if list.TotalRooms != 2 || len(list.Rooms) != 1 || list.Rooms[0].RoomID != big.RoomID || list.NextBatch != 1 {
			t.Fatalf("by members, first page: %+v", list)
		}
		list, err = ac.ListRooms(ctx, synapseadmin.ReqListRoom{OrderBy: "joined_members", Limit: 1, From: 1})
		must(t, err, "by members, page 2")
		if len(list.Rooms) != 1 || list.Rooms[0].RoomID != small.RoomID || list.NextBatch != 0 || list.PrevBatch != 0 || list.Offset != 1 {
			t.Fatalf("by members, second page: %+v", list)
		}
		list, err = ac.ListRooms(ctx, synapseadmin.ReqListRoom{SearchTerm: "big"})
		must(t, err, "search")
		if list.TotalRooms != 1 || list.Rooms[0].RoomID != big.RoomID {
			t.Fatalf("search: %+v", list)
		}
		get(t, srv, adminV1+"/rooms?order_by=colour", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, adminV1+"/rooms?dir=up", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		r := get(t, srv, adminV1+"/rooms?public_rooms=false", tok).expect(t, http.StatusOK, "")
		if r.Body["total_rooms"] != float64(1) {
			t.Fatalf("public_rooms=false: %s", r.Raw)
		}
	})

	t.Run("details, members, state", func(t *testing.T) {
		info, err := ac.RoomInfo(ctx, big.RoomID)
		must(t, err, "room info")
		if info.Name != "Big Room" || info.JoinedMembers != 2 {
			t.Fatalf("room info: %+v", info)
		}
		r := get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(big.RoomID)), tok).expect(t, http.StatusOK, "")
		if r.str("topic") != "everyone" || r.Body["joined_local_devices"] != float64(2) || r.Body["forgotten"] != false {
			t.Fatalf("room details: %s", r.Raw)
		}
		get(t, srv, adminV1+"/rooms/!nope:tessera.test", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, adminV1+"/rooms/nope", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

		members, err := ac.RoomMembers(ctx, big.RoomID)
		must(t, err, "members")
		if members.Total != 2 || len(members.Members) != 2 {
			t.Fatalf("members: %+v", members)
		}
		get(t, srv, adminV1+"/rooms/!nope:tessera.test/members", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

		// The admin is in neither room, and still reads the private one's state.
		r = get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(small.RoomID))+"/state", tok).expect(t, http.StatusOK, "")
		state := r.Body["state"].([]any)
		found := false
		for _, ev := range state {
			e := ev.(map[string]any)
			if e["type"] == "m.room.name" && e["content"].(map[string]any)["name"] == "Attic" && e["event_id"] != "" {
				found = true
			}
		}
		if !found {
			t.Fatalf("state without the name: %s", r.Raw)
		}

		// ... and its messages, with mautrix's admin client.
		_, err = bob.SendText(ctx, small.RoomID, "in the attic")
		must(t, err, "send")
		msgs, err := ac.RoomMessages(ctx, small.RoomID, "", "", mautrix.DirectionBackward, nil, 5)
		must(t, err, "admin room messages")
		if len(msgs.Chunk) == 0 || msgs.Chunk[0].Content.Raw["body"] != "in the attic" {
			t.Fatalf("admin messages: %+v", msgs.Chunk)
		}
		r = get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(small.RoomID))+"/messages?limit=100", tok).expect(t, http.StatusOK, "")
		if chunk := r.Body["chunk"].([]any); chunk[0].(map[string]any)["type"] != "m.room.create" {
			t.Fatalf("dir defaults to f: %s", r.Raw)
		}
		get(t, srv, adminV1+"/rooms/!nope:tessera.test/messages", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, v3+"/rooms/"+url.PathEscape(string(small.RoomID))+"/messages?dir=b", tok).expect(t, http.StatusForbidden, "M_FORBIDDEN")

		r = get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(big.RoomID))+"/forward_extremities", tok).expect(t, http.StatusOK, "")
		res := r.Body["results"].([]any)
		if r.Body["count"] != float64(1) || len(res) != 1 || res[0].(map[string]any)["event_id"] == "" {
			t.Fatalf("forward extremities: %s", r.Raw)
		}
		// One extremity: nothing to delete (roomserver's
		// TestDeleteForwardExtremities forks a room to delete some).
		r = del(t, srv, adminV1+"/rooms/"+url.PathEscape(string(big.RoomID))+"/forward_extremities", tok, nil).expect(t, http.StatusOK, "")
		if r.Body["deleted"] != float64(0) {
			t.Fatalf("delete forward extremities: %s", r.Raw)
		}
		del(t, srv, adminV1+"/rooms/!nope:tessera.test/forward_extremities", tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestAdminRoomActions covers blocking, make_room_admin and force joins.
func TestAdminRoomActions(t *testing.T) {
	srv, root, alice, bob := adminWithUsers(t)
	ac := adminClient(srv, root)
	tok := root.AccessToken
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private"})
	must(t, err, "create room")
	roomPath := adminV1 + "/rooms/" + url.PathEscape(string(room.RoomID))

	t.Run("force join", func(t *testing.T) {
		// A private room the admin is not in: the join is refused.
		post(t, srv, adminV1+"/join/"+url.PathEscape(string(room.RoomID)), tok, map[string]any{"user_id": bob.UserID}).
			expect(t, http.StatusForbidden, "M_FORBIDDEN")
		post(t, srv, adminV1+"/join/"+url.PathEscape(string(room.RoomID)), tok, map[string]any{}).
			expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		post(t, srv, adminV1+"/join/"+url.PathEscape(string(room.RoomID)), tok, map[string]any{"user_id": "@x:elsewhere.test"}).
			expect(t, http.StatusBadRequest, "M_UNKNOWN")
	})

	t.Run("make room admin", func(t *testing.T) {
		must(t, ac.MakeRoomAdmin(ctx, string(room.RoomID), synapseadmin.ReqMakeRoomAdmin{UserID: root.UserID}), "make room admin")
		var pl event.PowerLevelsEventContent
		must(t, alice.StateEvent(ctx, room.RoomID, event.StatePowerLevels, "", &pl), "power levels")
		if pl.GetUserLevel(root.UserID) != 100 {
			t.Fatalf("root's level = %d", pl.GetUserLevel(root.UserID))
		}
		// Now in the room, the admin can force bob in.
		must(t, ac.JoinUserToRoom(ctx, room.RoomID, synapseadmin.ReqJoinUserToRoom{UserID: bob.UserID}), "force join")
		joined, err := bob.JoinedRooms(ctx)
		must(t, err, "bob's rooms")
		if len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != room.RoomID {
			t.Fatalf("bob's rooms: %v", joined.JoinedRooms)
		}
		post(t, srv, adminV1+"/rooms/!nope:tessera.test/make_room_admin", tok, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("block", func(t *testing.T) {
		r := get(t, srv, roomPath+"/block", tok).expect(t, http.StatusOK, "")
		if r.Body["block"] != false {
			t.Fatalf("block status: %s", r.Raw)
		}
		r = put(t, srv, roomPath+"/block", tok, map[string]any{"block": true}).expect(t, http.StatusOK, "")
		if r.Body["block"] != true {
			t.Fatalf("block: %s", r.Raw)
		}
		st, err := ac.GetRoomBlockStatus(ctx, room.RoomID)
		must(t, err, "block status")
		if !st.Block || st.UserID != root.UserID {
			t.Fatalf("block status: %+v", st)
		}
		_, err = bob.LeaveRoom(ctx, room.RoomID)
		must(t, err, "bob leaves")
		_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID})
		must(t, err, "invite bob")
		_, err = bob.JoinRoom(ctx, string(room.RoomID), nil)
		wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
		put(t, srv, roomPath+"/block", tok, map[string]any{"block": false}).expect(t, http.StatusOK, "")
		_, err = bob.JoinRoom(ctx, string(room.RoomID), nil)
		must(t, err, "join after unblock")
		put(t, srv, roomPath+"/block", tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	})
}

// TestAdminDeleteRoom: a deleted room leaves no message readable and no
// member joined; its members land in the new room, its alias follows,
// and it stays blocked.
func TestAdminDeleteRoom(t *testing.T) {
	srv, root, alice, bob := adminWithUsers(t)
	ac := adminClient(srv, root)
	tok := root.AccessToken
	mod := srv.Register("mod", "mod-password")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "doomed", Name: "Doomed"})
	must(t, err, "create room")
	_, err = bob.JoinRoom(ctx, string(room.RoomID), nil)
	must(t, err, "bob joins")
	sent, err := alice.SendText(ctx, room.RoomID, "something illegal")
	must(t, err, "send")

	del(t, srv, adminV2+"/rooms/!nope:tessera.test", tok, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, adminV2+"/rooms/"+url.PathEscape(string(room.RoomID)), tok, map[string]any{"new_room_user_id": "@x:elsewhere.test"}).
		expect(t, http.StatusBadRequest, "M_UNKNOWN")

	resp, err := ac.DeleteRoom(ctx, room.RoomID, synapseadmin.ReqDeleteRoom{
		Block: true, NewRoomUserID: mod.UserID, RoomName: "Gone", Message: "This room was removed",
	})
	must(t, err, "delete room")
	var st synapseadmin.RespDeleteRoomStatus
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err = ac.DeleteRoomStatus(ctx, resp.DeleteID)
		must(t, err, "delete status")
		if st.Status == "complete" || st.Status == "failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Status != "complete" || len(st.ShutdownRoom.KickedUsers) != 2 || len(st.ShutdownRoom.FailedToKickUsers) != 0 ||
		st.ShutdownRoom.NewRoomID == "" || len(st.ShutdownRoom.LocalAliases) != 1 || st.ShutdownRoom.LocalAliases[0] != "#doomed:tessera.test" {
		t.Fatalf("delete status: %+v", st)
	}
	r := get(t, srv, adminV2+"/rooms/"+url.PathEscape(string(room.RoomID))+"/delete_status", tok).expect(t, http.StatusOK, "")
	if res := r.Body["results"].([]any); len(res) != 1 || res[0].(map[string]any)["delete_id"] != resp.DeleteID {
		t.Fatalf("delete status of room: %s", r.Raw)
	}
	get(t, srv, adminV2+"/rooms/delete_status/nope", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Nobody is joined, nothing is readable, the room is unknown.
	for _, c := range []*mautrix.Client{alice, bob} {
		joined, err := c.JoinedRooms(ctx)
		must(t, err, "joined rooms")
		if len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != st.ShutdownRoom.NewRoomID {
			t.Fatalf("%s's rooms: %v", c.UserID, joined.JoinedRooms)
		}
		_, err = c.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10)
		if err == nil {
			t.Fatalf("%s still reads the deleted room", c.UserID)
		}
		_, err = c.GetEvent(ctx, room.RoomID, sent.EventID)
		if err == nil {
			t.Fatalf("%s still reads the deleted message", c.UserID)
		}
	}
	get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(room.RoomID)), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	r = get(t, srv, adminV1+"/rooms", tok).expect(t, http.StatusOK, "")
	if r.Body["total_rooms"] != float64(1) {
		t.Fatalf("rooms after delete: %s", r.Raw)
	}
	// The alias now leads to the new room, where the message waits.
	alias, err := alice.ResolveAlias(ctx, "#doomed:tessera.test")
	must(t, err, "resolve alias")
	if alias.RoomID != st.ShutdownRoom.NewRoomID {
		t.Fatalf("alias points at %s", alias.RoomID)
	}
	msgs, err := alice.Messages(ctx, st.ShutdownRoom.NewRoomID, "", "", mautrix.DirectionBackward, nil, 20)
	must(t, err, "new room messages")
	found := false
	for _, ev := range msgs.Chunk {
		if ev.Type == event.EventMessage && ev.Content.Raw["body"] == "This room was removed" {
			found = true
		}
	}
	if !found {
		t.Fatal("no message in the new room")
	}
	// Blocked: nobody joins the old room ID again.
	blocked, err := ac.GetRoomBlockStatus(ctx, room.RoomID)
	must(t, err, "block status")
	if !blocked.Block {
		t.Fatal("deleted room is not blocked")
	}
	_, err = bob.JoinRoom(ctx, string(room.RoomID), nil)
	if err == nil {
		t.Fatal("joined the deleted room")
	}
	// The server still works after a restart.
	srv.Restart()
	_, err = alice.SendText(ctx, st.ShutdownRoom.NewRoomID, "still here")
	wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN") // users_default -10: read only
	get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(room.RoomID)), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// The synchronous v1 form answers when done.
	other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create another room")
	r = del(t, srv, adminV1+"/rooms/"+url.PathEscape(string(other.RoomID)), tok, map[string]any{}).expect(t, http.StatusOK, "")
	if kicked := r.Body["kicked_users"].([]any); len(kicked) != 1 || kicked[0] != string(alice.UserID) {
		t.Fatalf("v1 delete: %s", r.Raw)
	}
	get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(other.RoomID)), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}
