package appservice_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// bridge is a bridge-like application service built on mautrix-go's
// appservice package (what the mautrix bridges run on): its HTTP handlers
// receive the transactions, dedupe them by ID and parse the events, which
// the bridge collects here. Its HTTP server can be stopped and started
// again on the same address, to play a bridge that is down for a while.
type bridge struct {
	t    *testing.T
	as   *mas.AppService
	reg  *mas.Registration
	addr string
	path string // the registration file

	srvMu sync.Mutex
	srv   *http.Server

	mu        sync.Mutex
	events    []*event.Event // room events, in the order received
	ephemeral []*event.Event
	toDevice  []*event.Event
	// deviceLists and otkCounts are what MSC3202 brought.
	deviceLists []*mautrix.DeviceLists
	otkCounts   []*mautrix.OTKCount
	// attempts are the transaction IDs of every PUT, retries included.
	attempts []string
	// bodies are the raw transaction bodies the bridge accepted, by ID.
	bodies map[string]json.RawMessage
	// queries are the paths of the user and alias queries.
	queries []string
	// queryAnswer, if set, answers the queries.
	queryAnswer func(path string) bool
}

func newBridge(t *testing.T, hsDomain string, edit func(r *mas.Registration)) *bridge {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	reg := mas.CreateRegistration()
	reg.ID = "testbridge"
	reg.URL = "http://" + addr
	reg.SenderLocalpart = "bridgebot"
	reg.EphemeralEvents = true
	reg.Namespaces.UserIDs.Register(regexpFor(`@puppet_.*:`+hsDomain), false)
	reg.Namespaces.RoomAliases.Register(regexpFor(`#bridged_.*:`+hsDomain), false)
	if edit != nil {
		edit(reg)
	}
	path := filepath.Join(t.TempDir(), "registration.yaml")
	if err := reg.Save(path); err != nil {
		t.Fatal(err)
	}
	as := mas.Create()
	as.Registration = reg
	as.HomeserverDomain = hsDomain
	b := &bridge{t: t, as: as, reg: reg, addr: addr, path: path, bodies: map[string]json.RawMessage{}}
	as.QueryHandler = b
	go b.collect()
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *bridge) QueryAlias(alias id.RoomAlias) bool { return b.query("alias " + alias.String()) }
func (b *bridge) QueryUser(userID id.UserID) bool    { return b.query("user " + userID.String()) }

func (b *bridge) query(what string) bool {
	b.mu.Lock()
	b.queries = append(b.queries, what)
	f := b.queryAnswer
	b.mu.Unlock()
	return f != nil && f(what)
}

// collect takes the events mautrix dispatches.
func (b *bridge) collect() {
	for {
		select {
		case ev := <-b.as.Events:
			b.mu.Lock()
			if ev.Type.Class == event.EphemeralEventType {
				b.ephemeral = append(b.ephemeral, ev)
			} else {
				b.events = append(b.events, ev)
			}
			b.mu.Unlock()
		case ev := <-b.as.ToDeviceEvents:
			b.mu.Lock()
			b.toDevice = append(b.toDevice, ev)
			b.mu.Unlock()
		case dl := <-b.as.DeviceLists:
			b.mu.Lock()
			b.deviceLists = append(b.deviceLists, dl)
			b.mu.Unlock()
		case c := <-b.as.OTKCounts:
			b.mu.Lock()
			b.otkCounts = append(b.otkCounts, c)
			b.mu.Unlock()
		}
	}
}

// start serves the appservice's router, recording each transaction.
func (b *bridge) start() {
	b.t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old listener's port may take a moment
		if l, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("bridge listen: %v", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
			txn := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			b.mu.Lock()
			b.attempts = append(b.attempts, txn)
			if r.Header.Get("Authorization") == "Bearer "+b.reg.ServerToken {
				b.bodies[txn] = body
			}
			b.mu.Unlock()
		}
		b.as.Router.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h}
	b.srvMu.Lock()
	b.srv = srv
	b.srvMu.Unlock()
	go srv.Serve(l)
}

func (b *bridge) stop() {
	b.srvMu.Lock()
	defer b.srvMu.Unlock()
	if b.srv != nil {
		b.srv.Close()
		b.srv = nil
	}
}

