package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// timeline follows a user's /sync and counts the messages each room gets.
type timeline struct {
	c     *mautrix.Client
	since string
	seen  map[id.EventID]int
}

// waitMessages syncs until every event of want has arrived in roomID, or
// fails after 60 s.
func (tl *timeline) waitMessages(t *testing.T, roomID id.RoomID, want []id.EventID) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, e := range want {
			if tl.seen[e] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d messages not seen in %s after 60 s", tl.c.UserID, missing, len(want), roomID)
		}
		resp, err := tl.c.SyncRequest(context.Background(), 5000, tl.since, bigTimeline, false, "")
		if err != nil {
			t.Fatalf("%s syncs: %v", tl.c.UserID, err)
		}
		tl.since = resp.NextBatch
		if r := resp.Rooms.Join[roomID]; r != nil {
			for _, ev := range r.Timeline.Events {
				if ev.Type == event.EventMessage {
					tl.seen[ev.ID]++
				}
			}
		}
	}
}

// bigTimeline is an inline sync filter whose timelines hold every message
// of the test: none is left out of a limited one.
const bigTimeline = `{"room":{"timeline":{"limit":200}}}`

// once checks that each event of want was seen once.
func (tl *timeline) once(t *testing.T, want []id.EventID) {
	t.Helper()
	for _, e := range want {
		if n := tl.seen[e]; n != 1 {
			t.Errorf("%s saw %s %d times, want 1", tl.c.UserID, e, n)
		}
	}
}

// A federation peer talks to a cluster through one instance (as through a
// load balancer): its user joins a room another instance owns, its
// messages reach the cluster's users whichever instance they sync from,
// and it receives the messages sent through every instance, each once.
// With the room's owner down, the peer's transaction is refused (502) and
// sent again: nothing is ingested by a process that does not own the
// room, and nothing is lost. A join by an alias of the peer's runs on the
// room's owner too.
func TestScaleOutFederation(t *testing.T) {
	ctx := context.Background()
	srv := testserver.StartFederatedCluster(t, []string{"a", "b", "c"}, "127.0.0.1")
	peer := testserver.Start(t, testserver.Federation("127.0.0.2"))
	m, err := cluster.New(srv["a"].Config)
	if err != nil {
		t.Fatal(err)
	}
	name := srv["a"].Config.ServerName
	alice := srv["a"].Register("alice", "password-alice")
	bob := srv["c"].Register("bob", "password-bob")
	pete := peer.Register("pete", "password-pete")

	created, err := as(srv["b"], alice).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if o := m.Owner(roomID.String()); o != "b" {
		t.Fatalf("room created through b is owned by %s", o)
	}
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	// make_join and send_join reach a (the server name's address), which
	// forwards them to b.
	if _, err := pete.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{name}}); err != nil {
		t.Fatalf("pete joins through %s: %v", name, err)
	}

	bobTL := &timeline{c: bob, seen: map[id.EventID]int{}}
	peteTL := &timeline{c: pete, seen: map[id.EventID]int{}}
	var fromPete []id.EventID
	for i := range 10 {
		resp, err := pete.SendText(ctx, roomID, fmt.Sprintf("pete %d", i))
		if err != nil {
			t.Fatal(err)
		}
		fromPete = append(fromPete, resp.EventID)
	}
	bobTL.waitMessages(t, roomID, fromPete)

	var fromCluster []id.EventID
	for _, via := range []string{"a", "b", "c"} {
		for i := range 3 {
			resp, err := as(srv[via], alice).SendText(ctx, roomID, fmt.Sprintf("alice via %s %d", via, i))
			if err != nil {
				t.Fatal(err)
			}
			fromCluster = append(fromCluster, resp.EventID)
		}
	}
	peteTL.waitMessages(t, roomID, append(fromPete, fromCluster...))
	bobTL.waitMessages(t, roomID, fromCluster)

	// The owner down: a cannot take pete's message in b's room.
	srv["b"].Stop()
	late, err := pete.SendText(ctx, roomID, "while b is down")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the peer's first tries, refused
	resp, err := as(srv["c"], bob).SyncRequest(ctx, 0, "", bigTimeline, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Rooms.Join[roomID]; r != nil {
		for _, ev := range r.Timeline.Events {
			if ev.ID == late.EventID {
				t.Fatalf("pete's message was ingested with the room's owner down")
			}
		}
	}
	srv["b"].Restart()
	bobTL.waitMessages(t, roomID, []id.EventID{late.EventID})
	bobTL.once(t, append(fromPete, late.EventID))
	bobTL.once(t, fromCluster)
	peteTL.once(t, append(fromPete, fromCluster...))

	// A join by an alias of the peer runs on the room's owner: through
	// another instance, it waits for the owner (502 while it is down).
	lobby, err := pete.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	alias := "#lobby:" + peer.Config.ServerName
	owner := m.Owner(lobby.RoomID.String())
	via := "a"
	if owner == via {
		via = "c"
	}
	srv[owner].Stop()
	if _, err := as(srv[via], alice).JoinRoom(ctx, alias, nil); !isBadGateway(err) {
		t.Fatalf("join %s through %s with the room's owner %s down: %v, want 502 M_UNKNOWN", alias, via, owner, err)
	}
	srv[owner].Restart()
	joined, err := as(srv[via], alice).JoinRoom(ctx, alias, nil)
	if err != nil {
		t.Fatalf("join %s through %s: %v", alias, via, err)
	}
	if joined.RoomID != lobby.RoomID {
		t.Fatalf("joined %s by %s, want %s", joined.RoomID, alias, lobby.RoomID)
	}
}
