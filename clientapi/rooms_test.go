package clientapi_test

// Integration tests of the room endpoints: room creation, permissions and
// membership, transaction IDs, redaction, aliases, concurrency and restarts.
// Everything goes through the real HTTP API of a real server. Helpers here
// are prefixed "rm" so that they cannot clash with the helpers of the other
// test files of this package.

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/server"
	"github.com/tessera-hs/tessera/internal/testserver"
)

const rmPassword = "correct horse battery"

// rmUser registers localpart and returns its session.
func rmUser(t testing.TB, srv *testserver.Server, localpart string) session {
	t.Helper()
	return registerUser(t, srv, localpart, rmPassword)
}

var rmTxnCounter atomic.Int64

// rmTxn returns a transaction ID no other request of this test binary uses.
func rmTxn() string { return "rmtxn" + strconv.FormatInt(rmTxnCounter.Add(1), 10) }

// rmRoom is the path of a room endpoint: /rooms/{roomId}/parts..., each
// part percent-encoded.
func rmRoom(roomID string, parts ...string) string {
	p := v3 + "/rooms/" + url.PathEscape(roomID)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// rmCreate creates a room and returns its ID.
func rmCreate(t testing.TB, srv *testserver.Server, s session, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := post(t, srv, v3+"/createRoom", s.AccessToken, body).expect(t, http.StatusOK, "")
	id := r.str("room_id")
	if !strings.HasPrefix(id, "!") {
		t.Fatalf("createRoom room_id = %q", r.Raw)
	}
	return id
}

// rmSendRaw sends an event with PUT /send and returns the response.
func rmSendRaw(t testing.TB, srv *testserver.Server, s session, roomID, typ, txn string, content any) resp {
	t.Helper()
	return put(t, srv, rmRoom(roomID, "send", typ, txn), s.AccessToken, content)
}

// rmSend sends a text message and returns its event ID.
func rmSend(t testing.TB, srv *testserver.Server, s session, roomID, text string) string {
	t.Helper()
	r := rmSendRaw(t, srv, s, roomID, "m.room.message", rmTxn(), map[string]any{"msgtype": "m.text", "body": text}).
		expect(t, http.StatusOK, "")
	if r.str("event_id") == "" {
		t.Fatalf("send: no event_id in %s", r.Raw)
	}
	return r.str("event_id")
}

// rmPutState sends a state event and returns the response.
func rmPutState(t testing.TB, srv *testserver.Server, s session, roomID, typ, key string, content any) resp {
	t.Helper()
	return put(t, srv, rmRoom(roomID, "state", typ, key), s.AccessToken, content)
}

// rmGetState reads a state event's content.
func rmGetState(t testing.TB, srv *testserver.Server, s session, roomID, typ, key string) resp {
	t.Helper()
	return get(t, srv, rmRoom(roomID, "state", typ, key), s.AccessToken)
}

// rmStateEvent reads a whole state event (?format=event).
func rmStateEvent(t testing.TB, srv *testserver.Server, s session, roomID, typ, key string) map[string]any {
	t.Helper()
	return get(t, srv, rmRoom(roomID, "state", typ, key)+"?format=event", s.AccessToken).expect(t, http.StatusOK, "").Body
}

// rmOp posts to a room endpoint such as /invite or /kick.
func rmOp(t testing.TB, srv *testserver.Server, s session, roomID, op string, body any) resp {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return post(t, srv, rmRoom(roomID, op), s.AccessToken, body)
}

// rmJoin joins a room by ID or alias with POST /join/{roomIdOrAlias}.
func rmJoin(t testing.TB, srv *testserver.Server, s session, roomIDOrAlias string) resp {
	t.Helper()
	return post(t, srv, v3+"/join/"+url.PathEscape(roomIDOrAlias), s.AccessToken, map[string]any{})
}

// rmMembership is a user's membership as another member sees it in the
// current state ("" if none).
func rmMembership(t testing.TB, srv *testserver.Server, viewer session, roomID, userID string) string {
	t.Helper()
	r := rmGetState(t, srv, viewer, roomID, "m.room.member", userID)
	if r.Status == http.StatusNotFound {
		return ""
	}
	r.expect(t, http.StatusOK, "")
	return r.str("membership")
}

// rmMessages calls /messages with the given query.
func rmMessages(t testing.TB, srv *testserver.Server, s session, roomID string, q url.Values) resp {
	t.Helper()
	return get(t, srv, rmRoom(roomID, "messages")+"?"+q.Encode(), s.AccessToken)
}

// rmEvents reads a list of events from a response field.
func rmEvents(t testing.TB, r resp, key string) []map[string]any {
	t.Helper()
	raw, ok := r.Body[key]
	if !ok || raw == nil {
		return nil
	}
	list, ok := raw.([]any)
	if !ok {
		t.Fatalf("%s is not a list: %s", key, r.Raw)
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("%s[%d] is not an object: %s", key, i, r.Raw)
		}
		out[i] = m
	}
	return out
}

// rmList reads a top-level JSON array response (such as /state).
func rmList(t testing.TB, r resp) []map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal(r.Raw, &out); err != nil {
		t.Fatalf("not a list of objects: %v: %s", err, r.Raw)
	}
	return out
}

// rmIDs lists the event IDs of events.
func rmIDs(evs []map[string]any) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i], _ = e["event_id"].(string)
	}
	return out
}

// rmField walks nested objects: rmField(ev, "content", "body").
func rmField(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// rmMessageIDs pages through the whole room with /messages in one
// direction and returns the IDs of the events of type typ, in the order
// served ("" for every type).
func rmMessageIDs(t testing.TB, srv *testserver.Server, s session, roomID, dir, typ string, limit int) []string {
	t.Helper()
	var ids []string
	from := ""
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatalf("/messages never ends")
		}
		q := url.Values{"dir": {dir}, "limit": {strconv.Itoa(limit)}}
		if from != "" {
			q.Set("from", from)
		}
		r := rmMessages(t, srv, s, roomID, q).expect(t, http.StatusOK, "")
		for _, e := range rmEvents(t, r, "chunk") {
			if typ == "" || e["type"] == typ {
				ids = append(ids, e["event_id"].(string))
			}
		}
		end := r.str("end")
		if end == "" {
			return ids
		}
		from = end
	}
}

// TestCreateRoomPresets checks the state each preset sets up, in a room
// version with creators in the power levels (11) and one with privileged
// creators (12).
func TestCreateRoomPresets(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	tests := []struct {
		preset, visibility, version string
		joinRule, histVis, guest    string
		invitePL                    float64
		bobPL                       any  // bob's entry in power_levels.users (nil: absent)
		bobCreator                  bool // bob is in additional_creators
		published                   string
	}{
		{"private_chat", "", "11", "invite", "shared", "can_join", 0, nil, false, "private"},
		{"trusted_private_chat", "", "11", "invite", "shared", "can_join", 0, float64(100), false, "private"},
		{"public_chat", "", "11", "public", "shared", "forbidden", 50, nil, false, "private"},
		{"private_chat", "", "12", "invite", "shared", "can_join", 0, nil, false, "private"},
		{"trusted_private_chat", "", "12", "invite", "shared", "can_join", 0, nil, true, "private"},
		{"public_chat", "", "12", "public", "shared", "forbidden", 50, nil, false, "private"},
		// Without a preset, the visibility picks it.
		{"", "public", "12", "public", "shared", "forbidden", 50, nil, false, "public"},
		{"", "private", "12", "invite", "shared", "can_join", 0, nil, false, "private"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/v%s", tt.preset, tt.visibility, tt.version), func(t *testing.T) {
			body := map[string]any{"room_version": tt.version, "invite": []string{bob.UserID}}
			if tt.preset != "" {
				body["preset"] = tt.preset
			}
			if tt.visibility != "" {
				body["visibility"] = tt.visibility
			}
			room := rmCreate(t, srv, alice, body)
			if got := rmGetState(t, srv, alice, room, "m.room.join_rules", "").expect(t, 200, "").str("join_rule"); got != tt.joinRule {
				t.Errorf("join_rule = %q, want %q", got, tt.joinRule)
			}
			if got := rmGetState(t, srv, alice, room, "m.room.history_visibility", "").expect(t, 200, "").str("history_visibility"); got != tt.histVis {
				t.Errorf("history_visibility = %q, want %q", got, tt.histVis)
			}
			if got := rmGetState(t, srv, alice, room, "m.room.guest_access", "").expect(t, 200, "").str("guest_access"); got != tt.guest {
				t.Errorf("guest_access = %q, want %q", got, tt.guest)
			}
			pl := rmGetState(t, srv, alice, room, "m.room.power_levels", "").expect(t, 200, "")
			// v12 needs the tombstone above state_default, 150 by default.
			tombstone := float64(100)
			if tt.version == "12" {
				tombstone = 150
			}
			for _, c := range []struct {
				path []string
				want any
			}{
				{[]string{"users_default"}, float64(0)},
				{[]string{"events_default"}, float64(0)},
				{[]string{"state_default"}, float64(50)},
				{[]string{"kick"}, float64(50)},
				{[]string{"ban"}, float64(50)},
				{[]string{"redact"}, float64(50)},
				{[]string{"invite"}, tt.invitePL},
				{[]string{"events", "m.room.name"}, float64(50)},
				{[]string{"events", "m.room.power_levels"}, float64(100)},
				{[]string{"events", "m.room.history_visibility"}, float64(100)},
				{[]string{"events", "m.room.tombstone"}, tombstone},
				{[]string{"users", bob.UserID}, tt.bobPL},
			} {
				if got := rmField(pl.Body, c.path...); !reflect.DeepEqual(got, c.want) {
					t.Errorf("power_levels.%s = %v, want %v", strings.Join(c.path, "."), got, c.want)
				}
			}
			// Creators of v12 rooms are above the power levels and not
			// listed in them; older versions list the creator at 100.
			aliceLevel := rmField(pl.Body, "users", alice.UserID)
			if tt.version == "12" && aliceLevel != nil {
				t.Errorf("v12 creator listed in power_levels.users: %s", pl.Raw)
			}
			if tt.version != "12" && aliceLevel != float64(100) {
				t.Errorf("creator's level = %v, want 100", aliceLevel)
			}
			create := rmGetState(t, srv, alice, room, "m.room.create", "").expect(t, 200, "")
			creators, _ := create.Body["additional_creators"].([]any)
			if isCreator := slices.Contains(creators, any(bob.UserID)); isCreator != tt.bobCreator {
				t.Errorf("bob in additional_creators = %v, want %v: %s", isCreator, tt.bobCreator, create.Raw)
			}
			if m := rmMembership(t, srv, alice, room, bob.UserID); m != "invite" {
				t.Errorf("bob's membership = %q, want invite", m)
			}
			vis := get(t, srv, v3+"/directory/list/room/"+url.PathEscape(room), "").expect(t, 200, "").str("visibility")
			if vis != tt.published {
				t.Errorf("directory visibility = %q, want %q", vis, tt.published)
			}
		})
	}
}

