package housekeeping_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// keptAfterRoomPurge are the tables that keep a purged room's ID on
// purpose: the block (it outlives the room, as in Synapse), and the
// federation queues, which hold the shutdown's own leave events on their
// way to the other servers in the room.
var keptAfterRoomPurge = map[string]bool{
	"admin_blocked_rooms":   true,
	"federation_queue_json": true,
}

// TestRoomDeleteLeavesNoTrace: a room used in every way a domain stores
// per-room data (messages, a thread, a reaction and a redaction, push
// actions, receipts, typing, tags and room account data, search, sliding
// sync, a delayed event, an alias in the directory, a key backup, a
// report, a webhook, a history purge) is deleted with the admin API and purged: afterwards
// no row of any table of the database names the room, except the ones
// kept on purpose.
func TestRoomDeleteLeavesNoTrace(t *testing.T) {
	ctx := context.Background()
	// The check scans every table of the server's database (either
	// engine).
	s := testserver.Start(t, func(c *config.Config) {
		c.Housekeeping.Interval = 0
		c.Webhooks.Enabled = true
	})
	admin := registerAdmin(t, s)
	alice := s.Register("alice", "password-alice")
	bob := s.Register("bob", "password-bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", RoomAliasName: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID
	rp := url.PathEscape(roomID.String())
	if _, err := bob.JoinRoom(ctx, roomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	var first, last id.EventID
	for i := range 5 {
		resp, err := alice.SendText(ctx, roomID, fmt.Sprintf("searchable message %d", i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = resp.EventID
		}
		last = resp.EventID
	}
	if _, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in a thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": last}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendReaction(ctx, roomID, last, "👍"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.RedactEvent(ctx, roomID, last); err != nil {
		t.Fatal(err)
	}
	if err := bob.SendReceipt(ctx, roomID, last, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.UserTyping(ctx, roomID, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddTag(ctx, roomID, "u.work", 0.5); err != nil {
		t.Fatal(err)
	}
	if err := bob.SetRoomAccountData(ctx, roomID, "org.example.note", map[string]any{"note": "x"}); err != nil {
		t.Fatal(err)
	}
	mustOK := func(what string, c *mautrix.Client, method, path string, body any) map[string]any {
		t.Helper()
		status, resp := call(t, s, method, path, c.AccessToken, body)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %v", what, status, resp)
		}
		return resp
	}
	v3 := "/_matrix/client/v3"
	mustOK("search", alice, http.MethodPost, v3+"/search", map[string]any{"search_categories": map[string]any{
		"room_events": map[string]any{"search_term": "searchable"}}})
	mustOK("sliding sync", alice, http.MethodPost, "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0",
		map[string]any{"conn_id": "c", "lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 10}}, "timeline_limit": 5}}})
	mustOK("delayed event", alice, http.MethodPut, v3+"/rooms/"+rp+"/send/m.room.message/d1?org.matrix.msc4140.delay=3600000",
		map[string]any{"msgtype": "m.text", "body": "later"})
	mustOK("report", bob, http.MethodPost, v3+"/rooms/"+rp+"/report/"+url.PathEscape(first.String()), map[string]any{"reason": "spam"})
	version := mustOK("key backup", alice, http.MethodPost, v3+"/room_keys/version", map[string]any{
		"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}})["version"].(string)
	mustOK("room key", alice, http.MethodPut, v3+"/room_keys/keys/"+rp+"/session1?version="+version, map[string]any{
		"first_message_index": 0, "forwarded_count": 0, "is_verified": true, "session_data": map[string]any{"ciphertext": "x"}})
	mustOK("webhook", alice, http.MethodPost, "/_tessera/webhooks/v1/rooms/"+rp+"/hooks", map[string]any{"kind": "generic"})
	// An earlier purge of the room's history leaves its mark.
	purgeAndWait(t, s, admin, "/_synapse/admin/v1/purge_history/"+rp+"/"+url.PathEscape(last.String()),
		map[string]any{"delete_local_events": true})
	if roomRows(t, s, roomID)["room_purges"] != 1 {
		t.Fatal("the history purge left no mark: the scan would prove nothing")
	}
	// bob's push actions for alice's messages (a two-member room
	// notifies) are written after the send returns: wait for them, so
	// that the scan below has something to find.
	for i := 0; roomRows(t, s, roomID)["event_push_actions"] == 0; i++ {
		if i == 200 {
			t.Fatalf("no push actions before the purge: %v", roomRows(t, s, roomID))
		}
		time.Sleep(25 * time.Millisecond)
	}

	status, resp := call(t, s, http.MethodDelete, "/_synapse/admin/v2/rooms/"+rp, admin, map[string]any{"block": true})
	if status != http.StatusOK {
		t.Fatalf("delete: %d %v", status, resp)
	}
	deleteID := resp["delete_id"].(string)
	for i := 0; ; i++ {
		status, st := call(t, s, http.MethodGet, "/_synapse/admin/v2/rooms/delete_status/"+deleteID, admin, nil)
		if status != http.StatusOK {
			t.Fatalf("delete status: %d %v", status, st)
		}
		if st["status"] == "complete" {
			break
		}
		if st["status"] == "failed" || i == 400 {
			t.Fatalf("delete: %v", st)
		}
		time.Sleep(25 * time.Millisecond)
	}
	for table, n := range roomRows(t, s, roomID) {
		if !keptAfterRoomPurge[table] {
			t.Errorf("after the purge, %s holds %d rows naming the room", table, n)
		}
	}
	// The room is gone for its former members, and the server goes on.
	if _, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 10); err == nil {
		t.Error("/messages of the purged room succeeded")
	}
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{}); err != nil {
		t.Errorf("create a room after the purge: %v", err)
	}
}

// roomRows counts, in every table of the server's database, the rows
// with a column whose text contains the room ID.
func roomRows(t *testing.T, s *testserver.Server, roomID id.RoomID) map[string]int {
	t.Helper()
	db := openDB(t, s)
	postgres := s.Config.Database.Engine == "postgres"
	// Each table's columns. On SQLite, virtual tables' shadow tables hold
	// the index in their own encoding; the virtual table itself is
	// scanned.
	listTables, listColumns := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
		AND name NOT IN (SELECT m.name || s.suffix FROM sqlite_master m,
			(SELECT '_data' AS suffix UNION SELECT '_idx' UNION SELECT '_content' UNION SELECT '_docsize' UNION SELECT '_config') s
			WHERE m.sql LIKE 'CREATE VIRTUAL TABLE%')`, `SELECT name FROM pragma_table_info($1)`
	contains := `instr(CAST("%s" AS TEXT), $1) > 0`
	if postgres {
		listTables = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`
		listColumns = `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`
		contains = `strpos(CAST("%s" AS TEXT), $1) > 0`
	}
	strs := func(q string, args ...any) []string {
		t.Helper()
		rows, err := db.Query(q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}
	out := map[string]int{}
	for _, table := range strs(listTables) {
		var conds []string
		for _, col := range strs(listColumns, table) {
			conds = append(conds, fmt.Sprintf(contains, col))
		}
		if len(conds) == 0 {
			continue
		}
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM "`+table+`" WHERE `+strings.Join(conds, " OR "), roomID.String()).Scan(&n); err != nil {
			t.Fatalf("scan %s: %v", table, err)
		}
		if n > 0 {
			out[table] = n
		}
	}
	return out
}
