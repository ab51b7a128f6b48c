package housekeeping_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestRetentionPurgeJobs: with Synapse's purge_jobs split at 24 h, a room
// with a 1 h lifetime is purged by the hourly job and a room with a 36 h
// lifetime only when the two-day job comes round, even while its messages
// are already past their lifetime; a room without a policy is never
// purged. The jobs run on the test's clock through RunDue.
func TestRetentionPurgeJobs(t *testing.T) {
	ctx := context.Background()
	s := testserver.Start(t, retentionOn, func(c *config.Config) {
		c.Housekeeping.Retention.PurgeJobs = []config.PurgeJob{
			{LongestMaxLifetime: config.Duration(24 * time.Hour), Interval: config.Duration(time.Hour)},
			{ShortestMaxLifetime: config.Duration(24 * time.Hour), Interval: config.Duration(48 * time.Hour)},
		}
	})
	alice := s.Register("alice", "password-alice")
	room := func(lifetime time.Duration) id.RoomID {
		var state []*event.Event
		if lifetime > 0 {
			state = append(state, &event.Event{Type: event.NewEventType("m.room.retention"),
				Content: event.Content{Raw: map[string]any{"max_lifetime": lifetime.Milliseconds()}}})
		}
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: state})
		if err != nil {
			t.Fatal(err)
		}
		return created.RoomID
	}
	short, long, none := room(time.Hour), room(36*time.Hour), room(0)
	const n = 5
	for _, r := range []id.RoomID{short, long, none} {
		sendMany(t, alice, r, n, "message")
	}
	t0 := time.Now()
	// A purge keeps the room's forward extremity, its last message.
	const purged = n - 1

	hk := s.Server().Housekeeping
	steps := []struct {
		name   string
		at     time.Duration
		purged int
	}{
		{"both jobs' first run: nothing expired", 30 * time.Minute, 0},
		{"the hourly job purges the 1 h room", 2 * time.Hour, purged},
		{"the 36 h room has expired, but its job is not due", 40 * time.Hour, 0},
		{"the two-day job comes round", 49 * time.Hour, purged},
		{"nothing left to purge", 100 * time.Hour, 0},
	}
	for _, st := range steps {
		rep, err := hk.RunDue(ctx, t0.Add(st.at))
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if rep.PurgedEvents != st.purged {
			t.Errorf("%s (at %v): purged %d events, want %d", st.name, st.at, rep.PurgedEvents, st.purged)
		}
	}
	// The room without a policy kept its messages (with no default, nothing
	// hides them either).
	if got := messageBodies(t, alice, none); len(got) != n {
		t.Errorf("the room without a policy serves %d messages, want %d", len(got), n)
	}
}

// TestRetentionPurgeJobsRunOnTheirOwn: with a running job (a short
// housekeeping interval and a shorter purge job), a room whose messages
// live a second loses them without anyone calling the job: Start's timer
// wakes for the purge job.
func TestRetentionPurgeJobsRunOnTheirOwn(t *testing.T) {
	ctx := context.Background()
	s := testserver.Start(t, func(c *config.Config) {
		c.Housekeeping.Retention.Enabled = true
		c.Housekeeping.Interval = config.Duration(time.Hour)
		c.Housekeeping.Retention.PurgeJobs = []config.PurgeJob{{Interval: config.Duration(200 * time.Millisecond)}}
	})
	alice := s.Register("alice", "password-alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: []*event.Event{{Type: event.NewEventType("m.room.retention"),
		Content: event.Content{Raw: map[string]any{"max_lifetime": 1000}}}}})
	if err != nil {
		t.Fatal(err)
	}
	before := countRows(t, s, "events")
	sendMany(t, alice, created.RoomID, 5, "short-lived")
	// Generous: the machine may be loaded.
	deadline := time.Now().Add(30 * time.Second)
	for countRows(t, s, "events") > before+1 { // the last message stays, the forward extremity
		if time.Now().After(deadline) {
			t.Fatalf("no purge after 30 s: %d events, %d before the messages", countRows(t, s, "events"), before)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
