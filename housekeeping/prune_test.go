package housekeeping_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestPruneChurn: the job prunes what is only needed for a while
// (transaction IDs after their lifetime, push actions of read events after
// a week, tokens a week after they expired) and leaves what is still
// needed (unread counts, folded into the push summary; live tokens).
func TestPruneChurn(t *testing.T) {
	ctx := context.Background()
	s := testserver.Start(t, func(c *config.Config) {
		c.Housekeeping.Interval = 0
		c.Auth.RefreshTokenLifetime = config.Duration(time.Hour)
	})
	alice := s.Register("alice", "password-alice")
	bob := s.Register("bob", "password-bob")
	carol := s.Register("carol", "password-carol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{bob, carol} {
		if _, err := c.JoinRoom(ctx, room.RoomID.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	var last id.EventID
	for i := range n {
		resp, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
			map[string]any{"msgtype": "m.text", "body": fmt.Sprint("m", i)}, mautrix.ReqSendEvent{TransactionID: fmt.Sprint("txn", i)})
		if err != nil {
			t.Fatal(err)
		}
		last = resp.EventID
	}
	// bob reads everything; carol reads nothing.
	if err := bob.MarkRead(ctx, room.RoomID, last); err != nil {
		t.Fatal(err)
	}
	// A login with a refresh token that expires in an hour.
	dave := s.Register("dave", "password-dave")
	login, err := dave.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "dave"}, Password: "password-dave", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	unread := func() int {
		resp, err := carol.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Rooms.Join[room.RoomID].UnreadNotifications.NotificationCount
	}
	if got := unread(); got != n {
		t.Fatalf("carol's unread count %d, want %d", got, n)
	}

	// Push actions reach the database a moment after evaluation
	// (push's flushDelay); the job prunes only what is there.
	time.Sleep(500 * time.Millisecond)
	hk := s.Server().Housekeeping
	rep, err := hk.RunOnce(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range rep.Pruned {
		if got != 0 {
			t.Errorf("pruned %d %s now, want none", got, name)
		}
	}
	rep, err = hk.RunOnce(ctx, time.Now().Add(8*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// alice's sends, and the joins' and room creation's transactions.
	if rep.Pruned["txn_ids"] < n {
		t.Errorf("pruned %d transaction IDs, want at least %d", rep.Pruned["txn_ids"], n)
	}
	// bob's read notifications go, carol's unread ones are folded into
	// her summary.
	if got := rep.Pruned["push_actions"]; got != 2*n {
		t.Errorf("pruned %d push actions, want bob's and carol's %d", got, 2*n)
	}
	if got := unread(); got != n {
		t.Errorf("carol's unread count after pruning: %d, want %d", got, n)
	}
	// dave's refresh token (and its access token) expired a week ago.
	if got := rep.Pruned["tokens"]; got != 2 {
		t.Errorf("pruned %d tokens, want dave's refresh and access tokens", got)
	}
	// (mautrix-go has no call for /refresh.)
	status, body := call(t, s, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": login.RefreshToken})
	expect(t, "refresh with a pruned token", status, body, 401, "M_UNKNOWN_TOKEN")
	// Other tokens still work.
	if _, err := carol.Whoami(ctx); err != nil {
		t.Errorf("carol's token after pruning: %v", err)
	}
	// A transaction ID retried after its lifetime is a new send.
	resp, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
		map[string]any{"msgtype": "m.text", "body": "m19 again"}, mautrix.ReqSendEvent{TransactionID: fmt.Sprint("txn", n-1)})
	if err != nil || resp.EventID == last {
		t.Errorf("send with a pruned transaction ID: %v, %v", resp, err)
	}
}
