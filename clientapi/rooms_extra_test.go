package clientapi_test

// Tests of the room endpoints in rooms_extra.go: the published room
// directory, room summaries, reporting, room upgrades and
// timestamp_to_event. Each starts a real server and drives it over HTTP,
// with mautrix-go where it has the call and raw requests where the status
// and error code matter.

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const (
	v1              = "/_matrix/client/v1"
	nhekoSummary    = "/_matrix/client/unstable/im.nheko.summary"
	eventReportsAPI = "/_synapse/admin/v1/event_reports"
)

// rxCreate creates a room with a raw /createRoom body and returns its ID.
func rxCreate(t *testing.T, srv *testserver.Server, token string, body map[string]any) string {
	t.Helper()
	r := post(t, srv, v3+"/createRoom", token, body).expect(t, http.StatusOK, "")
	return r.str("room_id")
}

// rxJoin joins a room through mautrix.
func rxJoin(t *testing.T, c *mautrix.Client, room string) {
	t.Helper()
	_, err := c.JoinRoom(ctx, room, nil)
	must(t, err, fmt.Sprintf("%s joins %s", c.UserID, room))
}

// rxPath builds a path from a format and path segments, escaping each.
func rxPath(format string, segs ...string) string {
	args := make([]any, len(segs))
	for i, s := range segs {
		args[i] = url.PathEscape(s)
	}
	return fmt.Sprintf(format, args...)
}

// rxStateEvent returns a whole state event (format=event) of a room.
func rxStateEvent(t *testing.T, srv *testserver.Server, token, room, typ, key string) map[string]any {
	t.Helper()
	r := get(t, srv, rxPath(v3+"/rooms/%s/state/%s/%s", room, typ, key)+"?format=event", token).expect(t, http.StatusOK, "")
	return r.Body
}

// rxContent returns the content of a state event of a room.
func rxContent(t *testing.T, srv *testserver.Server, token, room, typ, key string) map[string]any {
	t.Helper()
	c, _ := rxStateEvent(t, srv, token, room, typ, key)["content"].(map[string]any)
	return c
}

func rxPutState(t *testing.T, srv *testserver.Server, token, room, typ, key string, content any) {
	t.Helper()
	put(t, srv, rxPath(v3+"/rooms/%s/state/%s/%s", room, typ, key), token, content).expect(t, http.StatusOK, "")
}

// rxChunkIDs lists the room IDs of a /publicRooms chunk.
func rxChunkIDs(r resp) []string {
	var ids []string
	chunk, _ := r.Body["chunk"].([]any)
	for _, c := range chunk {
		m, _ := c.(map[string]any)
		s, _ := m["room_id"].(string)
		ids = append(ids, s)
	}
	return ids
}

// rxEntry returns the chunk entry of a room.
func rxEntry(t *testing.T, r resp, room string) map[string]any {
	t.Helper()
	chunk, _ := r.Body["chunk"].([]any)
	for _, c := range chunk {
		if m, _ := c.(map[string]any); m["room_id"] == room {
			return m
		}
	}
	t.Fatalf("room %s not in chunk %s", room, r.Raw)
	return nil
}

// rxRequired checks that a PublishedRoomsChunk (or a room summary, which
// extends it) has the fields public_rooms_chunk.yaml requires.
func rxRequired(t *testing.T, entry map[string]any) {
	t.Helper()
	for _, k := range []string{"room_id", "num_joined_members", "world_readable", "guest_can_join"} {
		if _, ok := entry[k]; !ok {
			t.Errorf("required field %s missing from %v", k, entry)
		}
	}
}

// rxNum reads a JSON number field as an int.
func rxNum(m map[string]any, k string) int {
	f, _ := m[k].(float64)
	return int(f)
}

func rxWantFields(t *testing.T, what string, got map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		g := got[k]
		if f, ok := g.(float64); ok {
			g = int(f)
		}
		if fmt.Sprint(g) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v, want %v (in %v)", what, k, got[k], v, got)
		}
	}
}

