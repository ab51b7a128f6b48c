package roomserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestLateCommitNotSkipped: on PostgreSQL rooms commit concurrently, so a
// room's transaction can take a lower stream position than another room's
// and commit after it. A sync that ran in between must not have moved its
// token past the late event: the client gets both events, in one sync or
// the next.
func TestLateCommitNotSkipped(t *testing.T) {
	// Rooms commit at once only with several writer connections.
	srv := testserver.Start(t, testserver.Postgres(t), func(c *config.Config) { c.Database.WriterConns = 4 })
	ctx := context.Background()
	alice := srv.Register("alice", "password")
	rooms := make([]id.RoomID, 2)
	for i := range rooms {
		resp, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		rooms[i] = resp.RoomID
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatalf("initial sync: %v", err)
	}

	// Hold room 0's row: its next commit takes its position, writes its
	// event and then waits for the lock at the update of the room.
	lock, err := pgx.Connect(ctx, srv.Config.Database.DSN)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer lock.Close(ctx)
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM rooms WHERE room_id = $1 FOR UPDATE`, rooms[0].String()); err != nil {
		t.Fatalf("lock room row: %v", err)
	}

	sent := make(chan error, 2)
	send := func(room id.RoomID, body string) {
		_, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body})
		sent <- err
	}
	go send(rooms[0], "late")
	waitFor(t, "room 0's commit waiting for the lock", func() bool {
		var n int
		err := lock.QueryRow(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND pid != pg_backend_pid()`).Scan(&n)
		return err == nil && n > 0
	})
	go send(rooms[1], "early")
	waitFor(t, "room 1's event committed", func() bool {
		var n int
		err := lock.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND type = 'm.room.message'`,
			rooms[1].String()).Scan(&n)
		return err == nil && n == 1
	})
	// Room 1's event has committed, at a position above room 0's, which
	// has not: the sync in between.
	between, err := alice.SyncRequest(ctx, 0, first.NextBatch, "", false, "")
	if err != nil {
		t.Fatalf("sync between the commits: %v", err)
	}
	got := messages(between)
	if got["early"] && !got["late"] {
		t.Logf("the sync in between returned the early commit alone (token %s)", between.NextBatch)
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("send: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("a send did not return within 60 s of the lock's release")
		}
	}
	since := between.NextBatch
	deadline := time.Now().Add(10 * time.Second)
	for !(got["early"] && got["late"]) && time.Now().Before(deadline) {
		resp, err := alice.SyncRequest(ctx, 1000, since, "", false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		for body := range messages(resp) {
			got[body] = true
		}
		since = resp.NextBatch
	}
	if !got["early"] || !got["late"] {
		t.Fatalf("messages synced after the sync in between (token %s): %v; want both \"early\" and \"late\" (a late commit was skipped)",
			between.NextBatch, got)
	}
}

// messages returns the bodies of the messages in a sync's joined rooms.
func messages(resp *mautrix.RespSync) map[string]bool {
	out := map[string]bool{}
	for _, r := range resp.Rooms.Join {
		for _, ev := range r.Timeline.Events {
			if ev.Type == event.EventMessage {
				body, _ := ev.Content.Raw["body"].(string)
				out[body] = true
			}
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
