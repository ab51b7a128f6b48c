package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// Tests for account data, room tags, read markers and receipts, and the
// user directory.
// https://spec.matrix.org/v1.19/client-server-api/#client-config
// https://spec.matrix.org/v1.19/client-server-api/#room-tagging
// https://spec.matrix.org/v1.19/client-server-api/#fully-read-markers
// https://spec.matrix.org/v1.19/client-server-api/#receipts
// https://spec.matrix.org/v1.19/client-server-api/#user-directory

const adPassword = "password1"

// adPath is a v3 path made of escaped segments.
func adPath(segments ...string) string {
	for i, s := range segments {
		segments[i] = url.PathEscape(s)
	}
	return v3 + "/" + strings.Join(segments, "/")
}

func globalDataPath(userID, typ string) string {
	return adPath("user", userID, "account_data", typ)
}

func roomDataPath(userID, roomID, typ string) string {
	return adPath("user", userID, "rooms", roomID, "account_data", typ)
}

func tagsPath(userID, roomID string, tag ...string) string {
	if len(tag) == 0 {
		return adPath("user", userID, "rooms", roomID, "tags")
	}
	return adPath("user", userID, "rooms", roomID, "tags", tag[0])
}

// adCreateRoom creates a room and returns its ID.
func adCreateRoom(t testing.TB, srv *testserver.Server, s session, body map[string]any) string {
	t.Helper()
	r := post(t, srv, v3+"/createRoom", s.AccessToken, body).expect(t, http.StatusOK, "")
	return r.str("room_id")
}