// TestCreateRoomOptions covers the createRoom body fields beyond presets.
func TestCreateRoomOptions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")

	// trusted_private_chat in v12 appends the invitees to the creators
	// the client gave, and lists none of them in the power levels.
	t.Run("v12 additional_creators appended", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{
			"room_version": "12", "preset": "trusted_private_chat", "invite": []string{bob.UserID},
			"creation_content": map[string]any{"additional_creators": []string{carol.UserID}},
		})
		create := rmGetState(t, srv, alice, room, "m.room.create", "").expect(t, 200, "")
		creators, _ := create.Body["additional_creators"].([]any)
		if !reflect.DeepEqual(creators, []any{carol.UserID, bob.UserID}) {
			t.Errorf("additional_creators = %v, want [%s %s]", creators, carol.UserID, bob.UserID)
		}
		pl := rmGetState(t, srv, alice, room, "m.room.power_levels", "").expect(t, 200, "")
		for _, u := range []string{alice.UserID, bob.UserID, carol.UserID} {
			if lvl := rmField(pl.Body, "users", u); lvl != nil {
				t.Errorf("creator %s listed in power_levels.users at %v", u, lvl)
			}
		}
	})

	t.Run("name topic alias", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{
			"name": "The Room", "topic": "Things", "room_alias_name": "the-room", "preset": "public_chat",
		})
		if got := rmGetState(t, srv, alice, room, "m.room.name", "").expect(t, 200, "").str("name"); got != "The Room" {
			t.Errorf("name = %q", got)
		}
		if got := rmGetState(t, srv, alice, room, "m.room.topic", "").expect(t, 200, "").str("topic"); got != "Things" {
			t.Errorf("topic = %q", got)
		}
		r := get(t, srv, v3+"/directory/room/"+url.PathEscape("#the-room:tessera.test"), "").expect(t, 200, "")
		if r.str("room_id") != room {
			t.Errorf("alias resolves to %s, want %s", r.Raw, room)
		}
		if servers, _ := r.Body["servers"].([]any); !slices.Contains(servers, any("tessera.test")) {
			t.Errorf("alias servers = %s", r.Raw)
		}
		if got := rmGetState(t, srv, alice, room, "m.room.canonical_alias", "").expect(t, 200, "").str("alias"); got != "#the-room:tessera.test" {
			t.Errorf("canonical alias = %q", got)
		}
		// The alias is taken now.
		post(t, srv, v3+"/createRoom", bob.AccessToken, map[string]any{"room_alias_name": "the-room"}).
			expect(t, http.StatusBadRequest, "M_ROOM_IN_USE")
		// The room is reachable by its alias.
		if got := rmJoin(t, srv, bob, "#the-room:tessera.test").expect(t, 200, "").str("room_id"); got != room {
			t.Errorf("join by alias: room_id %q, want %q", got, room)
		}
	})

	t.Run("alias race", func(t *testing.T) {
		// Rooms created at once with one alias: one gets it, the others
		// are refused, and no room is left half made.
		const n = 16
		statuses := make([]resp, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := tryDo(srv, req{Method: http.MethodPost, Path: v3 + "/createRoom", Token: carol.AccessToken,
					Body: map[string]any{"room_alias_name": "contested", "name": fmt.Sprint("try ", i)}})
				if err != nil {
					t.Errorf("createRoom %d: %v", i, err)
				}
				statuses[i] = r
			}()
		}
		wg.Wait()
		var winner string
		for _, r := range statuses {
			switch {
			case r.Status == 200 && winner == "":
				winner = r.str("room_id")
			case r.Status == 400 && r.str("errcode") == "M_ROOM_IN_USE":
			default:
				t.Errorf("concurrent createRoom: %d %s", r.Status, r.Raw)
			}
		}
		if got := get(t, srv, v3+"/directory/room/"+url.PathEscape("#contested:tessera.test"), "").expect(t, 200, "").str("room_id"); got != winner {
			t.Errorf("alias points to %s, the winner is %s", got, winner)
		}
		jr := get(t, srv, v3+"/joined_rooms", carol.AccessToken).expect(t, 200, "")
		if rooms, _ := jr.Body["joined_rooms"].([]any); !slices.Equal(rooms, []any{winner}) {
			t.Errorf("carol's rooms after the race = %v, want only the winner %s", rooms, winner)
		}
	})

	t.Run("invite is_direct", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{"invite": []string{bob.UserID}, "is_direct": true, "preset": "trusted_private_chat"})
		ev := rmStateEvent(t, srv, alice, room, "m.room.member", bob.UserID)
		if rmField(ev, "content", "membership") != "invite" || rmField(ev, "content", "is_direct") != true {
			t.Errorf("invite member event = %v, want membership invite and is_direct true", ev)
		}
		if ev["sender"] != alice.UserID {
			t.Errorf("invite sender = %v", ev["sender"])
		}
		// The creator's own member event is not direct.
		if d := rmField(rmStateEvent(t, srv, alice, room, "m.room.member", alice.UserID), "content", "is_direct"); d != nil {
			t.Errorf("creator's member event has is_direct %v", d)
		}
	})

	t.Run("initial_state overrides preset", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{
			"preset": "private_chat",
			"initial_state": []map[string]any{
				{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "public"}},
				{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}},
				{"type": "org.example.custom", "state_key": "k", "content": map[string]any{"v": 1}},
			},
		})
		if got := rmGetState(t, srv, alice, room, "m.room.join_rules", "").expect(t, 200, "").str("join_rule"); got != "public" {
			t.Errorf("join_rule = %q, want public", got)
		}
		if got := rmGetState(t, srv, alice, room, "m.room.history_visibility", "").expect(t, 200, "").str("history_visibility"); got != "world_readable" {
			t.Errorf("history_visibility = %q, want world_readable", got)
		}
		if got := rmGetState(t, srv, alice, room, "org.example.custom", "k").expect(t, 200, "").Body["v"]; got != float64(1) {
			t.Errorf("custom state v = %v", got)
		}
		// The preset's join rule event was not sent at all: one join rules
		// event in the state, and none replaced.
		jr := rmStateEvent(t, srv, alice, room, "m.room.join_rules", "")
		if rc := rmField(jr, "unsigned", "replaces_state"); rc != nil {
			t.Errorf("initial_state join rules replaced a preset event %v", rc)
		}
		// Public now: carol joins without an invite.
		rmJoin(t, srv, carol, room).expect(t, 200, "")
	})

	t.Run("space", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{"creation_content": map[string]any{"type": "m.space"}})
		if got := rmGetState(t, srv, alice, room, "m.room.create", "").expect(t, 200, "").str("type"); got != "m.space" {
			t.Errorf("create type = %q, want m.space", got)
		}
	})

	t.Run("power_level_content_override", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{
			"preset":                       "public_chat",
			"power_level_content_override": map[string]any{"events_default": 20, "events": map[string]any{"m.room.topic": 10}},
		})
		pl := rmGetState(t, srv, alice, room, "m.room.power_levels", "").expect(t, 200, "")
		if pl.Body["events_default"] != float64(20) || rmField(pl.Body, "events", "m.room.topic") != float64(10) {
			t.Errorf("power levels ignore the override: %s", pl.Raw)
		}
		rmJoin(t, srv, bob, room).expect(t, 200, "")
		// events_default 20 keeps bob (0) from sending messages.
		rmSendRaw(t, srv, bob, room, "m.room.message", rmTxn(), map[string]any{"msgtype": "m.text", "body": "hi"}).
			expect(t, http.StatusForbidden, "M_FORBIDDEN")
		rmSend(t, srv, alice, room, "allowed")
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, tt := range []struct {
			name    string
			body    any
			status  int
			errcode string
		}{
			{"unknown room version", map[string]any{"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{"unknown preset", map[string]any{"preset": "secret_chat"}, 400, "M_INVALID_PARAM"},
			{"bad visibility", map[string]any{"visibility": "hidden"}, 400, "M_INVALID_PARAM"},
			{"bad invitee", map[string]any{"invite": []string{"not-a-user"}}, 400, "M_INVALID_PARAM"},
			{"not JSON", "{", 400, "M_NOT_JSON"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				post(t, srv, v3+"/createRoom", alice.AccessToken, tt.body).expect(t, tt.status, tt.errcode)
			})
		}
	})
}

