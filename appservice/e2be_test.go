//go:build goolm

package appservice_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	mas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/e2eetest"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestBridgeEncryptedRoom is end-to-bridge encryption as the mautrix
// bridges do it (MSC2409 + MSC3202): the puppet's device is an Olm machine
// that never syncs. Its to-device messages (the room key, Olm-encrypted)
// come in the bridge's transactions, with its one-time key counts; the
// device list changes of the users it shares a room with too. It decrypts
// a real client's Megolm message from the room events the bridge is sent.
func TestBridgeEncryptedRoom(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", func(r *mas.Registration) { r.MSC3202 = true })
	srv := testserver.Start(t, b.option())
	alice := srv.Register("alice", "pw-alice-1")
	puppet := srv.Register("puppet_1", "pw-puppet-1")
	var room mautrix.RespCreateRoom
	_, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "createRoom"), &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	}, &room)
	must(t, err)
	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: puppet.UserID})
	must(t, err)
	_, err = puppet.JoinRoom(ctx, room.RoomID.String(), nil)
	must(t, err)

	// The puppet's device, fed only by the bridge.
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	puppet.Log = log
	puppet.StateStore = mautrix.NewMemoryStateStore()
	mach := crypto.NewOlmMachine(puppet, &log, cryptoStore(t, puppet, log), puppet.StateStore.(crypto.StateStore))
	must(t, mach.Load(ctx))
	must(t, mach.ShareKeys(ctx, -1))

	// Alice's client uploads its keys: a device list change of a user
	// the puppet shares a room with.
	aliceDev := e2eetest.NewDevice(t, alice)
	b.waitFor("alice's device list change", 10*time.Second, func() bool {
		for _, dl := range b.deviceLists {
			if slices.Contains(dl.Changed, alice.UserID) {
				return true
			}
		}
		return false
	})
	deadline := time.Now().Add(10 * time.Second)
	for !aliceDev.Sees(room.RoomID, alice.UserID, puppet.UserID) {
		if time.Now().After(deadline) {
			t.Fatal("alice's client does not see the encrypted room with the puppet")
		}
		time.Sleep(20 * time.Millisecond)
	}
	msgID, _ := aliceDev.Send(room.RoomID, []id.UserID{alice.UserID, puppet.UserID}, "for the bridge only")

	// The room key, then the message.
	b.waitFor("the room key and the message", 15*time.Second, func() bool {
		key := false
		for _, ev := range b.toDevice {
			key = key || (ev.Type == event.ToDeviceEncrypted && ev.ToDeviceID == puppet.DeviceID)
		}
		msg := false
		for _, ev := range b.events {
			msg = msg || ev.ID == msgID
		}
		return key && msg
	})
	b.mu.Lock()
	toDevice := slices.Clone(b.toDevice)
	var encrypted *event.Event
	for _, ev := range b.events {
		if ev.ID == msgID {
			encrypted = ev
		}
	}
	counts := slices.Clone(b.otkCounts)
	b.mu.Unlock()
	for _, ev := range toDevice {
		mach.HandleToDeviceEvent(ctx, ev)
	}
	dec, err := mach.DecryptMegolmEvent(ctx, encrypted)
	if err != nil {
		t.Fatalf("the bridge cannot decrypt alice's message: %v", err)
	}
	if body := dec.Content.AsMessage().Body; body != "for the bridge only" {
		t.Errorf("decrypted body = %q", body)
	}
	// Carol joins the room, then leaves it: the devices the bridge must
	// encrypt for change, then she is no longer its concern.
	carol := srv.Register("carol", "pw-carol-1")
	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID})
	must(t, err)
	_, err = carol.JoinRoom(ctx, room.RoomID.String(), nil)
	must(t, err)
	b.waitFor("carol in changed", 10*time.Second, func() bool {
		for _, dl := range b.deviceLists {
			if slices.Contains(dl.Changed, carol.UserID) {
				return true
			}
		}
		return false
	})
	_, err = carol.LeaveRoom(ctx, room.RoomID)
	must(t, err)
	b.waitFor("carol in left", 10*time.Second, func() bool {
		for _, dl := range b.deviceLists {
			if slices.Contains(dl.Left, carol.UserID) {
				return true
			}
		}
		return false
	})

	// Alice claimed one of the puppet's one-time keys to reach it: the
	// bridge was told the device's count.
	found := false
	for _, c := range counts {
		if c.UserID == puppet.UserID && c.DeviceID == puppet.DeviceID {
			found = true
			if c.SignedCurve25519 <= 0 {
				t.Errorf("one-time key count %d", c.SignedCurve25519)
			}
		}
	}
	if !found {
		t.Errorf("no one-time key count of the puppet's device: %+v", counts)
	}

	// Carol claims a key of the puppet's device and sends nothing: the
	// bridge is still told the lower count, so that it uploads more
	// before they run out.
	before := lastOTKCount(b, puppet.UserID, puppet.DeviceID)
	claim, err := carol.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
		puppet.UserID: {puppet.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
	must(t, err)
	if len(claim.OneTimeKeys[puppet.UserID][puppet.DeviceID]) != 1 {
		t.Fatalf("claim answered %+v", claim.OneTimeKeys)
	}
	b.waitFor("the count after carol's claim", 10*time.Second, func() bool {
		return lastOTKCountLocked(b, puppet.UserID, puppet.DeviceID) == before-1
	})

	// The puppet leaves the only room it shared with alice: her devices
	// are no longer the bridge's concern.
	_, err = puppet.LeaveRoom(ctx, room.RoomID)
	must(t, err)
	b.waitFor("alice in left after the puppet left", 10*time.Second, func() bool {
		for _, dl := range b.deviceLists {
			if slices.Contains(dl.Left, alice.UserID) {
				return true
			}
		}
		return false
	})
}

