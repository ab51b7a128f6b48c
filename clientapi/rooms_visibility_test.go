package clientapi_test

// History visibility on every read path: /messages, /context, /event,
// /state and /members, for each m.room.history_visibility setting.
// https://spec.matrix.org/v1.19/client-server-api/#history-visibility

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestHistoryVisibility runs one story in a room of each setting:
//
//	m1  alice alone
//	    alice invites bob
//	m2  bob invited
//	    bob joins
//	m3  bob joined
//	    bob leaves
//	m4  bob gone
//	    alice renames the room; carol joins (no invite)
//	m5  carol joined
//
// and checks which messages bob (who left), carol (joined now) and eve
// (never a member) can read.
func TestHistoryVisibility(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	eve := rmUser(t, srv, "eve")
	all := []string{"m1", "m2", "m3", "m4", "m5"}
	tests := []struct {
		visibility string
		bob, carol []string // the messages each may see
		eveReads   bool     // eve (a non-member) may read the room at all
	}{
		// Everything, to anyone; even bob sees what came after he left.
		{"world_readable", all, all, true},
		// Everything before one's (last) join; nothing after leaving.
		{"shared", []string{"m1", "m2", "m3"}, all, false},
		// From one's invite (carol was never invited).
		{"invited", []string{"m2", "m3"}, []string{"m5"}, false},
		// While joined only.
		{"joined", []string{"m3"}, []string{"m5"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.visibility, func(t *testing.T) {
			t.Parallel()
			room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat", "name": "before",
				"initial_state": []map[string]any{{"type": "m.room.history_visibility",
					"content": map[string]any{"history_visibility": tt.visibility}}}})
			ids := map[string]string{} // body -> event ID
			ids["m1"] = rmSend(t, srv, alice, room, "m1")
			rmOp(t, srv, alice, room, "invite", map[string]any{"user_id": bob.UserID}).expect(t, 200, "")
			ids["m2"] = rmSend(t, srv, alice, room, "m2")
			rmJoin(t, srv, bob, room).expect(t, 200, "")
			ids["m3"] = rmSend(t, srv, alice, room, "m3")
			rmOp(t, srv, bob, room, "leave", nil).expect(t, 200, "")
			ids["m4"] = rmSend(t, srv, alice, room, "m4")
			rmPutState(t, srv, alice, room, "m.room.name", "", map[string]any{"name": "after"}).expect(t, 200, "")
			rmJoin(t, srv, carol, room).expect(t, 200, "")
			ids["m5"] = rmSend(t, srv, alice, room, "m5")

			// visible lists the messages of evs, by body.
			visible := func(evs []map[string]any) []string {
				var out []string
				for _, e := range evs {
					if e["type"] == "m.room.message" {
						out = append(out, rmField(e, "content", "body").(string))
					}
				}
				slices.Sort(out)
				return out
			}
			for _, v := range []struct {
				name string
				s    session
				want []string
			}{
				{"bob", bob, tt.bob},
				{"carol", carol, tt.carol},
				{"alice", alice, all},
			} {
				t.Run(v.name, func(t *testing.T) {
					// /messages, both directions.
					for _, dir := range []string{"b", "f"} {
						r := rmMessages(t, srv, v.s, room, url.Values{"dir": {dir}, "limit": {"100"}}).expect(t, 200, "")
						if got := visible(rmEvents(t, r, "chunk")); !slices.Equal(got, v.want) {
							t.Errorf("/messages dir=%s shows %v, want %v", dir, got, v.want)
						}
					}
					// /event and /context, one message at a time.
					for _, m := range all {
						ev := get(t, srv, rmRoom(room, "event", ids[m]), v.s.AccessToken)
						cx := get(t, srv, rmRoom(room, "context", ids[m])+"?limit=20", v.s.AccessToken)
						if slices.Contains(v.want, m) {
							ev.expect(t, 200, "")
							cx.expect(t, 200, "")
							if rmField(ev.Body, "content", "body") != m || rmField(cx.Body, "event", "content", "body") != m {
								t.Errorf("%s: /event %s, /context event %v", m, ev.Raw, cx.Body["event"])
							}
							around := append(rmEvents(t, cx, "events_before"), rmEvents(t, cx, "events_after")...)
							around = append(around, cx.Body["event"].(map[string]any))
							if got := visible(around); !slices.Equal(got, v.want) {
								t.Errorf("/context of %s shows %v, want %v", m, got, v.want)
							}
						} else {
							ev.expect(t, http.StatusNotFound, "M_NOT_FOUND")
							cx.expect(t, http.StatusNotFound, "M_NOT_FOUND")
						}
					}
				})
			}

			// /state and /members: bob sees the room as it was when he
			// left; carol sees it as it is.
			name := func(s session) resp {
				return rmGetState(t, srv, s, room, "m.room.name", "")
			}
			if got := name(bob).expect(t, 200, "").str("name"); got != "before" {
				t.Errorf("bob sees the name %q, want the one at his leave", got)
			}
			if got := name(carol).expect(t, 200, "").str("name"); got != "after" {
				t.Errorf("carol sees the name %q", got)
			}
			members := func(s session) []string {
				r := get(t, srv, rmRoom(room, "members"), s.AccessToken).expect(t, 200, "")
				var out []string
				for _, e := range rmEvents(t, r, "chunk") {
					out = append(out, e["state_key"].(string)+"="+rmField(e, "content", "membership").(string))
				}
				slices.Sort(out)
				return out
			}
			if got, want := members(bob), sorted(alice.UserID+"=join", bob.UserID+"=leave"); !slices.Equal(got, want) {
				t.Errorf("bob's /members = %v, want %v", got, want)
			}
			wantNow := sorted(alice.UserID+"=join", bob.UserID+"=leave", carol.UserID+"=join")
			if got := members(carol); !slices.Equal(got, wantNow) {
				t.Errorf("carol's /members = %v, want %v", got, wantNow)
			}
			// /members?at=: the members at a point of the timeline, for
			// those who may see that point. A token from before the story
			// shows neither bob nor carol.
			newest := rmMessages(t, srv, alice, room, url.Values{"dir": {"b"}, "limit": {"1"}}).expect(t, 200, "").str("end")
			atNewest := get(t, srv, rmRoom(room, "members")+"?at="+url.QueryEscape(newest), bob.AccessToken)
			if slices.Contains(tt.bob, "m5") {
				atNewest.expect(t, 200, "")
			} else {
				// bob left before this point: he may not see who came after.
				atNewest.expect(t, 403, "M_FORBIDDEN")
			}
			if got := members(carol); !slices.Equal(got, wantNow) {
				t.Errorf("carol's /members = %v", got)
			}
			// Just after m1, which carol may see only with shared or
			// world_readable.
			early := get(t, srv, rmRoom(room, "context", ids["m1"])+"?limit=0", alice.AccessToken).expect(t, 200, "").str("end")
			r := get(t, srv, rmRoom(room, "members")+"?at="+url.QueryEscape(early), carol.AccessToken)
			if tt.visibility == "shared" || tt.visibility == "world_readable" {
				if got := rmEvents(t, r.expect(t, 200, ""), "chunk"); len(got) != 1 || got[0]["state_key"] != alice.UserID {
					t.Errorf("members at the room's start = %s", r.Raw)
				}
			} else {
				r.expect(t, 403, "M_FORBIDDEN")
			}
			get(t, srv, rmRoom(room, "members")+"?membership=leave", carol.AccessToken).expect(t, 200, "")
			if got := rmEvents(t, get(t, srv, rmRoom(room, "members")+"?not_membership=join", carol.AccessToken).expect(t, 200, ""), "chunk"); len(got) != 1 || got[0]["state_key"] != bob.UserID {
				t.Errorf("members not joined = %v", got)
			}
			get(t, srv, rmRoom(room, "members")+"?membership=gone", carol.AccessToken).expect(t, 400, "M_INVALID_PARAM")
			get(t, srv, rmRoom(room, "members")+"?at=nonsense", carol.AccessToken).expect(t, 400, "M_INVALID_PARAM")

			st := get(t, srv, rmRoom(room, "state"), bob.AccessToken)
			for _, e := range rmList(t, st) {
				if e["type"] == "m.room.member" && e["state_key"] == carol.UserID {
					t.Errorf("bob's /state shows carol, who joined after he left")
				}
			}

			// eve, who never joined.
			if tt.eveReads {
				r := rmMessages(t, srv, eve, room, url.Values{"dir": {"b"}, "limit": {"100"}}).expect(t, 200, "")
				if got := visible(rmEvents(t, r, "chunk")); !slices.Equal(got, all) {
					t.Errorf("eve's /messages = %v", got)
				}
				get(t, srv, rmRoom(room, "event", ids["m1"]), eve.AccessToken).expect(t, 200, "")
				get(t, srv, rmRoom(room, "context", ids["m1"]), eve.AccessToken).expect(t, 200, "")
				if got := name(eve).expect(t, 200, "").str("name"); got != "after" {
					t.Errorf("eve sees the name %q", got)
				}
				if got := members(eve); !slices.Equal(got, wantNow) {
					t.Errorf("eve's /members = %v", got)
				}
				return
			}
			rmMessages(t, srv, eve, room, url.Values{"dir": {"b"}}).expect(t, 403, "M_FORBIDDEN")
			// /event answers 404 whether the event is missing or hidden.
			get(t, srv, rmRoom(room, "event", ids["m5"]), eve.AccessToken).expect(t, 404, "M_NOT_FOUND")
			get(t, srv, rmRoom(room, "context", ids["m5"]), eve.AccessToken).expect(t, 403, "M_FORBIDDEN")
			get(t, srv, rmRoom(room, "state"), eve.AccessToken).expect(t, 403, "M_FORBIDDEN")
			name(eve).expect(t, 403, "M_FORBIDDEN")
			get(t, srv, rmRoom(room, "members"), eve.AccessToken).expect(t, 403, "M_FORBIDDEN")
			get(t, srv, rmRoom(room, "joined_members"), eve.AccessToken).expect(t, 403, "M_FORBIDDEN")
		})
	}
}

