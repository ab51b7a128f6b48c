//go:build goolm

// Package e2eetest proves end-to-end encryption works against a real
// Tessera: real clients (mautrix-go's crypto package, pure-Go goolm)
// upload keys, cross-sign, exchange Olm-encrypted room keys over
// to-device messages, encrypt and decrypt Megolm messages, and restore
// history from server-side key backup on a new device.
//
// It needs the goolm build tag (the README's test command sets it):
// without it mautrix-go links libolm through cgo.
package e2eetest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEncryptedDMWithCrossSigningAndBackup(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Start(t)
	const password = "correct horse battery"
	aliceClient := srv.Register("alice", password)
	bobClient := srv.Register("bob", password)
	alice := NewDevice(t, aliceClient)
	bob := NewDevice(t, bobClient)

	// Cross-signing: each publishes master, self-signing and user-signing
	// keys (the first upload needs no password) and signs their device.
	for _, d := range []*Device{alice, bob} {
		keys, err := d.Mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		uia := func(resp *mautrix.RespUserInteractive) any {
			t.Errorf("%s: the first cross-signing upload asked for UIA: %+v", d.Client.UserID, resp)
			return nil
		}
		if err := d.Mach.PublishCrossSigningKeys(ctx, keys, uia); err != nil {
			t.Fatalf("%s: publish cross-signing keys: %v", d.Client.UserID, err)
		}
		if err := d.Mach.SignOwnMasterKey(ctx); err != nil {
			t.Fatalf("%s: sign own master key: %v", d.Client.UserID, err)
		}
		if err := d.Mach.SignOwnDevice(ctx, d.Mach.OwnIdentity()); err != nil {
			t.Fatalf("%s: sign own device: %v", d.Client.UserID, err)
		}
	}
	// Alice verifies Bob: she signs his master key with her user-signing
	// key, and then trusts him.
	bobKeys, err := alice.Mach.GetCrossSigningPublicKeys(ctx, bob.Client.UserID)
	if err != nil || bobKeys == nil {
		t.Fatalf("alice fetching bob's cross-signing keys: %v, %v", bobKeys, err)
	}
	if err := alice.Mach.SignUser(ctx, bob.Client.UserID, bobKeys.MasterKey); err != nil {
		t.Fatalf("alice signing bob: %v", err)
	}
	if _, err := alice.Mach.FetchKeys(ctx, []id.UserID{alice.Client.UserID, bob.Client.UserID}, true); err != nil {
		t.Fatal(err)
	}
	if trusted, err := alice.Mach.IsUserTrusted(ctx, bob.Client.UserID); err != nil || !trusted {
		t.Fatalf("alice trusts bob after signing him: %v, %v", trusted, err)
	}

	// An encrypted DM.
	users := []id.UserID{alice.Client.UserID, bob.Client.UserID}
	// The room is created and joined with plain requests: mautrix-go's
	// CreateRoom and JoinRoomByID also write the client's state store,
	// racing with the sync goroutine's readers of it (a bug of theirs,
	// which -race catches now and then). The sync fills the store anyway.
	var room mautrix.RespCreateRoom
	_, err = alice.Client.MakeRequest(ctx, http.MethodPost, alice.Client.BuildClientURL("v3", "createRoom"), &mautrix.ReqCreateRoom{
		Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.Client.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	}, &room)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Client.MakeRequest(ctx, http.MethodPost, bob.Client.BuildClientURL("v3", "join", room.RoomID), struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*Device{alice, bob} {
		waitFor(t, string(d.Client.UserID)+" seeing the room encrypted with both members", func() bool {
			return d.Sees(room.RoomID, alice.Client.UserID, bob.Client.UserID)
		})
	}

	hello, aliceSession := alice.Send(room.RoomID, users, "hello bob, this is secret")
	if got := bob.WaitDecrypted(hello); got != "hello bob, this is secret" {
		t.Fatalf("bob decrypted %q", got)
	}
	reply, bobSession := bob.Send(room.RoomID, users, "hi alice, secret received")
	if got := alice.WaitDecrypted(reply); got != "hi alice, secret received" {
		t.Fatalf("alice decrypted %q", got)
	}
	// The server never saw the plaintext.
	raw, err := alice.Client.GetEvent(ctx, room.RoomID, hello)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Type != event.EventEncrypted {
		t.Fatalf("stored event type %s", raw.Type)
	}

	// Server-side key backup: Alice backs up both sessions under a backup
	// key only she knows.
	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	version, err := alice.Client.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))},
	})
	if err != nil {
		t.Fatalf("create backup version: %v", err)
	}
	sessions := map[id.SessionID]mautrix.ReqKeyBackupData{}
	for _, sid := range []id.SessionID{aliceSession, bobSession} {
		igs, err := alice.Mach.CryptoStore.GetGroupSession(ctx, room.RoomID, sid)
		if err != nil || igs == nil {
			t.Fatalf("alice's inbound session %s: %v", sid, err)
		}
		exported, err := igs.Internal.Export(igs.Internal.FirstKnownIndex())
		if err != nil {
			t.Fatal(err)
		}
		enc, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm:          id.AlgorithmMegolmV1,
			ForwardingKeyChain: []string{},
			SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: igs.SigningKey},
			SenderKey:          igs.SenderKey,
			SessionKey:         string(exported),
		})
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		sessions[sid] = mautrix.ReqKeyBackupData{FirstMessageIndex: int(igs.Internal.FirstKnownIndex()), IsVerified: true, SessionData: data}
	}
	put, err := alice.Client.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{
		Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{room.RoomID: {Sessions: sessions}},
	})
	if err != nil || put.Count != 2 || put.ETag == "" {
		t.Fatalf("backing up keys: %+v, %v", put, err)
	}

	// A new device of Alice's restores the backup and reads the history.
	third, err := srv.Client("", "").Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password: password, InitialDeviceDisplayName: "restored",
	})
	if err != nil {
		t.Fatal(err)
	}
	newClient := srv.Client(third.UserID, third.AccessToken)
	newClient.DeviceID = third.DeviceID
	restored := NewDevice(t, newClient)
	gotVersion, err := restored.Mach.DownloadAndStoreLatestKeyBackup(ctx, backupKey)
	if err != nil || gotVersion != version.Version {
		t.Fatalf("restoring the backup: version %q, %v", gotVersion, err)
	}
	msgs, err := restored.Client.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	want := map[id.EventID]string{hello: "hello bob, this is secret", reply: "hi alice, secret received"}
	for _, evt := range msgs.Chunk {
		body, ok := want[evt.ID]
		if !ok {
			continue
		}
		evt.RoomID = room.RoomID
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			t.Fatal(err)
		}
		dec, err := restored.Mach.DecryptMegolmEvent(ctx, evt)
		if err != nil {
			t.Fatalf("the restored device cannot decrypt %s: %v", evt.ID, err)
		}
		if got := dec.Content.AsMessage().Body; got != body {
			t.Fatalf("restored device decrypted %q, want %q", got, body)
		}
		delete(want, evt.ID)
	}
	if len(want) > 0 {
		t.Fatalf("history not found in /messages: %v", want)
	}
}
