package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestIgnoredUsers: once Alice ignores Bob, her syncs leave out his
// messages (not his state events) and his invites, and his messages do not
// notify her; un-ignoring takes effect at once.
// https://spec.matrix.org/v1.19/client-server-api/#ignoring-users
func TestIgnoredUsers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	carol := registerUser(t, srv, "carol", psPassword)
	room := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")
	for _, s := range []session{bob, carol} {
		post(t, srv, v3+"/join/"+url.PathEscape(room), s.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	}
	ignore := func(users ...string) {
		t.Helper()
		m := map[string]any{}
		for _, u := range users {
			m[u] = map[string]any{}
		}
		put(t, srv, adPath("user", alice.UserID, "account_data", "m.ignored_user_list"), alice.AccessToken,
			map[string]any{"ignored_users": m}).expect(t, http.StatusOK, "")
	}
	// timelineSenders lists (type, sender) of the room's timeline events
	// in a sync from since.
	timeline := func(since string) (events [][2]string, next string) {
		t.Helper()
		r := psSync(t, srv, alice, since, 0)
		var body struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct{ Type, Sender string } `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(r.Raw, &body); err != nil {
			t.Fatal(err)
		}
		for _, ev := range body.Rooms.Join[room].Timeline.Events {
			events = append(events, [2]string{ev.Type, ev.Sender})
		}
		return events, body.NextBatch
	}
	_, since := timeline("")
	psReceipt(t, srv, alice, room, "m.read", psSend(t, srv, alice, room, "m.room.message", psText("start")), nil)
	_, since = timeline(since)

	ignore(bob.UserID)
	psSend(t, srv, bob, room, "m.room.message", psText("from bob"))
	put(t, srv, adPath("rooms", room, "state", "m.room.topic", ""), alice.AccessToken, map[string]any{"topic": "t"}).
		expect(t, http.StatusOK, "")
	post(t, srv, v3+"/rooms/"+url.PathEscape(room)+"/leave", bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	psSend(t, srv, carol, room, "m.room.message", psText("from carol"))
	got, next := timeline(since)
	want := [][2]string{{"m.room.topic", alice.UserID}, {"m.room.member", bob.UserID}, {"m.room.message", carol.UserID}}
	if len(got) != len(want) {
		t.Fatalf("timeline with bob ignored: %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("timeline with bob ignored: %v, want %v", got, want)
		}
	}
	// Bob's message did not notify Alice; Carol's did.
	psWantCounts(t, srv, alice, room, 1, 0)

	// An invite from Bob is not shown.
	bobRoom := post(t, srv, v3+"/createRoom", bob.AccessToken, map[string]any{"invite": []string{alice.UserID}}).
		expect(t, http.StatusOK, "").str("room_id")
	r := psSync(t, srv, alice, next, 0)
	var inv struct {
		Rooms struct {
			Invite map[string]json.RawMessage `json:"invite"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Raw, &inv); err != nil {
		t.Fatal(err)
	}
	if _, ok := inv.Rooms.Invite[bobRoom]; ok {
		t.Fatalf("an invite from an ignored user reached the client: %s", r.Raw)
	}

	// Un-ignored: Bob's new messages come through again.
	ignore()
	post(t, srv, v3+"/join/"+url.PathEscape(room), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	psSend(t, srv, bob, room, "m.room.message", psText("bob again"))
	got, _ = timeline(next)
	last := got[len(got)-1]
	if last != [2]string{"m.room.message", bob.UserID} {
		t.Fatalf("after un-ignoring, timeline %v", got)
	}
}
