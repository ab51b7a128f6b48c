package housekeeping_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestRetentionHidesExpiredMessages: between two runs of the job, a
// message past its room's lifetime is not served by /messages, /sync,
// /context, /event, search or the admin API's /messages, while the room's
// state is; the lifetime is
// the room's max_lifetime or the server's default, at least its
// min_lifetime, bounded by allowed_lifetime_min/max. The room server's
// clock is moved, not the messages'.
func TestRetentionHidesExpiredMessages(t *testing.T) {
	ctx := context.Background()
	const day = 24 * time.Hour
	s := testserver.Start(t, retentionOn, func(c *config.Config) {
		r := &c.Housekeeping.Retention
		r.DefaultMaxLifetime = config.Duration(2 * day)
		r.AllowedLifetimeMin = config.Duration(12 * time.Hour)
		r.AllowedLifetimeMax = config.Duration(10 * day)
	})
	alice := s.Register("alice", "password-alice")
	admin := registerAdmin(t, s)
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	for _, tc := range []struct {
		name   string
		policy map[string]any // nil: no m.room.retention
		life   time.Duration  // the lifetime the server applies
	}{
		{"room policy", map[string]any{"max_lifetime": ms(day)}, day},
		{"server default", nil, 2 * day},
		{"policy without max_lifetime", map[string]any{"min_lifetime": ms(time.Hour)}, 2 * day},
		{"raised to allowed_lifetime_min", map[string]any{"max_lifetime": ms(time.Hour)}, 12 * time.Hour},
		{"raised to min_lifetime", map[string]any{"max_lifetime": ms(13 * time.Hour), "min_lifetime": ms(3 * day)}, 3 * day},
		{"capped at allowed_lifetime_max", map[string]any{"max_lifetime": ms(30 * day)}, 10 * day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var initial []*event.Event
			if tc.policy != nil {
				initial = append(initial, &event.Event{Type: event.NewEventType("m.room.retention"), Content: event.Content{Raw: tc.policy}})
			}
			name := "retention " + tc.name
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: name, InitialState: initial})
			if err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			body := fmt.Sprintf("expiring %d", time.Now().UnixNano())
			msg, err := alice.SendText(ctx, room.RoomID, body)
			if err != nil {
				t.Fatal(err)
			}
			done := time.Now()

			s.Server().Rooms.SetClock(func() time.Time { return sent.Add(tc.life - time.Minute) })
			checkServed(t, alice, room.RoomID, msg.EventID, body, name, true)
			checkAdminServed(t, s, admin, room.RoomID, msg.EventID, true)
			s.Server().Rooms.SetClock(func() time.Time { return done.Add(tc.life + time.Minute) })
			checkServed(t, alice, room.RoomID, msg.EventID, body, name, false)
			checkAdminServed(t, s, admin, room.RoomID, msg.EventID, false)
		})
	}
}

// checkServed checks that the message is served (or not) by every read
// path, and that the room's name is served either way.
func checkServed(t *testing.T, c *mautrix.Client, roomID id.RoomID, eventID id.EventID, body, name string, want bool) {
	t.Helper()
	ctx := context.Background()
	has := func(evs []*event.Event) (msg, named bool) {
		for _, ev := range evs {
			if ev.ID == eventID {
				msg = true
			}
			if ev.Type == event.StateRoomName && ev.Content.Raw["name"] == name {
				named = true
			}
		}
		return msg, named
	}
	resp, err := c.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	if msg, named := has(resp.Chunk); msg != want || !named {
		t.Errorf("/messages: message served %v (want %v), name served %v", msg, want, named)
	}
	sync, err := c.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: `{"room":{"timeline":{"limit":50}}}`})
	if err != nil {
		t.Fatal(err)
	}
	jr := sync.Rooms.Join[roomID]
	if jr == nil {
		t.Fatal("/sync: the room is missing")
	}
	if msg, _ := has(jr.Timeline.Events); msg != want {
		t.Errorf("/sync timeline: message served %v, want %v", msg, want)
	}
	if _, named := has(append(jr.State.Events, jr.Timeline.Events...)); !named {
		t.Error("/sync: the room's name is missing")
	}
	_, err = c.GetEvent(ctx, roomID, eventID)
	if served := err == nil; served != want || (!want && !errors.Is(err, mautrix.MNotFound)) {
		t.Errorf("/event: %v, want served %v", err, want)
	}
	_, err = c.Context(ctx, roomID, eventID, nil, 5)
	if served := err == nil; served != want || (!want && !errors.Is(err, mautrix.MNotFound)) {
		t.Errorf("/context: %v, want served %v", err, want)
	}
	found, err := c.Search(ctx, &mautrix.ReqSearch{SearchTerm: body})
	if err != nil {
		t.Fatal(err)
	}
	msg := false
	for _, r := range found.Results {
		msg = msg || r.Event.ID == eventID
	}
	if msg != want {
		t.Errorf("search: message found %v, want %v", msg, want)
	}
}

// checkAdminServed checks that GET /_synapse/admin/v1/rooms/{roomId}/messages
// serves the message (or not), and the room's create event either way.
func checkAdminServed(t *testing.T, s *testserver.Server, token string, roomID id.RoomID, eventID id.EventID, want bool) {
	t.Helper()
	status, body := call(t, s, "GET", "/_synapse/admin/v1/rooms/"+url.PathEscape(roomID.String())+"/messages?limit=100", token, nil)
	if status != 200 {
		t.Fatalf("admin /messages: %d %v", status, body)
	}
	served, create := false, false
	for _, ev := range body["chunk"].([]any) {
		ev := ev.(map[string]any)
		served = served || ev["event_id"] == eventID.String()
		create = create || ev["type"] == "m.room.create"
	}
	if served != want || !create {
		t.Errorf("admin /messages serves the message: %v, want %v (the create event: %v)", served, want, create)
	}
}
