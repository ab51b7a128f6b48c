package clientapi_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// userFlag reads one field of GET /_synapse/admin/v2/users/{userId} and
// checks that the list shows the same value.
func userFlag(t *testing.T, srv *testserver.Server, token string, userID id.UserID, field string) any {
	t.Helper()
	r := get(t, srv, adminV2+"/users/"+url.PathEscape(string(userID)), token).expect(t, http.StatusOK, "")
	l := get(t, srv, adminV2+"/users?user_id="+url.QueryEscape(string(userID)), token).expect(t, http.StatusOK, "")
	listed := l.Body["users"].([]any)[0].(map[string]any)
	if listed[field] != r.Body[field] {
		t.Fatalf("%s: details say %v, the list %v", field, r.Body[field], listed[field])
	}
	return r.Body[field]
}

// messageBodies are the bodies of the m.room.message events bob can read
// in a room.
func messageBodies(t *testing.T, c *mautrix.Client, roomID id.RoomID) []string {
	t.Helper()
	msgs, err := c.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
	must(t, err, "messages")
	var out []string
	for _, ev := range msgs.Chunk {
		if ev.Type == event.EventMessage {
			out = append(out, ev.Content.Raw["body"].(string))
		}
	}
	return out
}

// adminWithUsers starts a server with its admin (root) and two users,
// alice and bob: where most admin tests begin.
func adminWithUsers(t *testing.T) (*testserver.Server, *mautrix.RespRegister, *mautrix.Client, *mautrix.Client) {
	t.Helper()
	srv := testserver.Start(t)
	return srv, registerAdmin(t, srv), srv.Register("alice", "alice-password"), srv.Register("bob", "bob-password")
}

// auditedAdminServer starts a server with a server admin, capturing the
// admin action log lines.
func auditedAdminServer(t *testing.T) (*testserver.Server, *captureHook, *mautrix.RespRegister) {
	t.Helper()
	srv := testserver.Start(t)
	logs := &captureHook{}
	srv.Log.AddHook(logs)
	srv.Log.SetLevel(logrus.InfoLevel)
	return srv, logs, registerAdmin(t, srv)
}