// TestCreateRoomVersions creates a room of every version, sends to it and
// reads the message back.
func TestCreateRoomVersions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	for v := 1; v <= 12; v++ {
		ver := strconv.Itoa(v)
		t.Run("v"+ver, func(t *testing.T) {
			t.Parallel()
			room := rmCreate(t, srv, alice, map[string]any{"room_version": ver, "preset": "public_chat", "name": "v" + ver})
			create := rmStateEvent(t, srv, alice, room, "m.room.create", "")
			if got := rmField(create, "content", "room_version"); got != ver {
				t.Errorf("room_version = %v, want %s", got, ver)
			}
			// Room versions 1-10 name the creator in the create event;
			// 11 and later take it from the sender.
			if creator := rmField(create, "content", "creator"); (v <= 10) != (creator == alice.UserID) {
				t.Errorf("create content creator = %v in v%d", creator, v)
			}
			createID, _ := create["event_id"].(string)
			if v == 12 {
				// The room ID is the create event's ID with "!" for "$".
				if want := "!" + strings.TrimPrefix(createID, "$"); room != want {
					t.Errorf("v12 room ID %s, want %s", room, want)
				}
			} else if !strings.HasSuffix(room, ":tessera.test") {
				t.Errorf("room ID %s has no server name", room)
			}
			rmJoin(t, srv, bob, room).expect(t, 200, "")
			evID := rmSend(t, srv, bob, room, "hello v"+ver)
			ev := get(t, srv, rmRoom(room, "event", evID), alice.AccessToken).expect(t, 200, "")
			if rmField(ev.Body, "content", "body") != "hello v"+ver || ev.str("sender") != bob.UserID || ev.str("room_id") != room {
				t.Errorf("event = %s", ev.Raw)
			}
			msgs := rmMessages(t, srv, alice, room, url.Values{"dir": {"b"}, "limit": {"1"}}).expect(t, 200, "")
			if ids := rmIDs(rmEvents(t, msgs, "chunk")); !slices.Equal(ids, []string{evID}) {
				t.Errorf("/messages = %v, want [%s]", ids, evID)
			}
			// mautrix reads the room too.
			c := client(srv, alice)
			var name event.RoomNameEventContent
			must(t, c.StateEvent(ctx, id.RoomID(room), event.StateRoomName, "", &name), "mautrix state")
			if name.Name != "v"+ver {
				t.Errorf("name = %q", name.Name)
			}
		})
	}
}

// TestCreateIdenticalRoomsAtOnce: room v12 IDs are hashes of the create
// event; identical createRoom requests from one user at the same moment
// must still make distinct rooms.
func TestCreateIdenticalRoomsAtOnce(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	const n = 20
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tryDo(srv, req{Method: http.MethodPost, Path: v3 + "/createRoom", Token: alice.AccessToken,
				Body: map[string]any{"room_version": "12"}})
			if err != nil || r.Status != 200 {
				t.Errorf("createRoom %d: %v %d %s", i, err, r.Status, r.Raw)
				return
			}
			ids[i] = r.str("room_id")
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if distinct := slices.Compact(slices.Sorted(slices.Values(ids))); len(distinct) != n {
		t.Fatalf("%d createRoom calls made %d rooms", n, len(distinct))
	}
	jr := get(t, srv, v3+"/joined_rooms", alice.AccessToken).expect(t, 200, "")
	if rooms, _ := jr.Body["joined_rooms"].([]any); len(rooms) != n {
		t.Fatalf("alice is in %d rooms, want %d", len(rooms), n)
	}
}

// TestV12Creators: in room version 12 the creator is above the power
// levels, and trusted_private_chat makes invitees creators too, which lets
// them do what only a creator may.
func TestV12Creators(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	room := rmCreate(t, srv, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat",
		"invite": []string{bob.UserID}})
	create := rmGetState(t, srv, alice, room, "m.room.create", "").expect(t, 200, "")
	if cs, _ := create.Body["additional_creators"].([]any); !slices.Equal(cs, []any{bob.UserID}) {
		t.Fatalf("additional_creators = %s", create.Raw)
	}
	rmOp(t, srv, bob, room, "join", nil).expect(t, 200, "")
	rmOp(t, srv, bob, room, "invite", map[string]any{"user_id": carol.UserID}).expect(t, 200, "")
	rmOp(t, srv, carol, room, "join", nil).expect(t, 200, "")
	// A creator may change the power levels; a plain member may not. The
	// power levels may not list creators.
	pl := rmGetState(t, srv, alice, room, "m.room.power_levels", "").expect(t, 200, "").Body
	pl["users"] = map[string]any{carol.UserID: 50}
	rmPutState(t, srv, bob, room, "m.room.power_levels", "", pl).expect(t, 200, "")
	pl["users"] = map[string]any{carol.UserID: 100}
	rmPutState(t, srv, carol, room, "m.room.power_levels", "", pl).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	pl["users"] = map[string]any{carol.UserID: 50, alice.UserID: 100}
	rmPutState(t, srv, alice, room, "m.room.power_levels", "", pl).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// Nobody may kick a creator, not even a moderator.
	rmOp(t, srv, carol, room, "kick", map[string]any{"user_id": bob.UserID}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	if m := rmMembership(t, srv, alice, room, bob.UserID); m != "join" {
		t.Fatalf("bob's membership = %q", m)
	}
}

// TestStatePermissionMatrix: who may send which state event at which power
// level. A refused event leaves the state as it was.
func TestStatePermissionMatrix(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice") // creator
	mod := rmUser(t, srv, "mod")     // 50
	user := rmUser(t, srv, "user")   // 0
	who := map[string]session{"creator": alice, "mod": mod, "user": user}
	for _, version := range []string{"11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			users := map[string]any{mod.UserID: 50}
			if version != "12" {
				users[alice.UserID] = 100
			}
			room := rmCreate(t, srv, alice, map[string]any{"room_version": version, "preset": "public_chat",
				"power_level_content_override": map[string]any{"users": users}})
			rmJoin(t, srv, mod, room).expect(t, 200, "")
			rmJoin(t, srv, user, room).expect(t, 200, "")
			tests := []struct {
				who, typ, key string
				allowed       bool
			}{
				{"user", "m.room.name", "", false},
				{"mod", "m.room.name", "", true},
				{"creator", "m.room.name", "", true},
				{"user", "m.room.topic", "", false}, // state_default 50
				{"mod", "m.room.topic", "", true},
				{"user", "org.example.state", "", false},
				{"mod", "org.example.state", "", true},
				{"user", "m.room.history_visibility", "", false}, // 100
				{"mod", "m.room.history_visibility", "", false},
				{"creator", "m.room.history_visibility", "", true},
				{"mod", "m.room.join_rules", "", true}, // state_default
				{"user", "m.room.join_rules", "", false},
				{"mod", "m.room.power_levels", "", false}, // 100
				{"user", "m.room.power_levels", "", false},
				{"creator", "m.room.power_levels", "", true},
				// A state key that is a user ID is that user's own: nobody
				// else may set it, whatever their level.
				{"user", "org.example.profile", user.UserID, false},
				{"mod", "org.example.profile", user.UserID, false},
				{"mod", "org.example.profile", mod.UserID, true},
				// There is one create event, ever.
				{"creator", "m.room.create", "", false},
			}
			for i, tt := range tests {
				name := fmt.Sprintf("%s %s %q", tt.who, tt.typ, tt.key)
				t.Run(name, func(t *testing.T) {
					s := who[tt.who]
					before := rmGetState(t, srv, alice, room, tt.typ, tt.key)
					var content map[string]any
					switch tt.typ {
					case "m.room.name":
						content = map[string]any{"name": fmt.Sprintf("name %d", i)}
					case "m.room.topic":
						content = map[string]any{"topic": fmt.Sprintf("topic %d", i)}
					case "m.room.history_visibility":
						content = map[string]any{"history_visibility": []string{"shared", "invited"}[i%2]}
					case "m.room.join_rules":
						content = map[string]any{"join_rule": "public", "n": i}
					case "m.room.power_levels":
						content = rmGetState(t, srv, alice, room, tt.typ, "").expect(t, 200, "").Body
						content["kick"] = 50 + i
					default:
						content = map[string]any{"n": i}
					}
					r := rmPutState(t, srv, s, room, tt.typ, tt.key, content)
					after := rmGetState(t, srv, alice, room, tt.typ, tt.key)
					if tt.allowed {
						r.expect(t, http.StatusOK, "")
						after.expect(t, 200, "")
						if !reflect.DeepEqual(after.Body, rmNormalize(t, content)) {
							t.Fatalf("state after = %s, want %v", after.Raw, content)
						}
						return
					}
					r.expect(t, http.StatusForbidden, "M_FORBIDDEN")
					if after.Status != before.Status || string(after.Raw) != string(before.Raw) {
						t.Fatalf("refused event changed the state: before %d %s, after %d %s", before.Status, before.Raw, after.Status, after.Raw)
					}
				})
			}
			// Messages: events_default 0 lets everybody send.
			rmSend(t, srv, user, room, "hi")
		})
	}
}

