//go:build goolm

package e2eetest

import (
	"context"
	"database/sql"
	"encoding/json"
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
)

// Device is one logged-in client with its own Olm machine, syncing in the
// background.
type Device struct {
	t      testing.TB
	Client *mautrix.Client
	Mach   *crypto.OlmMachine

	mu        sync.Mutex
	joined    map[id.RoomID]map[id.UserID]bool // joined members seen in sync
	encrypted map[id.RoomID]bool
	decrypted map[id.EventID]string // body of each decrypted m.room.message
	failures  map[id.EventID]error
	changed   chan struct{}
}

func NewDevice(t testing.TB, client *mautrix.Client) *Device {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("device", client.DeviceID.String()).Logger()
	client.Log = log
	client.StateStore = mautrix.NewMemoryStateStore()
	d := &Device{t: t, Client: client, joined: map[id.RoomID]map[id.UserID]bool{}, encrypted: map[id.RoomID]bool{},
		decrypted: map[id.EventID]string{}, failures: map[id.EventID]error{}, changed: make(chan struct{}, 1)}
	d.Mach = crypto.NewOlmMachine(client, &log, newCryptoStore(t, client, log), client.StateStore.(crypto.StateStore))
	if err := d.Mach.Load(ctx); err != nil {
		t.Fatalf("load olm machine: %v", err)
	}
	if err := d.Mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("upload device keys: %v", err)
	}
	syncer := client.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnSync(d.Mach.ProcessSyncResponse)
	syncer.OnEvent(client.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, func(ctx context.Context, evt *event.Event) {
		// The membership is read from the event's own JSON: mautrix-go's
		// state store keeps the parsed content and changes it in place
		// when this client joins, from another goroutine.
		var content struct {
			Membership event.Membership `json:"membership"`
		}
		_ = json.Unmarshal(evt.Content.VeryRaw, &content)
		d.Mach.HandleMemberEvent(ctx, evt)
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
func newCryptoStore(t testing.TB, client *mautrix.Client, log zerolog.Logger) *crypto.SQLCryptoStore {
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
func (d *Device) decrypt(ctx context.Context, evt *event.Event) {
	content := evt.Content.AsEncrypted()
	if content != nil && content.SessionID != "" {
		d.Mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, 10*time.Second)
	}
	dec, err := d.Mach.DecryptMegolmEvent(ctx, evt)
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

// WaitDecrypted waits until the device has decrypted eventID, and returns
// its body.
func (d *Device) WaitDecrypted(eventID id.EventID) string {
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
			d.t.Fatalf("%s did not decrypt %s (last error: %v)", d.Client.DeviceID, eventID, failure)
		}
	}
}

// send encrypts and sends a text message, sharing the room key with every
// device of users first.
func (d *Device) Send(roomID id.RoomID, users []id.UserID, body string) (id.EventID, id.SessionID) {
	d.t.Helper()
	ctx := context.Background()
	if err := d.Mach.ShareGroupSession(ctx, roomID, users); err != nil {
		d.t.Fatalf("share group session: %v", err)
	}
	enc, err := d.Mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		d.t.Fatalf("encrypt: %v", err)
	}
	resp, err := d.Client.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	if err != nil {
		d.t.Fatalf("send: %v", err)
	}
	return resp.EventID, enc.SessionID
}

// Sees reports whether the device's sync has shown the room encrypted and
// every one of users joined to it.
func (d *Device) Sees(roomID id.RoomID, users ...id.UserID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.encrypted[roomID] {
		return false
	}
	for _, u := range users {
		if !d.joined[roomID][u] {
			return false
		}
	}
	return true
}

// Joined reports whether the device's sync has shown userID joined to the
// room.
func (d *Device) Joined(roomID id.RoomID, userID id.UserID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.joined[roomID][userID]
}