// lastOTKCount is the signed_curve25519 count of the last one-time key
// count the bridge received for a device (-1: none).
func lastOTKCount(b *bridge, user id.UserID, device id.DeviceID) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return lastOTKCountLocked(b, user, device)
}

func lastOTKCountLocked(b *bridge, user id.UserID, device id.DeviceID) int {
	n := -1
	for _, c := range b.otkCounts {
		if c.UserID == user && c.DeviceID == device {
			n = c.SignedCurve25519
		}
	}
	return n
}

// cryptoStore is mautrix-go's SQL crypto store on a SQLite file.
func cryptoStore(t *testing.T, client *mautrix.Client, log zerolog.Logger) *crypto.SQLCryptoStore {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+filepath.Join(t.TempDir(), "crypto.db")+"?_journal_mode=WAL&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	db, err := dbutil.NewWithDB(raw, "sqlite3")
	if err != nil {
		t.Fatal(err)
	}
	store := crypto.NewSQLCryptoStore(db, dbutil.ZeroLogger(log), client.UserID.String(), client.DeviceID, []byte("pickle"))
	must(t, store.DB.Upgrade(context.Background()))
	return store
}

// TestBridgeEncryptedRoomMSC4190 is the same as a bridge built on mautrix's
// IntentAPI does it: the puppet is registered through the as_token, its
// device is created by the bridge (MSC4190), and the Olm machine acts as
// that device by masquerading (user_id and device_id on each request).
func TestBridgeEncryptedRoomMSC4190(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", func(r *mas.Registration) {
		r.ID, r.SenderLocalpart = "signal", "signalbot"
		r.MSC3202, r.MSC4190 = true, true
		r.Namespaces.UserIDs = nil
		r.Namespaces.UserIDs.Register(regexpFor(`@sig_.*:tessera.test`), true)
	})
	srv := testserver.Start(t, b.option())
	must(t, b.as.SetHomeserverURL(srv.URL))
	alice := srv.Register("alice", "pw-alice-1")
	var room mautrix.RespCreateRoom
	_, err := alice.MakeRequest(ctx, "POST", alice.BuildClientURL("v3", "createRoom"), &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	}, &room)
	must(t, err)
	puppet := b.as.Intent(id.NewUserID("sig_1", "tessera.test"))
	must(t, puppet.EnsureRegistered(ctx))
	must(t, puppet.CreateDeviceMSC4190(ctx, "", "Signal bridge"))
	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: puppet.UserID})
	must(t, err)
	must(t, puppet.EnsureJoined(ctx, room.RoomID))

	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	cli := puppet.Client
	cli.Log = log
	cli.StateStore = mautrix.NewMemoryStateStore()
	mach := crypto.NewOlmMachine(cli, &log, cryptoStore(t, cli, log), cli.StateStore.(crypto.StateStore))
	must(t, mach.Load(ctx))
	must(t, mach.ShareKeys(ctx, -1))

	aliceDev := e2eetest.NewDevice(t, alice)
	deadline := time.Now().Add(10 * time.Second)
	for !aliceDev.Sees(room.RoomID, alice.UserID, puppet.UserID) {
		if time.Now().After(deadline) {
			t.Fatal("alice's client does not see the encrypted room with the puppet")
		}
		time.Sleep(20 * time.Millisecond)
	}
	msgID, _ := aliceDev.Send(room.RoomID, []id.UserID{alice.UserID, puppet.UserID}, "to signal, encrypted")
	b.waitFor("the room key and the message", 15*time.Second, func() bool {
		key, msg := false, false
		for _, ev := range b.toDevice {
			key = key || (ev.Type == event.ToDeviceEncrypted && ev.ToUserID == puppet.UserID && ev.ToDeviceID == cli.DeviceID)
		}
		for _, ev := range b.events {
			msg = msg || ev.ID == msgID
		}
		return key && msg
	})
	b.mu.Lock()
	toDevice := slices.Clone(b.toDevice)
	var encrypted *event.Event
	for _, ev := range b.events {
		if ev.ID == msgID {
			encrypted = ev
		}
	}
	b.mu.Unlock()
	for _, ev := range toDevice {
		mach.HandleToDeviceEvent(ctx, ev)
	}
	dec, err := mach.DecryptMegolmEvent(ctx, encrypted)
	if err != nil {
		t.Fatalf("the bridge cannot decrypt alice's message: %v", err)
	}
	if body := dec.Content.AsMessage().Body; body != "to signal, encrypted" {
		t.Errorf("decrypted body = %q", body)
	}
}
