package housekeeping_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// unreadCounts is what a sync tells a user of a room's unread
// notifications, with unread_thread_notifications asked for, and what the
// push badge is counted from (the push domain's UnreadCounts).
type unreadCounts struct {
	Sync    string // unread_notifications and unread_thread_notifications, as JSON
	Total   int    // the room's unread notifications, every thread
	Highest int    // its highlights
}

func unread(t *testing.T, s *testserver.Server, c *mautrix.Client, roomID id.RoomID) unreadCounts {
	t.Helper()
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":1,"unread_thread_notifications":true}}}`)
	status, body := call(t, s, "GET", "/_matrix/client/v3/sync?filter="+filter, c.AccessToken, nil)
	if status != 200 {
		t.Fatalf("sync: %d %v", status, body)
	}
	jr, _ := body["rooms"].(map[string]any)["join"].(map[string]any)[roomID.String()].(map[string]any)
	raw, _ := json.Marshal(map[string]any{"room": jr["unread_notifications"], "threads": jr["unread_thread_notifications"]})
	total, _, err := s.Server().Push.UnreadCounts(context.Background(), c.UserID.String(), roomID.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return unreadCounts{Sync: string(raw), Total: total.Notifications, Highest: total.Highlights}
}

// TestPushSummaryFolding: unread push actions older than a week are folded
// into event_push_summary by the job, as Synapse rotates them into its
// summary: the unread counts (sync's, per thread, and the badge's) are the
// same before and after, new notifications add to them, a thread receipt
// clears its thread, a receipt clears the rest, and the tables stay
// bounded over rounds of messages and folds.
func TestPushSummaryFolding(t *testing.T) {
	ctx := context.Background()
	s := testserver.Start(t, func(c *config.Config) { c.Housekeeping.Interval = 0 })
	alice := s.Register("alice", "password-alice")
	bob := s.Register("bob", "password-bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID
	if _, err := bob.JoinRoom(ctx, roomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	send := func(content map[string]any) id.EventID {
		t.Helper()
		resp, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, content)
		if err != nil {
			t.Fatal(err)
		}
		return resp.EventID
	}
	text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
	var last id.EventID
	for i := range 3 {
		last = send(text(fmt.Sprint("plain ", i)))
	}
	send(map[string]any{"msgtype": "m.text", "body": "bob: look", "m.mentions": map[string]any{"user_ids": []string{bob.UserID.String()}}})
	root := send(text("thread root"))
	inThread := func(body string) map[string]any {
		c := text(body)
		c["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": root.String()}
		return c
	}
	var lastInThread id.EventID
	for i := range 2 {
		lastInThread = send(inThread(fmt.Sprint("reply ", i)))
	}
	last = send(text("after the thread"))

	// Push actions reach the database a moment after evaluation (push's
	// flushDelay); the job folds only what is there.
	time.Sleep(500 * time.Millisecond)
	before := unread(t, s, bob, roomID)
	if before.Total != 8 || before.Highest != 1 {
		t.Fatalf("bob's counts before folding: %+v, want 8 notifications, 1 highlight", before)
	}
	hk := s.Server().Housekeeping
	week := 8 * 24 * time.Hour
	rep, err := hk.RunOnce(ctx, time.Now().Add(week))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Pruned["push_actions"]; got != 8 {
		t.Errorf("folded %d push actions, want bob's 8", got)
	}
	if n := countRows(t, s, "event_push_actions"); n != 0 {
		t.Errorf("%d push actions left after folding", n)
	}
	if n := countRows(t, s, "event_push_summary"); n != 2 {
		t.Errorf("%d summary rows, want 2 (the main timeline and the thread)", n)
	}
	if !strings.Contains(before.Sync, root.String()) {
		t.Errorf("no thread counts in the sync: %s", before.Sync)
	}
	if after := unread(t, s, bob, roomID); after != before {
		t.Errorf("counts after folding: %+v, want %+v", after, before)
	}

	// Rounds of new messages and folds: the counts add up, the tables do
	// not grow.
	want := before.Total
	for round := range 3 {
		last = send(text(fmt.Sprint("round ", round)))
		lastInThread = send(inThread(fmt.Sprint("round reply ", round)))
		want += 2
		time.Sleep(500 * time.Millisecond)
		mid := unread(t, s, bob, roomID)
		if mid.Total != want {
			t.Errorf("round %d: %d unread before folding, want %d", round, mid.Total, want)
		}
		if _, err := hk.RunOnce(ctx, time.Now().Add(week)); err != nil {
			t.Fatal(err)
		}
		if got := unread(t, s, bob, roomID); got != mid {
			t.Errorf("round %d: counts after folding %+v, want %+v", round, got, mid)
		}
		if a, sum := countRows(t, s, "event_push_actions"), countRows(t, s, "event_push_summary"); a != 0 || sum != 2 {
			t.Errorf("round %d: %d push actions and %d summary rows after folding, want 0 and 2", round, a, sum)
		}
	}

	// A receipt in the thread clears the thread's counts, folded or not;
	// one more unfolded notification there keeps it apart from the rest.
	status, body := call(t, s, "POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", url.PathEscape(roomID.String()),
		url.PathEscape(lastInThread.String())), bob.AccessToken, map[string]any{"thread_id": root.String()})
	expect(t, "thread receipt", status, body, 200, "")
	main := unread(t, s, bob, roomID)
	if main.Total != want-5 { // the thread's 2 + 3 replies
		t.Errorf("after the thread receipt: %+v, want %d unread", main, want-5)
	}
	// An unthreaded receipt at the last event clears everything, and the
	// next run deletes the summaries it read.
	if err := bob.MarkRead(ctx, roomID, last); err != nil {
		t.Fatal(err)
	}
	if got := unread(t, s, bob, roomID); got.Total != 0 || got.Highest != 0 {
		t.Errorf("after reading everything: %+v, want nothing unread", got)
	}
	if _, err := hk.RunOnce(ctx, time.Now().Add(week)); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, s, "event_push_summary"); n != 0 {
		t.Errorf("%d summary rows after everything was read", n)
	}
	if got := unread(t, s, bob, roomID); got.Total != 0 {
		t.Errorf("after the summaries went: %+v", got)
	}
}
