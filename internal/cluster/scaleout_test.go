package cluster_test

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
)

type seen struct {
	room   id.RoomID
	sender id.UserID
	body   string
	id     id.EventID
}

// syncMessages syncs c from since until want messages have come (or the
// deadline), and returns them in the order the syncs gave them. Every
// timeline must be complete (not limited): a skipped event fails.
func syncMessages(t *testing.T, c *mautrix.Client, since, filter string, want int) ([]seen, string) {
	t.Helper()
	ctx := context.Background()
	var out []seen
	deadline := time.Now().Add(60 * time.Second)
	for len(out) < want && time.Now().Before(deadline) {
		resp, err := c.SyncRequest(ctx, 5000, since, filter, false, "")
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		since = resp.NextBatch
		for roomID, r := range resp.Rooms.Join {
			if r.Timeline.Limited {
				t.Fatalf("room %s: limited timeline after %d messages", roomID, len(out))
			}
			for _, ev := range r.Timeline.Events {
				if ev.Type != event.EventMessage {
					continue
				}
				body, _ := ev.Content.Raw["body"].(string)
				out = append(out, seen{room: roomID, sender: ev.Sender, body: body, id: ev.ID})
			}
		}
	}
	return out, since
}

// Three processes on one PostgreSQL database: writes sent through any of
// them reach the room's owner, syncs on another see every message once and
// in order, with writers in all three at once.
func TestScaleOutSendAndSync(t *testing.T) {
	c := startScaleOut(t)
	names, srv, alice, bob, rooms := c.names, c.srv, c.alice, c.bob, c.rooms
	ctx := context.Background()
	// Bob joins each room through c: forwarded to the owner but one.
	for _, roomID := range rooms {
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("join %s through c: %v", roomID, err)
		}
	}
	filter, err := bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := bob.SyncRequest(ctx, 0, "", filter.FilterID, false, "")
	if err != nil {
		t.Fatal(err)
	}

	// Alice sends through every process at once, to every room: each
	// (process, room) pair is one sequential writer of perWriter messages.
	const perWriter = 15
	var wg sync.WaitGroup
	errs := make(chan error, len(names)*len(rooms))
	for _, via := range names {
		cl := as(srv[via], alice)
		for _, roomID := range rooms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWriter {
					body := fmt.Sprintf("%s %d", via, i)
					if _, err := cl.SendMessageEvent(ctx, roomID, event.EventMessage,
						map[string]any{"msgtype": "m.text", "body": body}); err != nil {
						errs <- fmt.Errorf("send %q to %s through %s: %w", body, roomID, via, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := len(names) * len(rooms) * perWriter
	got, _ := syncMessages(t, bob, first.NextBatch, filter.FilterID, want)
	if len(got) != want {
		t.Fatalf("bob synced %d messages through c, want %d", len(got), want)
	}
	// Once each, and each writer's messages in the order it sent them.
	ids := map[id.EventID]bool{}
	next := map[string]int{}
	for _, s := range got {
		if ids[s.id] {
			t.Fatalf("event %s synced twice", s.id)
		}
		ids[s.id] = true
		var via string
		var i int
		if _, err := fmt.Sscanf(s.body, "%s %d", &via, &i); err != nil {
			t.Fatalf("unexpected body %q", s.body)
		}
		key := s.room.String() + " " + via
		if i != next[key] {
			t.Fatalf("room %s: message %d through %s came after %d", s.room, i, via, next[key]-1)
		}
		next[key]++
	}

	// The same sync from a fresh start on b gives the same timeline.
	all, err := as(srv["b"], bob).SyncRequest(ctx, 0, first.NextBatch, filter.FilterID, false, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range all.Rooms.Join {
		for _, ev := range r.Timeline.Events {
			if ev.Type == event.EventMessage {
				n++
			}
		}
	}
	if n != want {
		t.Errorf("one sync through b since the first token: %d messages, want %d", n, want)
	}
}

// A retry with the same transaction ID gives the first attempt's event,
// whichever process it reaches.
func TestScaleOutTxnRetry(t *testing.T) {
	c := startScaleOut(t)
	srv, alice, rooms := c.srv, c.alice, c.rooms
	ctx := context.Background()
	for owner, roomID := range rooms {
		var first id.EventID
		for _, via := range []string{"a", "b", "c", "b"} {
			resp, err := as(srv[via], alice).SendMessageEvent(ctx, roomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "once"}, mautrix.ReqSendEvent{TransactionID: "txn-" + owner})
			if err != nil {
				t.Fatalf("send to %s's room through %s: %v", owner, via, err)
			}
			if first == "" {
				first = resp.EventID
			} else if resp.EventID != first {
				t.Fatalf("room owned by %s: retry through %s gave %s, first attempt %s", owner, via, resp.EventID, first)
			}
		}
		msgs, err := as(srv["c"], alice).Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range msgs.Chunk {
			if ev.Type == event.EventMessage {
				n++
			}
		}
		if n != 1 {
			t.Errorf("room owned by %s: %d messages after 4 attempts with one transaction ID", owner, n)
		}
	}
}

// A long-polling /sync on every process wakes for an event another process
// commits: the commit's NOTIFY reaches them all.
func TestScaleOutWakeUps(t *testing.T) {
	c := startScaleOut(t)
	names, srv, alice, bob, rooms := c.names, c.srv, c.alice, c.bob, c.rooms
	ctx := context.Background()
	c.joinAll(t, bob)
	for owner, roomID := range rooms {
		start, err := bob.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			via  string
			took time.Duration
			err  error
		}
		results := make(chan result, len(names))
		began := time.Now()
		for _, via := range names {
			go func() {
				since := start.NextBatch
				for time.Since(began) < 20*time.Second {
					resp, err := as(srv[via], bob).SyncRequest(ctx, 30000, since, "", false, "")
					if err != nil {
						results <- result{via: via, err: err}
						return
					}
					since = resp.NextBatch
					for _, ev := range resp.Rooms.Join[roomID].Timeline.Events {
						if ev.Type == event.EventMessage {
							results <- result{via: via, took: time.Since(began)}
							return
						}
					}
				}
				results <- result{via: via, err: errors.New("no wake-up in 20 s")}
			}()
		}
		// The long-polls are waiting (a sync answers at once if anything
		// is new, so this only makes the test meaningful, not pass).
		time.Sleep(300 * time.Millisecond)
		if _, err := as(srv[owner], alice).SendText(ctx, roomID, "wake up"); err != nil {
			t.Fatal(err)
		}
		for range names {
			r := <-results
			if r.err != nil {
				t.Errorf("room owned by %s: sync through %s: %v", owner, r.via, r.err)
			} else if r.took > 5*time.Second {
				t.Errorf("room owned by %s: sync through %s woke after %s", owner, r.via, r.took)
			}
		}
	}
}

// Writes to the rooms of an instance that is down get 502 at once; the
// other rooms keep working, and its rooms take writes again once it is
// back.
func TestScaleOutOwnerDown(t *testing.T) {
	c := startScaleOut(t)
	srv, alice, rooms := c.srv, c.alice, c.rooms
	ctx := context.Background()
	srv["b"].Stop()
	_, err := alice.SendText(ctx, rooms["b"], "to b's room while b is down")
	if !isBadGateway(err) {
		t.Fatalf("send to b's room while b is down: %v, want 502 M_UNKNOWN", err)
	}
	for _, owner := range []string{"a", "c"} {
		if _, err := alice.SendText(ctx, rooms[owner], "still working"); err != nil {
			t.Errorf("send to %s's room while b is down: %v", owner, err)
		}
	}
	srv["b"].Restart()
	if _, err := alice.SendText(ctx, rooms["b"], "b is back"); err != nil {
		t.Errorf("send to b's room after b is back: %v", err)
	}
}

// A token logged out through one process stops working on the others,
// which had it cached: the logout's NOTIFY empties their token caches.
func TestScaleOutLogout(t *testing.T) {
	c := startScaleOut(t)
	srv, alice := c.srv, c.alice
	ctx := context.Background()
	for _, via := range []string{"b", "c"} {
		if _, err := as(srv[via], alice).Whoami(ctx); err != nil {
			t.Fatalf("whoami through %s: %v", via, err)
		}
	}
	if _, err := alice.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	for _, via := range []string{"b", "c"} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := as(srv[via], alice).Whoami(ctx)
			if errors.Is(err, mautrix.MUnknownToken) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("whoami through %s 5 s after logout through a: %v, want M_UNKNOWN_TOKEN", via, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
