//go:build goolm

package federation_test

import (
	"context"
	"database/sql"
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
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// An encrypted conversation between two servers, with real clients:
// mautrix-go's crypto package (pure-Go goolm, hence the build tag) fetches
// the other user's device keys and claims a one-time key through its own
// server, which asks the other; the Olm-encrypted room key travels as a
// to-device message over federation; the Megolm-encrypted messages as
// events.

// olmDevice is one logged-in client with its own Olm machine, syncing in
// the background.
type olmDevice struct {
	t      *testing.T
	client *mautrix.Client
	mach   *crypto.OlmMachine

	mu        sync.Mutex
	joined    map[id.RoomID]map[id.UserID]bool
	encrypted map[id.RoomID]bool
	decrypted map[id.EventID]string
	failures  map[id.EventID]error
	changed   chan struct{}
}

func newOlmDevice(t *testing.T, client *mautrix.Client) *olmDevice {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("device", client.DeviceID.String()).Logger()
	client.Log = log
	client.StateStore = mautrix.NewMemoryStateStore()
	d := &olmDevice{t: t, client: client, joined: map[id.RoomID]map[id.UserID]bool{}, encrypted: map[id.RoomID]bool{},
		decrypted: map[id.EventID]string{}, failures: map[id.EventID]error{}, changed: make(chan struct{}, 1)}
	d.mach = crypto.NewOlmMachine(client, &log, newOlmCryptoStore(t, client, log), client.StateStore.(crypto.StateStore))
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
		// Read from the event's own JSON: the state store changes the
		// parsed content in place from another goroutine.
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

// newOlmCryptoStore is mautrix-go's SQL crypto store on a SQLite file of
// the device's own (its in-memory store is not safe for concurrent use).
func newOlmCryptoStore(t *testing.T, client *mautrix.Client, log zerolog.Logger) *crypto.SQLCryptoStore {
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
// room key (a to-device message, from the other server) if need be.
func (d *olmDevice) decrypt(ctx context.Context, evt *event.Event) {
	content := evt.Content.AsEncrypted()
	if content != nil && content.SessionID != "" {
		d.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, 10*time.Second)
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

func (d *olmDevice) waitDecrypted(eventID id.EventID) string {
	d.t.Helper()
	deadline := time.After(30 * time.Second)
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
			d.t.Fatalf("%s did not decrypt %s (last error: %v)", d.client.UserID, eventID, failure)
		}
	}
}

// send encrypts and sends a text message, sharing the room key with every
// device of users first.
func (d *olmDevice) send(roomID id.RoomID, users []id.UserID, body string) id.EventID {
	d.t.Helper()
	ctx := context.Background()
	if err := d.mach.ShareGroupSession(ctx, roomID, users); err != nil {
		d.t.Fatalf("%s: share group session: %v", d.client.UserID, err)
	}
	enc, err := d.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		d.t.Fatalf("encrypt: %v", err)
	}
	resp, err := d.client.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	if err != nil {
		d.t.Fatalf("send: %v", err)
	}
	return resp.EventID
}

func TestEncryptedConversationAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := newOlmDevice(t, a.Register("alice", "password-alice"))
	bob := newOlmDevice(t, b.Register("bob", "password-bob"))

	// Each publishes cross-signing keys and signs their own device, which
	// the other's server must then serve them.
	for _, d := range []*olmDevice{alice, bob} {
		keys, err := d.mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.mach.PublishCrossSigningKeys(ctx, keys, func(*mautrix.RespUserInteractive) any { return nil }); err != nil {
			t.Fatalf("%s: publish cross-signing keys: %v", d.client.UserID, err)
		}
		if err := d.mach.SignOwnMasterKey(ctx); err != nil {
			t.Fatalf("%s: sign own master key: %v", d.client.UserID, err)
		}
		if err := d.mach.SignOwnDevice(ctx, d.mach.OwnIdentity()); err != nil {
			t.Fatalf("%s: sign own device: %v", d.client.UserID, err)
		}
	}

	// A public encrypted room on A, joined from B. The requests are made
	// raw: mautrix-go's CreateRoom and JoinRoom write the state store,
	// racing with the sync goroutine.
	var room mautrix.RespCreateRoom
	if _, err := alice.client.MakeRequest(ctx, http.MethodPost, alice.client.BuildClientURL("v3", "createRoom"), &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	}, &room); err != nil {
		t.Fatal(err)
	}
	join := bob.client.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", room.RoomID}, map[string]string{"via": a.Config.ServerName})
	if _, err := bob.client.MakeRequest(ctx, http.MethodPost, join, struct{}{}, nil); err != nil {
		t.Fatalf("bob joins through A: %v", err)
	}
	// Bob learns that the room is encrypted and who is in it from his
	// sync's state, which came with the join over federation.
	waitJoined(t, alice, room.RoomID, bob.client.UserID)
	users := []id.UserID{alice.client.UserID, bob.client.UserID}
	for _, d := range []*olmDevice{alice, bob} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			d.mu.Lock()
			ok := d.encrypted[room.RoomID] && d.joined[room.RoomID][users[0]] && d.joined[room.RoomID][users[1]]
			d.mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw the room encrypted with both members", d.client.UserID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Each sees the other's cross-signing keys, from the other server.
	for _, p := range [][2]*olmDevice{{alice, bob}, {bob, alice}} {
		keys, err := p[0].mach.GetCrossSigningPublicKeys(ctx, p[1].client.UserID)
		if err != nil || keys == nil || keys.MasterKey == "" {
			t.Fatalf("%s fetching %s's cross-signing keys: %+v, %v", p[0].client.UserID, p[1].client.UserID, keys, err)
		}
	}

	hello := alice.send(room.RoomID, users, "hello bob, across servers")
	if got := bob.waitDecrypted(hello); got != "hello bob, across servers" {
		t.Fatalf("bob decrypted %q", got)
	}
	reply := bob.send(room.RoomID, users, "hi alice, received")
	if got := alice.waitDecrypted(reply); got != "hi alice, received" {
		t.Fatalf("alice decrypted %q", got)
	}
}

// waitJoined waits until d has seen userID join roomID.
func waitJoined(t *testing.T, d *olmDevice, roomID id.RoomID, userID id.UserID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		d.mu.Lock()
		ok := d.joined[roomID][userID]
		d.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %s join", d.client.UserID, userID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
