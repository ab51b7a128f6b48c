package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/signingkey"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// pair is two federating servers, with bob of B joined to alice of A's
// public room.
type pair struct {
	a, b       *testserver.Server
	alice, bob *mautrix.Client
	roomID     id.RoomID
}

func joinedPair(t *testing.T) *pair {
	t.Helper()
	ctx := context.Background()
	p := &pair{a: testserver.Start(t, testserver.Federation("127.0.0.1")), b: testserver.Start(t, testserver.Federation("127.0.0.2"))}
	p.alice = p.a.Register("alice", "password-alice")
	p.bob = p.b.Register("bob", "password-bob")
	created, err := p.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	p.roomID = created.RoomID
	if _, err := p.bob.JoinRoom(ctx, p.roomID.String(), &mautrix.ReqJoinRoom{Via: []string{p.a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	return p
}

// buildAs builds an event in the room as the server of s would, on A's
// current extremities and with the auth events A would pick.
func (p *pair) buildAs(t *testing.T, s *testserver.Server, key *signingkey.Key, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	ctx := context.Background()
	rooms := p.a.Server().Rooms
	ext, err := rooms.Extremities(ctx, p.roomID.String())
	if err != nil {
		t.Fatal(err)
	}
	var depth int64
	var auth []string
	for _, e := range ext {
		ev, err := rooms.Event(ctx, p.roomID.String(), p.alice.UserID.String(), e)
		if err != nil {
			t.Fatal(err)
		}
		depth = max(depth, ev.Depth())
	}
	// The create, power levels and the sender's own membership (if any).
	for _, want := range [][2]string{{"m.room.power_levels", ""}, {"m.room.member", sender}, {"m.room.join_rules", ""}} {
		if ev, err := rooms.StateEvent(ctx, p.roomID.String(), p.alice.UserID.String(), want[0], want[1]); err == nil {
			auth = append(auth, ev.EventID())
		}
	}
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: p.roomID.String(), Type: typ, StateKey: stateKey,
		PrevEvents: ext, AuthEvents: auth, Depth: depth + 1}
	if err := proto.SetContent(content); err != nil {
		t.Fatal(err)
	}
	ev, err := gomatrixserverlib.MustGetRoomVersion("12").NewEventBuilderFromProtoEvent(proto).
		Build(time.Now(), s.ServerName(), key.ID, key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (p *pair) sendTxn(t *testing.T, pdus ...json.RawMessage) (fclient.RespSend, error) {
	t.Helper()
	return p.b.Server().FederationClient.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(fmt.Sprintf("t%d", time.Now().UnixNano())),
		Origin:        p.b.ServerName(), Destination: p.a.ServerName(),
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus,
	})
}

// TestBadPDUs: events another server sends that fail their checks are
// answered with an error for that event and never become part of the
// room; a good event in the same transaction is accepted.
func TestBadPDUs(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	bKey, err := signingkey.Load(p.b.Config.SigningKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _ := signingkey.Generate()
	wrongKey.ID = bKey.ID // claims to be B's key
	bob := p.bob.UserID.String()
	msg := func(body string) map[string]string { return map[string]string{"msgtype": "m.text", "body": body} }

	good := p.buildAs(t, p.b, bKey, bob, "m.room.message", nil, msg("good"))
	forged := p.buildAs(t, p.b, wrongKey, bob, "m.room.message", nil, msg("forged"))
	// A user of B who never joined: fails the auth rules.
	intruder := p.buildAs(t, p.b, bKey, "@intruder:"+string(p.b.ServerName()), "m.room.message", nil, msg("intruder"))
	// A changed body after signing: the content hash no longer matches,
	// so the event is redacted before it is used.
	tampered := p.buildAs(t, p.b, bKey, bob, "m.room.message", nil, msg("original"))
	var tj map[string]any
	_ = json.Unmarshal(tampered.JSON(), &tj)
	tj["content"] = msg("tampered")
	tamperedJSON, _ := json.Marshal(tj)

	res, err := p.sendTxn(t, good.JSON(), forged.JSON(), intruder.JSON(), tamperedJSON)
	if err != nil {
		t.Fatalf("transaction: %v", err)
	}
	if r := res.PDUs[good.EventID()]; r.Error != "" {
		t.Fatalf("the good event got %q", r.Error)
	}
	for name, ev := range map[string]gomatrixserverlib.PDU{"forged": forged, "intruder": intruder} {
		if r, ok := res.PDUs[ev.EventID()]; !ok || r.Error == "" {
			t.Fatalf("the %s event was accepted: %+v", name, res.PDUs)
		}
		if _, err := p.alice.GetEvent(ctx, p.roomID, id.EventID(ev.EventID())); err == nil {
			t.Fatalf("the %s event can be read in the room", name)
		}
	}
	if ok, _ := p.a.Server().Rooms.IsRejected(ctx, intruder.EventID()); !ok {
		t.Fatal("the unauthorised event is not stored as rejected")
	}
	waitForMessage(t, p.alice, p.roomID, "good")
	// The tampered event is kept redacted: no body.
	if ev, err := p.alice.GetEvent(ctx, p.roomID, id.EventID(tampered.EventID())); err == nil {
		if b, _ := ev.Content.Raw["body"].(string); b != "" {
			t.Fatalf("an event whose hash failed kept its content %q", b)
		}
	}

	// More than 50 PDUs: the whole transaction is refused.
	many := make([]json.RawMessage, 51)
	for i := range many {
		many[i] = p.buildAs(t, p.b, bKey, bob, "m.room.message", nil, msg(fmt.Sprint(i))).JSON()
	}
	_, err = p.sendTxn(t, many...)
	if err == nil || !strings.Contains(err.Error(), "M_BAD_JSON") {
		t.Fatalf("a transaction of 51 PDUs: %v", err)
	}
}

// TestServerACLAcrossServers: once alice's room denies B by a server ACL,
// B's events and typing are refused, and B's requests about the room too.
func TestServerACLAcrossServers(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	sendText(t, p.bob, p.roomID, "before the ACL")
	waitForMessage(t, p.alice, p.roomID, "before the ACL")
	host := strings.Split(string(p.b.ServerName()), ":")[0]
	if _, err := p.alice.SendStateEvent(ctx, p.roomID, event.StateServerACL, "", map[string]any{
		"allow": []string{"*"}, "deny": []string{host},
	}); err != nil {
		t.Fatal(err)
	}
	// B still receives the room's events (the ACL event too): it is a
	// resident. Its own sends fail at A.
	waitForStateType(t, p.bob, p.roomID, event.StateServerACL)
	bKey, err := signingkey.Load(p.b.Config.SigningKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	ev := p.buildAs(t, p.b, bKey, p.bob.UserID.String(), "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "after"})
	res, err := p.sendTxn(t, ev.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if r := res.PDUs[ev.EventID()]; !strings.Contains(r.Error, "server ACL") {
		t.Fatalf("a PDU from a denied server: %+v", res.PDUs)
	}
	if _, err := p.alice.GetEvent(ctx, p.roomID, id.EventID(ev.EventID())); err == nil {
		t.Fatal("an event from a denied server is in the room")
	}
	// Other requests about the room: 403.
	_, err = p.b.Server().FederationClient.MakeJoin(ctx, p.b.ServerName(), p.a.ServerName(), p.roomID.String(), "@carol:"+string(p.b.ServerName()))
	if err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("make_join from a denied server: %v", err)
	}
}

func waitForStateType(t *testing.T, c *mautrix.Client, roomID id.RoomID, typ event.Type) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var content map[string]any
		if err := c.StateEvent(context.Background(), roomID, typ, "", &content); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never saw %s", c.UserID, typ.Type)
}

// TestBadRoomRequests: an invite in a room version we do not know, an
// invite for another server's user, and a transaction over the size limit.
func TestBadRoomRequests(t *testing.T) {
	p := joinedPair(t)
	bKey := signingKey(t, p.b)
	ev := p.buildAs(t, p.b, bKey, p.bob.UserID.String(), "m.room.member", ptr(p.alice.UserID.String()),
		map[string]string{"membership": "invite"})
	send := func(uri string, content any) response {
		return do(t, signedRequest(t, p.b.ServerName(), p.a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodPut, uri, content))
	}
	tests := []struct {
		name    string
		uri     string
		content any
		status  int
		errcode string
	}{
		{"unknown room version", "/_matrix/federation/v2/invite/" + url.PathEscape(p.roomID.String()) + "/" + url.PathEscape(ev.EventID()),
			map[string]any{"room_version": "999", "event": json.RawMessage(ev.JSON()), "invite_room_state": []any{}}, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"event does not match the path", "/_matrix/federation/v2/invite/" + url.PathEscape(p.roomID.String()) + "/$other",
			map[string]any{"room_version": "12", "event": json.RawMessage(ev.JSON()), "invite_room_state": []any{}}, 400, "M_BAD_JSON"},
		{"transaction too large", "/_matrix/federation/v1/send/big",
			map[string]any{"origin": p.b.ServerName(), "pdus": []any{}, "edus": []any{map[string]any{"edu_type": "x", "content": strings.Repeat("a", 17<<20)}}}, 413, "M_TOO_LARGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(tt.uri, tt.content)
			if r.status != tt.status || r.errcode() != tt.errcode {
				t.Fatalf("got %d %s (%s), want %d %s", r.status, r.errcode(), r.raw, tt.status, tt.errcode)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