// normalize round-trips v through JSON, as the server's answer is decoded.
func rmNormalize(t testing.TB, v any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	must(t, err, "marshal")
	var out map[string]any
	must(t, json.Unmarshal(raw, &out), "unmarshal")
	return out
}

// TestMembershipPowerMatrix walks one room through kicks, bans, unbans and
// invites by users of different power levels. Steps run in order: each
// changes the room the next one sees.
func TestMembershipPowerMatrix(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice") // creator, 100
	mod := rmUser(t, srv, "mod")     // 50
	user := rmUser(t, srv, "user")   // 0
	other := rmUser(t, srv, "other") // 0
	newbie := rmUser(t, srv, "newbie")
	who := map[string]session{"alice": alice, "mod": mod, "user": user, "other": other, "newbie": newbie}
	room := rmCreate(t, srv, alice, map[string]any{"room_version": "11", "preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, mod.UserID: 50}}})
	for _, s := range []session{mod, user, other} {
		rmJoin(t, srv, s, room).expect(t, 200, "")
	}
	steps := []struct {
		name        string
		actor, op   string // op: kick, ban, unban, invite, join, leave
		target      string
		status      int
		errcode     string
		wantTarget  string // the target's membership afterwards
		wantComment string
	}{
		{"user cannot kick", "user", "kick", "other", 403, "M_FORBIDDEN", "join", ""},
		{"mod cannot kick a higher level", "mod", "kick", "alice", 403, "M_FORBIDDEN", "join", ""},
		{"mod kicks", "mod", "kick", "other", 200, "", "leave", ""},
		{"kicked user rejoins a public room", "other", "join", "other", 200, "", "join", ""},
		{"kicking a non-member is refused", "mod", "kick", "newbie", 403, "M_FORBIDDEN", "", ""},
		{"user cannot ban", "user", "ban", "other", 403, "M_FORBIDDEN", "join", ""},
		{"mod bans", "mod", "ban", "other", 200, "", "ban", ""},
		{"banned user cannot rejoin", "other", "join", "other", 403, "M_FORBIDDEN", "ban", ""},
		{"banned user cannot be invited", "alice", "invite", "other", 403, "M_FORBIDDEN", "ban", ""},
		{"user cannot unban", "user", "unban", "other", 403, "M_FORBIDDEN", "ban", ""},
		{"unban of a joined user is refused and does not kick", "mod", "unban", "user", 403, "M_FORBIDDEN", "join", ""},
		{"unban of a stranger is refused", "mod", "unban", "newbie", 403, "M_FORBIDDEN", "", ""},
		{"mod unbans", "mod", "unban", "other", 200, "", "leave", ""},
		{"unbanned user rejoins", "other", "join", "other", 200, "", "join", ""},
		{"mod bans a stranger", "mod", "ban", "newbie", 200, "", "ban", ""},
		{"banned stranger cannot join", "newbie", "join", "newbie", 403, "M_FORBIDDEN", "ban", ""},
		{"alice unbans", "alice", "unban", "newbie", 200, "", "leave", ""},
		{"user cannot invite (invite 50 in a public room)", "user", "invite", "newbie", 403, "M_FORBIDDEN", "leave", ""},
		{"mod invites", "mod", "invite", "newbie", 200, "", "invite", ""},
		{"inviting a joined member is refused", "mod", "invite", "user", 403, "M_FORBIDDEN", "join", ""},
		{"user cannot kick the invitee", "user", "kick", "newbie", 403, "M_FORBIDDEN", "invite", ""},
		{"mod withdraws the invite with a kick", "mod", "kick", "newbie", 200, "", "leave", ""},
		{"user leaves", "user", "leave", "user", 200, "", "leave", ""},
		{"leaving twice is refused", "user", "leave", "user", 403, "M_FORBIDDEN", "leave", ""},
	}
	for _, st := range steps {
		actor, target := who[st.actor], who[st.target]
		var r resp
		switch st.op {
		case "join":
			r = rmJoin(t, srv, actor, room)
		case "leave":
			r = rmOp(t, srv, actor, room, "leave", nil)
		default:
			r = rmOp(t, srv, actor, room, st.op, map[string]any{"user_id": target.UserID, "reason": st.name})
		}
		if r.Status != st.status || r.str("errcode") != st.errcode {
			t.Fatalf("%s: %s %s → %d %s, want %d %q", st.name, st.actor, st.op, r.Status, r.Raw, st.status, st.errcode)
		}
		if m := rmMembership(t, srv, alice, room, target.UserID); m != st.wantTarget {
			t.Fatalf("%s: %s's membership = %q, want %q", st.name, st.target, m, st.wantTarget)
		}
	}
	// The reason reaches the member event.
	ev := rmStateEvent(t, srv, alice, room, "m.room.member", newbie.UserID)
	if rmField(ev, "content", "reason") != "mod withdraws the invite with a kick" {
		t.Errorf("kick reason not in the member event: %v", ev)
	}
	// Bad bodies.
	rmOp(t, srv, mod, room, "kick", map[string]any{}).expect(t, 400, "M_MISSING_PARAM")
	rmOp(t, srv, mod, room, "ban", map[string]any{"user_id": "nobody"}).expect(t, 400, "M_INVALID_PARAM")
	rmOp(t, srv, mod, "!unknown:tessera.test", "kick", map[string]any{"user_id": user.UserID}).expect(t, 404, "M_NOT_FOUND")
}

// TestJoinRules: invite-only rooms, knocking and restricted rooms.
func TestJoinRules(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")

	t.Run("invite only", func(t *testing.T) {
		room := rmCreate(t, srv, alice, map[string]any{"preset": "private_chat"})
		rmJoin(t, srv, bob, room).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		rmOp(t, srv, bob, room, "join", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		if m := rmMembership(t, srv, alice, room, bob.UserID); m != "" {
			t.Fatalf("refused join left membership %q", m)
		}
		rmOp(t, srv, alice, room, "invite", map[string]any{"user_id": bob.UserID, "is_direct": true, "reason": "chat?"}).expect(t, 200, "")
		inv := rmStateEvent(t, srv, alice, room, "m.room.member", bob.UserID)
		if rmField(inv, "content", "is_direct") != true || rmField(inv, "content", "reason") != "chat?" {
			t.Fatalf("invite member event = %v", inv)
		}
		if got := rmOp(t, srv, bob, room, "join", nil).expect(t, 200, "").str("room_id"); got != room {
			t.Fatalf("join room_id = %q", got)
		}
		// Joining again changes nothing and succeeds.
		rmJoin(t, srv, bob, room).expect(t, 200, "")
		// A member may invite in a private chat (invite 0).
		rmOp(t, srv, bob, room, "invite", map[string]any{"user_id": carol.UserID}).expect(t, 200, "")
		// Rejecting an invite is a leave.
		rmOp(t, srv, carol, room, "leave", nil).expect(t, 200, "")
		if m := rmMembership(t, srv, alice, room, carol.UserID); m != "leave" {
			t.Fatalf("carol after rejecting = %q", m)
		}
	})

	t.Run("knock", func(t *testing.T) {
		for _, ver := range []string{"7", "10", "12"} {
			t.Run("v"+ver, func(t *testing.T) {
				room := rmCreate(t, srv, alice, map[string]any{"room_version": ver, "preset": "private_chat",
					"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}}}})
				rmJoin(t, srv, bob, room).expect(t, http.StatusForbidden, "M_FORBIDDEN")
				r := post(t, srv, v3+"/knock/"+url.PathEscape(room), bob.AccessToken, map[string]any{"reason": "let me in"}).
					expect(t, 200, "")
				if r.str("room_id") != room {
					t.Fatalf("knock room_id = %s", r.Raw)
				}
				ev := rmStateEvent(t, srv, alice, room, "m.room.member", bob.UserID)
				if rmField(ev, "content", "membership") != "knock" || rmField(ev, "content", "reason") != "let me in" {
					t.Fatalf("knock member event = %v", ev)
				}
				// Once invited, knocking is refused.
				rmOp(t, srv, alice, room, "invite", map[string]any{"user_id": bob.UserID}).expect(t, 200, "")
				if m := rmMembership(t, srv, alice, room, bob.UserID); m != "invite" {
					t.Fatalf("after invite: %q", m)
				}
				post(t, srv, v3+"/knock/"+url.PathEscape(room), bob.AccessToken, map[string]any{}).
					expect(t, http.StatusForbidden, "M_FORBIDDEN")
				rmJoin(t, srv, bob, room).expect(t, 200, "")
			})
		}
		// Knocking needs the knock join rule...
		room := rmCreate(t, srv, alice, map[string]any{"room_version": "10", "preset": "private_chat"})
		post(t, srv, v3+"/knock/"+url.PathEscape(room), bob.AccessToken, map[string]any{}).
			expect(t, http.StatusForbidden, "M_FORBIDDEN")
		// ...and a room version that has it (7+).
		room = rmCreate(t, srv, alice, map[string]any{"room_version": "6", "preset": "private_chat",
			"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}}}})
		post(t, srv, v3+"/knock/"+url.PathEscape(room), bob.AccessToken, map[string]any{}).
			expect(t, http.StatusForbidden, "M_FORBIDDEN")
		if m := rmMembership(t, srv, alice, room, bob.UserID); m != "" {
			t.Fatalf("refused knock left membership %q", m)
		}
	})

	t.Run("restricted", func(t *testing.T) {
		for _, ver := range []string{"8", "10", "12"} {
			t.Run("v"+ver, func(t *testing.T) {
				space := rmCreate(t, srv, alice, map[string]any{"room_version": ver, "preset": "public_chat",
					"creation_content": map[string]any{"type": "m.space"}})
				rmJoin(t, srv, bob, space).expect(t, 200, "")
				room := rmCreate(t, srv, alice, map[string]any{"room_version": ver, "preset": "private_chat",
					"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{
						"join_rule": "restricted",
						"allow":     []map[string]any{{"type": "m.room_membership", "room_id": space}},
					}}}})
				// bob is in the space: he may join.
				rmJoin(t, srv, bob, room).expect(t, 200, "")
				ev := rmStateEvent(t, srv, alice, room, "m.room.member", bob.UserID)
				if rmField(ev, "content", "membership") != "join" || rmField(ev, "content", "join_authorised_via_users_server") != alice.UserID {
					t.Fatalf("restricted join member event = %v", ev)
				}
				// carol is not: refused, and no member event.
				rmJoin(t, srv, carol, room).expect(t, http.StatusForbidden, "M_FORBIDDEN")
				if m := rmMembership(t, srv, alice, room, carol.UserID); m != "" {
					t.Fatalf("refused restricted join left membership %q", m)
				}
				// Once she joins the space, she may.
				rmJoin(t, srv, carol, space).expect(t, 200, "")
				rmJoin(t, srv, carol, room).expect(t, 200, "")
			})
		}
	})
}

// TestLeaveForgetJoinedRooms: /leave, /forget and /joined_rooms.
func TestLeaveForgetJoinedRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	r1 := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	r2 := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	r3 := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	for _, r := range []string{r1, r2, r3} {
		rmJoin(t, srv, bob, r).expect(t, 200, "")
	}
	joined := func(s session) []string {
		t.Helper()
		r := get(t, srv, v3+"/joined_rooms", s.AccessToken).expect(t, 200, "")
		list, ok := r.Body["joined_rooms"].([]any)
		if !ok {
			t.Fatalf("joined_rooms = %s", r.Raw)
		}
		var out []string
		for _, x := range list {
			out = append(out, x.(string))
		}
		slices.Sort(out)
		return out
	}
	if got := joined(bob); !slices.Equal(got, sorted(r1, r2, r3)) {
		t.Fatalf("joined_rooms = %v", got)
	}
	// Forgetting needs a leave first.
	rmOp(t, srv, bob, r1, "forget", nil).expect(t, 400, "M_UNKNOWN")
	secret := rmSend(t, srv, alice, r1, "said before bob left")
	rmOp(t, srv, bob, r1, "leave", map[string]any{"reason": "bye"}).expect(t, 200, "")
	rmOp(t, srv, bob, r1, "leave", nil).expect(t, 403, "M_FORBIDDEN")
	if got := joined(bob); !slices.Equal(got, sorted(r2, r3)) {
		t.Fatalf("joined_rooms after leave = %v", got)
	}
	// Left but not forgotten: he still reads what he saw.
	get(t, srv, rmRoom(r1, "event", secret), bob.AccessToken).expect(t, 200, "")
	rmMessages(t, srv, bob, r1, url.Values{"dir": {"b"}}).expect(t, 200, "")
	rmOp(t, srv, bob, r1, "forget", nil).expect(t, 200, "")
	rmOp(t, srv, bob, r1, "forget", nil).expect(t, 200, "") // idempotent
	// Once forgotten, the room's history is gone for him.
	rmMessages(t, srv, bob, r1, url.Values{"dir": {"b"}}).expect(t, 403, "M_FORBIDDEN")
	get(t, srv, rmRoom(r1, "state"), bob.AccessToken).expect(t, 403, "M_FORBIDDEN")
	get(t, srv, rmRoom(r1, "members"), bob.AccessToken).expect(t, 403, "M_FORBIDDEN")
	get(t, srv, rmRoom(r1, "event", secret), bob.AccessToken).expect(t, 404, "M_NOT_FOUND")
	if got := joined(bob); !slices.Equal(got, sorted(r2, r3)) {
		t.Fatalf("joined_rooms after forget = %v", got)
	}
	// A forgotten room can be joined again; it is listed again.
	rmJoin(t, srv, bob, r1).expect(t, 200, "")
	if got := joined(bob); !slices.Equal(got, sorted(r1, r2, r3)) {
		t.Fatalf("joined_rooms after rejoin = %v", got)
	}
	// Forgetting a room one never was in, or an unknown room.
	carol := rmUser(t, srv, "carol")
	rmOp(t, srv, carol, r1, "forget", nil).expect(t, 404, "M_NOT_FOUND")
	rmOp(t, srv, carol, "!nowhere:tessera.test", "leave", nil).expect(t, 404, "M_NOT_FOUND")
	if got := joined(carol); len(got) != 0 {
		t.Fatalf("carol's joined_rooms = %v", got)
	}
	// mautrix agrees.
	jr, err := client(srv, alice).JoinedRooms(ctx)
	must(t, err, "mautrix joined rooms")
	if len(jr.JoinedRooms) != 3 {
		t.Fatalf("alice's joined rooms = %v", jr.JoinedRooms)
	}
}

// TestGuestRooms: guests join only rooms with guest_access can_join and
// may not create rooms.
func TestGuestRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, guestsAllowed)
	alice := rmUser(t, srv, "alice")
	guest := sessionOf(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, 200, ""))
	post(t, srv, v3+"/createRoom", guest.AccessToken, map[string]any{}).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")

	forbidden := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"}) // guest_access forbidden
	rmJoin(t, srv, guest, forbidden).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
	rmOp(t, srv, guest, forbidden, "join", nil).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")

	open := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat", "room_alias_name": "guests",
		"initial_state": []map[string]any{{"type": "m.room.guest_access", "content": map[string]any{"guest_access": "can_join"}}}})
	rmJoin(t, srv, guest, "#guests:tessera.test").expect(t, 200, "")
	if m := rmMembership(t, srv, alice, open, guest.UserID); m != "join" {
		t.Fatalf("guest membership = %q", m)
	}
	rmSend(t, srv, guest, open, "hello from a guest")
	// Guests may not change state.
	rmPutState(t, srv, guest, open, "m.room.topic", "", map[string]any{"topic": "x"}).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
	rmOp(t, srv, guest, open, "leave", nil).expect(t, 200, "")
	// When the room closes to guests, they cannot come back.
	rmPutState(t, srv, alice, open, "m.room.guest_access", "", map[string]any{"guest_access": "forbidden"}).expect(t, 200, "")
	rmJoin(t, srv, guest, open).expect(t, 403, "M_GUEST_ACCESS_FORBIDDEN")
}