// TestPublicRooms covers GET and POST /publicRooms: which published rooms
// are listed, the fields, the order, paging both ways, the filters and the
// errors.
// https://spec.matrix.org/v1.19/client-server-api/#published-room-directory
func TestPublicRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	carol := srv.Register("carol", "password1")
	tok := alice.AccessToken

	alpha := rxCreate(t, srv, tok, map[string]any{"visibility": "public", "preset": "public_chat",
		"name": "Alpha Lounge", "topic": "The first topic"})
	rxJoin(t, bob, alpha)
	rxJoin(t, carol, alpha)
	space := rxCreate(t, srv, tok, map[string]any{"visibility": "public", "preset": "public_chat",
		"name": "Beta Space", "creation_content": map[string]any{"type": "m.space"}})
	rxJoin(t, bob, space)
	gamma := rxCreate(t, srv, tok, map[string]any{"visibility": "public", "preset": "public_chat", "room_alias_name": "gamma"})
	// Not published: never listed.
	rxCreate(t, srv, tok, map[string]any{"preset": "public_chat", "name": "Alpha unpublished"})
	// Published but invite-only: not listed, as in Synapse.
	invite := rxCreate(t, srv, tok, map[string]any{"preset": "private_chat", "name": "Alpha secret"})
	put(t, srv, rxPath(v3+"/directory/list/room/%s", invite), tok, map[string]any{"visibility": "public"}).expect(t, http.StatusOK, "")
	// Published, invite-only but world readable: listed.
	readable := rxCreate(t, srv, tok, map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	put(t, srv, rxPath(v3+"/directory/list/room/%s", readable), tok, map[string]any{"visibility": "public"}).expect(t, http.StatusOK, "")
	// Published with the knock join rule: listed.
	knock := rxCreate(t, srv, tok, map[string]any{"visibility": "public", "preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}},
		map[string]any{"type": "m.room.guest_access", "content": map[string]any{"guest_access": "can_join"}},
		map[string]any{"type": "m.room.avatar", "content": map[string]any{"url": "mxc://tessera.test/knock"}},
	}})

	// Most members first, then by room ID.
	ones := sorted(gamma, readable, knock)
	order := append([]string{alpha, space}, ones...)

	t.Run("listing without an access token", func(t *testing.T) {
		r := get(t, srv, v3+"/publicRooms", "").expect(t, http.StatusOK, "")
		if got := rxChunkIDs(r); !slices.Equal(got, order) {
			t.Fatalf("chunk = %v, want %v", got, order)
		}
		if rxNum(r.Body, "total_room_count_estimate") != 5 || r.Body["next_batch"] != nil || r.Body["prev_batch"] != nil {
			t.Fatalf("one page of 5 expected: %s", r.Raw)
		}
		for _, room := range order {
			rxRequired(t, rxEntry(t, r, room))
		}
		rxWantFields(t, "alpha", rxEntry(t, r, alpha), map[string]any{"name": "Alpha Lounge", "topic": "The first topic",
			"num_joined_members": 3, "world_readable": false, "guest_can_join": false, "join_rule": "public"})
		if _, ok := rxEntry(t, r, alpha)["room_type"]; ok {
			t.Errorf("a room without a type has room_type: %s", r.Raw)
		}
		rxWantFields(t, "space", rxEntry(t, r, space), map[string]any{"room_type": "m.space", "num_joined_members": 2})
		rxWantFields(t, "gamma", rxEntry(t, r, gamma), map[string]any{"canonical_alias": "#gamma:tessera.test"})
		rxWantFields(t, "readable", rxEntry(t, r, readable), map[string]any{"world_readable": true, "join_rule": "invite"})
		rxWantFields(t, "knock", rxEntry(t, r, knock), map[string]any{"join_rule": "knock", "guest_can_join": true,
			"avatar_url": "mxc://tessera.test/knock"})
	})

	t.Run("paging forwards and back", func(t *testing.T) {
		var all []string
		var pages []resp
		path := v3 + "/publicRooms?limit=2"
		for i := 0; ; i++ {
			r := get(t, srv, path, "").expect(t, http.StatusOK, "")
			pages = append(pages, r)
			all = append(all, rxChunkIDs(r)...)
			if (i == 0) != (r.Body["prev_batch"] == nil) {
				t.Fatalf("page %d: prev_batch must be there on every page but the first: %s", i, r.Raw)
			}
			next := r.str("next_batch")
			if next == "" {
				break
			}
			if i > 5 {
				t.Fatalf("too many pages")
			}
			path = v3 + "/publicRooms?limit=2&since=" + url.QueryEscape(next)
		}
		if !slices.Equal(all, order) || len(pages) != 3 {
			t.Fatalf("paged %v in %d pages, want %v in 3", all, len(pages), order)
		}
		// Back from the last page: the middle page again.
		back := get(t, srv, v3+"/publicRooms?limit=2&since="+url.QueryEscape(pages[2].str("prev_batch")), "").expect(t, http.StatusOK, "")
		if got := rxChunkIDs(back); !slices.Equal(got, order[2:4]) {
			t.Fatalf("prev page = %v, want %v", got, order[2:4])
		}
		if back.str("next_batch") == "" || back.str("prev_batch") == "" {
			t.Fatalf("middle page needs both tokens: %s", back.Raw)
		}
		first := get(t, srv, v3+"/publicRooms?limit=2&since="+url.QueryEscape(back.str("prev_batch")), "").expect(t, http.StatusOK, "")
		if got := rxChunkIDs(first); !slices.Equal(got, order[:2]) || first.Body["prev_batch"] != nil {
			t.Fatalf("first page = %v (%s), want %v and no prev_batch", got, first.Raw, order[:2])
		}
	})

	t.Run("filters", func(t *testing.T) {
		cases := []struct {
			name string
			body map[string]any
			want []string
		}{
			{"name", map[string]any{"filter": map[string]any{"generic_search_term": "alpha"}}, []string{alpha}},
			{"topic", map[string]any{"filter": map[string]any{"generic_search_term": "FIRST"}}, []string{alpha}},
			{"alias", map[string]any{"filter": map[string]any{"generic_search_term": "Gamma"}}, []string{gamma}},
			{"spaces", map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}, []string{space}},
			{"rooms without a type", map[string]any{"filter": map[string]any{"room_types": []any{nil}}},
				append([]string{alpha}, ones...)},
			{"both", map[string]any{"filter": map[string]any{"room_types": []any{nil, "m.space"}}}, order},
			{"all networks", map[string]any{"include_all_networks": true}, order},
			{"limit", map[string]any{"limit": 1}, order[:1]},
		}
		for _, c := range cases {
			r := post(t, srv, v3+"/publicRooms", tok, c.body).expect(t, http.StatusOK, "")
			if got := rxChunkIDs(r); !slices.Equal(got, c.want) {
				t.Errorf("%s: chunk = %v, want %v", c.name, got, c.want)
			}
		}
		r := post(t, srv, v3+"/publicRooms", tok, map[string]any{"limit": 1, "filter": map[string]any{"room_types": []any{nil}}}).
			expect(t, http.StatusOK, "")
		if rxNum(r.Body, "total_room_count_estimate") != 4 || r.str("next_batch") == "" {
			t.Errorf("filtered estimate and paging: %s", r.Raw)
		}
		// An application service network we do not have: nothing.
		r = post(t, srv, v3+"/publicRooms", tok, map[string]any{"third_party_instance_id": "irc"}).expect(t, http.StatusOK, "")
		if len(rxChunkIDs(r)) != 0 {
			t.Errorf("third-party network list: %s", r.Raw)
		}
	})

	t.Run("server parameter", func(t *testing.T) {
		r := get(t, srv, v3+"/publicRooms?server=tessera.test", "").expect(t, http.StatusOK, "")
		if !slices.Equal(rxChunkIDs(r), order) {
			t.Errorf("our own server by name: %s", r.Raw)
		}
		get(t, srv, v3+"/publicRooms?server=other.example", "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, v3+"/publicRooms?server=other.example", tok, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, v3+"/publicRooms?server="+url.QueryEscape("bad server!"), "").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("errors", func(t *testing.T) {
		post(t, srv, v3+"/publicRooms", "", map[string]any{}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
		get(t, srv, v3+"/publicRooms", "not-a-token").expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		get(t, srv, v3+"/publicRooms?limit=-1", "").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, v3+"/publicRooms?limit=ten", "").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, v3+"/publicRooms?since=garbage", "").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		post(t, srv, v3+"/publicRooms", tok, map[string]any{"limit": -5}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		post(t, srv, v3+"/publicRooms", tok, map[string]any{"filter": map[string]any{"room_types": "m.space"}}).
			expect(t, http.StatusBadRequest, "M_BAD_JSON")
		post(t, srv, v3+"/publicRooms", tok, map[string]any{"include_all_networks": true, "third_party_instance_id": "irc"}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("mautrix and unpublishing", func(t *testing.T) {
		res, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 10})
		must(t, err, "mautrix public rooms")
		if len(res.Chunk) != 5 || res.Chunk[0].RoomID != id.RoomID(alpha) || res.Chunk[0].NumJoinedMembers != 3 ||
			res.Chunk[1].RoomType != "m.space" || res.TotalRoomCountEstimate != 5 {
			t.Fatalf("mautrix public rooms = %+v", res)
		}
		put(t, srv, rxPath(v3+"/directory/list/room/%s", alpha), tok, map[string]any{"visibility": "private"}).expect(t, http.StatusOK, "")
		r := get(t, srv, v3+"/publicRooms", "").expect(t, http.StatusOK, "")
		if slices.Contains(rxChunkIDs(r), alpha) {
			t.Fatalf("unpublished room still listed: %s", r.Raw)
		}
	})
}

// TestRoomSummary covers GET /v1/room_summary and its unstable paths: who
// may see which room, the fields, and the errors.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1room_summaryroomidoralias
func TestRoomSummary(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	carol := srv.Register("carol", "password1")
	dave := srv.Register("dave", "password1")
	tok := alice.AccessToken
	summary := func(roomIDOrAlias, token string) resp {
		t.Helper()
		return get(t, srv, v1+"/room_summary/"+url.PathEscape(roomIDOrAlias), token)
	}

	pub := rxCreate(t, srv, tok, map[string]any{"preset": "public_chat", "name": "Lobby", "topic": "Say hi",
		"room_alias_name": "lobby", "initial_state": []any{
			map[string]any{"type": "m.room.avatar", "content": map[string]any{"url": "mxc://tessera.test/lobby"}},
		}})
	secret := rxCreate(t, srv, tok, map[string]any{"preset": "private_chat", "name": "Secret",
		"invite": []string{bob.UserID.String()}, "initial_state": []any{
			map[string]any{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
		}})
	restricted := rxCreate(t, srv, tok, map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "restricted",
			"allow": []any{map[string]any{"type": "m.room_membership", "room_id": pub}}}},
	}})
	readable := rxCreate(t, srv, tok, map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	rxJoin(t, carol, pub)

	t.Run("public room without an access token", func(t *testing.T) {
		r := summary(pub, "").expect(t, http.StatusOK, "")
		rxRequired(t, r.Body)
		rxWantFields(t, "summary", r.Body, map[string]any{"room_id": pub, "name": "Lobby", "topic": "Say hi",
			"canonical_alias": "#lobby:tessera.test", "avatar_url": "mxc://tessera.test/lobby", "num_joined_members": 2,
			"join_rule": "public", "world_readable": false, "guest_can_join": false, "room_version": "12"})
		for _, k := range []string{"membership", "encryption", "room_type", "allowed_room_ids"} {
			if _, ok := r.Body[k]; ok {
				t.Errorf("%s present: %s", k, r.Raw)
			}
		}
		byAlias := summary("#lobby:tessera.test", "").expect(t, http.StatusOK, "")
		if byAlias.str("room_id") != pub {
			t.Errorf("by alias: %s", byAlias.Raw)
		}
	})

	t.Run("membership and private rooms", func(t *testing.T) {
		if r := summary(pub, dave.AccessToken).expect(t, http.StatusOK, ""); r.str("membership") != "leave" {
			t.Errorf("a stranger's membership = %q, want leave", r.str("membership"))
		}
		if r := summary(pub, carol.AccessToken).expect(t, http.StatusOK, ""); r.str("membership") != "join" {
			t.Errorf("membership = %q, want join", r.str("membership"))
		}
		summary(secret, "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
		summary(secret, dave.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		r := summary(secret, bob.AccessToken).expect(t, http.StatusOK, "")
		rxWantFields(t, "invited", r.Body, map[string]any{"membership": "invite", "encryption": "m.megolm.v1.aes-sha2",
			"join_rule": "invite", "name": "Secret", "num_joined_members": 1})
		if r := summary(secret, tok).expect(t, http.StatusOK, ""); r.str("membership") != "join" {
			t.Errorf("creator's membership = %q", r.str("membership"))
		}
	})

	t.Run("restricted room", func(t *testing.T) {
		// carol is in the room the join rule allows; dave is not.
		r := summary(restricted, carol.AccessToken).expect(t, http.StatusOK, "")
		ids, _ := r.Body["allowed_room_ids"].([]any)
		if len(ids) != 1 || ids[0] != pub || r.str("join_rule") != "restricted" || r.str("membership") != "leave" {
			t.Errorf("restricted summary: %s", r.Raw)
		}
		summary(restricted, dave.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		summary(restricted, "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("world readable room", func(t *testing.T) {
		r := summary(readable, "").expect(t, http.StatusOK, "")
		if b, _ := r.boolean("world_readable"); !b || r.str("join_rule") != "invite" {
			t.Errorf("world readable summary: %s", r.Raw)
		}
	})

	t.Run("unstable paths and mautrix", func(t *testing.T) {
		for _, p := range []string{"/summary/%s", "/rooms/%s/summary"} {
			r := get(t, srv, rxPath(nhekoSummary+p, pub), tok).expect(t, http.StatusOK, "")
			if r.str("room_id") != pub || r.str("membership") != "join" {
				t.Errorf("%s: %s", p, r.Raw)
			}
		}
		// mautrix uses the unstable path until /versions says v1.15.
		res, err := bob.GetRoomSummary(ctx, secret)
		must(t, err, "mautrix room summary")
		if res.RoomID != id.RoomID(secret) || res.Membership != "invite" || res.Name != "Secret" || res.Encryption != "m.megolm.v1.aes-sha2" {
			t.Errorf("mautrix summary = %+v", res)
		}
	})

	t.Run("errors", func(t *testing.T) {
		summary("!nowhere:tessera.test", "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
		summary("#nowhere:tessera.test", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		summary("nowhere", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		summary(pub, "not-a-token").expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}

// TestReportContent covers reporting events and rooms, and the admin
// listing of reports.
// https://spec.matrix.org/v1.19/client-server-api/#reporting-content
func TestReportContent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	carol := srv.Register("carol", "password1")
	room := rxCreate(t, srv, alice.AccessToken, map[string]any{"preset": "public_chat"})
	other := rxCreate(t, srv, alice.AccessToken, map[string]any{"preset": "public_chat"})
	rxJoin(t, bob, room)
	sent, err := alice.SendText(ctx, id.RoomID(room), "something bad")
	must(t, err, "send")
	msg := sent.EventID.String()
	gone, err := alice.SendText(ctx, id.RoomID(room), "something removed")
	must(t, err, "send")
	_, err = alice.RedactEvent(ctx, id.RoomID(room), gone.EventID)
	must(t, err, "redact")
	reportEvent := func(room, event string) string { return rxPath(v3+"/rooms/%s/report/%s", room, event) }
	reportRoom := func(room string) string { return rxPath(v3+"/rooms/%s/report", room) }

	t.Run("event reports", func(t *testing.T) {
		post(t, srv, reportEvent(room, msg), bob.AccessToken, map[string]any{"reason": "spam", "score": -100}).
			expect(t, http.StatusOK, "")
		must(t, bob.ReportEvent(ctx, id.RoomID(room), id.EventID(msg), "still spam"), "mautrix report event")
		// Not joined, unknown, in another room, redacted: all alike 404.
		post(t, srv, reportEvent(room, msg), carol.AccessToken, map[string]any{"reason": "x"}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, reportEvent(room, "$nowhere"), bob.AccessToken, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, reportEvent(other, msg), alice.AccessToken, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, reportEvent(room, gone.EventID.String()), bob.AccessToken, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, reportEvent("!nowhere:tessera.test", msg), bob.AccessToken, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, reportEvent(room, msg), bob.AccessToken, map[string]any{"score": "high"}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
		post(t, srv, reportEvent(room, msg), bob.AccessToken, map[string]any{"reason": 5}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
		post(t, srv, reportEvent(room, msg), "", map[string]any{}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})

	t.Run("room reports", func(t *testing.T) {
		// No need to be in the room.
		post(t, srv, reportRoom(room), carol.AccessToken, map[string]any{"reason": "bad room"}).expect(t, http.StatusOK, "")
		post(t, srv, reportRoom(room), carol.AccessToken, map[string]any{"reason": ""}).expect(t, http.StatusOK, "")
		must(t, carol.ReportRoom(ctx, id.RoomID(other), "via mautrix"), "mautrix report room")
		post(t, srv, reportRoom("!nowhere:tessera.test"), carol.AccessToken, map[string]any{"reason": "x"}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		post(t, srv, reportRoom(room), carol.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		post(t, srv, reportRoom("nowhere"), carol.AccessToken, map[string]any{"reason": "x"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("admin listing", func(t *testing.T) {
		get(t, srv, eventReportsAPI, bob.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		get(t, srv, eventReportsAPI, "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
		admin, err := (&synapseadmin.Client{Client: srv.Client("", "")}).SharedSecretRegister(ctx, testserver.SharedSecret,
			synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "root-password", Admin: true})
		must(t, err, "register admin")
		r := get(t, srv, eventReportsAPI, admin.AccessToken).expect(t, http.StatusOK, "")
		reports, _ := r.Body["event_reports"].([]any)
		if rxNum(r.Body, "total") != 5 || len(reports) != 5 || r.Body["next_token"] != nil {
			t.Fatalf("reports: %s", r.Raw)
		}
		// Oldest last: bob's first report, with its score.
		first, _ := reports[4].(map[string]any)
		rxWantFields(t, "first report", first, map[string]any{"room_id": room, "event_id": msg,
			"user_id": bob.UserID.String(), "reason": "spam", "score": -100})
		newest, _ := reports[0].(map[string]any)
		rxWantFields(t, "newest report", newest, map[string]any{"room_id": other, "user_id": carol.UserID.String(), "reason": "via mautrix"})
		if _, ok := newest["event_id"]; ok {
			t.Errorf("a room report has an event_id: %v", newest)
		}
		page := get(t, srv, eventReportsAPI+"?limit=2&from=1", admin.AccessToken).expect(t, http.StatusOK, "")
		if reports, _ := page.Body["event_reports"].([]any); len(reports) != 2 || rxNum(page.Body, "next_token") != 3 {
			t.Fatalf("page: %s", page.Raw)
		}
		get(t, srv, eventReportsAPI+"?from=-1", admin.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestUpgradeRoom covers POST /rooms/{roomId}/upgrade from version 11 to
// 12: the permission check, the new room's create event and state, the
// aliases, the tombstone and the restricted old room.
// https://spec.matrix.org/v1.19/client-server-api/#room-upgrades
func TestUpgradeRoom(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	carol := srv.Register("carol", "password1")
	erin := srv.Register("erin", "password1")
	dave := srv.Register("dave", "password1")
	tok := alice.AccessToken
	acl := map[string]any{"allow": []any{"*"}, "deny": []any{"evil.example"}, "allow_ip_literals": false}
	old := rxCreate(t, srv, tok, map[string]any{"room_version": "11", "visibility": "public", "preset": "public_chat",
		"name": "Old Room", "topic": "Old topic", "room_alias_name": "upgrade-me", "initial_state": []any{
			map[string]any{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
			map[string]any{"type": "m.room.server_acl", "content": acl},
		}})
	for _, c := range []*mautrix.Client{bob, carol, erin} {
		rxJoin(t, c, old)
	}
	pl := rxContent(t, srv, tok, old, "m.room.power_levels", "")
	pl["users"].(map[string]any)[bob.UserID.String()] = 50
	rxPutState(t, srv, tok, old, "m.room.power_levels", "", pl)
	post(t, srv, rxPath(v3+"/rooms/%s/ban", old), tok, map[string]any{"user_id": carol.UserID.String(), "reason": "rude"}).
		expect(t, http.StatusOK, "")
	upgrade := func(room, token string, body any) resp {
		t.Helper()
		return post(t, srv, rxPath(v3+"/rooms/%s/upgrade", room), token, body)
	}

	t.Run("refusals", func(t *testing.T) {
		upgrade(old, bob.AccessToken, map[string]any{"new_version": "12"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		upgrade(old, dave.AccessToken, map[string]any{"new_version": "12"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		upgrade(old, tok, map[string]any{"new_version": "999"}).expect(t, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
		upgrade(old, tok, map[string]any{"new_version": "org.matrix.msc4014"}).expect(t, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
		upgrade(old, tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		upgrade(old, tok, `{"new_version": 12}`).expect(t, http.StatusBadRequest, "M_BAD_JSON")
		upgrade(old, tok, map[string]any{"new_version": "12", "additional_creators": []any{"not a user"}}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		upgrade("!nowhere:tessera.test", tok, map[string]any{"new_version": "12"}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		upgrade(old, "", map[string]any{"new_version": "12"}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})

	r := upgrade(old, tok, map[string]any{"new_version": "12"}).expect(t, http.StatusOK, "")
	newRoom := r.str("replacement_room")
	if newRoom == "" || newRoom == old {
		t.Fatalf("replacement_room: %s", r.Raw)
	}

	t.Run("new room", func(t *testing.T) {
		create := rxStateEvent(t, srv, tok, newRoom, "m.room.create", "")
		content, _ := create["content"].(map[string]any)
		pred, _ := content["predecessor"].(map[string]any)
		if content["room_version"] != "12" || pred["room_id"] != old || create["sender"] != alice.UserID.String() {
			t.Fatalf("create event: %v", create)
		}
		if ev, _ := pred["event_id"].(string); ev == "" || ev[0] != '$' {
			t.Errorf("predecessor.event_id = %v", pred["event_id"])
		}
		rxWantFields(t, "name", rxContent(t, srv, tok, newRoom, "m.room.name", ""), map[string]any{"name": "Old Room"})
		rxWantFields(t, "topic", rxContent(t, srv, tok, newRoom, "m.room.topic", ""), map[string]any{"topic": "Old topic"})
		rxWantFields(t, "encryption", rxContent(t, srv, tok, newRoom, "m.room.encryption", ""), map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
		rxWantFields(t, "join rules", rxContent(t, srv, tok, newRoom, "m.room.join_rules", ""), map[string]any{"join_rule": "public"})
		rxWantFields(t, "guest access", rxContent(t, srv, tok, newRoom, "m.room.guest_access", ""), map[string]any{"guest_access": "forbidden"})
		rxWantFields(t, "server acl", rxContent(t, srv, tok, newRoom, "m.room.server_acl", ""), map[string]any{"deny": []any{"evil.example"}})
		rxWantFields(t, "ban", rxContent(t, srv, tok, newRoom, "m.room.member", carol.UserID.String()), map[string]any{"membership": "ban"})
		// Power levels: bob keeps 50; alice, the creator of a v12 room,
		// must not be listed.
		users, _ := rxContent(t, srv, tok, newRoom, "m.room.power_levels", "")["users"].(map[string]any)
		if _, listed := users[alice.UserID.String()]; listed || rxNum(users, bob.UserID.String()) != 50 {
			t.Errorf("new power levels users = %v", users)
		}
		rxWantFields(t, "canonical alias", rxContent(t, srv, tok, newRoom, "m.room.canonical_alias", ""),
			map[string]any{"alias": "#upgrade-me:tessera.test"})
		res, err := alice.ResolveAlias(ctx, "#upgrade-me:tessera.test")
		must(t, err, "resolve alias")
		if res.RoomID != id.RoomID(newRoom) {
			t.Errorf("alias points at %s, want %s", res.RoomID, newRoom)
		}
		vis := get(t, srv, rxPath(v3+"/directory/list/room/%s", newRoom), "").expect(t, http.StatusOK, "")
		if vis.str("visibility") != "public" {
			t.Errorf("new room visibility: %s", vis.Raw)
		}
		rxJoin(t, bob, newRoom)
	})

	t.Run("old room", func(t *testing.T) {
		rxWantFields(t, "tombstone", rxContent(t, srv, tok, old, "m.room.tombstone", ""), map[string]any{
			"replacement_room": newRoom, "body": "This room has been replaced"})
		pl := rxContent(t, srv, tok, old, "m.room.power_levels", "")
		rxWantFields(t, "old power levels", pl, map[string]any{"events_default": 50, "invite": 50})
		if _, ok := rxContent(t, srv, tok, old, "m.room.canonical_alias", "")["alias"]; ok {
			t.Errorf("old room still advertises the alias")
		}
		vis := get(t, srv, rxPath(v3+"/directory/list/room/%s", old), "").expect(t, http.StatusOK, "")
		if vis.str("visibility") != "private" {
			t.Errorf("old room visibility: %s", vis.Raw)
		}
		// erin, at level 0, may no longer talk there.
		_, err := erin.SendText(ctx, id.RoomID(old), "hello?")
		wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestUpgradeRoomPowerLevels covers the power level cases of upgrades:
// an upgrader who needs more power to copy the state than they keep, the
// creators of v12 rooms, and going back from v12.
func TestUpgradeRoomPowerLevels(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	aliceID, bobID := alice.UserID.String(), bob.UserID.String()
	upgrade := func(t *testing.T, room, token string, body any) string {
		t.Helper()
		r := post(t, srv, rxPath(v3+"/rooms/%s/upgrade", room), token, body).expect(t, http.StatusOK, "")
		return r.str("replacement_room")
	}
	powerUsers := func(t *testing.T, token, room string) map[string]any {
		t.Helper()
		users, _ := rxContent(t, srv, token, room, "m.room.power_levels", "")["users"].(map[string]any)
		return users
	}

	t.Run("moderator upgrades a v10 room", func(t *testing.T) {
		// bob may send the tombstone (50) but not power levels or ACLs
		// (100): he is raised for the copy, then set back.
		old := rxCreate(t, srv, alice.AccessToken, map[string]any{"room_version": "10", "preset": "public_chat",
			"power_level_content_override": map[string]any{
				"users":  map[string]any{aliceID: 100, bobID: 50},
				"events": map[string]any{"m.room.tombstone": 50, "m.room.power_levels": 100, "m.room.server_acl": 100},
			}})
		rxJoin(t, bob, old)
		newRoom := upgrade(t, old, bob.AccessToken, map[string]any{"new_version": "11"})
		users := powerUsers(t, bob.AccessToken, newRoom)
		if rxNum(users, bobID) != 50 || rxNum(users, aliceID) != 100 || len(users) != 2 {
			t.Errorf("new power levels users = %v, want bob 50 and alice 100", users)
		}
		events, _ := rxContent(t, srv, bob.AccessToken, newRoom, "m.room.power_levels", "")["events"].(map[string]any)
		if rxNum(events, "m.room.tombstone") != 50 || rxNum(events, "m.room.server_acl") != 100 {
			t.Errorf("new power levels events = %v", events)
		}
		create := rxContent(t, srv, bob.AccessToken, newRoom, "m.room.create", "")
		if create["room_version"] != "11" {
			t.Errorf("create content = %v", create)
		}
		// bob could not restrict the old room's power levels (he lacks the
		// level): the upgrade went ahead all the same.
		rxWantFields(t, "old power levels", rxContent(t, srv, alice.AccessToken, old, "m.room.power_levels", ""),
			map[string]any{"events_default": 0})
		rxWantFields(t, "tombstone", rxContent(t, srv, alice.AccessToken, old, "m.room.tombstone", ""),
			map[string]any{"replacement_room": newRoom})
	})

	t.Run("v12 with additional creators, and back to v11", func(t *testing.T) {
		old := rxCreate(t, srv, alice.AccessToken, map[string]any{"preset": "public_chat"})
		rxJoin(t, bob, old)
		v12 := upgrade(t, old, alice.AccessToken, map[string]any{"new_version": "12", "additional_creators": []string{bobID}})
		create := rxContent(t, srv, alice.AccessToken, v12, "m.room.create", "")
		if ac, _ := create["additional_creators"].([]any); len(ac) != 1 || ac[0] != bobID {
			t.Errorf("create content = %v", create)
		}
		if users := powerUsers(t, alice.AccessToken, v12); len(users) != 0 {
			t.Errorf("creators listed in v12 power levels: %v", users)
		}
		// bob, a creator, upgrades to 11: both creators keep the top level,
		// the v12 room's tombstone level (150), so that they can still do
		// everything there, upgrading included.
		rxJoin(t, bob, v12)
		v11 := upgrade(t, v12, bob.AccessToken, map[string]any{"new_version": "11"})
		users := powerUsers(t, bob.AccessToken, v11)
		if rxNum(users, aliceID) != 150 || rxNum(users, bobID) != 150 {
			t.Errorf("v11 power levels users = %v, want both creators at 150", users)
		}
	})
}

// TestTimestampToEvent covers GET /v1/rooms/{roomId}/timestamp_to_event:
// both directions, history visibility, and the errors.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event
func TestTimestampToEvent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	bob := srv.Register("bob", "password1")
	carol := srv.Register("carol", "password1")
	room := rxCreate(t, srv, alice.AccessToken, map[string]any{"preset": "public_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}},
	}})
	var ids []string
	var tss []int64
	for i := 0; i < 3; i++ {
		time.Sleep(5 * time.Millisecond) // distinct timestamps
		res, err := alice.SendText(ctx, id.RoomID(room), fmt.Sprintf("message %d", i))
		must(t, err, "send")
		ev, err := alice.GetEvent(ctx, id.RoomID(room), res.EventID)
		must(t, err, "get event")
		ids = append(ids, res.EventID.String())
		tss = append(tss, ev.Timestamp)
	}
	time.Sleep(5 * time.Millisecond)
	rxJoin(t, bob, room)
	lookup := func(token string, ts int64, dir string) resp {
		t.Helper()
		return get(t, srv, rxPath(v1+"/rooms/%s/timestamp_to_event", room)+fmt.Sprintf("?ts=%d&dir=%s", ts, dir), token)
	}
	want := func(r resp, i int) {
		t.Helper()
		r.expect(t, http.StatusOK, "")
		if r.str("event_id") != ids[i] || int64(rxNum(r.Body, "origin_server_ts")) != tss[i] {
			t.Errorf("got %s, want message %d (%s at %d)", r.Raw, i, ids[i], tss[i])
		}
	}

	t.Run("directions", func(t *testing.T) {
		want(lookup(alice.AccessToken, tss[1], "f"), 1)
		want(lookup(alice.AccessToken, tss[1], "b"), 1)
		want(lookup(alice.AccessToken, tss[1]+1, "f"), 2)
		want(lookup(alice.AccessToken, tss[1]-1, "b"), 0)
		lookup(alice.AccessToken, time.Now().Add(time.Hour).UnixMilli(), "f").expect(t, http.StatusNotFound, "M_NOT_FOUND")
		lookup(alice.AccessToken, 0, "b").expect(t, http.StatusNotFound, "M_NOT_FOUND")
		res, err := alice.TimestampToEvent(ctx, id.RoomID(room), time.UnixMilli(tss[2]), mautrix.DirectionBackward)
		must(t, err, "mautrix timestamp to event")
		if res.EventID.String() != ids[2] || res.Timestamp.UnixMilli() != tss[2] {
			t.Errorf("mautrix: %+v", res)
		}
		r := get(t, srv, rxPath("/_matrix/client/unstable/org.matrix.msc3030/rooms/%s/timestamp_to_event", room)+
			fmt.Sprintf("?ts=%d&dir=f", tss[0]), alice.AccessToken)
		want(r, 0)
	})

	t.Run("history visibility", func(t *testing.T) {
		// bob joined after the messages, in a room whose history only
		// members see: none of them is his. Backwards he finds the last
		// event sent before the history visibility was set (under the
		// default, shared); forwards, his own join.
		r := lookup(bob.AccessToken, tss[2], "b").expect(t, http.StatusOK, "")
		ev, err := bob.GetEvent(ctx, id.RoomID(room), id.EventID(r.str("event_id")))
		must(t, err, "get event")
		if ev.StateKey == nil || ev.Type.Type == "m.room.history_visibility" || slices.Contains(ids, ev.ID.String()) {
			t.Errorf("bob's last visible event before the messages is %s, want initial state from before the history visibility", ev.Type.Type)
		}
		r = lookup(bob.AccessToken, tss[0], "f").expect(t, http.StatusOK, "")
		ev, err = bob.GetEvent(ctx, id.RoomID(room), id.EventID(r.str("event_id")))
		must(t, err, "get event")
		if ev.Type.Type != "m.room.member" || ev.GetStateKey() != bob.UserID.String() {
			t.Errorf("bob's first visible event is %s %v, want his join", ev.Type.Type, ev.StateKey)
		}
		lookup(carol.AccessToken, tss[0], "f").expect(t, http.StatusForbidden, "M_FORBIDDEN")
	})

	t.Run("errors", func(t *testing.T) {
		base := rxPath(v1+"/rooms/%s/timestamp_to_event", room)
		get(t, srv, base+"?dir=f", alice.AccessToken).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		get(t, srv, base+"?ts=1", alice.AccessToken).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		get(t, srv, base+"?ts=yesterday&dir=f", alice.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, base+"?ts=1.5&dir=f", alice.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, base+"?ts=1&dir=up", alice.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, base+"?ts=1&dir=f", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
		get(t, srv, rxPath(v1+"/rooms/%s/timestamp_to_event", "nowhere")+"?ts=1&dir=f", alice.AccessToken).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
