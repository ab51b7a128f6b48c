package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// The event writers' positions across processes (roomserver/clusterpos.go,
// docs/scaling.md "Stream positions across processes").

// watchEvery is roomserver's: how often a process publishes what no
// notification announced (a dead writer's positions).
const watchEvery = 500 * time.Millisecond

// waitUntil polls cond every 50 ms for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendAsync sends n messages into each of rooms through each of vias, one
// sequential writer per (via, room), and returns a channel that gets each
// send's error (nil on success) and the number of sends.
func (c *scaleOut) sendAsync(vias []string, rooms []id.RoomID, n int, tag string) (<-chan error, int) {
	total := len(vias) * len(rooms) * n
	out := make(chan error, total)
	for _, via := range vias {
		for _, roomID := range rooms {
			go func() {
				for i := range n {
					_, err := as(c.srv[via], c.alice).SendText(context.Background(), roomID, fmt.Sprintf("%s %s %d", via, tag, i))
					out <- err
				}
			}()
		}
	}
	return out, total
}

// checkSynced syncs bob through via from since until want messages came,
// and checks that each came once and each writer's in the order sent
// (syncMessages fails on a limited timeline).
func (c *scaleOut) checkSynced(t *testing.T, via, since, filter string, want int) {
	t.Helper()
	got, _ := syncMessages(t, as(c.srv[via], c.bob), since, filter, want)
	if len(got) != want {
		t.Fatalf("bob synced %d messages through %s, want %d", len(got), via, want)
	}
	ids := map[id.EventID]bool{}
	next := map[string]int{}
	for _, s := range got {
		if ids[s.id] {
			t.Fatalf("through %s: event %s synced twice", via, s.id)
		}
		ids[s.id] = true
		var from, tag string
		var i int
		if _, err := fmt.Sscanf(s.body, "%s %s %d", &from, &tag, &i); err != nil {
			t.Fatalf("unexpected body %q", s.body)
		}
		key := s.room.String() + " " + from + " " + tag
		if i != next[key] {
			t.Fatalf("through %s: room %s: message %d from %s came after %d", via, s.room, i, key, next[key]-1)
		}
		next[key]++
	}
}

// bobReady joins bob to every room and returns a filter that does not
// limit timelines and a sync token of each instance.
func (c *scaleOut) bobReady(t *testing.T) (string, map[string]string) {
	t.Helper()
	ctx := context.Background()
	c.joinAll(t, c.bob)
	filter, err := c.bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, name := range c.names {
		resp, err := as(c.srv[name], c.bob).SyncRequest(ctx, 0, "", filter.FilterID, false, "")
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = resp.NextBatch
	}
	return filter.FilterID, tokens
}