// TestTxnIdempotency: the same transaction ID from the same device gives
// the same event, even when the requests race; another device, room or
// event type makes a new event. Only the sending device sees the
// transaction ID.
func TestTxnIdempotency(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	phone := login(t, srv, "alice", rmPassword, nil)
	bob := rmUser(t, srv, "bob")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	room2 := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, 200, "")
	msg := map[string]any{"msgtype": "m.text", "body": "once"}

	first := rmSendRaw(t, srv, alice, room, "m.room.message", "txn1", msg).expect(t, 200, "").str("event_id")
	again := rmSendRaw(t, srv, alice, room, "m.room.message", "txn1", msg).expect(t, 200, "").str("event_id")
	if first == "" || again != first {
		t.Fatalf("retry gave %q, first %q", again, first)
	}
	// A retry is recognised by its transaction ID, not its content.
	changed := rmSendRaw(t, srv, alice, room, "m.room.message", "txn1", map[string]any{"msgtype": "m.text", "body": "other"}).
		expect(t, 200, "").str("event_id")
	if changed != first {
		t.Fatalf("retry with other content gave %q, want %q", changed, first)
	}

	// Concurrent retries.
	const n = 20
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tryDo(srv, req{Method: http.MethodPut, Path: rmRoom(room, "send", "m.room.message", "txn-race"),
				Token: alice.AccessToken, Body: msg})
			if err != nil || r.Status != 200 {
				errs <- fmt.Errorf("send %d: %v %d %s", i, err, r.Status, r.Raw)
				return
			}
			ids[i] = r.str("event_id")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("concurrent retries gave different events: %v", ids)
		}
	}

	// Retries among new sends: each retry gets its first event, each new
	// send its own event, even when they are committed together.
	var mixed sync.Map
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txn := fmt.Sprint("mixed-", i)
			if i%2 == 1 {
				txn = "txn1"
			}
			r, err := tryDo(srv, req{Method: http.MethodPut, Path: rmRoom(room, "send", "m.room.message", txn),
				Token: alice.AccessToken, Body: msg})
			if err != nil || r.Status != 200 {
				t.Errorf("send %s: %v %d %s", txn, err, r.Status, r.Raw)
				return
			}
			mixed.Store(i, r.str("event_id"))
		}()
	}
	wg.Wait()
	newIDs := map[string]bool{}
	mixed.Range(func(k, v any) bool {
		if k.(int)%2 == 1 {
			if v != first {
				t.Errorf("retry among new sends gave %v, want %s", v, first)
			}
		} else {
			newIDs[v.(string)] = true
		}
		return true
	})
	if len(newIDs) != 6 || newIDs[first] {
		t.Fatalf("new sends among retries gave %d distinct events (%v), want 6 new", len(newIDs), newIDs)
	}
	// A retry after its sender left the room still gets its event.
	bobs := rmSendRaw(t, srv, bob, room, "m.room.message", "bob-txn", msg).expect(t, 200, "").str("event_id")
	rmOp(t, srv, bob, room, "leave", nil).expect(t, 200, "")
	if again := rmSendRaw(t, srv, bob, room, "m.room.message", "bob-txn", msg).expect(t, 200, "").str("event_id"); again != bobs {
		t.Fatalf("retry after leaving gave %q, want %q", again, bobs)
	}
	rmSendRaw(t, srv, bob, room, "m.room.message", "bob-txn-2", msg).expect(t, 403, "M_FORBIDDEN")
	rmJoin(t, srv, bob, room).expect(t, 200, "")

	// Another device, another room, another event type: new events.
	other := rmSendRaw(t, srv, phone, room, "m.room.message", "txn1", msg).expect(t, 200, "").str("event_id")
	inRoom2 := rmSendRaw(t, srv, alice, room2, "m.room.message", "txn1", msg).expect(t, 200, "").str("event_id")
	otherType := rmSendRaw(t, srv, alice, room, "org.example.event", "txn1", msg).expect(t, 200, "").str("event_id")
	distinct := map[string]bool{first: true, ids[0]: true, other: true, inRoom2: true, otherType: true}
	if len(distinct) != 5 {
		t.Fatalf("events not distinct: first %s race %s other device %s other room %s other type %s",
			first, ids[0], other, inRoom2, otherType)
	}
	if r := get(t, srv, rmRoom(room2, "event", inRoom2), alice.AccessToken).expect(t, 200, ""); r.str("room_id") != room2 {
		t.Fatalf("event sent to room2 is in %s", r.str("room_id"))
	}
	// An event is found only under its own room.
	get(t, srv, rmRoom(room, "event", inRoom2), alice.AccessToken).expect(t, 404, "M_NOT_FOUND")

	// Each send is in the timeline once.
	timeline := rmMessageIDs(t, srv, bob, room, "f", "", 100)
	for _, id := range []string{first, ids[0], other, otherType} {
		if c := rmCountOf(timeline, id); c != 1 {
			t.Errorf("event %s appears %d times in /messages", id, c)
		}
	}
	if c := len(timeline); c != len(slices.Compact(slices.Clone(timeline))) {
		t.Errorf("duplicates in /messages: %v", timeline)
	}

	// transaction_id: only for the sending device.
	for _, tt := range []struct {
		name   string
		viewer session
		event  string
		want   any
	}{
		{"sending device", alice, first, "txn1"},
		{"sending device, raced", alice, ids[0], "txn-race"},
		{"other device of the sender", phone, first, nil},
		{"other user", bob, first, nil},
		{"phone's own event", phone, other, "txn1"},
		{"phone's event seen by the first device", alice, other, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ev := get(t, srv, rmRoom(room, "event", tt.event), tt.viewer.AccessToken).expect(t, 200, "")
			if got := rmField(ev.Body, "unsigned", "transaction_id"); got != tt.want {
				t.Fatalf("/event unsigned.transaction_id = %v, want %v", got, tt.want)
			}
			msgs := rmMessages(t, srv, tt.viewer, room, url.Values{"dir": {"b"}, "limit": {"50"}}).expect(t, 200, "")
			for _, e := range rmEvents(t, msgs, "chunk") {
				if e["event_id"] == tt.event {
					if got := rmField(e, "unsigned", "transaction_id"); got != tt.want {
						t.Fatalf("/messages unsigned.transaction_id = %v, want %v", got, tt.want)
					}
				}
			}
		})
	}

	// The transaction IDs survive a restart.
	srv.Restart()
	if got := rmSendRaw(t, srv, alice, room, "m.room.message", "txn1", msg).expect(t, 200, "").str("event_id"); got != first {
		t.Fatalf("retry after restart gave %q, want %q", got, first)
	}
	ev := get(t, srv, rmRoom(room, "event", first), alice.AccessToken).expect(t, 200, "")
	if got := rmField(ev.Body, "unsigned", "transaction_id"); got != "txn1" {
		t.Fatalf("transaction_id after restart = %v, want txn1", got)
	}
}

