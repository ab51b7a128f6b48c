package clientapi_test

import (
	"net/http"
	"testing"
	"time"

	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/tessera-hs/tessera/internal/lkpeer"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallsMembershipGuard: MSC4195's "kicking users from the SFU on room
// leave/ban". A user who is kicked, banned or leaves is removed from the
// room's call at once; the token they still hold (LiveKit tokens cannot be
// revoked) gets them back in only until the SFU's join webhook is checked;
// once joined again, a new token works and stays.
func TestCallsMembershipGuard(t *testing.T) {
	if testing.Short() {
		t.Skip("media test skipped in -short mode")
	}
	lksdk.SetLogger(protoLogger.GetLogger())
	srv := testserver.Start(t, testserver.Calls())
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, bob, roomID)
	sfuURL := ddLiveKitURL(t, srv, alice)
	token := func(s session, member string) string {
		t.Helper()
		r := post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", s.AccessToken, map[string]any{
			"url": sfuURL, "room_id": roomID, "slot_id": "m.call#ROOM", "member_id": member,
		}).expect(t, http.StatusOK, "")
		return r.str("jwt")
	}
	const timeout = 15 * time.Second
	join := func(who, jwt string) *lkpeer.Peer {
		t.Helper()
		p, err := lkpeer.Join(sfuURL, jwt, false, timeout)
		if err != nil {
			t.Fatalf("%s joins the SFU: %v", who, err)
		}
		t.Cleanup(p.Close)
		return p
	}
	removed := func(who string, p *lkpeer.Peer, within time.Duration) {
		t.Helper()
		select {
		case <-p.Disconnected():
		case <-time.After(within):
			t.Fatalf("%s is still on the SFU after %v", who, within)
		}
	}
	stays := func(who string, p *lkpeer.Peer, d time.Duration) {
		t.Helper()
		select {
		case <-p.Disconnected():
			t.Fatalf("%s was removed from the SFU", who)
		case <-time.After(d):
		}
	}

	alicePeer := join("alice", token(alice, "a1"))
	for _, tc := range []struct {
		name string
		end  func() // ends bob's membership
		back func() // lets bob join again
	}{
		{"kick",
			func() {
				post(t, srv, v3+"/rooms/"+roomID+"/kick", alice.AccessToken, map[string]any{"user_id": bob.UserID}).expect(t, http.StatusOK, "")
			},
			func() { adJoin(t, srv, bob, roomID) }},
		{"leave",
			func() {
				post(t, srv, v3+"/rooms/"+roomID+"/leave", bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
			},
			func() { adJoin(t, srv, bob, roomID) }},
		{"ban",
			func() {
				post(t, srv, v3+"/rooms/"+roomID+"/ban", alice.AccessToken, map[string]any{"user_id": bob.UserID}).expect(t, http.StatusOK, "")
			},
			func() {
				post(t, srv, v3+"/rooms/"+roomID+"/unban", alice.AccessToken, map[string]any{"user_id": bob.UserID}).expect(t, http.StatusOK, "")
				adJoin(t, srv, bob, roomID)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jwt := token(bob, "b-"+tc.name)
			bobPeer := join("bob", jwt)
			tc.end()
			start := time.Now()
			removed("bob", bobPeer, 5*time.Second)
			t.Logf("%s: bob off the SFU %v after his membership ended", tc.name, time.Since(start).Round(time.Millisecond))

			// His token is still good for LiveKit, but not for us.
			again, err := lkpeer.Join(sfuURL, jwt, false, 5*time.Second)
			if err == nil {
				start = time.Now()
				removed("bob, back with his old token", again, 5*time.Second)
				t.Logf("%s: old token: off again %v after joining", tc.name, time.Since(start).Round(time.Millisecond))
				again.Close()
			}
			// Not joined: no new token either.
			post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", bob.AccessToken, map[string]any{
				"url": sfuURL, "room_id": roomID, "slot_id": "m.call#ROOM", "member_id": "b2-" + tc.name,
			}).expect(t, http.StatusForbidden, "M_FORBIDDEN")

			tc.back()
			back := join("bob, joined again", token(bob, "b3-"+tc.name))
			stays("bob, joined again", back, 2*time.Second)
			back.Close()
		})
	}
	select {
	case <-alicePeer.Disconnected():
		t.Fatal("alice was removed from the SFU")
	default:
	}
}
