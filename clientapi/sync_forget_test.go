package clientapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSyncForgottenRoomLeavesOnce: a room left and forgotten between two
// syncs is in the next incremental sync's leave section once (as in
// Synapse: the forget is no event, and the client must learn the room is
// gone), with the users no longer shared in device_lists.left; after that,
// and in an initial sync even with include_leave, it is gone.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidforget
func TestSyncForgottenRoomLeavesOnce(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob := rmUser(t, srv, "alice"), rmUser(t, srv, "bob")
	roomID := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, roomID).expect(t, http.StatusOK, "")
	rmSend(t, srv, bob, roomID, "hi")
	since := psSync(t, srv, alice, "", 0).str("next_batch")

	rmOp(t, srv, alice, roomID, "leave", nil).expect(t, http.StatusOK, "")
	rmOp(t, srv, alice, roomID, "forget", nil).expect(t, http.StatusOK, "")

	r := psSync(t, srv, alice, since, 5*time.Second)
	if _, ok := rmField(r.Body, "rooms", "leave", roomID).(map[string]any); !ok {
		t.Fatalf("the room left and forgotten since the token is not in leave: %s", r.Raw)
	}
	tl, _ := rmField(r.Body, "rooms", "leave", roomID, "timeline", "events").([]any)
	if len(tl) == 0 {
		t.Fatalf("the leave section has no timeline (alice's leave): %s", r.Raw)
	}
	if last, _ := tl[len(tl)-1].(map[string]any); rmField(last, "content", "membership") != "leave" || last["state_key"] != alice.UserID {
		t.Fatalf("the timeline does not end with alice's leave: %v", last)
	}
	left, _ := rmField(r.Body, "device_lists", "left").([]any)
	if !slices.Contains(left, any(bob.UserID)) {
		t.Fatalf("device_lists.left = %v, want bob (no room shared any more)", left)
	}

	next := r.str("next_batch")
	r = psSync(t, srv, alice, next, 0)
	if _, ok := rmField(r.Body, "rooms", "leave", roomID).(map[string]any); ok {
		t.Fatalf("the forgotten room is in leave again: %s", r.Raw)
	}
	r = get(t, srv, v3+"/sync?"+url.Values{"filter": {`{"room":{"include_leave":true}}`}}.Encode(), alice.AccessToken).
		expect(t, http.StatusOK, "")
	if _, ok := rmField(r.Body, "rooms", "leave", roomID).(map[string]any); ok {
		t.Fatalf("an initial sync with include_leave shows the forgotten room: %s", r.Raw)
	}
}