func rmCountOf(list []string, v string) int {
	n := 0
	for _, x := range list {
		if x == v {
			n++
		}
	}
	return n
}

// TestRedaction: redacted events lose their content on every read path
// and carry the redaction in unsigned.redacted_because.
func TestRedaction(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice") // creator
	mod := rmUser(t, srv, "mod")     // redact 50
	bob := rmUser(t, srv, "bob")
	for _, ver := range []string{"10", "11", "12"} { // redacts moved into content in v11
		t.Run("v"+ver, func(t *testing.T) {
			users := map[string]any{mod.UserID: 50}
			if ver != "12" {
				users[alice.UserID] = 100
			}
			room := rmCreate(t, srv, alice, map[string]any{"room_version": ver, "preset": "public_chat",
				"power_level_content_override": map[string]any{"users": users}})
			rmJoin(t, srv, mod, room).expect(t, 200, "")
			rmJoin(t, srv, bob, room).expect(t, 200, "")
			a1 := rmSend(t, srv, alice, room, "alice's secret")
			b1 := rmSend(t, srv, bob, room, "bob's secret")
			b2 := rmSend(t, srv, bob, room, "bob's other secret")
			after := rmSend(t, srv, alice, room, "after")

			redact := func(s session, target, txn string) resp {
				t.Helper()
				return put(t, srv, rmRoom(room, "redact", target, txn), s.AccessToken, map[string]any{"reason": "oops"})
			}
			// bob may not redact alice's event.
			redact(bob, a1, rmTxn()).expect(t, 403, "M_FORBIDDEN")
			if body := rmField(get(t, srv, rmRoom(room, "event", a1), bob.AccessToken).expect(t, 200, "").Body, "content", "body"); body != "alice's secret" {
				t.Fatalf("refused redaction stripped the event: body %v", body)
			}
			// bob redacts his own; the moderator redacts bob's other one.
			txn := rmTxn()
			red1 := redact(bob, b1, txn).expect(t, 200, "").str("event_id")
			if again := redact(bob, b1, txn).expect(t, 200, "").str("event_id"); again != red1 {
				t.Fatalf("redaction retry gave %s, want %s", again, red1)
			}
			red2 := redact(mod, b2, rmTxn()).expect(t, 200, "").str("event_id")
			// An event the server does not have (yet): the redaction is
			// accepted and waits for it (room versions 3+).
			redact(bob, "$nonexistent", rmTxn()).expect(t, 200, "")

			check := func(where string, ev map[string]any, redaction string) {
				t.Helper()
				content, _ := ev["content"].(map[string]any)
				if len(content) != 0 {
					t.Errorf("%s: redacted event content = %v, want {}", where, content)
				}
				because, _ := rmField(ev, "unsigned", "redacted_because").(map[string]any)
				if because == nil || because["event_id"] != redaction || because["type"] != "m.room.redaction" {
					t.Errorf("%s: redacted_because = %v, want the redaction %s", where, because, redaction)
				}
				if because != nil && because["redacts"] != ev["event_id"] {
					t.Errorf("%s: redacted_because.redacts = %v", where, because["redacts"])
				}
			}
			for _, viewer := range []session{alice, bob} {
				for ev, red := range map[string]string{b1: red1, b2: red2} {
					check("/event", get(t, srv, rmRoom(room, "event", ev), viewer.AccessToken).expect(t, 200, "").Body, red)
					ctxResp := get(t, srv, rmRoom(room, "context", ev)+"?limit=4", viewer.AccessToken).expect(t, 200, "")
					check("/context event", ctxResp.Body["event"].(map[string]any), red)
				}
				msgs := rmMessages(t, srv, viewer, room, url.Values{"dir": {"b"}, "limit": {"20"}}).expect(t, 200, "")
				seen := 0
				for _, e := range rmEvents(t, msgs, "chunk") {
					switch e["event_id"] {
					case b1:
						check("/messages", e, red1)
						seen++
					case b2:
						check("/messages", e, red2)
						seen++
					case a1, after:
						if rmField(e, "content", "body") == nil {
							t.Errorf("unredacted event lost its content: %v", e)
						}
					case red1:
						if e["redacts"] != b1 {
							t.Errorf("redaction event redacts = %v, want %s", e["redacts"], b1)
						}
					}
				}
				if seen != 2 {
					t.Errorf("/messages has %d of the 2 redacted events", seen)
				}
				// /context around another event shows the redacted ones stripped.
				cr := get(t, srv, rmRoom(room, "context", after)+"?limit=10", viewer.AccessToken).expect(t, 200, "")
				for _, e := range rmEvents(t, cr, "events_before") {
					if e["event_id"] == b1 {
						check("/context events_before", e, red1)
					}
				}
			}
			// Redacting a redacted event again is allowed and changes nothing.
			redact(bob, b1, rmTxn()).expect(t, 200, "")
			check("/event after second redaction", get(t, srv, rmRoom(room, "event", b1), bob.AccessToken).expect(t, 200, "").Body, red1)
		})
	}
}

