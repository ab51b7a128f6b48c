package clientapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// addChild puts room in space as an m.space.child.
func addChild(t *testing.T, c *mautrix.Client, space, room id.RoomID, via string, extra map[string]any) {
	t.Helper()
	content := map[string]any{"via": []string{via}}
	for k, v := range extra {
		content[k] = v
	}
	_, err := c.SendStateEvent(ctx, space, event.StateSpaceChild, room.String(), content)
	must(t, err, "add child "+room.String())
}

// hierarchyIDs returns the room IDs of a /hierarchy page and its next_batch.
func hierarchyIDs(t *testing.T, r resp) ([]string, string) {
	t.Helper()
	rooms, ok := r.Body["rooms"].([]any)
	if !ok {
		t.Fatalf("no rooms in %s", r.Raw)
	}
	var ids []string
	for _, rm := range rooms {
		ids = append(ids, rm.(map[string]any)["room_id"].(string))
	}
	return ids, r.str("next_batch")
}

func TestSpaceHierarchy(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	via := srv.Config.ServerName

	mk := func(preset, name string, space bool) id.RoomID {
		req := &mautrix.ReqCreateRoom{Preset: preset, Name: name}
		if space {
			req.CreationContent = map[string]any{"type": "m.space"}
		}
		r, err := alice.CreateRoom(ctx, req)
		must(t, err, "create "+name)
		return r.RoomID
	}
	space := mk("public_chat", "Space", true)
	a := mk("public_chat", "A", false)
	private := mk("private_chat", "Private", false)
	sub := mk("public_chat", "Sub", true)
	deep := mk("public_chat", "Deep", false)
	addChild(t, alice, space, a, via, map[string]any{"order": "1"})
	addChild(t, alice, space, private, via, map[string]any{"order": "2"})
	addChild(t, alice, space, sub, via, map[string]any{"order": "3", "suggested": true})
	addChild(t, alice, sub, deep, via, nil)
	// A child no server here holds (and no federation to ask) is left out.
	addChild(t, alice, space, "!unknown:elsewhere.test", via, nil)
	_, err := alice.SendStateEvent(ctx, space, event.StateSpaceChild, deep.String(), map[string]any{})
	must(t, err, "empty child")

	path := func(room id.RoomID, q string) string {
		return v1 + "/rooms/" + url.PathEscape(room.String()) + "/hierarchy" + q
	}

	// Bob is in none of them: he sees the public rooms, not the private
	// one; the unknown room is left out.
	r := get(t, srv, path(space, ""), bob.AccessToken).expect(t, http.StatusOK, "")
	ids, next := hierarchyIDs(t, r)
	if want := []string{space.String(), a.String(), sub.String(), deep.String()}; !slices.Equal(ids, want) || next != "" {
		t.Fatalf("bob's hierarchy = %v (next %q), want %v", ids, next, want)
	}
	root := r.Body["rooms"].([]any)[0].(map[string]any)
	if root["room_type"] != "m.space" || root["name"] != "Space" || root["join_rule"] != "public" {
		t.Fatalf("root chunk = %v", root)
	}
	cs, _ := root["children_state"].([]any)
	if len(cs) != 4 || cs[0].(map[string]any)["state_key"] != a.String() {
		t.Fatalf("children_state = %v, want 4 children, %s first by order", cs, a)
	}
	if ts, _ := cs[0].(map[string]any)["origin_server_ts"].(float64); ts == 0 {
		t.Fatalf("children_state without origin_server_ts: %v", cs[0])
	}

	// Alice is in the private room too.
	ids, _ = hierarchyIDs(t, get(t, srv, path(space, ""), alice.AccessToken).expect(t, http.StatusOK, ""))
	if want := []string{space.String(), a.String(), private.String(), sub.String(), deep.String()}; !slices.Equal(ids, want) {
		t.Fatalf("alice's hierarchy = %v, want %v", ids, want)
	}

	ids, _ = hierarchyIDs(t, get(t, srv, path(space, "?max_depth=1"), bob.AccessToken).expect(t, http.StatusOK, ""))
	if want := []string{space.String(), a.String(), sub.String()}; !slices.Equal(ids, want) {
		t.Fatalf("max_depth=1: %v, want %v", ids, want)
	}
	ids, _ = hierarchyIDs(t, get(t, srv, path(space, "?suggested_only=true"), bob.AccessToken).expect(t, http.StatusOK, ""))
	if want := []string{space.String(), sub.String()}; !slices.Equal(ids, want) {
		t.Fatalf("suggested_only: %v, want %v", ids, want)
	}

	// Paging one room at a time walks the same tree.
	var paged []string
	from := ""
	for range 10 {
		q := "?limit=1"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		ids, from = hierarchyIDs(t, get(t, srv, path(space, q), bob.AccessToken).expect(t, http.StatusOK, ""))
		paged = append(paged, ids...)
		if from == "" {
			break
		}
	}
	if want := []string{space.String(), a.String(), sub.String(), deep.String()}; !slices.Equal(paged, want) {
		t.Fatalf("paged = %v, want %v", paged, want)
	}

	get(t, srv, path(private, ""), bob.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	get(t, srv, path("!nowhere:tessera.test", ""), bob.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	for _, q := range []string{"?max_depth=-1", "?limit=0", "?limit=x", "?from=zz", "?suggested_only=maybe"} {
		get(t, srv, path(space, q), bob.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	}
	get(t, srv, path(space, ""), "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}
