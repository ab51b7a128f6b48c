package housekeeping_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestPurgeDropsUnusedStateGroups: a history purge deletes the room's
// state groups nothing uses any more, and keeps every group an event, the
// current state or a kept group's chain needs: the room's state reads the
// same and the room goes on.
func TestPurgeDropsUnusedStateGroups(t *testing.T) {
	ctx := context.Background()
	// The set-up writes into the server's database (either engine).
	s := testserver.Start(t)
	admin := registerAdmin(t, s)
	alice := s.Register("alice", "password-alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	for i := range 10 {
		// State changes between the messages: a chain of groups.
		if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]any{"topic": fmt.Sprint("topic ", i)}); err != nil {
			t.Fatal(err)
		}
		resp, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("m%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.EventID)
	}
	db := openDB(t, s)
	// What a purged merge event leaves: its own full group and a delta
	// on it, used by nothing (made here directly: a merge needs two
	// servers racing).
	for _, st := range []struct {
		q    string
		args []any
	}{
		{`INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES (1000000001, $1, NULL, 0)`, []any{room.RoomID}},
		{`INSERT INTO state_group_entries (group_id, type, state_key, event_id) SELECT 1000000001, type, state_key, event_id FROM current_state WHERE room_id = $1`, []any{room.RoomID}},
		{`INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES (1000000002, $1, 1000000001, 1)`, []any{room.RoomID}},
		{`INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (1000000002, 'm.room.topic', '', '$gone')`, nil},
	} {
		if _, err := db.Exec(st.q, st.args...); err != nil {
			t.Fatal(err)
		}
	}
	groups := countRows(t, s, "state_groups")
	stateBefore, err := alice.State(ctx, room.RoomID)
	if err != nil {
		t.Fatal(err)
	}

	purgeAndWait(t, s, admin, "/_synapse/admin/v1/purge_history/"+url.PathEscape(room.RoomID.String()), map[string]any{
		"purge_up_to_event_id": ids[5], "delete_local_events": true})
	if got := countRows(t, s, "state_groups"); got != groups-2 {
		t.Errorf("%d state groups after the purge, want %d (the two unused ones gone)", got, groups-2)
	}
	var orphans int
	if err := db.QueryRow(`SELECT COUNT(*) FROM state_group_entries WHERE group_id > 1000000000`).Scan(&orphans); err != nil || orphans != 0 {
		t.Errorf("the unused groups' entries: %d left, %v", orphans, err)
	}
	stateAfter, err := alice.State(ctx, room.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(stateSummary(stateAfter)) != fmt.Sprint(stateSummary(stateBefore)) {
		t.Errorf("the room's state changed:\n%v\nwant\n%v", stateSummary(stateAfter), stateSummary(stateBefore))
	}
	if got, want := messageBodies(t, alice, room.RoomID), messagesDown(9, 5); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("/messages after the purge: %v, want %v", got, want)
	}
	if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]any{"topic": "after"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "after"); err != nil {
		t.Fatal(err)
	}
}

// stateSummary is a room's state as type/state_key -> event ID.
func stateSummary(st mautrix.RoomStateMap) map[string]id.EventID {
	out := map[string]id.EventID{}
	for typ, byKey := range st {
		for key, ev := range byKey {
			out[typ.Type+"/"+key] = ev.ID
		}
	}
	return out
}