// TestManyStateChanges drives a room through enough state changes to cross
// several full snapshots of its state groups, and checks the state read
// back now, at points in the past (/context), and after a restart.
func TestManyStateChanges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "private_chat"})
	want := map[string]float64{} // state key -> content.v
	marks := map[string]map[string]float64{}
	for i := range 200 {
		key := fmt.Sprint("k", i%70) // keys are set, then overwritten
		rmPutState(t, srv, alice, room, "org.example.counter", key, map[string]any{"v": i}).expect(t, 200, "")
		want[key] = float64(i)
		if i%50 == 49 {
			id := rmSend(t, srv, alice, room, fmt.Sprint("mark ", i))
			marks[id] = maps.Clone(want)
		}
	}
	// Redacting a state event leaves it in the state, emptied.
	topic := rmPutState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "secret"}).expect(t, 200, "").str("event_id")
	put(t, srv, rmRoom(room, "redact", topic, rmTxn()), alice.AccessToken, map[string]any{}).expect(t, 200, "")

	counters := func(evs []map[string]any) map[string]float64 {
		out := map[string]float64{}
		for _, e := range evs {
			if e["type"] == "org.example.counter" {
				out[e["state_key"].(string)] = rmField(e, "content", "v").(float64)
			}
		}
		return out
	}
	check := func(when string) {
		t.Helper()
		if got := counters(rmList(t, get(t, srv, rmRoom(room, "state"), alice.AccessToken))); !maps.Equal(got, want) {
			t.Fatalf("%s: /state has %d counters, want %d: %v", when, len(got), len(want), got)
		}
		for id, at := range marks {
			c := get(t, srv, rmRoom(room, "context", id)+"?limit=0", alice.AccessToken).expect(t, 200, "")
			if got := counters(rmEvents(t, c, "state")); !maps.Equal(got, at) {
				t.Fatalf("%s: state at %s differs: %d counters, want %d", when, id, len(got), len(at))
			}
		}
		if r := rmGetState(t, srv, alice, room, "m.room.topic", "").expect(t, 200, ""); len(r.Body) != 0 {
			t.Fatalf("%s: redacted topic reads %s", when, r.Raw)
		}
	}
	check("before restart")
	srv.Restart()
	check("after restart")
	// And the room goes on from the restored state.
	for i := range 70 {
		key := fmt.Sprint("k", i)
		rmPutState(t, srv, alice, room, "org.example.counter", key, map[string]any{"v": 1000 + i}).expect(t, 200, "")
		want[key] = float64(1000 + i)
	}
	check("after more changes")
}

// TestAliases: the room alias directory and the room directory
// visibility.
func TestAliases(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	other := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, 200, "")
	aliasPath := func(a string) string { return v3 + "/directory/room/" + url.PathEscape(a) }
	const a1, a2, a3 = "#one:tessera.test", "#two:tessera.test", "#elsewhere:tessera.test"

	put(t, srv, aliasPath(a1), alice.AccessToken, map[string]any{"room_id": room}).expect(t, 200, "")
	put(t, srv, aliasPath(a1), alice.AccessToken, map[string]any{"room_id": room}).expect(t, 409, "M_UNKNOWN")
	put(t, srv, aliasPath(a1), bob.AccessToken, map[string]any{"room_id": other}).expect(t, 409, "M_UNKNOWN")
	put(t, srv, aliasPath(a2), bob.AccessToken, map[string]any{"room_id": room}).expect(t, 200, "")
	put(t, srv, aliasPath(a3), alice.AccessToken, map[string]any{"room_id": other}).expect(t, 200, "")
	for _, tt := range []struct {
		name, alias string
		body        any
		status      int
		errcode     string
	}{
		{"other server", "#x:elsewhere.test", map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
		{"no room_id", "#x:tessera.test", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"unknown room", "#x:tessera.test", map[string]any{"room_id": "!nope:tessera.test"}, 404, "M_NOT_FOUND"},
		{"not an alias", "x:tessera.test", map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			put(t, srv, aliasPath(tt.alias), alice.AccessToken, tt.body).expect(t, tt.status, tt.errcode)
		})
	}

	r := get(t, srv, aliasPath(a1), "").expect(t, 200, "")
	if r.str("room_id") != room {
		t.Fatalf("GET alias = %s", r.Raw)
	}
	get(t, srv, aliasPath("#missing:tessera.test"), "").expect(t, 404, "M_NOT_FOUND")
	la := get(t, srv, rmRoom(room, "aliases"), bob.AccessToken).expect(t, 200, "")
	if got, _ := la.Body["aliases"].([]any); !slices.Equal(got, []any{a1, a2}) {
		t.Fatalf("room aliases = %s", la.Raw)
	}
	get(t, srv, rmRoom(room, "aliases"), carol.AccessToken).expect(t, 403, "M_FORBIDDEN")

	// Deleting: the alias's creator may; so may someone with power over
	// the canonical alias; others may not.
	del(t, srv, aliasPath(a1), bob.AccessToken, nil).expect(t, 403, "M_FORBIDDEN")
	del(t, srv, aliasPath(a1), carol.AccessToken, nil).expect(t, 403, "M_FORBIDDEN")
	get(t, srv, aliasPath(a1), "").expect(t, 200, "")
	del(t, srv, aliasPath(a2), bob.AccessToken, nil).expect(t, 200, "") // his own
	del(t, srv, aliasPath(a2), bob.AccessToken, nil).expect(t, 404, "M_NOT_FOUND")
	put(t, srv, aliasPath(a2), bob.AccessToken, map[string]any{"room_id": room}).expect(t, 200, "")
	del(t, srv, aliasPath(a2), alice.AccessToken, nil).expect(t, 200, "") // room admin
	get(t, srv, aliasPath(a2), "").expect(t, 404, "M_NOT_FOUND")

	// m.room.canonical_alias must name aliases of this room.
	for _, tt := range []struct {
		name    string
		content map[string]any
		status  int
		errcode string
	}{
		{"alias of another room", map[string]any{"alias": a3}, 400, "M_BAD_ALIAS"},
		{"unknown alias", map[string]any{"alias": "#ghost:tessera.test"}, 400, "M_BAD_ALIAS"},
		{"alt alias of another room", map[string]any{"alias": a1, "alt_aliases": []string{a3}}, 400, "M_BAD_ALIAS"},
		// Bad syntax is M_INVALID_PARAM, as room_state.yaml says.
		{"malformed alias", map[string]any{"alias": "nohash"}, 400, "M_INVALID_PARAM"},
		{"own alias", map[string]any{"alias": a1}, 200, ""},
		{"none", map[string]any{}, 200, ""},
	} {
		t.Run("canonical "+tt.name, func(t *testing.T) {
			before := rmGetState(t, srv, alice, room, "m.room.canonical_alias", "")
			rmPutState(t, srv, alice, room, "m.room.canonical_alias", "", tt.content).expect(t, tt.status, tt.errcode)
			after := rmGetState(t, srv, alice, room, "m.room.canonical_alias", "")
			if tt.status != 200 && string(before.Raw) != string(after.Raw) {
				t.Fatalf("refused canonical alias changed the state: %s → %s", before.Raw, after.Raw)
			}
			if tt.status == 200 && !reflect.DeepEqual(after.Body, rmNormalize(t, tt.content)) {
				t.Fatalf("canonical alias = %s, want %v", after.Raw, tt.content)
			}
		})
	}

	// Directory visibility.
	listPath := v3 + "/directory/list/room/" + url.PathEscape(room)
	if v := get(t, srv, listPath, "").expect(t, 200, "").str("visibility"); v != "private" {
		t.Fatalf("visibility = %q", v)
	}
	put(t, srv, listPath, bob.AccessToken, map[string]any{"visibility": "public"}).expect(t, 403, "M_FORBIDDEN")
	put(t, srv, listPath, carol.AccessToken, map[string]any{"visibility": "public"}).expect(t, 403, "M_FORBIDDEN")
	put(t, srv, listPath, alice.AccessToken, map[string]any{"visibility": "open"}).expect(t, 400, "M_INVALID_PARAM")
	put(t, srv, listPath, alice.AccessToken, map[string]any{"visibility": "public"}).expect(t, 200, "")
	if v := get(t, srv, listPath, "").expect(t, 200, "").str("visibility"); v != "public" {
		t.Fatalf("visibility after PUT = %q", v)
	}
	put(t, srv, listPath, alice.AccessToken, map[string]any{"visibility": "private"}).expect(t, 200, "")
	if v := get(t, srv, listPath, "").expect(t, 200, "").str("visibility"); v != "private" {
		t.Fatalf("visibility after second PUT = %q", v)
	}
	get(t, srv, v3+"/directory/list/room/"+url.PathEscape("!nope:tessera.test"), "").expect(t, 404, "M_NOT_FOUND")

	// mautrix resolves aliases too.
	res, err := client(srv, carol).ResolveAlias(ctx, id.RoomAlias(a1))
	must(t, err, "mautrix resolve alias")
	if res.RoomID.String() != room {
		t.Fatalf("mautrix resolved %s", res.RoomID)
	}
}

