//go:build goolm

package federation_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/e2eetest"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// An encrypted conversation between two servers, with real clients:
// mautrix-go's crypto package (pure-Go goolm, hence the build tag) fetches
// the other user's device keys and claims a one-time key through its own
// server, which asks the other; the Olm-encrypted room key travels as a
// to-device message over federation; the Megolm-encrypted messages as
// events.

func TestEncryptedConversationAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := e2eetest.NewDevice(t, a.Register("alice", "password-alice"))
	bob := e2eetest.NewDevice(t, b.Register("bob", "password-bob"))

	// Each publishes cross-signing keys and signs their own device, which
	// the other's server must then serve them.
	for _, d := range []*e2eetest.Device{alice, bob} {
		keys, err := d.Mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Mach.PublishCrossSigningKeys(ctx, keys, func(*mautrix.RespUserInteractive) any { return nil }); err != nil {
			t.Fatalf("%s: publish cross-signing keys: %v", d.Client.UserID, err)
		}
		if err := d.Mach.SignOwnMasterKey(ctx); err != nil {
			t.Fatalf("%s: sign own master key: %v", d.Client.UserID, err)
		}
		if err := d.Mach.SignOwnDevice(ctx, d.Mach.OwnIdentity()); err != nil {
			t.Fatalf("%s: sign own device: %v", d.Client.UserID, err)
		}
	}

	// A public encrypted room on A, joined from B. The requests are made
	// raw: mautrix-go's CreateRoom and JoinRoom write the state store,
	// racing with the sync goroutine.
	var room mautrix.RespCreateRoom
	if _, err := alice.Client.MakeRequest(ctx, http.MethodPost, alice.Client.BuildClientURL("v3", "createRoom"), &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	}, &room); err != nil {
		t.Fatal(err)
	}
	join := bob.Client.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", room.RoomID}, map[string]string{"via": a.Config.ServerName})
	if _, err := bob.Client.MakeRequest(ctx, http.MethodPost, join, struct{}{}, nil); err != nil {
		t.Fatalf("bob joins through A: %v", err)
	}
	// Bob learns that the room is encrypted and who is in it from his
	// sync's state, which came with the join over federation.
	waitJoined(t, alice, room.RoomID, bob.Client.UserID)
	users := []id.UserID{alice.Client.UserID, bob.Client.UserID}
	for _, d := range []*e2eetest.Device{alice, bob} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			ok := d.Sees(room.RoomID, users...)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw the room encrypted with both members", d.Client.UserID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Each sees the other's cross-signing keys, from the other server.
	for _, p := range [][2]*e2eetest.Device{{alice, bob}, {bob, alice}} {
		keys, err := p[0].Mach.GetCrossSigningPublicKeys(ctx, p[1].Client.UserID)
		if err != nil || keys == nil || keys.MasterKey == "" {
			t.Fatalf("%s fetching %s's cross-signing keys: %+v, %v", p[0].Client.UserID, p[1].Client.UserID, keys, err)
		}
	}

	hello, _ := alice.Send(room.RoomID, users, "hello bob, across servers")
	if got := bob.WaitDecrypted(hello); got != "hello bob, across servers" {
		t.Fatalf("bob decrypted %q", got)
	}
	reply, _ := bob.Send(room.RoomID, users, "hi alice, received")
	if got := alice.WaitDecrypted(reply); got != "hi alice, received" {
		t.Fatalf("alice decrypted %q", got)
	}
}

// waitJoined waits until d has seen userID join roomID.
func waitJoined(t *testing.T, d *e2eetest.Device, roomID id.RoomID, userID id.UserID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := d.Joined(roomID, userID)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %s join", d.Client.UserID, userID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
