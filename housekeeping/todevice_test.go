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

// TestStaleDevicesAndOrphanedToDevice: with delete_stale_devices_after,
// the job deletes a device not used for that long, and its undelivered
// to-device messages go with it; a queue left for a device that no longer
// exists is pruned; the messages of a device in use stay and are
// delivered.
func TestStaleDevicesAndOrphanedToDevice(t *testing.T) {
	ctx := context.Background()
	// The set-up writes a lost race's row into the server's database
	// (either engine).
	s := testserver.Start(t, func(c *config.Config) {
		c.Housekeeping.Interval = 0
		c.Housekeeping.DeleteStaleDevicesAfter = config.Duration(30 * 24 * time.Hour)
	})
	alice := s.Register("alice", "password-alice")
	bob := s.Register("bob", "password-bob")
	// A second device of alice's, logged in and never used.
	stale := s.Client("", "")
	login, err := stale.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "password-alice"})
	if err != nil {
		t.Fatal(err)
	}
	send := func(body string) {
		t.Helper()
		content := &event.Content{Raw: map[string]any{"body": body}}
		if _, err := bob.SendToDevice(ctx, event.NewEventType("org.example.note"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{alice.UserID: {"*": content}}}); err != nil {
			t.Fatal(err)
		}
	}
	send("for both devices")
	if got := countRows(t, s, "to_device_messages"); got != 2 {
		t.Fatalf("%d queued to-device messages, want 2", got)
	}
	db := openDB(t, s)
	// The second device was last used 40 days ago (last_seen_ts is
	// written at most every few minutes, so the test writes the age
	// time would have given it).
	monthAgo := time.Now().Add(-40 * 24 * time.Hour).UnixMilli()
	if _, err := db.Exec(`UPDATE devices SET created_ts = $1, last_seen_ts = $1 WHERE user_id = $2 AND device_id = $3`,
		monthAgo, alice.UserID, login.DeviceID); err != nil {
		t.Fatal(err)
	}
	// A row a lost race left: a message queued for a device that was
	// deleted meanwhile.
	if _, err := db.Exec(`INSERT INTO to_device_messages (stream_pos, user_id, device_id, sender, type, content)
		VALUES (-1, $1, 'GONE', $2, 'org.example.note', '{}')`, alice.UserID, bob.UserID); err != nil {
		t.Fatal(err)
	}

	hk := s.Server().Housekeeping
	// Twelve days ago, the second device was not stale yet.
	rep, err := hk.RunOnce(ctx, time.Now().Add(-12*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pruned["stale_devices"] != 0 || rep.Pruned["to_device_orphans"] != 1 {
		t.Errorf("within the lifetime: pruned %v, want the orphaned message only", rep.Pruned)
	}
	if got := countRows(t, s, "to_device_messages"); got != 2 {
		t.Errorf("%d queued to-device messages after pruning the orphan, want 2", got)
	}
	rep, err = hk.RunOnce(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pruned["stale_devices"] != 1 {
		t.Errorf("pruned %d stale devices, want 1", rep.Pruned["stale_devices"])
	}
	if got := countRows(t, s, "to_device_messages"); got != 1 {
		t.Errorf("%d queued to-device messages after deleting the stale device, want 1", got)
	}
	if _, err := s.Client(login.UserID, login.AccessToken).Whoami(ctx); err == nil {
		t.Error("the stale device's token still works")
	}
	// The device in use gets its message.
	resp, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ToDevice.Events) != 1 || resp.ToDevice.Events[0].Content.Raw["body"] != "for both devices" {
		t.Errorf("alice's to-device events: %v", resp.ToDevice.Events)
	}
}