// TestConcurrentSenders: 50 users send 20 messages each at once into one
// room. Every send succeeds, and the room's timeline is one linear chain
// holding each acknowledged message exactly once, each sender's in the
// order they were sent.
func TestConcurrentSenders(t *testing.T) {
	t.Parallel()
	const senders, perSender = 50, 20
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	users := make([]session, senders)
	for i := range users {
		users[i] = rmUser(t, srv, fmt.Sprintf("sender%02d", i))
		rmJoin(t, srv, users[i], room).expect(t, 200, "")
	}
	acked := make([][]string, senders)
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perSender {
				r, err := tryDo(srv, req{Method: http.MethodPut, Path: rmRoom(room, "send", "m.room.message", rmTxn()),
					Token: u.AccessToken, Body: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d/%d", i, j)}})
				if err != nil || r.Status != 200 || r.str("event_id") == "" {
					errs <- fmt.Errorf("sender %d message %d: %v %d %s", i, j, err, r.Status, r.Raw)
					return
				}
				acked[i] = append(acked[i], r.str("event_id"))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sender := map[string]int{}
	for i, ids := range acked {
		for _, id := range ids {
			if _, dup := sender[id]; dup {
				t.Fatalf("event ID %s acknowledged twice", id)
			}
			sender[id] = i
		}
	}

	forward := rmMessageIDs(t, srv, alice, room, "f", "m.room.message", 97)
	if len(forward) != senders*perSender {
		t.Fatalf("/messages dir=f has %d messages, want %d", len(forward), senders*perSender)
	}
	next := make([]int, senders) // per sender, the index of the next message expected
	for _, id := range forward {
		i, ok := sender[id]
		if !ok {
			t.Fatalf("/messages has %s, which no send acknowledged", id)
		}
		if acked[i][next[i]] != id {
			t.Fatalf("sender %d's messages out of order: got %s, want %s", i, id, acked[i][next[i]])
		}
		next[i]++
	}
	backward := rmMessageIDs(t, srv, alice, room, "b", "m.room.message", 113)
	slices.Reverse(backward)
	if !slices.Equal(backward, forward) {
		t.Fatalf("/messages dir=b is not dir=f reversed")
	}

	// The DAG in the database: one forward extremity, each event's only
	// prev_event the one before it, depths 1..N.
	srv.Stop()
	// create, creator's join, power levels, join rules, history
	// visibility, guest access; the joins; the messages.
	rmCheckLinearDAG(t, srv.Config.Database, room, 6+senders+senders*perSender)
}

// rmCheckLinearDAG opens the stopped server's database and checks that the
// room's events form one chain: depths 1..N in stream order, each event's
// prev_events exactly the event before it, one forward extremity (the last
// event). minEvents is a lower bound on N.
func rmCheckLinearDAG(t testing.TB, dbConfig config.Database, roomID string, minEvents int) {
	t.Helper()
	db, err := server.OpenDatabase(ctx, dbConfig)
	must(t, err, "open database")
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT event_id, depth FROM events WHERE room_id = $1 ORDER BY stream_pos`, roomID)
	must(t, err, "read events")
	var ids []string
	for rows.Next() {
		var id string
		var depth int64
		must(t, rows.Scan(&id, &depth), "scan")
		ids = append(ids, id)
		if depth != int64(len(ids)) {
			t.Fatalf("event %d (%s) has depth %d", len(ids), id, depth)
		}
	}
	must(t, rows.Err(), "events")
	rows.Close()
	if len(ids) < minEvents {
		t.Fatalf("%d events in the room, want at least %d", len(ids), minEvents)
	}
	prevs := map[string][]string{}
	rows, err = db.QueryContext(ctx, `SELECT ed.event_id, ed.prev_event_id FROM event_edges ed
		JOIN events e ON e.event_id = ed.event_id WHERE e.room_id = $1`, roomID)
	must(t, err, "read edges")
	for rows.Next() {
		var id, prev string
		must(t, rows.Scan(&id, &prev), "scan")
		prevs[id] = append(prevs[id], prev)
	}
	must(t, rows.Err(), "edges")
	rows.Close()
	for i, id := range ids {
		var want []string
		if i > 0 {
			want = []string{ids[i-1]}
		}
		if !slices.Equal(prevs[id], want) {
			t.Fatalf("event %d (%s) has prev_events %v, want %v", i+1, id, prevs[id], want)
		}
	}
	var extremities []string
	rows, err = db.QueryContext(ctx, `SELECT event_id FROM forward_extremities WHERE room_id = $1`, roomID)
	must(t, err, "read extremities")
	for rows.Next() {
		var id string
		must(t, rows.Scan(&id), "scan")
		extremities = append(extremities, id)
	}
	rows.Close()
	if !slices.Equal(extremities, []string{ids[len(ids)-1]}) {
		t.Fatalf("forward extremities %v, want only the last event %s", extremities, ids[len(ids)-1])
	}
}

// TestRestartRoundTrip: rooms, messages, state and redactions read back
// the same after a restart, byte for byte but for unsigned.age, and the
// rooms take new events.
func TestRestartRoundTrip(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	type snapshot map[string]string
	var rooms []string
	var events []string
	roomOf := map[string]string{} // event ID -> room ID
	for _, ver := range []string{"1", "4", "10", "11", "12"} {
		room := rmCreate(t, srv, alice, map[string]any{"room_version": ver, "preset": "public_chat", "name": "v" + ver,
			"room_alias_name": "restart-v" + ver})
		rooms = append(rooms, room)
		rmJoin(t, srv, bob, room).expect(t, 200, "")
		for i := range 15 {
			events = append(events, rmSend(t, srv, []session{alice, bob}[i%2], room, fmt.Sprintf("v%s #%d", ver, i)))
		}
		rmPutState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "restarts"}).expect(t, 200, "")
		red := put(t, srv, rmRoom(room, "redact", events[len(events)-3], rmTxn()), alice.AccessToken, map[string]any{}).
			expect(t, 200, "").str("event_id")
		events = append(events, red)
		rmOp(t, srv, bob, room, "leave", nil).expect(t, 200, "")
		for _, ev := range events {
			if roomOf[ev] == "" {
				roomOf[ev] = room
			}
		}
	}
	take := func() snapshot {
		t.Helper()
		s := snapshot{}
		for _, room := range rooms {
			for _, viewer := range []session{alice, bob} {
				for _, dir := range []string{"b", "f"} {
					from := ""
					for page := 0; ; page++ {
						q := url.Values{"dir": {dir}, "limit": {"6"}}
						if from != "" {
							q.Set("from", from)
						}
						r := rmMessages(t, srv, viewer, room, q).expect(t, 200, "")
						s[fmt.Sprintf("messages %s %s %s %d", room, viewer.UserID, dir, page)] = rmWithoutAge(t, r.Raw)
						if from = r.str("end"); from == "" {
							break
						}
					}
				}
				st := get(t, srv, rmRoom(room, "state"), viewer.AccessToken)
				if st.Status != 200 || len(rmList(t, st)) == 0 {
					t.Fatalf("/state: %d %s", st.Status, st.Raw)
				}
				s["state "+room+viewer.UserID] = rmWithoutAge(t, st.Raw)
				s["members "+room+viewer.UserID] = rmWithoutAge(t, get(t, srv, rmRoom(room, "members"), viewer.AccessToken).expect(t, 200, "").Raw)
			}
			s["aliases "+room] = string(get(t, srv, rmRoom(room, "aliases"), alice.AccessToken).expect(t, 200, "").Raw)
		}
		for _, ev := range events {
			r := get(t, srv, rmRoom(roomOf[ev], "event", ev), alice.AccessToken).expect(t, 200, "")
			s["event "+ev] = rmWithoutAge(t, r.Raw)
			// /context pins the token formats too.
			c := get(t, srv, rmRoom(r.str("room_id"), "context", ev)+"?limit=4", alice.AccessToken).expect(t, 200, "")
			s["context "+ev] = rmWithoutAge(t, c.Raw)
		}
		jr := get(t, srv, v3+"/joined_rooms", alice.AccessToken).expect(t, 200, "")
		s["joined_rooms"] = string(jr.Raw)
		return s
	}
	before := take()
	srv.Restart()
	after := take()
	if len(before) != len(after) {
		t.Fatalf("%d responses before the restart, %d after", len(before), len(after))
	}
	for k, b := range before {
		if after[k] != b {
			t.Errorf("%s differs after restart:\nbefore %s\nafter  %s", k, b, after[k])
		}
	}
	for i, room := range rooms {
		id := rmSend(t, srv, alice, room, "after the restart")
		last := rmMessages(t, srv, alice, room, url.Values{"dir": {"b"}, "limit": {"1"}}).expect(t, 200, "")
		if ids := rmIDs(rmEvents(t, last, "chunk")); !slices.Equal(ids, []string{id}) {
			t.Fatalf("room %d: newest event %v, want %s", i, ids, id)
		}
		rmJoin(t, srv, bob, room).expect(t, 200, "")
		rmSend(t, srv, bob, room, "bob is back")
	}
	// The DAGs stayed linear through the restart.
	srv.Stop()
	for _, room := range rooms {
		rmCheckLinearDAG(t, srv.Config.Database, room, 20)
	}
}

// withoutAge re-encodes a JSON response without any unsigned.age, which
// grows with time.
func rmWithoutAge(t testing.TB, raw []byte) string {
	t.Helper()
	var v any
	must(t, json.Unmarshal(raw, &v), "decode")
	var strip func(v any)
	strip = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if u, ok := x["unsigned"].(map[string]any); ok {
				delete(u, "age")
			}
			for _, c := range x {
				strip(c)
			}
		case []any:
			for _, c := range x {
				strip(c)
			}
		}
	}
	strip(v)
	out, err := json.Marshal(v)
	must(t, err, "encode")
	return string(out)
}
