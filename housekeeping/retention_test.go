package housekeeping_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// retentionOn enables retention, with the job left to the test's clock.
func retentionOn(c *config.Config) {
	c.Housekeeping.Retention.Enabled = true
	c.Housekeeping.Interval = 0
}

// TestRetentionPurgesOldMessages: a room with a one-day m.room.retention
// policy and 10,000 messages; the clock moves a day on and the job runs:
// the old messages are gone and the database is smaller, /messages and
// /sync serve exactly the recent messages, new messages work, and a user
// of another server joins the room and talks in it.
func TestRetentionPurgesOldMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 messages")
	}
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"), retentionOn)
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
		{Type: event.NewEventType("m.room.retention"), Content: event.Content{Raw: map[string]any{"max_lifetime": 24 * 60 * 60 * 1000}}},
		{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "shared"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID

	const old = 10_000
	oldIDs := sendMany(t, alice, roomID, old, "old")
	before, err := a.Server().Housekeeping.RunOnce(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if before.PurgedEvents != 0 {
		t.Fatalf("the job purged %d fresh events", before.PurgedEvents)
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now()
	time.Sleep(20 * time.Millisecond) // the recent messages are sent after the cut-off
	var recent []string
	for i := range 5 {
		recent = append(recent, fmt.Sprintf("recent %d", i))
		if _, err := alice.SendText(ctx, roomID, recent[i]); err != nil {
			t.Fatal(err)
		}
	}

	// A day after the cut-off.
	rep, err := a.Server().Housekeeping.RunOnce(ctx, cutoff.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if rep.PurgedEvents != old {
		t.Errorf("purged %d events, want the %d old messages", rep.PurgedEvents, old)
	}
	used := func(st housekeeping.DBStats) int64 { return st.FileBytes - st.FreeBytes }
	rows := func(st housekeeping.DBStats, table string) int64 {
		for _, tb := range st.Tables {
			if tb.Name == table {
				return tb.Rows
			}
		}
		return -1
	}
	t.Logf("database in use: %d bytes before, %d after; events: %d rows before, %d after",
		used(before.Stats), used(rep.Stats), rows(before.Stats, "events"), rows(rep.Stats, "events"))
	if used(rep.Stats) >= used(before.Stats)*3/4 {
		t.Errorf("the database did not shrink: %d bytes in use before, %d after", used(before.Stats), used(rep.Stats))
	}
	if d := rows(before.Stats, "events") - rows(rep.Stats, "events"); d < old-5 { // the recent ones came in between
		t.Errorf("events table lost %d rows", d)
	}
	// Running again purges nothing more.
	if again, err := a.Server().Housekeeping.RunOnce(ctx, cutoff.Add(24*time.Hour)); err != nil || again.PurgedEvents != 0 {
		t.Errorf("second run: purged %d, %v", again.PurgedEvents, err)
	}

	// /messages: the recent messages, newest first, then the room's
	// state events, then the end.
	if got := messageBodies(t, alice, roomID); fmt.Sprint(got) != fmt.Sprint(reversed(recent)) {
		t.Errorf("/messages after the purge: %v, want %v", got, reversed(recent))
	}
	// A purged event is gone.
	if _, err := alice.GetEvent(ctx, roomID, oldIDs[0]); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("GET a purged event: %v, want M_NOT_FOUND", err)
	}
	// /sync: initial, and incremental from before the recent messages.
	for _, since := range []string{"", first.NextBatch} {
		resp, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, FilterID: `{"room":{"timeline":{"limit":50}}}`})
		if err != nil {
			t.Fatal(err)
		}
		jr, ok := resp.Rooms.Join[roomID]
		if !ok {
			t.Fatalf("/sync since %q: the room is missing", since)
		}
		var bodies []string
		for _, ev := range jr.Timeline.Events {
			if ev.Type == event.EventMessage {
				bodies = append(bodies, ev.Content.Raw["body"].(string))
			}
		}
		if fmt.Sprint(bodies) != fmt.Sprint(recent) {
			t.Errorf("/sync since %q: timeline messages %v, want %v", since, bodies, recent)
		}
	}
	// New messages work.
	if _, err := alice.SendText(ctx, roomID, "after the purge"); err != nil {
		t.Fatal(err)
	}
	// The room still federates: bob of B joins through A, both talk,
	// and bob's history (backfilled from A) is what A kept.
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins the purged room: %v", err)
	}
	if _, err := alice.SendText(ctx, roomID, "hello bob"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, bob, roomID, "hello bob")
	if _, err := bob.SendText(ctx, roomID, "hello alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, alice, roomID, "hello alice")
	want := append([]string{"hello alice", "hello bob", "after the purge"}, reversed(recent)...)
	if got := messageBodies(t, bob, roomID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("bob's /messages on B: %v, want %v", got, want)
	}
	if got := messageBodies(t, alice, roomID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("alice's /messages on A: %v, want %v", got, want)
	}
}

// sendMany sends n messages with 8 senders at once and returns their IDs.
func sendMany(t testing.TB, c *mautrix.Client, roomID id.RoomID, n int, prefix string) []id.EventID {
	t.Helper()
	ids := make([]id.EventID, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				resp, err := c.SendText(context.Background(), roomID, fmt.Sprintf("%s %d", prefix, i))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = resp.EventID
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("send: %v", err)
	}
	return ids
}

// messageBodies pages back through the room with /messages to the end and
// returns the message bodies, newest first.
func messageBodies(t *testing.T, c *mautrix.Client, roomID id.RoomID) []string {
	t.Helper()
	var bodies []string
	from := ""
	for range 100 {
		resp, err := c.Messages(context.Background(), roomID, from, "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type == event.EventMessage {
				bodies = append(bodies, ev.Content.Raw["body"].(string))
			}
		}
		if resp.End == "" {
			return bodies
		}
		from = resp.End
	}
	t.Fatalf("/messages never ended; so far %d messages", len(bodies))
	return nil
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// waitFor syncs until body arrives in the room.
func waitFor(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		resp, err := c.SyncRequest(context.Background(), 2000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[roomID]; ok {
			for _, ev := range jr.Timeline.Events {
				if b, _ := ev.Content.Raw["body"].(string); b == body {
					return
				}
			}
		}
	}
	t.Fatalf("%s never saw %q", c.UserID, body)
}
