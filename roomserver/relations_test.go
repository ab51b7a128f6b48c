package roomserver

import (
	"context"
	"testing"

	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// TestRelationsMigrationBackfill checks that migration 6 finds the
// relations of the events stored before it: a database upgraded in place
// must aggregate its old edits and threads.
func TestRelationsMigrationBackfill(t *testing.T) {
	ctx := context.Background()
	db := dbtest.Open(t)
	defer db.Close()
	if err := db.Migrate(ctx, "roomserver", migrations[:5]); err != nil {
		t.Fatalf("migrations 1-5: %v", err)
	}
	events := []struct {
		id, sender, content string
		depth               int64
		redacted            bool
	}{
		{"$root", "@a:x", `{"body":"root"}`, 1, false},
		{"$t1", "@b:x", `{"body":"1","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`, 2, false},
		{"$t2", "@c:x", `{"body":"2","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}`, 3, false},
		{"$react", "@b:x", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$root","key":"k"}}`, 4, false},
		{"$gone", "@a:x", `{"m.relates_to":{"rel_type":"m.replace","event_id":"$root"}}`, 5, true},
		{"$odd", "@a:x", `{"m.relates_to":"not an object"}`, 6, false},
		{"$reply", "@a:x", `{"m.relates_to":{"m.in_reply_to":{"event_id":"$root"}}}`, 7, false},
	}
	for i, e := range events {
		var redactedBy any
		if e.redacted {
			redactedBy = "$redaction"
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, sender, depth, origin_ts, state_group, json, redacted_by)
			VALUES ($1, $2, '!r:x', 'm.room.message', $3, $4, 0, 0, $5, $6)`,
			i+1, e.id, e.sender, e.depth, `{"content":`+e.content+`}`, redactedBy); err != nil {
			t.Fatalf("insert %s: %v", e.id, err)
		}
	}
	if err := db.Migrate(ctx, "roomserver", migrations); err != nil {
		t.Fatalf("migration 6: %v", err)
	}
	rows, err := db.QueryContext(ctx, `SELECT event_id, relates_to, rel_type, COALESCE(key, '') FROM event_relations ORDER BY stream_pos`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id, to, rel, key string
		if err := rows.Scan(&id, &to, &rel, &key); err != nil {
			t.Fatal(err)
		}
		got = append(got, id+" "+rel+" "+to+" "+key)
	}
	rows.Close()
	want := []string{"$t1 m.thread $root ", "$t2 m.thread $root ", "$react m.annotation $root k"}
	if len(got) != len(want) {
		t.Fatalf("event_relations = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event_relations = %q, want %q", got, want)
		}
	}
	var latest string
	var count int
	if err := db.QueryRowContext(ctx, `SELECT latest_id, count FROM threads WHERE root_id = '$root'`).Scan(&latest, &count); err != nil {
		t.Fatalf("thread of $root: %v", err)
	}
	if latest != "$t2" || count != 2 {
		t.Errorf("thread = (%s, %d), want ($t2, 2)", latest, count)
	}
}