// One process's event transaction is held mid-commit (it has taken its
// stream positions; the test holds its room's row) while the others
// commit events at higher positions into their rooms. Nothing above the
// held transaction's positions may be published anywhere: the others'
// sends wait, and a sync sees none of their events. Once it commits,
// every process's sync has every event once, in order, never limited.
func TestScaleOutLateCommitAcrossProcesses(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	filter, tokens := c.bobReady(t)

	lock, err := pgx.Connect(ctx, c.srv["a"].Config.Database.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(ctx)
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM rooms WHERE room_id = $1 FOR UPDATE`, c.rooms["a"].String()); err != nil {
		t.Fatalf("lock a's room row: %v", err)
	}
	// The late one: through c, forwarded to a, which takes its positions
	// and then waits for the row.
	late, nLate := c.sendAsync([]string{"c"}, []id.RoomID{c.rooms["a"]}, 1, "late")
	waitUntil(t, "a's commit waiting for the room's row", func() bool {
		var n int
		err := lock.QueryRow(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND pid != pg_backend_pid()`).Scan(&n)
		return err == nil && n > 0
	})
	// Writers in b's and c's rooms, through all three processes.
	const perWriter = 4
	early, nEarly := c.sendAsync(c.names, []id.RoomID{c.rooms["b"], c.rooms["c"]}, perWriter, "early")
	waitUntil(t, "b's and c's first events committed", func() bool {
		var n int
		err := lock.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE room_id = ANY($1) AND type = 'm.room.message'`,
			[]string{c.rooms["b"].String(), c.rooms["c"].String()}).Scan(&n)
		return err == nil && n >= 2
	})
	// Committed above the held positions, so published nowhere yet.
	for _, via := range c.names {
		resp, err := as(c.srv[via], c.bob).SyncRequest(ctx, 500, tokens[via], filter, false, "")
		if err != nil {
			t.Fatalf("sync through %s while a's commit is held: %v", via, err)
		}
		for roomID, r := range resp.Rooms.Join {
			if len(r.Timeline.Events) > 0 {
				t.Fatalf("sync through %s while a's commit is held returned %d events of %s", via, len(r.Timeline.Events), roomID)
			}
		}
	}
	select {
	case err := <-early:
		t.Fatalf("a send returned (%v) while a lower position was still in flight", err)
	default:
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []struct {
		c <-chan error
		n int
	}{{late, nLate}, {early, nEarly}} {
		for range ch.n {
			select {
			case err := <-ch.c:
				if err != nil {
					t.Fatalf("send: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("a send did not return within 60 s of the row's release")
			}
		}
	}
	var wg sync.WaitGroup
	for _, via := range c.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.checkSynced(t, via, tokens[via], filter, nLate+nEarly)
		}()
	}
	wg.Wait()
}

// A writer whose process dies mid-transaction (played by the test over
// SQL as instance "d", the way a process takes its positions: in-process
// servers cannot be killed) holds the others back only while its session
// lives: once it is gone, the others find its lock free within a watcher
// tick, and everything they committed meanwhile is published, in order.
func TestScaleOutWriterDiesMidTransaction(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	filter, tokens := c.bobReady(t)

	d, err := pgx.Connect(ctx, c.srv["a"].Config.Database.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(ctx)
	// d registers, as a process does at start, then takes positions in a
	// transaction it never ends.
	if _, err := d.Exec(ctx, `WITH u AS (
		INSERT INTO event_stream_writers (instance, pos, alive) VALUES ('d', (SELECT last_value FROM events_stream_pos), TRUE)
		RETURNING pos) SELECT pg_notify('tessera_events', 'd alive ' || pos) FROM u`); err != nil {
		t.Fatalf("register d: %v", err)
	}
	tx, err := d.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared(x'7e55'::int, hashtext('d'))`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT nextval('events_stream_pos')`); err != nil {
		t.Fatal(err)
	}

	const perWriter = 3
	sent, n := c.sendAsync(c.names, []id.RoomID{c.rooms["a"], c.rooms["b"], c.rooms["c"]}, perWriter, "m")
	// d is alive (its transaction is open): nothing above its positions
	// returns, however long it takes.
	time.Sleep(8 * watchEvery)
	select {
	case err := <-sent:
		t.Fatalf("a send returned (%v) while d's transaction was open", err)
	default:
	}

	// d's process dies: its session ends, its transaction rolls back.
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	var first, last time.Duration
	for i := range n {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			last = time.Since(died)
			if i == 0 {
				first = last
			}
		case <-time.After(60 * time.Second):
			t.Fatal("a send did not return within 60 s of d's death")
		}
	}
	t.Logf("the first send held back by d returned %s after its death, the last (each writer's %d sends in turn) %s (bound: a watcher tick, %s)",
		first, perWriter, last, watchEvery)
	// Generous for a loaded machine.
	if first > 10*time.Second {
		t.Errorf("the others stalled %s after d died", first)
	}
	for _, via := range c.names {
		c.checkSynced(t, via, tokens[via], filter, n)
	}
	// And the stream keeps moving without d.
	more, m := c.sendAsync([]string{"b"}, []id.RoomID{c.rooms["c"]}, 2, "after")
	for range m {
		select {
		case err := <-more:
			if err != nil {
				t.Fatalf("send after d's death: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a send after d's death did not return within 30 s")
		}
	}
}