func adJoin(t testing.TB, srv *testserver.Server, s session, roomID string) {
	t.Helper()
	post(t, srv, adPath("rooms", roomID, "join"), s.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
}

var adTxn atomic.Int64

// adSend sends a text message and returns its event ID.
func adSend(t testing.TB, srv *testserver.Server, s session, roomID, text string) string {
	t.Helper()
	txn := "adtxn" + strconv.FormatInt(adTxn.Add(1), 10)
	r := put(t, srv, adPath("rooms", roomID, "send", "m.room.message", txn), s.AccessToken,
		map[string]any{"msgtype": "m.text", "body": text}).expect(t, http.StatusOK, "")
	return r.str("event_id")
}

// jsonEqual fails the test unless the body of r is the JSON value want.
func jsonEqual(t testing.TB, r resp, want string) {
	t.Helper()
	var got, exp any
	if err := json.Unmarshal(r.Raw, &got); err != nil {
		t.Fatalf("response is not JSON: %q", r.Raw)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad expectation %q: %v", want, err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("body = %s, want %s", r.Raw, want)
	}
}

// TestAccountData covers global and room account data: storing, reading,
// replacing, and every refusal account-data.yaml lists.
func TestAccountData(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, guestsAllowed)
	alice := registerUser(t, srv, "alice", adPassword)
	bob := registerUser(t, srv, "bob", adPassword)
	const typ = "org.example.config"
	room := "!somewhere:tessera.test"

	t.Run("global set, get, replace", func(t *testing.T) {
		jsonEqual(t, put(t, srv, globalDataPath(alice.UserID, typ), alice.AccessToken, map[string]any{"a": 1}).
			expect(t, http.StatusOK, ""), `{}`)
		jsonEqual(t, get(t, srv, globalDataPath(alice.UserID, typ), alice.AccessToken).expect(t, http.StatusOK, ""), `{"a":1}`)
		put(t, srv, globalDataPath(alice.UserID, typ), alice.AccessToken, `{"b": [1, 2], "c": {"d": null}}`).
			expect(t, http.StatusOK, "")
		jsonEqual(t, get(t, srv, globalDataPath(alice.UserID, typ), alice.AccessToken).expect(t, http.StatusOK, ""),
			`{"b":[1,2],"c":{"d":null}}`)
		// An empty object is content like any other (v1.19 has no
		// deletion of account data).
		put(t, srv, globalDataPath(alice.UserID, "org.example.empty"), alice.AccessToken, `{}`).expect(t, http.StatusOK, "")
		jsonEqual(t, get(t, srv, globalDataPath(alice.UserID, "org.example.empty"), alice.AccessToken).
			expect(t, http.StatusOK, ""), `{}`)
		// The r0 prefix serves the same data.
		jsonEqual(t, get(t, srv, strings.Replace(globalDataPath(alice.UserID, typ), "/v3/", "/r0/", 1), alice.AccessToken).
			expect(t, http.StatusOK, ""), `{"b":[1,2],"c":{"d":null}}`)
	})

	t.Run("mautrix round trip", func(t *testing.T) {
		c := client(srv, alice)
		must(t, c.SetAccountData(ctx, "m.direct", map[string][]string{bob.UserID: {room}}), "set m.direct")
		var direct map[string][]string
		must(t, c.GetAccountData(ctx, "m.direct", &direct), "get m.direct")
		if !reflect.DeepEqual(direct, map[string][]string{bob.UserID: {room}}) {
			t.Fatalf("m.direct = %v", direct)
		}
		must(t, c.SetRoomAccountData(ctx, id.RoomID(room), "org.example.room", map[string]int{"x": 1}), "set room data")
		var rd map[string]int
		must(t, c.GetRoomAccountData(ctx, id.RoomID(room), "org.example.room", &rd), "get room data")
		if rd["x"] != 1 {
			t.Fatalf("room data = %v", rd)
		}
	})

	t.Run("room data is separate from global data", func(t *testing.T) {
		const rtyp = "org.example.scoped"
		put(t, srv, roomDataPath(alice.UserID, room, rtyp), alice.AccessToken, map[string]any{"in": "room"}).
			expect(t, http.StatusOK, "")
		jsonEqual(t, get(t, srv, roomDataPath(alice.UserID, room, rtyp), alice.AccessToken).
			expect(t, http.StatusOK, ""), `{"in":"room"}`)
		// No fallback between room and global data, nor between rooms.
		get(t, srv, globalDataPath(alice.UserID, rtyp), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, roomDataPath(alice.UserID, "!elsewhere:tessera.test", rtyp), alice.AccessToken).
			expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, roomDataPath(alice.UserID, room, typ), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("refusals", func(t *testing.T) {
		cases := []struct {
			name    string
			req     req
			status  int
			errcode string
		}{
			{"missing global", req{Method: "GET", Path: globalDataPath(alice.UserID, "org.example.none"), Token: alice.AccessToken},
				http.StatusNotFound, "M_NOT_FOUND"},
			{"missing room", req{Method: "GET", Path: roomDataPath(alice.UserID, room, "org.example.none"), Token: alice.AccessToken},
				http.StatusNotFound, "M_NOT_FOUND"},
			{"get other user's", req{Method: "GET", Path: globalDataPath(alice.UserID, typ), Token: bob.AccessToken},
				http.StatusForbidden, "M_FORBIDDEN"},
			{"set other user's", req{Method: "PUT", Path: globalDataPath(alice.UserID, typ), Token: bob.AccessToken, Body: `{}`},
				http.StatusForbidden, "M_FORBIDDEN"},
			{"get other user's room data", req{Method: "GET", Path: roomDataPath(alice.UserID, room, typ), Token: bob.AccessToken},
				http.StatusForbidden, "M_FORBIDDEN"},
			{"set other user's room data", req{Method: "PUT", Path: roomDataPath(alice.UserID, room, typ), Token: bob.AccessToken, Body: `{}`},
				http.StatusForbidden, "M_FORBIDDEN"},
			{"malformed JSON", req{Method: "PUT", Path: globalDataPath(alice.UserID, typ), Token: alice.AccessToken, Body: `{"a":`},
				http.StatusBadRequest, "M_NOT_JSON"},
			{"empty body", req{Method: "PUT", Path: globalDataPath(alice.UserID, typ), Token: alice.AccessToken, Body: ``},
				http.StatusBadRequest, "M_NOT_JSON"},
			{"array", req{Method: "PUT", Path: globalDataPath(alice.UserID, typ), Token: alice.AccessToken, Body: `[1]`},
				http.StatusBadRequest, "M_BAD_JSON"},
			{"string", req{Method: "PUT", Path: roomDataPath(alice.UserID, room, typ), Token: alice.AccessToken, Body: `"x"`},
				http.StatusBadRequest, "M_BAD_JSON"},
			{"global m.fully_read", req{Method: "PUT", Path: globalDataPath(alice.UserID, "m.fully_read"), Token: alice.AccessToken,
				Body: `{"event_id":"$x"}`}, http.StatusMethodNotAllowed, "M_BAD_JSON"},
			{"room m.fully_read", req{Method: "PUT", Path: roomDataPath(alice.UserID, room, "m.fully_read"), Token: alice.AccessToken,
				Body: `{"event_id":"$x"}`}, http.StatusMethodNotAllowed, "M_BAD_JSON"},
			{"global m.push_rules", req{Method: "PUT", Path: globalDataPath(alice.UserID, "m.push_rules"), Token: alice.AccessToken,
				Body: `{}`}, http.StatusMethodNotAllowed, "M_BAD_JSON"},
			{"room m.push_rules", req{Method: "PUT", Path: roomDataPath(alice.UserID, room, "m.push_rules"), Token: alice.AccessToken,
				Body: `{}`}, http.StatusMethodNotAllowed, "M_BAD_JSON"},
			{"get with invalid room ID", req{Method: "GET", Path: roomDataPath(alice.UserID, "@notaroom:tessera.test", typ),
				Token: alice.AccessToken}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"set with invalid room ID", req{Method: "PUT", Path: roomDataPath(alice.UserID, "notaroom", typ),
				Token: alice.AccessToken, Body: `{}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"no access token", req{Method: "GET", Path: globalDataPath(alice.UserID, typ)},
				http.StatusUnauthorized, "M_MISSING_TOKEN"},
			{"no DELETE in v1.19", req{Method: "DELETE", Path: globalDataPath(alice.UserID, typ), Token: alice.AccessToken},
				http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				do(t, srv, c.req).expect(t, c.status, c.errcode)
			})
		}
		// A refused write changed nothing.
		jsonEqual(t, get(t, srv, globalDataPath(alice.UserID, typ), alice.AccessToken).expect(t, http.StatusOK, ""),
			`{"b":[1,2],"c":{"d":null}}`)
		get(t, srv, globalDataPath(alice.UserID, "m.push_rules"), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("guests refused", func(t *testing.T) {
		g := sessionOf(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusOK, ""))
		put(t, srv, globalDataPath(g.UserID, typ), g.AccessToken, `{}`).expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
		post(t, srv, v3+"/user_directory/search", g.AccessToken, map[string]any{"search_term": "a"}).
			expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	})
}

// TestRoomTags covers the tag endpoints and that tags are the room account
// data event m.tag.
func TestRoomTags(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", adPassword)
	bob := registerUser(t, srv, "bob", adPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})

	jsonEqual(t, get(t, srv, tagsPath(alice.UserID, room), alice.AccessToken).expect(t, http.StatusOK, ""), `{"tags":{}}`)

	// mautrix writes the order as 2.5e-01; it is stored as 0.25.
	c := client(srv, alice)
	must(t, c.AddTag(ctx, id.RoomID(room), event.RoomTagFavourite, 0.25), "add m.favourite")
	tags, err := c.GetTags(ctx, id.RoomID(room))
	must(t, err, "get tags")
	if o := tags.Tags[event.RoomTagFavourite].Order; o != "0.25" {
		t.Fatalf("m.favourite order = %q, want 0.25", o)
	}
	put(t, srv, tagsPath(alice.UserID, room, "u.work"), alice.AccessToken, `{}`).expect(t, http.StatusOK, "")
	put(t, srv, tagsPath(alice.UserID, room, "u.home"), alice.AccessToken, `{"order": 1, "org.example.colour": "red"}`).
		expect(t, http.StatusOK, "")
	want := `{"tags":{"m.favourite":{"order":0.25},"u.work":{},"u.home":{"order":1,"org.example.colour":"red"}}}`
	jsonEqual(t, get(t, srv, tagsPath(alice.UserID, room), alice.AccessToken).expect(t, http.StatusOK, ""), want)
	// The tags are the room account data m.tag, which /sync delivers.
	jsonEqual(t, get(t, srv, roomDataPath(alice.UserID, room, "m.tag"), alice.AccessToken).expect(t, http.StatusOK, ""), want)

	// Replace, delete, delete again.
	put(t, srv, tagsPath(alice.UserID, room, "u.work"), alice.AccessToken, `{"order": 0}`).expect(t, http.StatusOK, "")
	jsonEqual(t, del(t, srv, tagsPath(alice.UserID, room, "u.home"), alice.AccessToken, nil).expect(t, http.StatusOK, ""), `{}`)
	del(t, srv, tagsPath(alice.UserID, room, "u.home"), alice.AccessToken, nil).expect(t, http.StatusOK, "")
	must(t, c.RemoveTag(ctx, id.RoomID(room), event.RoomTagFavourite), "remove m.favourite")
	jsonEqual(t, get(t, srv, tagsPath(alice.UserID, room), alice.AccessToken).expect(t, http.StatusOK, ""),
		`{"tags":{"u.work":{"order":0}}}`)

	// Tags written through the account data API are read back as tags.
	other := "!other:tessera.test"
	put(t, srv, roomDataPath(alice.UserID, other, "m.tag"), alice.AccessToken, `{"tags":{"m.lowpriority":{}}}`).
		expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, tagsPath(alice.UserID, other), alice.AccessToken).expect(t, http.StatusOK, ""),
		`{"tags":{"m.lowpriority":{}}}`)
	// Tags are per user.
	jsonEqual(t, get(t, srv, tagsPath(bob.UserID, room), bob.AccessToken).expect(t, http.StatusOK, ""), `{"tags":{}}`)

	cases := []struct {
		name    string
		req     req
		status  int
		errcode string
	}{
		{"order not a number", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: alice.AccessToken,
			Body: `{"order": "high"}`}, http.StatusBadRequest, "M_BAD_JSON"},
		{"order null", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: alice.AccessToken,
			Body: `{"order": null}`}, http.StatusBadRequest, "M_BAD_JSON"},
		{"order above 1", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: alice.AccessToken,
			Body: `{"order": 1.5}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"order below 0", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: alice.AccessToken,
			Body: `{"order": -0.1}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"malformed JSON", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: alice.AccessToken,
			Body: `{"order":`}, http.StatusBadRequest, "M_NOT_JSON"},
		{"not an object", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: alice.AccessToken,
			Body: `[0.5]`}, http.StatusBadRequest, "M_BAD_JSON"},
		{"tag over 255 bytes", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u."+strings.Repeat("t", 254)),
			Token: alice.AccessToken, Body: `{}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"invalid room ID", req{Method: "PUT", Path: tagsPath(alice.UserID, "room", "u.x"), Token: alice.AccessToken,
			Body: `{}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"get other user's", req{Method: "GET", Path: tagsPath(alice.UserID, room), Token: bob.AccessToken},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"set other user's", req{Method: "PUT", Path: tagsPath(alice.UserID, room, "u.x"), Token: bob.AccessToken,
			Body: `{}`}, http.StatusForbidden, "M_FORBIDDEN"},
		{"delete other user's", req{Method: "DELETE", Path: tagsPath(alice.UserID, room, "u.work"), Token: bob.AccessToken},
			http.StatusForbidden, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			do(t, srv, c.req).expect(t, c.status, c.errcode)
		})
	}
	// A tag of exactly 255 bytes is allowed.
	put(t, srv, tagsPath(alice.UserID, room, "u."+strings.Repeat("t", 253)), alice.AccessToken, `{}`).expect(t, http.StatusOK, "")
	// The refusals changed nothing else.
	r := get(t, srv, tagsPath(alice.UserID, room), alice.AccessToken).expect(t, http.StatusOK, "")
	if got := r.Body["tags"].(map[string]any); len(got) != 2 || got["u.work"] == nil {
		t.Fatalf("tags = %s", r.Raw)
	}
}

// TestReadMarkers covers POST /read_markers and POST /receipt: the fully
// read marker as room account data, receipts accepted for events of the
// room, and the refusals.
func TestReadMarkers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", adPassword)
	bob := registerUser(t, srv, "bob", adPassword)
	carol := registerUser(t, srv, "carol", adPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, bob, room)
	e1 := adSend(t, srv, bob, room, "one")
	e2 := adSend(t, srv, bob, room, "two")
	elsewhere := adCreateRoom(t, srv, carol, map[string]any{"preset": "private_chat"})
	foreign := adSend(t, srv, carol, elsewhere, "not in the room")
	markers := adPath("rooms", room, "read_markers")
	receipt := func(typ, eventID string) string { return adPath("rooms", room, "receipt", typ, eventID) }
	fullyRead := func() resp {
		return get(t, srv, roomDataPath(alice.UserID, room, "m.fully_read"), alice.AccessToken).expect(t, http.StatusOK, "")
	}

	get(t, srv, roomDataPath(alice.UserID, room, "m.fully_read"), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	jsonEqual(t, post(t, srv, markers, alice.AccessToken, map[string]any{
		"m.fully_read": e1, "m.read": e1, "m.read.private": e2,
	}).expect(t, http.StatusOK, ""), `{}`)
	jsonEqual(t, fullyRead(), `{"event_id":"`+e1+`"}`)

	// mautrix's read markers call; the marker may also move backwards.
	c := client(srv, alice)
	must(t, c.SetReadMarkers(ctx, id.RoomID(room), &mautrix.ReqSetReadMarkers{FullyRead: id.EventID(e2), Read: id.EventID(e2)}),
		"set read markers")
	jsonEqual(t, fullyRead(), `{"event_id":"`+e2+`"}`)
	post(t, srv, markers, alice.AccessToken, map[string]any{"m.fully_read": e1}).expect(t, http.StatusOK, "")
	jsonEqual(t, fullyRead(), `{"event_id":"`+e1+`"}`)
	// Nothing to move, and unknown receipt types are ignored.
	post(t, srv, markers, alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	post(t, srv, markers, alice.AccessToken, map[string]any{"org.example.marker": e2}).expect(t, http.StatusOK, "")

	// Receipts: mautrix's MarkRead (no body), a threaded receipt, a
	// private one, and m.fully_read through the receipt endpoint.
	must(t, c.MarkRead(ctx, id.RoomID(room), id.EventID(e2)), "mark read")
	must(t, c.SendReceipt(ctx, id.RoomID(room), id.EventID(e2), event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}),
		"threaded receipt")
	post(t, srv, receipt("m.read.private", e2), alice.AccessToken, nil).expect(t, http.StatusOK, "")
	post(t, srv, receipt("m.read", e1), alice.AccessToken, map[string]any{"thread_id": e1}).expect(t, http.StatusOK, "")
	jsonEqual(t, post(t, srv, receipt("m.fully_read", e2), alice.AccessToken, map[string]any{}).
		expect(t, http.StatusOK, ""), `{}`)
	jsonEqual(t, fullyRead(), `{"event_id":"`+e2+`"}`)
	// An older receipt than the current one is accepted (and ignored).
	post(t, srv, receipt("m.read", e1), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")

	cases := []struct {
		name    string
		req     req
		status  int
		errcode string
	}{
		{"markers: not joined", req{Method: "POST", Path: markers, Token: carol.AccessToken,
			Body: map[string]any{"m.fully_read": e1}}, http.StatusForbidden, "M_FORBIDDEN"},
		{"markers: event of another room", req{Method: "POST", Path: markers, Token: alice.AccessToken,
			Body: map[string]any{"m.fully_read": foreign}}, http.StatusNotFound, "M_NOT_FOUND"},
		{"markers: unknown event", req{Method: "POST", Path: markers, Token: alice.AccessToken,
			Body: map[string]any{"m.read": "$nosuchevent"}}, http.StatusNotFound, "M_NOT_FOUND"},
		{"markers: unknown private receipt event", req{Method: "POST", Path: markers, Token: alice.AccessToken,
			Body: map[string]any{"m.fully_read": e1, "m.read.private": "$nosuchevent"}}, http.StatusNotFound, "M_NOT_FOUND"},
		{"markers: malformed JSON", req{Method: "POST", Path: markers, Token: alice.AccessToken, Body: `{"m.read":`},
			http.StatusBadRequest, "M_NOT_JSON"},
		{"markers: empty body", req{Method: "POST", Path: markers, Token: alice.AccessToken, Body: ``},
			http.StatusBadRequest, "M_NOT_JSON"},
		{"markers: event ID not a string", req{Method: "POST", Path: markers, Token: alice.AccessToken,
			Body: `{"m.read": 5}`}, http.StatusBadRequest, "M_BAD_JSON"},
		{"markers: invalid room ID", req{Method: "POST", Path: adPath("rooms", "room", "read_markers"), Token: alice.AccessToken,
			Body: map[string]any{"m.read": e1}}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"markers: no access token", req{Method: "POST", Path: markers, Body: map[string]any{"m.read": e1}},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"receipt: not joined", req{Method: "POST", Path: receipt("m.read", e1), Token: carol.AccessToken, Body: `{}`},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"receipt: event of another room", req{Method: "POST", Path: receipt("m.read", foreign), Token: alice.AccessToken,
			Body: `{}`}, http.StatusNotFound, "M_NOT_FOUND"},
		{"receipt: unknown receipt type", req{Method: "POST", Path: receipt("m.bogus", e1), Token: alice.AccessToken,
			Body: `{}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"receipt: invalid event ID", req{Method: "POST", Path: receipt("m.read", "notanevent"), Token: alice.AccessToken,
			Body: `{}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"receipt: empty thread_id", req{Method: "POST", Path: receipt("m.read", e1), Token: alice.AccessToken,
			Body: `{"thread_id": ""}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"receipt: thread_id not a string", req{Method: "POST", Path: receipt("m.read", e1), Token: alice.AccessToken,
			Body: `{"thread_id": 5}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"receipt: thread_id not a thread", req{Method: "POST", Path: receipt("m.read", e1), Token: alice.AccessToken,
			Body: `{"thread_id": "elsewhere"}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"receipt: thread_id with m.fully_read", req{Method: "POST", Path: receipt("m.fully_read", e1), Token: alice.AccessToken,
			Body: `{"thread_id": "main"}`}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"receipt: malformed JSON", req{Method: "POST", Path: receipt("m.read", e1), Token: alice.AccessToken,
			Body: `{"thread_id"`}, http.StatusBadRequest, "M_NOT_JSON"},
		{"receipt: body not an object", req{Method: "POST", Path: receipt("m.read", e1), Token: alice.AccessToken,
			Body: `["main"]`}, http.StatusBadRequest, "M_BAD_JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			do(t, srv, c.req).expect(t, c.status, c.errcode)
		})
	}
	// The refused requests left the marker where it was.
	jsonEqual(t, fullyRead(), `{"event_id":"`+e2+`"}`)

	// After leaving, bob may no longer send receipts.
	post(t, srv, adPath("rooms", room, "leave"), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	post(t, srv, receipt("m.read", e1), bob.AccessToken, `{}`).expect(t, http.StatusForbidden, "M_FORBIDDEN")
}

// directoryIDs runs a search as s and returns the user IDs found and
// limited.
func directoryIDs(t testing.TB, srv *testserver.Server, s session, body map[string]any) ([]string, bool, resp) {
	t.Helper()
	r := post(t, srv, v3+"/user_directory/search", s.AccessToken, body).expect(t, http.StatusOK, "")
	results, ok := r.Body["results"].([]any)
	if !ok {
		t.Fatalf("results is not a list: %s", r.Raw)
	}
	limited, ok := r.boolean("limited")
	if !ok {
		t.Fatalf("limited missing: %s", r.Raw)
	}
	ids := []string{}
	for _, res := range results {
		m, _ := res.(map[string]any)
		ids = append(ids, m["user_id"].(string))
	}
	return ids, limited, r
}

// TestUserDirectory covers who the directory shows (users sharing a room,
// members of public and world-readable rooms, nobody deactivated), how it
// matches, ranks and limits, and its refusals.
func TestUserDirectory(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	u := map[string]session{}
	for _, name := range []string{"alice", "bob", "bobcat", "carol", "dave", "erin", "frank", "gina"} {
		u[name] = registerUser(t, srv, name, adPassword)
	}
	// alice and bob share an invite-only room.
	private := adCreateRoom(t, srv, u["alice"], map[string]any{"preset": "private_chat", "invite": []string{u["bob"].UserID}})
	adJoin(t, srv, u["bob"], private)
	// carol, bobcat and gina are in a public room.
	public := adCreateRoom(t, srv, u["carol"], map[string]any{"preset": "public_chat"})
	adJoin(t, srv, u["bobcat"], public)
	adJoin(t, srv, u["gina"], public)
	// frank is alone in a private room whose history anyone may read.
	adCreateRoom(t, srv, u["frank"], map[string]any{"preset": "private_chat", "initial_state": []any{
		map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}},
	}})
	// erin is alone in an invite-only room; dave is in no room at all.
	adCreateRoom(t, srv, u["erin"], map[string]any{"preset": "private_chat"})

	put(t, srv, profilePath(u["bob"].UserID, "displayname"), u["bob"].AccessToken, map[string]any{"displayname": "Bobby Tables"}).
		expect(t, http.StatusOK, "")
	put(t, srv, profilePath(u["carol"].UserID, "avatar_url"), u["carol"].AccessToken,
		map[string]any{"avatar_url": "mxc://tessera.test/carol"}).expect(t, http.StatusOK, "")
	put(t, srv, profilePath(u["bobcat"].UserID, "avatar_url"), u["bobcat"].AccessToken,
		map[string]any{"avatar_url": "mxc://tessera.test/bobcat"}).expect(t, http.StatusOK, "")

	search := func(s session, term string) []string {
		t.Helper()
		ids, _, _ := directoryIDs(t, srv, s, map[string]any{"search_term": term})
		return ids
	}
	expectIDs := func(got []string, want ...string) {
		t.Helper()
		if want == nil {
			want = []string{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("found %v, want %v", got, want)
		}
	}
	alice := u["alice"]
	// bob's localpart matches exactly, so he ranks above bobcat, who has
	// an avatar.
	expectIDs(search(alice, "bob"), u["bob"].UserID, u["bobcat"].UserID)
	expectIDs(search(alice, "bobc"), u["bobcat"].UserID)
	expectIDs(search(alice, "TAB"), u["bob"].UserID)       // display name, any case, word prefix
	expectIDs(search(alice, "bobby tab"), u["bob"].UserID) // every word must match
	expectIDs(search(alice, "bobby carol"))                // ... not just one of them
	// A full user ID is words too: bobcat matches, below the exact match.
	expectIDs(search(alice, "@bob:tessera.test"), u["bob"].UserID, u["bobcat"].UserID)
	expectIDs(search(alice, "obb"))                           // words match from their start
	expectIDs(search(alice, "carol"), u["carol"].UserID)      // member of a public room
	expectIDs(search(alice, "frank"), u["frank"].UserID)      // member of a world-readable room
	expectIDs(search(alice, "erin"))                          // alone in a private room
	expectIDs(search(alice, "dave"))                          // in no room
	expectIDs(search(u["bob"], "alice"), alice.UserID)        // sharing works both ways
	expectIDs(search(u["erin"], "erin"))                      // a private room alone is not shared
	expectIDs(search(u["carol"], "carol"), u["carol"].UserID) // but a public room makes one visible
	expectIDs(search(alice, "   "))

	// The result carries the profile; bob's avatar is unset.
	_, _, r := directoryIDs(t, srv, alice, map[string]any{"search_term": "bobby"})
	jsonEqual(t, r, `{"limited":false,"results":[{"user_id":"`+u["bob"].UserID+`","display_name":"Bobby Tables"}]}`)
	_, _, r = directoryIDs(t, srv, alice, map[string]any{"search_term": "carol"})
	jsonEqual(t, r, `{"limited":false,"results":[{"user_id":"`+u["carol"].UserID+
		`","display_name":"carol","avatar_url":"mxc://tessera.test/carol"}]}`)

	// Every visible user's ID contains the server name: users with an
	// avatar come first, then by user ID. The limit applies and says so.
	all, limited, _ := directoryIDs(t, srv, alice, map[string]any{"search_term": "tessera"})
	expectIDs(all, u["bobcat"].UserID, u["carol"].UserID, u["bob"].UserID, u["frank"].UserID, u["gina"].UserID)
	if limited {
		t.Fatalf("limited with %d results", len(all))
	}
	two, limited, _ := directoryIDs(t, srv, alice, map[string]any{"search_term": "tessera", "limit": 2})
	expectIDs(two, all[:2]...)
	if !limited {
		t.Fatal("limit 2: not limited")
	}
	expectIDs(search(alice, "gina"), u["gina"].UserID)

	// mautrix's search. (mautrix reads the profile format's
	// "displayname"; the directory's field is "display_name", so it lands
	// in Extra.)
	res, err := client(srv, alice).SearchUserDirectory(ctx, "bobby", 5)
	must(t, err, "mautrix search")
	if len(res.Results) != 1 || res.Results[0].UserID != id.UserID(u["bob"].UserID) ||
		res.Results[0].Extra["display_name"] != "Bobby Tables" {
		t.Fatalf("mautrix search: %+v", res)
	}

	// A deactivated user is never found, here nor through a shared room.
	withPasswordUIA(t, srv, http.MethodPost, v3+"/account/deactivate", u["gina"].AccessToken, nil, u["gina"].UserID, adPassword).
		expect(t, http.StatusOK, "")
	expectIDs(search(alice, "gina"))
	expectIDs(search(u["carol"], "gina"))

	cases := []struct {
		name    string
		body    any
		errcode string
	}{
		{"missing search_term", `{"limit": 5}`, "M_MISSING_PARAM"},
		{"search_term not a string", `{"search_term": 5}`, "M_BAD_JSON"},
		{"limit not an integer", `{"search_term": "a", "limit": "ten"}`, "M_BAD_JSON"},
		{"negative limit", `{"search_term": "a", "limit": -1}`, "M_INVALID_PARAM"},
		{"malformed JSON", `{"search_term": `, "M_NOT_JSON"},
		{"empty body", ``, "M_NOT_JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			post(t, srv, v3+"/user_directory/search", alice.AccessToken, c.body).expect(t, http.StatusBadRequest, c.errcode)
		})
	}
	post(t, srv, v3+"/user_directory/search", "", map[string]any{"search_term": "a"}).
		expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}
