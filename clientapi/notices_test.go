package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

const sendNoticeAPI = "/_synapse/admin/v1/send_server_notice"

// withNotices turns server notices on, from @notices.
func withNotices(autoJoin bool) testserver.Option {
	return func(c *config.Config) {
		c.ServerNotices = config.ServerNotices{
			SystemMXIDLocalpart: "notices", SystemMXIDDisplayName: "Server Notices Bot",
			RoomName: "Server Notices", RoomTopic: "Messages from the admins", AutoJoin: autoJoin,
		}
	}
}

// registerAdmin makes a server admin with the shared secret.
func registerAdmin(t *testing.T, srv *testserver.Server) *mautrix.RespRegister {
	t.Helper()
	admin, err := (&synapseadmin.Client{Client: srv.Client("", "")}).SharedSecretRegister(ctx, testserver.SharedSecret,
		synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "root-password", Admin: true})
	must(t, err, "register admin")
	return admin
}

func notice(userID id.UserID, body string) map[string]any {
	return map[string]any{"user_id": userID, "content": map[string]any{"msgtype": "m.text", "body": body}}
}

// TestServerNoticesDisabled: without server_notices in the config the API
// answers as Synapse does, but only to admins.
func TestServerNoticesDisabled(t *testing.T) {
	srv := testserver.Start(t)
	admin := registerAdmin(t, srv)
	alice := srv.Register("alice", "alice-password")

	post(t, srv, sendNoticeAPI, alice.AccessToken, notice(alice.UserID, "hi")).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	for _, r := range []resp{
		post(t, srv, sendNoticeAPI, admin.AccessToken, notice(alice.UserID, "hi")),
		put(t, srv, sendNoticeAPI+"/txn1", admin.AccessToken, notice(alice.UserID, "hi")),
	} {
		r.expect(t, http.StatusBadRequest, "M_UNKNOWN")
		if got := r.str("error"); got != "Server notices are not enabled on this server" {
			t.Errorf("error = %q", got)
		}
	}
}