// TestHistoryVisibilityChanges: an m.room.history_visibility event is
// judged by the more permissive of its old and new settings, and each
// message by the setting it was sent under.
func TestHistoryVisibilityChanges(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	eve := rmUser(t, srv, "eve")
	dave := rmUser(t, srv, "dave")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat",
		"initial_state": []map[string]any{{"type": "m.room.history_visibility",
			"content": map[string]any{"history_visibility": "joined"}}}})
	hidden1 := rmSend(t, srv, alice, room, "hidden 1")
	open := rmPutState(t, srv, alice, room, "m.room.history_visibility", "",
		map[string]any{"history_visibility": "world_readable"}).expect(t, 200, "").str("event_id")
	shown := rmSend(t, srv, alice, room, "shown")
	closed := rmPutState(t, srv, alice, room, "m.room.history_visibility", "",
		map[string]any{"history_visibility": "joined"}).expect(t, 200, "").str("event_id")
	hidden2 := rmSend(t, srv, alice, room, "hidden 2")

	// The room is not world readable now: eve may not read it at all.
	rmMessages(t, srv, eve, room, url.Values{"dir": {"b"}}).expect(t, 403, "M_FORBIDDEN")

	// dave joins now: with "joined" he sees neither message sent under
	// "joined" before his join, but he sees the world-readable stretch
	// and both changes of the setting.
	rmJoin(t, srv, dave, room).expect(t, 200, "")
	after := rmSend(t, srv, alice, room, "after dave joined")
	r := rmMessages(t, srv, dave, room, url.Values{"dir": {"f"}, "limit": {"100"}}).expect(t, 200, "")
	got := rmIDs(rmEvents(t, r, "chunk"))
	for _, id := range []string{open, shown, closed, after} {
		if !slices.Contains(got, id) {
			t.Errorf("dave does not see %s", id)
		}
	}
	for _, id := range []string{hidden1, hidden2} {
		if slices.Contains(got, id) {
			t.Errorf("dave sees %s, sent under \"joined\" before he joined", id)
		}
		get(t, srv, rmRoom(room, "event", id), dave.AccessToken).expect(t, 404, "M_NOT_FOUND")
	}
	get(t, srv, rmRoom(room, "event", shown), dave.AccessToken).expect(t, 200, "")
}
