package clientapi_test

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const ssPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// ssPost sends one sliding sync request and returns the response.
func ssPost(t testing.TB, srv *testserver.Server, s session, pos string, timeoutMS int, body any) resp {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	if timeoutMS > 0 {
		q.Set("timeout", fmt.Sprint(timeoutMS))
	}
	return post(t, srv, ssPath+"?"+q.Encode(), s.AccessToken, body)
}

func TestSlidingSyncEngineSmoke(t *testing.T) {
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	var rooms []string
	for i := 0; i < 5; i++ {
		r := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"name": fmt.Sprintf("room %d", i)}).expect(t, 200, "")
		rooms = append(rooms, r.str("room_id"))
		put(t, srv, fmt.Sprintf("%s/rooms/%s/send/m.room.message/t%d", v3, url.PathEscape(r.str("room_id")), i), alice.AccessToken,
			map[string]any{"msgtype": "m.text", "body": fmt.Sprint("hello ", i)}).expect(t, 200, "")
	}
	body := map[string]any{
		"conn_id": "main",
		"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, 2}}, "timeline_limit": 1,
			"required_state": [][]string{{"m.room.name", ""}, {"m.room.member", "$LAZY"}},
		}},
		"extensions": map[string]any{"e2ee": map[string]any{"enabled": true}, "to_device": map[string]any{"enabled": true},
			"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true}, "typing": map[string]any{"enabled": true}},
	}
	r := ssPost(t, srv, alice, "", 0, body).expect(t, 200, "")
	ssRooms := func(r resp) map[string]any { m, _ := r.Body["rooms"].(map[string]any); return m }
	if n := len(ssRooms(r)); n != 3 {
		t.Fatalf("first response: %d rooms, want 3: %s", n, r.Raw)
	}
	if c, _ := r.Body["lists"].(map[string]any)["all"].(map[string]any)["count"].(float64); c != 5 {
		t.Fatalf("count = %v, want 5", c)
	}
	pos := r.str("pos")
	r = ssPost(t, srv, alice, pos, 0, body).expect(t, 200, "")
	if n := len(ssRooms(r)); n != 0 {
		t.Fatalf("second response: %d rooms, want none: %s", n, r.Raw)
	}
	put(t, srv, fmt.Sprintf("%s/rooms/%s/send/m.room.message/x", v3, url.PathEscape(rooms[0])), alice.AccessToken,
		map[string]any{"msgtype": "m.text", "body": "bump"}).expect(t, 200, "")
	r = ssPost(t, srv, alice, r.str("pos"), 1000, body).expect(t, 200, "")
	got := ssRooms(r)
	if len(got) != 1 || got[rooms[0]] == nil || got[rooms[0]].(map[string]any)["initial"] != true {
		t.Fatalf("third response: want only %s, initial: %s", rooms[0], r.Raw)
	}
}