// option adds the bridge's registration to a test server's config.
func (b *bridge) option() testserver.Option {
	return func(c *config.Config) { c.AppServices = append(c.AppServices, b.path) }
}

// waitFor polls the bridge's state until cond holds.
func (b *bridge) waitFor(what string, timeout time.Duration, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b.mu.Lock()
		ok := cond()
		b.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bodies of the messages the bridge has received in a room, in order
// (caller holds mu).
func (b *bridge) messages(roomID id.RoomID) []string {
	var out []string
	for _, ev := range b.events {
		if ev.RoomID == roomID && ev.Type == event.EventMessage {
			out = append(out, ev.Content.AsMessage().Body)
		}
	}
	return out
}

func regexpFor(s string) *regexp.Regexp {
	return regexp.MustCompile(strings.ReplaceAll(s, ".test", `\.test`))
}

func send(t *testing.T, c *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), roomID, body)
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func equal(a, b []string) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestBridgeReceivesRoomEvents: a bridge's puppet is invited (the invite
// reaches the bridge: a member event about a user in its namespace),
// joins, and from then on every event of the room arrives, once, in order;
// events of rooms without its users do not.
func TestBridgeReceivesRoomEvents(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", nil)
	srv := testserver.Start(t, b.option())
	alice := srv.Register("alice", "pw-alice-1")
	puppet := srv.Register("puppet_1", "pw-puppet-1")

	other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err)
	send(t, alice, other.RoomID, "not for the bridge")

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	must(t, err)
	_, err = alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: puppet.UserID})
	must(t, err)
	b.waitFor("the invite", 10*time.Second, func() bool {
		for _, ev := range b.events {
			if ev.Type == event.StateMember && ev.GetStateKey() == puppet.UserID.String() &&
				ev.Content.AsMember().Membership == event.MembershipInvite && ev.RoomID == room.RoomID {
				return true
			}
		}
		return false
	})
	_, err = puppet.JoinRoom(ctx, room.RoomID.String(), nil)
	must(t, err)
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, fmt.Sprintf("hello %d", i))
		send(t, alice, room.RoomID, want[i])
	}
	send(t, alice, other.RoomID, "still not for the bridge")
	// The puppet's own message carries its transaction ID: the bridge
	// knows its echo.
	_, err = puppet.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
		&event.MessageEventContent{MsgType: event.MsgText, Body: "from the puppet"},
		mautrix.ReqSendEvent{TransactionID: "puppet-txn-1"})
	must(t, err)
	want = append(want, "from the puppet")
	b.waitFor("six messages", 10*time.Second, func() bool { return len(b.messages(room.RoomID)) >= 6 })
	time.Sleep(200 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	if got := b.messages(room.RoomID); !equal(got, want) {
		t.Errorf("messages = %q, want %q", got, want)
	}
	for _, ev := range b.events {
		if ev.RoomID == other.RoomID {
			t.Errorf("the bridge got %s of a room without its users", ev.Type.Type)
		}
		if ev.Sender == "" || ev.ID == "" || ev.Timestamp == 0 {
			t.Errorf("an event without sender, ID or timestamp: %+v", ev)
		}
		if ev.Type == event.EventMessage {
			wantTxn := ""
			if ev.Sender == puppet.UserID {
				wantTxn = "puppet-txn-1"
			}
			if ev.Unsigned.TransactionID != wantTxn {
				t.Errorf("message from %s: transaction_id %q, want %q", ev.Sender, ev.Unsigned.TransactionID, wantTxn)
			}
		}
	}
	// Every attempt carried the hs_token: each was accepted once.
	if len(b.attempts) != len(b.bodies) {
		t.Errorf("%d attempts for %d transactions with nothing down", len(b.attempts), len(b.bodies))
	}
}

