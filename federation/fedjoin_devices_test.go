package federation_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestDeviceListsWhenNewlySharingARoom: alice on A and bob on B have
// devices with keys before they share a room. When bob joins alice's
// room, each sees the other in device_lists.changed and gets the other's
// devices; after bob leaves and alice adds a device while they share
// nothing, bob's rejoin brings him her new device.
func TestDeviceListsWhenNewlySharingARoom(t *testing.T) {
	ctx := context.Background()
	a, b := startPair(t)
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	e2eeUploadDeviceKeys(t, alice, 1)
	e2eeUploadDeviceKeys(t, bob, 1)
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	sinceAlice := e2eeSyncFrom(t, alice, "", "an initial sync", func(*mautrix.RespSync) bool { return true })
	sinceBob := e2eeSyncFrom(t, bob, "", "an initial sync", func(*mautrix.RespSync) bool { return true })

	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	changed := func(who id.UserID) func(*mautrix.RespSync) bool {
		return func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, who) }
	}
	e2eeSyncFrom(t, alice, sinceAlice, "bob in device_lists.changed after his join", changed(bob.UserID))
	sinceBob = e2eeSyncFrom(t, bob, sinceBob, "alice in device_lists.changed after his join", changed(alice.UserID))

	devices := func(c *mautrix.Client, of id.UserID) []string {
		t.Helper()
		res := e2eeCall(t, c, http.MethodPost, []any{"keys", "query"}, map[string]any{"device_keys": map[string]any{of.String(): []string{}}})
		m, _ := e2eePath(res, "device_keys", of.String()).(map[string]any)
		var out []string
		for d := range m {
			out = append(out, d)
		}
		slices.Sort(out)
		return out
	}
	if got := devices(bob, alice.UserID); !slices.Equal(got, []string{alice.DeviceID.String()}) {
		t.Fatalf("bob sees alice's devices %v", got)
	}
	if got := devices(alice, bob.UserID); !slices.Equal(got, []string{bob.DeviceID.String()}) {
		t.Fatalf("alice sees bob's devices %v", got)
	}

	// Apart, alice gets a new device; together again, bob learns of it.
	if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	waitMembership(t, alice, roomID, bob.UserID, event.MembershipLeave)
	alice2 := a.Client("", "")
	login, err := alice2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "password-alice", StoreCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	alice2.DeviceID = login.DeviceID
	e2eeUploadDeviceKeys(t, alice2, 1)
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	e2eeSyncFrom(t, bob, sinceBob, "alice in device_lists.changed after his rejoin", changed(alice.UserID))
	want := []string{alice.DeviceID.String(), alice2.DeviceID.String()}
	slices.Sort(want)
	if got := devices(bob, alice.UserID); !slices.Equal(got, want) {
		t.Fatalf("after rejoining, bob sees alice's devices %v, want %v", got, want)
	}
}