// TestAdminShadowBan: a shadow-banned user's messages, redactions and
// invites answer as if they had worked, and nobody sees them; rooms they
// create lose their invites; lifting the ban lets them through again.
func TestAdminShadowBan(t *testing.T) {
	srv, logs, root := auditedAdminServer(t)
	tok := root.AccessToken
	alice := srv.Register("alice", "alice-password")
	bob := srv.Register("bob", "bob-password")
	carol := srv.Register("carol", "carol-password")
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	_, err = alice.JoinRoomByID(ctx, room.RoomID)
	must(t, err, "join")
	ban := adminV1 + "/users/" + url.PathEscape(string(alice.UserID)) + "/shadow_ban"

	post(t, srv, ban, tok, map[string]any{}).expect(t, http.StatusOK, "")
	if userFlag(t, srv, tok, alice.UserID, "shadow_banned") != true {
		t.Fatal("shadow_banned is not true after the ban")
	}
	if !strings.Contains(logs.String(), `action=shadow_ban`) || !strings.Contains(logs.String(), `target="@alice:tessera.test"`) {
		t.Fatalf("no audit line: %s", logs)
	}

	sent, err := alice.SendText(ctx, room.RoomID, "hidden")
	must(t, err, "shadow-banned send")
	if !strings.HasPrefix(string(sent.EventID), "$") || len(sent.EventID) < 40 {
		t.Fatalf("fake event ID %q does not look like an event ID", sent.EventID)
	}
	if _, err := bob.GetEvent(ctx, room.RoomID, sent.EventID); err == nil {
		t.Fatal("the fake event ID names an event")
	}
	// State events too, before their auth is checked (as in Synapse).
	state := put(t, srv, v3+"/rooms/"+url.PathEscape(string(room.RoomID))+"/state/m.room.name/", alice.AccessToken,
		map[string]any{"name": "hidden"}).expect(t, http.StatusOK, "")
	if !strings.HasPrefix(state.str("event_id"), "$") {
		t.Fatalf("state event: %s", state.Raw)
	}
	if _, err := bob.FullStateEvent(ctx, room.RoomID, event.StateRoomName, ""); err == nil {
		t.Fatal("the shadow-banned room name was set")
	}
	bobMsg, err := bob.SendText(ctx, room.RoomID, "from bob")
	must(t, err, "bob sends")
	red, err := alice.RedactEvent(ctx, room.RoomID, bobMsg.EventID)
	must(t, err, "shadow-banned redaction")
	if red.EventID == "" {
		t.Fatal("no fake event ID for the redaction")
	}
	if got := messageBodies(t, bob, room.RoomID); len(got) != 1 || got[0] != "from bob" {
		t.Fatalf("bob reads %q; want only his own, unredacted", got)
	}

	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID})
	must(t, err, "shadow-banned invite")
	members, err := bob.Members(ctx, room.RoomID)
	must(t, err, "members")
	for _, ev := range members.Chunk {
		if ev.GetStateKey() == string(carol.UserID) {
			t.Fatalf("carol has a membership after a shadow-banned invite: %s", ev.Content.Raw)
		}
	}
	made, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{carol.UserID}})
	must(t, err, "shadow-banned create room with invites")
	if m := roomMembership(t, srv, tok, made.RoomID, carol.UserID); m != "" {
		t.Fatalf("carol's membership of alice's new room is %q, want none", m)
	}
	do(t, srv, req{Method: http.MethodPut, Path: v3 + "/rooms/" + url.PathEscape(string(room.RoomID)) + "/typing/" +
		url.PathEscape(string(alice.UserID)), Token: alice.AccessToken, Body: map[string]any{"typing": true, "timeout": 30000}}).
		expect(t, http.StatusOK, "")

	del(t, srv, ban, tok, nil).expect(t, http.StatusOK, "")
	if userFlag(t, srv, tok, alice.UserID, "shadow_banned") != false {
		t.Fatal("shadow_banned is still true after the ban was lifted")
	}
	_, err = alice.SendText(ctx, room.RoomID, "visible")
	must(t, err, "send after the ban")
	if got := messageBodies(t, bob, room.RoomID); len(got) != 2 || got[0] != "visible" {
		t.Fatalf("bob reads %q after the ban was lifted", got)
	}

	remote := adminV1 + "/users/" + url.PathEscape("@x:elsewhere.test") + "/shadow_ban"
	post(t, srv, remote, tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	post(t, srv, adminV1+"/users/"+url.PathEscape("@nobody:tessera.test")+"/shadow_ban", tok, map[string]any{}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

// roomMembership is a user's membership of a room as the admin API's
// members list shows it ("" for none).
func roomMembership(t *testing.T, srv *testserver.Server, token string, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	r := get(t, srv, adminV1+"/rooms/"+url.PathEscape(string(roomID))+"/state", token).expect(t, http.StatusOK, "")
	for _, e := range r.Body["state"].([]any) {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.member" && ev["state_key"] == string(userID) {
			return ev["content"].(map[string]any)["membership"].(string)
		}
	}
	return ""
}

// TestAdminSuspend: a suspended user (MSC3823) reads, leaves and redacts
// their own events, and every write answers 403 M_USER_SUSPENDED, until
// the suspension is lifted.
func TestAdminSuspend(t *testing.T) {
	srv, root, alice, bob := adminWithUsers(t)
	tok := root.AccessToken
	room, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	other, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	_, err = alice.JoinRoomByID(ctx, room.RoomID)
	must(t, err, "join")
	own, err := alice.SendText(ctx, room.RoomID, "mine")
	must(t, err, "send")
	bobs, err := bob.SendText(ctx, room.RoomID, "bob's")
	must(t, err, "send")
	suspend := adminV1 + "/suspend/" + url.PathEscape(string(alice.UserID))

	r := put(t, srv, suspend, tok, map[string]any{"suspend": true}).expect(t, http.StatusOK, "")
	if r.Body["user_@alice:tessera.test_suspended"] != true {
		t.Fatalf("suspend answered %s", r.Raw)
	}
	if userFlag(t, srv, tok, alice.UserID, "suspended") != true {
		t.Fatal("suspended is not true")
	}

	rid := url.PathEscape(string(room.RoomID))
	at := alice.AccessToken
	refused := []req{
		{Method: http.MethodPut, Path: v3 + "/rooms/" + rid + "/send/m.room.message/t1", Body: map[string]any{"msgtype": "m.text", "body": "x"}},
		{Method: http.MethodPut, Path: v3 + "/rooms/" + rid + "/state/m.room.topic/", Body: map[string]any{"topic": "x"}},
		{Method: http.MethodPost, Path: v3 + "/join/" + url.PathEscape(string(other.RoomID)), Body: map[string]any{}},
		{Method: http.MethodPost, Path: v3 + "/rooms/" + rid + "/invite", Body: map[string]any{"user_id": "@carol:tessera.test"}},
		{Method: http.MethodPost, Path: v3 + "/rooms/" + rid + "/kick", Body: map[string]any{"user_id": string(bob.UserID)}},
		{Method: http.MethodPost, Path: v3 + "/createRoom", Body: map[string]any{}},
		{Method: http.MethodPut, Path: v3 + "/profile/" + url.PathEscape(string(alice.UserID)) + "/displayname", Body: map[string]any{"displayname": "x"}},
		{Method: http.MethodPut, Path: v3 + "/directory/room/" + url.PathEscape("#a:tessera.test"), Body: map[string]any{"room_id": string(room.RoomID)}},
		{Method: http.MethodPut, Path: v3 + "/rooms/" + rid + "/redact/" + url.PathEscape(string(bobs.EventID)) + "/t2", Body: map[string]any{}},
		{Method: http.MethodPost, Path: "/_matrix/media/v3/upload", Body: "bytes"},
	}
	for _, rq := range refused {
		rq.Token = at
		do(t, srv, rq).expect(t, http.StatusForbidden, "M_USER_SUSPENDED")
	}
	// What a suspended user may still do.
	if got := messageBodies(t, alice, room.RoomID); len(got) != 2 {
		t.Fatalf("alice reads %q", got)
	}
	_, err = alice.RedactEvent(ctx, room.RoomID, own.EventID)
	must(t, err, "redact own event while suspended")
	_, err = alice.LeaveRoom(ctx, room.RoomID)
	must(t, err, "leave while suspended")

	put(t, srv, suspend, tok, map[string]any{"suspend": false}).expect(t, http.StatusOK, "")
	if userFlag(t, srv, tok, alice.UserID, "suspended") != false {
		t.Fatal("suspended is still true")
	}
	_, err = alice.JoinRoomByID(ctx, other.RoomID)
	must(t, err, "join after the suspension")

	put(t, srv, suspend, tok, map[string]any{"suspend": "yes"}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, suspend, tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, adminV1+"/suspend/"+url.PathEscape("@x:elsewhere.test"), tok, map[string]any{"suspend": true}).
		expect(t, http.StatusBadRequest, "M_UNKNOWN")
	put(t, srv, adminV1+"/suspend/"+url.PathEscape("@nobody:tessera.test"), tok, map[string]any{"suspend": true}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

// TestAdminLock: a locked account gets 401 M_USER_LOCKED with soft_logout
// to everything but logging out, and cannot log in; unlocking brings its
// sessions back.
func TestAdminLock(t *testing.T) {
	srv := testserver.Start(t)
	root := registerAdmin(t, srv)
	tok := root.AccessToken
	alice := srv.Register("alice", "alice-password")
	user := adminV2 + "/users/" + url.PathEscape(string(alice.UserID))

	r := put(t, srv, user, tok, map[string]any{"locked": true}).expect(t, http.StatusOK, "")
	if r.Body["locked"] != true {
		t.Fatalf("PUT answered %s", r.Raw)
	}
	if userFlag(t, srv, tok, alice.UserID, "locked") != true {
		t.Fatal("locked is not true")
	}
	w := whoami(t, srv, alice.AccessToken).expect(t, http.StatusUnauthorized, "M_USER_LOCKED")
	if soft, _ := w.boolean("soft_logout"); !soft {
		t.Fatalf("no soft_logout: %s", w.Raw)
	}
	get(t, srv, "/_matrix/client/v1/media/config", alice.AccessToken).expect(t, http.StatusUnauthorized, "M_USER_LOCKED")
	loginRaw(t, srv, "alice", "alice-password", nil).expect(t, http.StatusUnauthorized, "M_USER_LOCKED")
	loginRaw(t, srv, "alice", "wrong", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	put(t, srv, user, tok, map[string]any{"locked": false}).expect(t, http.StatusOK, "")
	tokenWorks(t, srv, alice.AccessToken, string(alice.UserID))
	put(t, srv, user, tok, map[string]any{"locked": true}).expect(t, http.StatusOK, "")
	post(t, srv, v3+"/logout", alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	put(t, srv, user, tok, map[string]any{"locked": "yes"}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
}

// TestAdminOverrideRatelimit: GET/POST/DELETE override_ratelimit, and the
// event rate limit honouring a user's override: other rates, or none
// (messages_per_second 0), and the configured rate once it is deleted.
func TestAdminOverrideRatelimit(t *testing.T) {
	srv := testserver.Start(t, rateLimited(func(rl *config.RateLimits) {
		rl.MessagesPerUser = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	root := registerAdmin(t, srv)
	tok := root.AccessToken
	alice := srv.Register("alice", "alice-password")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	must(t, err, "create room")
	n := 0
	send := func() resp {
		n++
		return put(t, srv, v3+"/rooms/"+url.PathEscape(string(room.RoomID))+"/send/m.room.message/t"+strconv.Itoa(n),
			alice.AccessToken, map[string]any{"msgtype": "m.text", "body": "hi"})
	}
	// sendsUntilLimited sends until a 429, failing after max, and returns
	// how many went through.
	sendsUntilLimited := func(max int) int {
		t.Helper()
		for i := 0; i < max; i++ {
			if r := send(); r.Status == http.StatusTooManyRequests {
				expectLimited(t, r)
				return i
			} else {
				r.expect(t, http.StatusOK, "")
			}
		}
		t.Fatalf("no 429 after %d sends", max)
		return max
	}
	if got := sendsUntilLimited(5); got != 2 {
		t.Fatalf("%d sends before the configured limit, want 2", got)
	}

	path := adminV1 + "/users/" + url.PathEscape(string(alice.UserID)) + "/override_ratelimit"
	if r := get(t, srv, path, tok).expect(t, http.StatusOK, ""); len(r.Body) != 0 {
		t.Fatalf("no override yet, got %s", r.Raw)
	}
	r := post(t, srv, path, tok, map[string]any{"messages_per_second": 0, "burst_count": 0}).expect(t, http.StatusOK, "")
	if r.Body["messages_per_second"] != float64(0) || r.Body["burst_count"] != float64(0) {
		t.Fatalf("POST answered %s", r.Raw)
	}
	for range 10 {
		send().expect(t, http.StatusOK, "")
	}

	r = post(t, srv, path, tok, map[string]any{"messages_per_second": 1, "burst_count": 4}).expect(t, http.StatusOK, "")
	if r = get(t, srv, path, tok).expect(t, http.StatusOK, ""); r.Body["messages_per_second"] != float64(1) || r.Body["burst_count"] != float64(4) {
		t.Fatalf("GET answered %s", r.Raw)
	}
	// 4 at once, and one more a second: a slow machine may fit one more in.
	if got := sendsUntilLimited(10); got < 4 || got > 6 {
		t.Fatalf("%d sends under an override of burst 4", got)
	}

	del(t, srv, path, tok, nil).expect(t, http.StatusOK, "")
	if r := get(t, srv, path, tok).expect(t, http.StatusOK, ""); len(r.Body) != 0 {
		t.Fatalf("override still there: %s", r.Raw)
	}
	if got := sendsUntilLimited(3); got > 2 {
		t.Fatalf("%d sends after the override was deleted", got)
	}

	post(t, srv, path, tok, map[string]any{"messages_per_second": -1}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	post(t, srv, path, tok, map[string]any{"messages_per_second": "many"}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	get(t, srv, adminV1+"/users/"+url.PathEscape("@nobody:tessera.test")+"/override_ratelimit", tok).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, adminV1+"/users/"+url.PathEscape("@x:elsewhere.test")+"/override_ratelimit", tok).
		expect(t, http.StatusBadRequest, "M_UNKNOWN")
}

// TestShadowBanAnswerDelay: with moderation.shadow_ban_delay_min/max set,
// a shadow-banned user's send answers no sooner than the minimum, while
// the answer is still the fake success. (The test servers answer at once
// otherwise, so the suite does not wait Synapse's 1 to 10 s.)
func TestShadowBanAnswerDelay(t *testing.T) {
	const lo, hi = 300 * time.Millisecond, 600 * time.Millisecond
	srv := testserver.Start(t, func(c *config.Config) {
		c.Moderation = config.Moderation{ShadowBanDelayMin: config.Duration(lo), ShadowBanDelayMax: config.Duration(hi)}
	})
	root := registerAdmin(t, srv)
	alice := srv.Register("alice", "alice-password")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	must(t, err, "create room")
	post(t, srv, adminV1+"/users/"+url.PathEscape(string(alice.UserID))+"/shadow_ban", root.AccessToken, map[string]any{}).
		expect(t, http.StatusOK, "")
	for _, send := range []struct {
		name string
		do   func() error
	}{
		{"message", func() error { _, err := alice.SendText(ctx, room.RoomID, "hidden"); return err }},
		{"typing", func() error { _, err := alice.UserTyping(ctx, room.RoomID, true, time.Second); return err }},
	} {
		start := time.Now()
		must(t, send.do(), "shadow-banned "+send.name)
		// Only the lower bound: a loaded machine may answer late.
		if took := time.Since(start); took < lo {
			t.Errorf("shadow-banned %s answered after %v, want at least %v", send.name, took, lo)
		}
	}
}