// TestBridgeDownAndServerRestart: while the bridge is down, events queue;
// the transaction being retried keeps its ID across a server restart; once
// the bridge is back, everything arrives, in order, and nothing twice.
func TestBridgeDownAndServerRestart(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", nil)
	srv := testserver.Start(t, b.option())
	alice := srv.Register("alice", "pw-alice-1")
	puppet := srv.Register("puppet_1", "pw-puppet-1")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err)
	_, err = puppet.JoinRoom(ctx, room.RoomID.String(), nil)
	must(t, err)
	var want []string
	say := func(body string) {
		want = append(want, body)
		send(t, alice, room.RoomID, body)
	}
	say("before")
	b.waitFor("the first message", 10*time.Second, func() bool { return len(b.messages(room.RoomID)) == 1 })

	// Down: a transaction is built and fails.
	b.stop()
	for i := 0; i < 5; i++ {
		say(fmt.Sprintf("while down %d", i))
	}
	time.Sleep(1500 * time.Millisecond)
	b.mu.Lock()
	nAttempts := len(b.attempts)
	b.mu.Unlock()

	// The server restarts with the transaction pending; more events come.
	srv.Restart()
	alice = srv.Client(alice.UserID, alice.AccessToken)
	for i := 0; i < 3; i++ {
		say(fmt.Sprintf("after restart %d", i))
	}
	time.Sleep(500 * time.Millisecond)
	b.start()
	b.waitFor("every message", 30*time.Second, func() bool { return len(b.messages(room.RoomID)) >= len(want) })
	time.Sleep(300 * time.Millisecond)

	b.mu.Lock()
	defer b.mu.Unlock()
	if got := b.messages(room.RoomID); !equal(got, want) {
		t.Fatalf("messages = %q, want %q", got, want)
	}
	seen := map[id.EventID]bool{}
	for _, ev := range b.events {
		if seen[ev.ID] {
			t.Errorf("event %s delivered twice", ev.ID)
		}
		seen[ev.ID] = true
	}
	// The first transaction after the bridge came back is the one that
	// was pending before the restart: the same ID, the same body.
	if nAttempts >= len(b.attempts) {
		t.Fatalf("no attempt after the bridge came back")
	}
	first := b.attempts[nAttempts]
	var pending struct {
		Events []struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"events"`
	}
	must(t, json.Unmarshal(b.bodies[first], &pending))
	if len(pending.Events) == 0 || pending.Events[0].Content.Body != "while down 0" {
		t.Errorf("first transaction after the restart %s starts with %+v, want the pending one", first, pending.Events)
	}
	sawBefore := false
	for _, a := range b.attempts[:nAttempts] {
		sawBefore = sawBefore || a == first
	}
	// The bridge was down, so its attempts were not recorded; the ID
	// must not be one the bridge accepted before.
	if sawBefore {
		t.Errorf("transaction %s was accepted before and sent again", first)
	}
}

// TestBridgeEphemeralAndToDevice: typing and receipts in a room with a
// puppet, and to-device messages for a puppet's device, reach a bridge
// that asked for ephemeral events (MSC2409).
func TestBridgeEphemeralAndToDevice(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", nil)
	srv := testserver.Start(t, b.option())
	alice := srv.Register("alice", "pw-alice-1")
	puppet := srv.Register("puppet_1", "pw-puppet-1")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err)
	_, err = puppet.JoinRoom(ctx, room.RoomID.String(), nil)
	must(t, err)
	msg := send(t, alice, room.RoomID, "read me")

	_, err = alice.UserTyping(ctx, room.RoomID, true, 20*time.Second)
	must(t, err)
	b.waitFor("alice typing", 10*time.Second, func() bool {
		for _, ev := range b.ephemeral {
			if ev.Type == event.EphemeralEventTyping && ev.RoomID == room.RoomID {
				ids := ev.Content.AsTyping().UserIDs
				if len(ids) == 1 && ids[0] == alice.UserID {
					return true
				}
			}
		}
		return false
	})
	must(t, alice.SendReceipt(ctx, room.RoomID, msg, event.ReceiptTypeRead, nil))
	b.waitFor("alice's receipt", 10*time.Second, func() bool {
		for _, ev := range b.ephemeral {
			if ev.Type == event.EphemeralEventReceipt && ev.RoomID == room.RoomID {
				rc := *ev.Content.AsReceipt()
				if _, ok := rc[msg][event.ReceiptTypeRead][alice.UserID]; ok {
					return true
				}
			}
		}
		return false
	})
	// A private receipt is nobody else's business.
	must(t, alice.SendReceipt(ctx, room.RoomID, msg, event.ReceiptTypeReadPrivate, nil))

	// Presence of a user who shares a room with a puppet.
	must(t, alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "away from keyboard"}))
	b.waitFor("alice's presence", 10*time.Second, func() bool {
		for _, ev := range b.ephemeral {
			if ev.Type == event.EphemeralEventPresence && ev.Sender == alice.UserID {
				p := ev.Content.AsPresence()
				if p.Presence == event.PresenceUnavailable && p.StatusMessage == "away from keyboard" {
					return true
				}
			}
		}
		return false
	})

	_, err = alice.SendToDevice(ctx, event.NewEventType("com.example.ping"), &mautrix.ReqSendToDevice{
		Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			puppet.UserID: {puppet.DeviceID: {Raw: map[string]any{"n": 7}}},
		},
	})
	must(t, err)
	b.waitFor("the to-device message", 10*time.Second, func() bool {
		for _, ev := range b.toDevice {
			if ev.Type.Type == "com.example.ping" && ev.ToUserID == puppet.UserID && ev.ToDeviceID == puppet.DeviceID &&
				ev.Sender == alice.UserID && ev.Content.Raw["n"] == float64(7) {
				return true
			}
		}
		return false
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ev := range b.ephemeral {
		if ev.Type == event.EphemeralEventReceipt {
			for _, byType := range *ev.Content.AsReceipt() {
				if _, ok := byType[event.ReceiptTypeReadPrivate]; ok {
					t.Errorf("a private receipt reached the bridge")
				}
			}
		}
	}
}

// TestBridgeUserAndAliasQueries: a profile lookup of an unknown user in the
// bridge's namespace, and a join by an unknown alias in it, ask the bridge,
// which creates them; the lookup and the join then succeed. Users and
// aliases outside its namespaces are not asked about.
func TestBridgeUserAndAliasQueries(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", nil)
	srv := testserver.Start(t, b.option())
	alice := srv.Register("alice", "pw-alice-1")
	creator := srv.Register("puppet_creator", "pw-creator-1")
	var created []string
	answer := func(what string) bool {
		switch what {
		case "user @puppet_new:tessera.test":
			c := srv.Client("", "")
			_, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "puppet_new", Password: "pw-new-1"})
			if err != nil {
				return false
			}
		case "user @puppet_invited:tessera.test":
			c := srv.Client("", "")
			_, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "puppet_invited", Password: "pw-inv-1"})
			if err != nil {
				return false
			}
		case "alias #bridged_chat:tessera.test":
			_, err := creator.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "bridged_chat"})
			if err != nil {
				return false
			}
		default:
			return false
		}
		created = append(created, what)
		return true
	}
	b.mu.Lock()
	b.queryAnswer = answer
	b.mu.Unlock()

	prof, err := alice.GetProfile(ctx, "@puppet_new:tessera.test")
	if err != nil {
		t.Fatalf("profile of a user the bridge creates on demand: %v", err)
	}
	_ = prof
	if _, err := alice.GetProfile(ctx, "@puppet_never:tessera.test"); err == nil {
		t.Errorf("profile of a user the bridge refuses: no error")
	}
	if _, err := alice.GetProfile(ctx, "@nobody:tessera.test"); err == nil {
		t.Errorf("profile of an unknown user: no error")
	}
	join, err := alice.JoinRoom(ctx, "#bridged_chat:tessera.test", nil)
	if err != nil {
		t.Fatalf("join by an alias the bridge creates on demand: %v", err)
	}
	if join.RoomID == "" {
		t.Fatal("no room ID")
	}
	if _, err := alice.ResolveAlias(ctx, "#elsewhere:tessera.test"); err == nil {
		t.Errorf("an unknown alias outside the namespace resolved")
	}
	// Inviting a user the bridge creates when asked.
	if _, err := creator.InviteUser(ctx, join.RoomID, &mautrix.ReqInviteUser{UserID: "@puppet_invited:tessera.test"}); err != nil {
		t.Errorf("invite of a user the bridge creates on demand: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	want := []string{"user @puppet_new:tessera.test", "user @puppet_never:tessera.test", "alias #bridged_chat:tessera.test",
		"user @puppet_invited:tessera.test"}
	if !equal(b.queries, want) {
		t.Errorf("queries = %q, want %q", b.queries, want)
	}
	if len(created) != 3 {
		t.Errorf("created = %q", created)
	}
}

// TestBridgeAliasAndRoomNamespaces: a room with a local alias in the
// bridge's alias namespaces, or with an ID in its rooms namespaces, is the
// bridge's business though none of its users is in it.
func TestBridgeAliasAndRoomNamespaces(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", nil)
	srv := testserver.Start(t, b.option())
	alice := srv.Register("alice", "pw-alice-1")
	aliased, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "bridged_lobby"})
	must(t, err)
	plain, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err)
	send(t, alice, aliased.RoomID, "in the aliased room")
	send(t, alice, plain.RoomID, "in the plain room")
	b.waitFor("the aliased room's message", 10*time.Second, func() bool { return len(b.messages(aliased.RoomID)) == 1 })

	// A second bridge, which claims the plain room by its ID.
	b2 := newBridge(t, "tessera.test", func(r *mas.Registration) {
		r.ID = "roombridge"
		r.SenderLocalpart = "roombridgebot"
		r.Namespaces.UserIDs = nil
		r.Namespaces.RoomAliases = nil
		r.Namespaces.RoomIDs.Register(regexp.MustCompile(regexp.QuoteMeta(plain.RoomID.String())), false)
	})
	srv.Stop()
	srv.Config.AppServices = append(srv.Config.AppServices, b2.path)
	srv.Restart()
	send(t, alice, plain.RoomID, "claimed by ID")
	send(t, alice, aliased.RoomID, "not for the room bridge")
	b2.waitFor("the claimed room's message", 10*time.Second, func() bool { return len(b2.messages(plain.RoomID)) == 1 })
	time.Sleep(200 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	if got := b.messages(plain.RoomID); len(got) != 0 {
		t.Errorf("the alias bridge got the plain room's messages %q", got)
	}
	b2.mu.Lock()
	defer b2.mu.Unlock()
	if got := b2.messages(aliased.RoomID); len(got) != 0 {
		t.Errorf("the room bridge got the aliased room's messages %q", got)
	}
}

// TestBridgePuppetsThroughIntent: the bridge works as mautrix bridges do,
// through its as_token: its bot and a puppet in its exclusive namespace
// are registered by mautrix's IntentAPI (m.login.application_service), the
// puppet joins and sends by masquerading; the bridge is sent the puppet's
// join, its own message back with its transaction ID (its echo), and the
// other user's message, in order.
func TestBridgePuppetsThroughIntent(t *testing.T) {
	ctx := context.Background()
	b := newBridge(t, "tessera.test", func(r *mas.Registration) {
		r.ID = "telegram"
		r.SenderLocalpart = "telegrambot"
		r.Namespaces.UserIDs = nil
		r.Namespaces.UserIDs.Register(regexpFor(`@tg_.*:tessera.test`), true)
	})
	srv := testserver.Start(t, b.option())
	must(t, b.as.SetHomeserverURL(srv.URL))
	alice := srv.Register("alice", "pw-alice-1")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err)

	must(t, b.as.BotIntent().EnsureRegistered(ctx))
	puppet := b.as.Intent(id.NewUserID("tg_1", "tessera.test"))
	must(t, puppet.EnsureJoined(ctx, room.RoomID))
	sent, err := puppet.SendText(ctx, room.RoomID, "from telegram")
	must(t, err)
	send(t, alice, room.RoomID, "to telegram")
	b.waitFor("both messages", 10*time.Second, func() bool { return len(b.messages(room.RoomID)) >= 2 })
	time.Sleep(200 * time.Millisecond)

	b.mu.Lock()
	defer b.mu.Unlock()
	if got := b.messages(room.RoomID); !equal(got, []string{"from telegram", "to telegram"}) {
		t.Errorf("messages = %q", got)
	}
	joined := false
	for _, ev := range b.events {
		if ev.Type == event.StateMember && ev.GetStateKey() == puppet.UserID.String() &&
			ev.Content.AsMember().Membership == event.MembershipJoin {
			joined = true
		}
		if ev.ID == sent.EventID && ev.Unsigned.TransactionID == "" {
			t.Errorf("the puppet's message came back without its transaction_id")
		}
		if ev.Type == event.EventMessage && ev.Sender == alice.UserID && ev.Unsigned.TransactionID != "" {
			t.Errorf("alice's message came with her transaction_id")
		}
	}
	if !joined {
		t.Errorf("the puppet's join did not reach the bridge")
	}
}
