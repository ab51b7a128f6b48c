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
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// device is one logged-in client with its own Olm machine, syncing in the
// background.
type device struct {
	t      *testing.T
	client *mautrix.Client
	mach   *crypto.OlmMachine

	mu        sync.Mutex
	joined    map[id.RoomID]map[id.UserID]bool // joined members seen in sync
	encrypted map[id.RoomID]bool
	decrypted map[id.EventID]string // body of each decrypted m.room.message
	failures  map[id.EventID]error
	changed   chan struct{}
}

func newDevice(t *testing.T, client *mautrix.Client) *device {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("device", client.DeviceID.String()).Logger()
	client.Log = log
	client.StateStore = mautrix.NewMemoryStateStore()
	d := &device{t: t, client: client, joined: map[id.RoomID]map[id.UserID]bool{}, encrypted: map[id.RoomID]bool{},
		decrypted: map[id.EventID]string{}, failures: map[id.EventID]error{}, changed: make(chan struct{}, 1)}
	d.mach = crypto.NewOlmMachine(client, &log, newCryptoStore(t, client, log), client.StateStore.(crypto.StateStore))
	if err := d.mach.Load(ctx); err != nil {
		t.Fatalf("load olm machine: %v", err)
	}
	if err := d.mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("upload device keys: %v", err)
	}
	syncer := client.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnSync(d.mach.ProcessSyncResponse)
	syncer.OnEvent(client.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, func(ctx context.Context, evt *event.Event) {
		// The membership is read from the event's own JSON: mautrix-go's
		// state store keeps the parsed content and changes it in place
		// when this client joins, from another goroutine.
		var content struct {
			Membership event.Membership `json:"membership"`
		}
		_ = json.Unmarshal(evt.Content.VeryRaw, &content)
		d.mach.HandleMemberEvent(ctx, evt)
		d.mu.Lock()
		if d.joined[evt.RoomID] == nil {
			d.joined[evt.RoomID] = map[id.UserID]bool{}
		}
		d.joined[evt.RoomID][id.UserID(evt.GetStateKey())] = content.Membership == event.MembershipJoin
		d.mu.Unlock()
	})
	syncer.OnEventType(event.StateEncryption, func(ctx context.Context, evt *event.Event) {
		d.mu.Lock()
		d.encrypted[evt.RoomID] = true
		d.mu.Unlock()
	})
	syncer.OnEventType(event.EventEncrypted, func(ctx context.Context, evt *event.Event) { d.decrypt(ctx, evt) })
	syncCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for syncCtx.Err() == nil {
			if err := client.SyncWithContext(syncCtx); err != nil && syncCtx.Err() == nil {
				t.Logf("%s: sync: %v", client.DeviceID, err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// newCryptoStore is mautrix-go's SQL crypto store on a SQLite file of the
// device's own (its in-memory store is not safe for the concurrent use a
// syncing client makes of it).
func newCryptoStore(t *testing.T, client *mautrix.Client, log zerolog.Logger) *crypto.SQLCryptoStore {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+filepath.Join(t.TempDir(), "crypto.db")+"?_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=on")
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	t.Cleanup(func() { raw.Close() })
	db, err := dbutil.NewWithDB(raw, "sqlite3")
	if err != nil {
		t.Fatal(err)
	}
	store := crypto.NewSQLCryptoStore(db, dbutil.ZeroLogger(log), client.UserID.String(), client.DeviceID, []byte("test pickle key"))
	if err := store.DB.Upgrade(context.Background()); err != nil {
		t.Fatalf("crypto store: %v", err)
	}
	return store
}

// decrypt decrypts an encrypted timeline event, waiting a little for its
// room key (which comes by to-device message) if need be.
func (d *device) decrypt(ctx context.Context, evt *event.Event) {
	content := evt.Content.AsEncrypted()
	if content != nil && content.SessionID != "" {
		d.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, 5*time.Second)
	}
	dec, err := d.mach.DecryptMegolmEvent(ctx, evt)
	d.mu.Lock()
	if err != nil {
		d.failures[evt.ID] = err
	} else if msg := dec.Content.AsMessage(); msg != nil {
		d.decrypted[evt.ID] = msg.Body
	}
	d.mu.Unlock()
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// waitDecrypted waits until the device has decrypted eventID, and returns
// its body.
func (d *device) waitDecrypted(eventID id.EventID) string {
	d.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		d.mu.Lock()
		body, ok := d.decrypted[eventID]
		failure := d.failures[eventID]
		d.mu.Unlock()
		if ok {
			return body
		}
		select {
		case <-d.changed:
		case <-deadline:
			d.t.Fatalf("%s did not decrypt %s (last error: %v)", d.client.DeviceID, eventID, failure)
		}
	}
}

// send encrypts and sends a text message, sharing the room key with every
// device of users first.
func (d *device) send(roomID id.RoomID, users []id.UserID, body string) (id.EventID, id.SessionID) {
	d.t.Helper()
	ctx := context.Background()
	if err := d.mach.ShareGroupSession(ctx, roomID, users); err != nil {
		d.t.Fatalf("share group session: %v", err)
	}
	enc, err := d.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		d.t.Fatalf("encrypt: %v", err)
	}
	resp, err := d.client.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	if err != nil {
		d.t.Fatalf("send: %v", err)
	}
	return resp.EventID, enc.SessionID
}

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
	alice := newDevice(t, aliceClient)
	bob := newDevice(t, bobClient)

	// Cross-signing: each publishes master, self-signing and user-signing
	// keys (the first upload needs no password) and signs their device.
	for _, d := range []*device{alice, bob} {
		keys, err := d.mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		uia := func(resp *mautrix.RespUserInteractive) any {
			t.Errorf("%s: the first cross-signing upload asked for UIA: %+v", d.client.UserID, resp)
			return nil
		}
		if err := d.mach.PublishCrossSigningKeys(ctx, keys, uia); err != nil {
			t.Fatalf("%s: publish cross-signing keys: %v", d.client.UserID, err)
		}
		if err := d.mach.SignOwnMasterKey(ctx); err != nil {
			t.Fatalf("%s: sign own master key: %v", d.client.UserID, err)
		}
		if err := d.mach.SignOwnDevice(ctx, d.mach.OwnIdentity()); err != nil {
			t.Fatalf("%s: sign own device: %v", d.client.UserID, err)
		}
	}
	// Alice verifies Bob: she signs his master key with her user-signing
	// key, and then trusts him.
	bobKeys, err := alice.mach.GetCrossSigningPublicKeys(ctx, bob.client.UserID)
	if err != nil || bobKeys == nil {
		t.Fatalf("alice fetching bob's cross-signing keys: %v, %v", bobKeys, err)
	}
	if err := alice.mach.SignUser(ctx, bob.client.UserID, bobKeys.MasterKey); err != nil {
		t.Fatalf("alice signing bob: %v", err)
	}
	if _, err := alice.mach.FetchKeys(ctx, []id.UserID{alice.client.UserID, bob.client.UserID}, true); err != nil {
		t.Fatal(err)
	}
	if trusted, err := alice.mach.IsUserTrusted(ctx, bob.client.UserID); err != nil || !trusted {
		t.Fatalf("alice trusts bob after signing him: %v, %v", trusted, err)
	}

	// An encrypted DM.
	users := []id.UserID{alice.client.UserID, bob.client.UserID}
	// The room is created and joined with plain requests: mautrix-go's
	// CreateRoom and JoinRoomByID also write the client's state store,
	// racing with the sync goroutine's readers of it (a bug of theirs,
	// which -race catches now and then). The sync fills the store anyway.
	var room mautrix.RespCreateRoom
	_, err = alice.client.MakeRequest(ctx, http.MethodPost, alice.client.BuildClientURL("v3", "createRoom"), &mautrix.ReqCreateRoom{
		Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.client.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	}, &room)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.client.MakeRequest(ctx, http.MethodPost, bob.client.BuildClientURL("v3", "join", room.RoomID), struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*device{alice, bob} {
		waitFor(t, string(d.client.UserID)+" seeing the room encrypted with both members", func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.encrypted[room.RoomID] && d.joined[room.RoomID][alice.client.UserID] && d.joined[room.RoomID][bob.client.UserID]
		})
	}

	hello, aliceSession := alice.send(room.RoomID, users, "hello bob, this is secret")
	if got := bob.waitDecrypted(hello); got != "hello bob, this is secret" {
		t.Fatalf("bob decrypted %q", got)
	}
	reply, bobSession := bob.send(room.RoomID, users, "hi alice, secret received")
	if got := alice.waitDecrypted(reply); got != "hi alice, secret received" {
		t.Fatalf("alice decrypted %q", got)
	}
	// The server never saw the plaintext.
	raw, err := alice.client.GetEvent(ctx, room.RoomID, hello)
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
	version, err := alice.client.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))},
	})
	if err != nil {
		t.Fatalf("create backup version: %v", err)
	}
	sessions := map[id.SessionID]mautrix.ReqKeyBackupData{}
	for _, sid := range []id.SessionID{aliceSession, bobSession} {
		igs, err := alice.mach.CryptoStore.GetGroupSession(ctx, room.RoomID, sid)
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
	put, err := alice.client.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{
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
	restored := newDevice(t, newClient)
	gotVersion, err := restored.mach.DownloadAndStoreLatestKeyBackup(ctx, backupKey)
	if err != nil || gotVersion != version.Version {
		t.Fatalf("restoring the backup: version %q, %v", gotVersion, err)
	}
	msgs, err := restored.client.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
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
		dec, err := restored.mach.DecryptMegolmEvent(ctx, evt)
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
