package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestSyncLimited: a timeline that is not the whole story is limited, and
// an empty limited timeline still says where to page back from.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
func TestSyncLimited(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob := rmUser(t, srv, "alice"), rmUser(t, srv, "bob")
	roomID := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmSend(t, srv, alice, roomID, "hello")

	timeline := func(t *testing.T, r resp) map[string]any {
		t.Helper()
		tl, ok := rmField(r.Body, "rooms", "join", roomID, "timeline").(map[string]any)
		if !ok {
			t.Fatalf("no timeline for %s: %s", roomID, r.Raw)
		}
		return tl
	}

	t.Run("the whole room is not limited", func(t *testing.T) {
		tl := timeline(t, psSync(t, srv, alice, "", 0))
		if tl["limited"] != false {
			t.Fatalf("alice's initial sync of her small room: limited = %v, want false (it starts at the creation)", tl["limited"])
		}
	})

	t.Run("a room joined since the token is limited", func(t *testing.T) {
		since := psSync(t, srv, bob, "", 0).str("next_batch")
		rmJoin(t, srv, bob, roomID).expect(t, http.StatusOK, "")
		tl := timeline(t, psSync(t, srv, bob, since, 5*time.Second))
		if tl["limited"] != true {
			t.Fatalf("bob's sync after joining: limited = %v, want true", tl["limited"])
		}
		if pb, _ := tl["prev_batch"].(string); pb == "" {
			t.Fatalf("no prev_batch: %v", tl)
		}
	})

	t.Run("an empty limited timeline has a prev_batch", func(t *testing.T) {
		last := rmSend(t, srv, alice, roomID, "latest")
		for name, filter := range map[string]string{
			"no type wanted": `{"room":{"timeline":{"types":["org.example.none"]}}}`,
			"room left out":  `{"room":{"timeline":{"not_rooms":["` + roomID + `"]}}}`,
		} {
			r := get(t, srv, v3+"/sync?"+url.Values{"filter": {filter}}.Encode(), alice.AccessToken).expect(t, http.StatusOK, "")
			tl := timeline(t, r)
			evs, _ := tl["events"].([]any)
			if len(evs) != 0 || tl["limited"] != true {
				t.Fatalf("%s: timeline = %v, want empty and limited", name, tl)
			}
			pb, _ := tl["prev_batch"].(string)
			if pb == "" {
				t.Fatalf("%s: an empty limited timeline without prev_batch: %v", name, tl)
			}
			page := rmMessages(t, srv, alice, roomID, url.Values{"dir": {"b"}, "from": {pb}, "limit": {"1"}}).expect(t, http.StatusOK, "")
			if ids := rmIDs(rmEvents(t, page, "chunk")); len(ids) != 1 || ids[0] != last {
				t.Fatalf("%s: /messages back from prev_batch = %v, want the latest event %s", name, ids, last)
			}
		}
	})
}
