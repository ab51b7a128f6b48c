package clientapi_test

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// searchRoomEvents posts a room_events search and returns the category.
func searchRoomEvents(t *testing.T, srv *testserver.Server, token, query string, cat map[string]any) map[string]any {
	t.Helper()
	r := post(t, srv, v3+"/search"+query, token, map[string]any{"search_categories": map[string]any{"room_events": cat}}).
		expect(t, http.StatusOK, "")
	sc, _ := r.Body["search_categories"].(map[string]any)
	re, ok := sc["room_events"].(map[string]any)
	if !ok {
		t.Fatalf("no room_events in %s", r.Raw)
	}
	return re
}

// resultIDs lists the event IDs of a search's results, in order.
func resultIDs(re map[string]any) []string {
	var ids []string
	for _, r := range re["results"].([]any) {
		ev := r.(map[string]any)["result"].(map[string]any)
		ids = append(ids, ev["event_id"].(string))
	}
	return ids
}

func sendText(t *testing.T, c *mautrix.Client, roomID id.RoomID, text string) string {
	t.Helper()
	resp, err := c.SendText(ctx, roomID, text)
	must(t, err, "send "+text)
	return resp.EventID.String()
}

func TestSearch(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	carol := srv.Register("carol", "password1")
	must(t, alice.SetDisplayName(ctx, "Alice A"), "displayname")

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Gardening club",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
	must(t, err, "create room")
	hidden := sendText(t, alice, room.RoomID, "a secret pineapple before bob joined")
	_, err = bob.JoinRoomByID(ctx, room.RoomID)
	must(t, err, "bob joins")
	weak := sendText(t, alice, room.RoomID, "one pineapple among many other words in a long sentence here")
	strong := sendText(t, bob, room.RoomID, "pineapple pineapple pineapple")
	redacted := sendText(t, alice, room.RoomID, "pineapple to be redacted")
	sendText(t, alice, room.RoomID, "nothing to see")
	_, err = alice.RedactEvent(ctx, room.RoomID, id.EventID(redacted))
	must(t, err, "redact")
	// Carol's own room: nobody else may find its messages.
	other, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err, "create carol's room")
	carols := sendText(t, carol, other.RoomID, "carol's pineapple")

	t.Run("history visibility and rank", func(t *testing.T) {
		re := searchRoomEvents(t, srv, bob.AccessToken, "", map[string]any{"search_term": "PINEAPPLE"})
		if got, want := resultIDs(re), []string{strong, weak}; !slices.Equal(got, want) {
			t.Fatalf("bob's results = %v, want %v (best rank first; not %s from before he joined, not the redacted %s)", got, want, hidden, redacted)
		}
		if c, _ := re["count"].(float64); c < 2 {
			t.Fatalf("count = %v, want at least 2", re["count"])
		}
		if hl, _ := re["highlights"].([]any); len(hl) != 1 || hl[0] != "pineapple" {
			t.Fatalf("highlights = %v, want [pineapple]", re["highlights"])
		}
		ranks := []float64{}
		for _, r := range re["results"].([]any) {
			ranks = append(ranks, r.(map[string]any)["rank"].(float64))
		}
		if ranks[0] <= ranks[1] {
			t.Fatalf("ranks = %v, want descending", ranks)
		}
		re = searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "pineapple", "order_by": "recent"})
		if got, want := resultIDs(re), []string{strong, weak, hidden}; !slices.Equal(got, want) {
			t.Fatalf("alice's recent results = %v, want %v", got, want)
		}
		re = searchRoomEvents(t, srv, carol.AccessToken, "", map[string]any{"search_term": "pineapple"})
		if got := resultIDs(re); !slices.Equal(got, []string{carols}) {
			t.Fatalf("carol's results = %v, want only her own %s", got, carols)
		}
	})

	t.Run("aggregations and membership", func(t *testing.T) {
		orig := sendText(t, carol, other.RoomID, "kiwi original")
		edit, err := carol.SendMessageEvent(ctx, other.RoomID, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "* kiwi edited",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "kiwi edited"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": orig},
		})
		must(t, err, "edit")
		re := searchRoomEvents(t, srv, carol.AccessToken, "", map[string]any{"search_term": "kiwi"})
		found := false
		for _, r := range re["results"].([]any) {
			ev := r.(map[string]any)["result"].(map[string]any)
			if ev["event_id"] != orig {
				continue
			}
			found = true
			unsigned, _ := ev["unsigned"].(map[string]any)
			rels, _ := unsigned["m.relations"].(map[string]any)
			repl, _ := rels["m.replace"].(map[string]any)
			if repl["event_id"] != edit.EventID.String() {
				t.Fatalf("search result's unsigned = %v, want m.relations.m.replace of %s", unsigned, edit.EventID)
			}
			if unsigned["membership"] != "join" {
				t.Fatalf("search result's unsigned.membership = %v, want join", unsigned["membership"])
			}
		}
		if !found {
			t.Fatalf("original %s not among the results %v", orig, resultIDs(re))
		}
	})

	t.Run("paging", func(t *testing.T) {
		for _, order := range []string{"rank", "recent"} {
			var got []string
			next := ""
			for range 5 {
				q := ""
				if next != "" {
					q = "?next_batch=" + next
				}
				re := searchRoomEvents(t, srv, alice.AccessToken, q, map[string]any{"search_term": "pineapple", "order_by": order,
					"filter": map[string]any{"limit": 1}})
				got = append(got, resultIDs(re)...)
				next, _ = re["next_batch"].(string)
				if next == "" {
					break
				}
			}
			if len(got) != 3 || !slices.Contains(got, hidden) || !slices.Contains(got, weak) || !slices.Contains(got, strong) {
				t.Fatalf("%s pages = %v, want the three visible matches once each", order, got)
			}
		}
	})

	t.Run("filter and keys", func(t *testing.T) {
		re := searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "pineapple",
			"filter": map[string]any{"senders": []string{bob.UserID.String()}}})
		if got := resultIDs(re); !slices.Equal(got, []string{strong}) {
			t.Fatalf("senders filter: %v, want [%s]", got, strong)
		}
		re = searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "pineapple",
			"filter": map[string]any{"not_rooms": []string{room.RoomID.String()}}})
		if got := resultIDs(re); len(got) != 0 {
			t.Fatalf("not_rooms filter: %v, want none", got)
		}
		re = searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "pineapple",
			"filter": map[string]any{"types": []string{"m.room.name"}}})
		if got := resultIDs(re); len(got) != 0 {
			t.Fatalf("types filter: %v, want none", got)
		}
		re = searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "garden", "keys": []string{"content.name"}})
		res, _ := re["results"].([]any)
		if len(res) != 1 || res[0].(map[string]any)["result"].(map[string]any)["type"] != "m.room.name" {
			t.Fatalf("content.name search: %v, want the m.room.name event", re["results"])
		}
		re = searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "garden", "keys": []string{"content.body"}})
		if got := resultIDs(re); len(got) != 0 {
			t.Fatalf("content.body search for the name: %v, want none", got)
		}
	})

	t.Run("context, groups and state", func(t *testing.T) {
		re := searchRoomEvents(t, srv, alice.AccessToken, "", map[string]any{"search_term": "pineapple", "order_by": "recent",
			"filter":        map[string]any{"limit": 1},
			"event_context": map[string]any{"before_limit": 1, "after_limit": 2, "include_profile": true},
			"include_state": true,
			"groupings":     map[string]any{"group_by": []map[string]string{{"key": "room_id"}, {"key": "sender"}}},
		})
		res := re["results"].([]any)[0].(map[string]any)
		c, _ := res["context"].(map[string]any)
		before, _ := c["events_before"].([]any)
		after, _ := c["events_after"].([]any)
		if len(before) != 1 || before[0].(map[string]any)["event_id"] != weak || len(after) != 2 {
			t.Fatalf("context = %v, want 1 before (%s) and 2 after", c, weak)
		}
		if c["start"] == "" || c["end"] == "" {
			t.Fatalf("context without start/end: %v", c)
		}
		prof, _ := c["profile_info"].(map[string]any)
		if a, _ := prof[alice.UserID.String()].(map[string]any); a["displayname"] != "Alice A" {
			t.Fatalf("profile_info = %v, want alice's display name", prof)
		}
		st, _ := re["state"].(map[string]any)
		if evs, _ := st[room.RoomID.String()].([]any); len(evs) < 5 {
			t.Fatalf("state = %v, want the room's state", st)
		}
		groups, _ := re["groups"].(map[string]any)
		byRoom, _ := groups["room_id"].(map[string]any)
		g, _ := byRoom[room.RoomID.String()].(map[string]any)
		if ids, _ := g["results"].([]any); len(ids) != 1 || ids[0] != strong {
			t.Fatalf("groups = %v, want room group with %s", groups, strong)
		}
		bySender, _ := groups["sender"].(map[string]any)
		if _, ok := bySender[bob.UserID.String()]; !ok {
			t.Fatalf("sender groups = %v, want bob", bySender)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		tok := alice.AccessToken
		post(t, srv, v3+"/search", tok, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}).
			expect(t, http.StatusBadRequest, "M_BAD_JSON")
		post(t, srv, v3+"/search", tok, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "x", "order_by": "best"}}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		post(t, srv, v3+"/search", tok, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "x", "keys": []string{"content.url"}}}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		post(t, srv, v3+"/search?next_batch=zz", tok, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "x"}}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		post(t, srv, v3+"/search", tok, "{").expect(t, http.StatusBadRequest, "M_NOT_JSON")
		post(t, srv, v3+"/search", "", map[string]any{}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}