// TestServerNotices covers the API's checks and a user's notices room: the
// invite, the tag, the messages, reuse of the room, idempotent retries, and
// a re-invite after leaving.
func TestServerNotices(t *testing.T) {
	srv := testserver.Start(t, withNotices(false))
	admin := registerAdmin(t, srv)
	alice := srv.Register("alice", "alice-password")

	t.Run("bad requests", func(t *testing.T) {
		post(t, srv, sendNoticeAPI, "", notice(alice.UserID, "hi")).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
		post(t, srv, sendNoticeAPI, alice.AccessToken, notice(alice.UserID, "hi")).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		post(t, srv, sendNoticeAPI, admin.AccessToken, map[string]any{"user_id": alice.UserID}).
			expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		post(t, srv, sendNoticeAPI, admin.AccessToken, "{not json").expect(t, http.StatusBadRequest, "M_NOT_JSON")
		post(t, srv, sendNoticeAPI, admin.AccessToken, notice("alice", "hi")).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		r := post(t, srv, sendNoticeAPI, admin.AccessToken, notice("@alice:elsewhere.test", "hi")).
			expect(t, http.StatusBadRequest, "M_UNKNOWN")
		if got := r.str("error"); got != "Server notices can only be sent to local users" {
			t.Errorf("error = %q", got)
		}
		post(t, srv, sendNoticeAPI, admin.AccessToken, notice(srv.UserID("nobody"), "hi")).
			expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, sendNoticeAPI, admin.AccessToken, map[string]any{"user_id": alice.UserID, "content": "text"}).
			expect(t, http.StatusBadRequest, "M_BAD_JSON")
	})

	c := alice
	first := post(t, srv, sendNoticeAPI, admin.AccessToken, notice(alice.UserID, "first")).expect(t, http.StatusOK, "")
	firstID := id.EventID(first.str("event_id"))
	if firstID == "" {
		t.Fatalf("no event_id: %s", first.Raw)
	}

	// The notice arrives as an invite from the system user.
	res, err := c.SyncRequest(ctx, 0, "", "", false, "")
	must(t, err, "sync")
	if len(res.Rooms.Invite) != 1 {
		t.Fatalf("invites = %v, want one", res.Rooms.Invite)
	}
	var room id.RoomID
	for rid, inv := range res.Rooms.Invite {
		room = rid
		var name string
		for _, ev := range inv.State.Events {
			if ev.Type == event.StateRoomName {
				name, _ = ev.Content.Raw["name"].(string)
			}
			if ev.Type == event.StateMember && ev.GetStateKey() == alice.UserID.String() && ev.Sender != srv.UserID("notices") {
				t.Errorf("invited by %s, want the system user", ev.Sender)
			}
		}
		if name != "Server Notices" {
			t.Errorf("invite's room name = %q", name)
		}
	}

	// The invite cannot be rejected, as in Synapse.
	post(t, srv, v3+"/rooms/"+url.PathEscape(room.String())+"/leave", alice.AccessToken, map[string]any{}).
		expect(t, http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
	put(t, srv, v3+"/rooms/"+url.PathEscape(room.String())+"/state/m.room.member/"+url.PathEscape(alice.UserID.String()),
		alice.AccessToken, map[string]any{"membership": "leave"}).
		expect(t, http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")

	// Once joined, the room carries the m.server_notice tag and the notice.
	_, err = c.JoinRoomByID(ctx, room)
	must(t, err, "join notices room")
	res, err = c.SyncRequest(ctx, 0, "", "", false, "")
	must(t, err, "sync after join")
	joined, ok := res.Rooms.Join[room]
	if !ok {
		t.Fatalf("notices room %s not joined in sync", room)
	}
	tagged := false
	for _, ev := range joined.AccountData.Events {
		if ev.Type == event.AccountDataRoomTags {
			tags, _ := ev.Content.Raw["tags"].(map[string]any)
			_, tagged = tags["m.server_notice"]
		}
	}
	if !tagged {
		t.Errorf("room account data lacks the m.server_notice tag: %+v", joined.AccountData.Events)
	}
	ev, err := c.GetEvent(ctx, room, firstID)
	must(t, err, "get the notice")
	if ev.Sender != srv.UserID("notices") || ev.Type != event.EventMessage || ev.Content.Raw["body"] != "first" {
		t.Errorf("notice = %s %s %v", ev.Sender, ev.Type.Type, ev.Content.Raw)
	}

	t.Run("user cannot send", func(t *testing.T) {
		put(t, srv, v3+"/rooms/"+url.PathEscape(room.String())+"/send/m.room.message/x1", alice.AccessToken,
			map[string]any{"msgtype": "m.text", "body": "reply"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	})

	t.Run("system user cannot log in or be registered", func(t *testing.T) {
		post(t, srv, v3+"/register", "", map[string]any{"username": "notices", "password": "a-good-password"}).
			expect(t, http.StatusBadRequest, "M_USER_IN_USE")
		loginRaw(t, srv, "notices", "anything", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		name := get(t, srv, v3+"/profile/"+url.PathEscape(srv.UserID("notices").String())+"/displayname", alice.AccessToken).
			expect(t, http.StatusOK, "")
		if name.str("displayname") != "Server Notices Bot" {
			t.Errorf("system user's profile: %s", name.Raw)
		}
	})

	t.Run("second notice reuses the room", func(t *testing.T) {
		r := post(t, srv, sendNoticeAPI, admin.AccessToken, notice(alice.UserID, "second")).expect(t, http.StatusOK, "")
		ev, err := c.GetEvent(ctx, room, id.EventID(r.str("event_id")))
		must(t, err, "get the second notice in the same room")
		if ev.Content.Raw["body"] != "second" {
			t.Errorf("second notice = %v", ev.Content.Raw)
		}
		rooms, err := c.JoinedRooms(ctx)
		must(t, err, "joined rooms")
		if len(rooms.JoinedRooms) != 1 {
			t.Errorf("joined rooms = %v, want only the notices room", rooms.JoinedRooms)
		}
	})

	t.Run("txnId is idempotent", func(t *testing.T) {
		a := put(t, srv, sendNoticeAPI+"/t1", admin.AccessToken, notice(alice.UserID, "once")).expect(t, http.StatusOK, "")
		b := put(t, srv, sendNoticeAPI+"/t1", admin.AccessToken, notice(alice.UserID, "once")).expect(t, http.StatusOK, "")
		other := put(t, srv, sendNoticeAPI+"/t2", admin.AccessToken, notice(alice.UserID, "twice")).expect(t, http.StatusOK, "")
		if a.str("event_id") == "" || a.str("event_id") != b.str("event_id") {
			t.Errorf("retry got %q, first %q", b.str("event_id"), a.str("event_id"))
		}
		if other.str("event_id") == a.str("event_id") {
			t.Errorf("a new txnId got the old event %q", other.str("event_id"))
		}
		msgs, err := c.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 10)
		must(t, err, "messages")
		n := 0
		for _, ev := range msgs.Chunk {
			if ev.Content.Raw["body"] == "once" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("the retried notice is in the room %d times", n)
		}
	})

	t.Run("state notice", func(t *testing.T) {
		r := post(t, srv, sendNoticeAPI, admin.AccessToken, map[string]any{"user_id": alice.UserID,
			"type": "org.example.terms", "state_key": "v2", "content": map[string]any{"url": "https://example.org/terms"}}).
			expect(t, http.StatusOK, "")
		got := get(t, srv, v3+"/rooms/"+url.PathEscape(room.String())+"/state/org.example.terms/v2", alice.AccessToken).
			expect(t, http.StatusOK, "")
		if got.str("url") != "https://example.org/terms" || r.str("event_id") == "" {
			t.Errorf("state = %s (event %q)", got.Raw, r.str("event_id"))
		}
	})

	t.Run("left user is invited again", func(t *testing.T) {
		_, err := c.LeaveRoom(ctx, room)
		must(t, err, "leave")
		post(t, srv, sendNoticeAPI, admin.AccessToken, notice(alice.UserID, "come back")).expect(t, http.StatusOK, "")
		// The room is private: joining it again needs the new invite.
		_, err = c.JoinRoomByID(ctx, room)
		must(t, err, "join after re-invite")
		msgs, err := c.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 5)
		must(t, err, "messages")
		found := false
		for _, ev := range msgs.Chunk {
			found = found || ev.Content.Raw["body"] == "come back"
		}
		if !found {
			t.Errorf("the notice sent while away is not in the room")
		}
	})

	t.Run("room survives a restart", func(t *testing.T) {
		srv.Restart()
		r := post(t, srv, sendNoticeAPI, admin.AccessToken, notice(alice.UserID, "after restart")).expect(t, http.StatusOK, "")
		ev, err := c.GetEvent(ctx, room, id.EventID(r.str("event_id")))
		must(t, err, "get the notice sent after the restart in the same room")
		if ev.Content.Raw["body"] != "after restart" {
			t.Errorf("notice = %v", ev.Content.Raw)
		}
	})
}

// TestServerNoticesAutoJoin: with auto_join the user is joined at once.
func TestServerNoticesAutoJoin(t *testing.T) {
	srv := testserver.Start(t, withNotices(true))
	admin := registerAdmin(t, srv)
	bob := srv.Register("bob", "bob-password")
	// The system user's ID is claimed at start-up, before any notice.
	post(t, srv, v3+"/register", "", map[string]any{"username": "notices", "password": "a-good-password"}).
		expect(t, http.StatusBadRequest, "M_USER_IN_USE")
	r := post(t, srv, sendNoticeAPI, admin.AccessToken, notice(bob.UserID, "welcome")).expect(t, http.StatusOK, "")
	rooms, err := bob.JoinedRooms(ctx)
	must(t, err, "joined rooms")
	if len(rooms.JoinedRooms) != 1 {
		t.Fatalf("joined rooms = %v, want the notices room", rooms.JoinedRooms)
	}
	ev, err := bob.GetEvent(ctx, rooms.JoinedRooms[0], id.EventID(r.str("event_id")))
	must(t, err, "get the notice")
	if ev.Content.Raw["body"] != "welcome" {
		t.Errorf("notice = %v", ev.Content.Raw)
	}
	// A second notice does not try to join again.
	post(t, srv, sendNoticeAPI, admin.AccessToken, notice(bob.UserID, "again")).expect(t, http.StatusOK, "")
}
