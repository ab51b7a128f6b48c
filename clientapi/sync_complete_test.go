package clientapi_test

// /sync beyond timelines: room summaries, every part of the sync filter
// (event_fields, event_format, account data, presence, ephemeral,
// timeline, lazy-loaded members, include_leave), full_state and
// use_state_after.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
// https://spec.matrix.org/v1.19/client-server-api/#filtering

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const scPassword = "password1"

// withFilter adds an inline filter to a query.
func withFilter(q url.Values, filter string) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = v
	}
	out.Set("filter", filter)
	return out
}

func joinedRoom(r resp, roomID string) map[string]any { return obj(r.Body, "rooms", "join", roomID) }
func leftRoom(r resp, roomID string) map[string]any   { return obj(r.Body, "rooms", "leave", roomID) }

// eventTypes lists "type" or "type|state_key" of events.
func eventKeys(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		k, _ := e["type"].(string)
		if sk, ok := e["state_key"].(string); ok {
			k += "|" + sk
		}
		out = append(out, k)
	}
	return out
}

func bodies(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		if b, ok := obj(e, "content")["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

// members lists the state keys of the m.room.member events, sorted.
func members(evs []map[string]any) []string {
	out := []string{}
	for _, e := range evs {
		if e["type"] == "m.room.member" {
			out = append(out, e["state_key"].(string))
		}
	}
	sort.Strings(out)
	return out
}

func hasKey(evs []map[string]any, key string) bool {
	for _, k := range eventKeys(evs) {
		if k == key {
			return true
		}
	}
	return false
}

var scTxn atomic.Int64

// sendEvent sends an event of any type and returns its ID.
func sendEvent(t testing.TB, srv *testserver.Server, s session, roomID, typ string, content map[string]any) string {
	t.Helper()
	txn := fmt.Sprint("sctxn", scTxn.Add(1))
	return put(t, srv, adPath("rooms", roomID, "send", typ, txn), s.AccessToken, content).
		expect(t, http.StatusOK, "").str("event_id")
}

func setState(t testing.TB, srv *testserver.Server, s session, roomID, typ, key string, content map[string]any) string {
	t.Helper()
	return put(t, srv, adPath("rooms", roomID, "state", typ, key), s.AccessToken, content).
		expect(t, http.StatusOK, "").str("event_id")
}

func invite(t testing.TB, srv *testserver.Server, s session, roomID, userID string) {
	t.Helper()
	post(t, srv, adPath("rooms", roomID, "invite"), s.AccessToken, map[string]any{"user_id": userID}).
		expect(t, http.StatusOK, "")
}

func leave(t testing.TB, srv *testserver.Server, s session, roomID string) {
	t.Helper()
	post(t, srv, adPath("rooms", roomID, "leave"), s.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
}

// wantSummary checks a joined room's summary.
func wantSummary(t testing.TB, r resp, roomID string, heroes []string, joined, invited int) {
	t.Helper()
	sum := obj(joinedRoom(r, roomID), "summary")
	var got []string
	hs, ok := sum["m.heroes"].([]any)
	if !ok {
		t.Fatalf("summary without m.heroes: %v", sum)
	}
	for _, h := range hs {
		got = append(got, h.(string))
	}
	if got == nil {
		got = []string{}
	}
	if !reflect.DeepEqual(got, heroes) || sum["m.joined_member_count"] != float64(joined) || sum["m.invited_member_count"] != float64(invited) {
		t.Fatalf("summary = %v, want heroes %v, %d joined, %d invited", sum, heroes, joined, invited)
	}
}

// TestSyncRoomSummary: the summary comes with the room on an initial sync
// and whenever the members change, with the heroes in stream order (never
// the user), and the left members when nobody else is there.
func TestSyncRoomSummary(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	bob := registerUser(t, srv, "bob", scPassword)
	carol := registerUser(t, srv, "carol", scPassword)
	dave := registerUser(t, srv, "dave", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	invite(t, srv, alice, room, carol.UserID)
	invite(t, srv, alice, room, bob.UserID)
	adJoin(t, srv, bob, room)

	r := syncGet(t, srv, bob, nil)
	wantSummary(t, r, room, []string{alice.UserID, carol.UserID}, 2, 1)
	// Alice's heroes: carol (invited first), then bob.
	wantSummary(t, syncGet(t, srv, alice, nil), room, []string{carol.UserID, bob.UserID}, 2, 1)

	// A message changes no member: no summary.
	adSend(t, srv, alice, room, "hello")
	r = syncGet(t, srv, bob, since(r.str("next_batch")))
	if sum := obj(joinedRoom(r, room), "summary"); len(sum) != 0 {
		t.Fatalf("summary without a member change: %v", sum)
	}
	// A join changes the counts and the heroes.
	invite(t, srv, alice, room, dave.UserID)
	adJoin(t, srv, dave, room)
	r = syncGet(t, srv, bob, since(r.str("next_batch")))
	wantSummary(t, r, room, []string{alice.UserID, carol.UserID, dave.UserID}, 3, 1)
	// Carol turns the invite down.
	leave(t, srv, carol, room)
	r = syncGet(t, srv, bob, since(r.str("next_batch")))
	wantSummary(t, r, room, []string{alice.UserID, dave.UserID}, 3, 0)

	// Alone in a room: the heroes are those who left.
	solo := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, bob, solo)
	leave(t, srv, bob, solo)
	wantSummary(t, syncGet(t, srv, alice, nil), solo, []string{bob.UserID}, 1, 0)

	// More than five others: the first five.
	big := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	var want []string
	for i := 0; i < 7; i++ {
		u := registerUser(t, srv, fmt.Sprint("big", i), scPassword)
		adJoin(t, srv, u, big)
		if i < 5 {
			want = append(want, u.UserID)
		}
	}
	wantSummary(t, syncGet(t, srv, alice, nil), big, want, 8, 0)
}

// TestSyncFilterEventFields: event_fields keeps only the named fields of
// room events, with "\." for a dot in a key (the rest of the escaping is
// covered by syncapi's unit test).
func TestSyncFilterEventFields(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	tok := syncGet(t, srv, alice, nil).str("next_batch")
	sendEvent(t, srv, alice, room, "m.room.message", map[string]any{
		"msgtype": "m.text", "body": "hi", "a.b": 1, "other": 3,
	})
	fields, _ := json.Marshal(map[string]any{"event_fields": []string{
		"type", "content.body", `content.a\.b`, `content.c\\d`, "unsigned.age.deeper", "no.such.field",
	}})
	r := syncGet(t, srv, alice, withFilter(since(tok), string(fields)))
	evs := events(joinedRoom(r, room), "timeline")
	if len(evs) != 1 {
		t.Fatalf("timeline = %v, want the message", evs)
	}
	want := map[string]any{"type": "m.room.message", "content": map[string]any{"body": "hi", "a.b": float64(1)}}
	if !reflect.DeepEqual(evs[0], want) {
		t.Fatalf("event = %v, want %v", evs[0], want)
	}
	// Other sections keep their shape; the next sync without the filter
	// has the whole event again.
	r = syncGet(t, srv, alice, since(tok))
	if e := events(joinedRoom(r, room), "timeline")[0]; e["event_id"] == nil || e["sender"] != alice.UserID {
		t.Fatalf("unfiltered event = %v", e)
	}
}

// TestSyncFilterFederationFormat: event_format "federation" gives the
// events as servers exchange them.
func TestSyncFilterFederationFormat(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	tok := syncGet(t, srv, alice, nil).str("next_batch")
	sendEvent(t, srv, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "pdu"})
	r := syncGet(t, srv, alice, withFilter(since(tok), `{"event_format":"federation"}`))
	ev := events(joinedRoom(r, room), "timeline")[0]
	for _, k := range []string{"auth_events", "prev_events", "depth", "hashes", "signatures", "room_id", "sender", "type", "content", "origin_server_ts"} {
		if _, ok := ev[k]; !ok {
			t.Fatalf("federation-format event lacks %s: %v", k, ev)
		}
	}
	if obj(ev, "content")["body"] != "pdu" || obj(ev, "unsigned")["age"] == nil {
		t.Fatalf("federation-format event = %v", ev)
	}
	// With event_fields on top.
	r = syncGet(t, srv, alice, withFilter(since(tok), `{"event_format":"federation","event_fields":["depth"]}`))
	ev = events(joinedRoom(r, room), "timeline")[0]
	if len(ev) != 1 || ev["depth"] == nil {
		t.Fatalf("event = %v, want only depth", ev)
	}
	// Initial sync state in the federation format too.
	r = syncGet(t, srv, alice, withFilter(url.Values{}, `{"event_format":"federation","room":{"timeline":{"limit":1}}}`))
	for _, e := range events(joinedRoom(r, room), "state") {
		if e["depth"] == nil || e["state_key"] == nil {
			t.Fatalf("state event in federation format = %v", e)
		}
	}
}

// TestSyncFilterAccountData: the account_data filter applies to global
// account data, room.account_data to rooms' account data.
func TestSyncFilterAccountData(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	for _, typ := range []string{"x.a", "x.b", "y.c"} {
		put(t, srv, globalDataPath(alice.UserID, typ), alice.AccessToken, map[string]any{"v": typ}).expect(t, http.StatusOK, "")
		put(t, srv, roomDataPath(alice.UserID, room, "r."+typ), alice.AccessToken, map[string]any{"v": typ}).expect(t, http.StatusOK, "")
	}
	types := func(evs []map[string]any) []string {
		out := []string{}
		for _, e := range evs {
			out = append(out, e["type"].(string))
		}
		sort.Strings(out)
		return out
	}
	r := syncGet(t, srv, alice, withFilter(url.Values{}, `{"account_data":{"types":["x.*"],"not_types":["x.b"]},"room":{"account_data":{"types":["r.y.*"]}}}`))
	if got := types(events(r.Body, "account_data")); !reflect.DeepEqual(got, []string{"x.a"}) {
		t.Fatalf("account data = %v, want [x.a]", got)
	}
	if got := types(events(joinedRoom(r, room), "account_data")); !reflect.DeepEqual(got, []string{"r.y.c"}) {
		t.Fatalf("room account data = %v, want [r.y.c]", got)
	}
	r = syncGet(t, srv, alice, withFilter(url.Values{}, `{"account_data":{"limit":1},"room":{"account_data":{"not_rooms":["`+room+`"]}}}`))
	if n := len(events(r.Body, "account_data")); n != 1 {
		t.Fatalf("%d account data events, want 1 (the limit)", n)
	}
	if evs := events(joinedRoom(r, room), "account_data"); len(evs) != 0 {
		t.Fatalf("room account data for a room in not_rooms: %v", evs)
	}
	// An incremental sync whose only news is filtered out leaves the
	// section empty.
	tok := r.str("next_batch")
	put(t, srv, globalDataPath(alice.UserID, "y.d"), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	r = syncGet(t, srv, alice, withFilter(since(tok), `{"account_data":{"not_types":["y.*"]}}`))
	if evs := events(r.Body, "account_data"); len(evs) != 0 {
		t.Fatalf("filtered account data came through: %v", evs)
	}
}

// TestSyncFilterEphemeral: room.ephemeral selects receipts and typing.
func TestSyncFilterEphemeral(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	bob := registerUser(t, srv, "bob", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, bob, room)
	ev := adSend(t, srv, alice, room, "read me")
	post(t, srv, adPath("rooms", room, "receipt", "m.read", ev), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	put(t, srv, adPath("rooms", room, "typing", bob.UserID), bob.AccessToken, map[string]any{"typing": true, "timeout": 30000}).
		expect(t, http.StatusOK, "")
	types := func(r resp) []string {
		out := []string{}
		for _, e := range events(joinedRoom(r, room), "ephemeral") {
			out = append(out, e["type"].(string))
		}
		sort.Strings(out)
		return out
	}
	if got := types(syncGet(t, srv, alice, nil)); !reflect.DeepEqual(got, []string{"m.receipt", "m.typing"}) {
		t.Fatalf("ephemeral = %v", got)
	}
	if got := types(syncGet(t, srv, alice, withFilter(nil, `{"room":{"ephemeral":{"not_types":["m.receipt"]}}}`))); !reflect.DeepEqual(got, []string{"m.typing"}) {
		t.Fatalf("ephemeral without receipts = %v", got)
	}
	if got := types(syncGet(t, srv, alice, withFilter(nil, `{"room":{"ephemeral":{"types":["m.rec*"]}}}`))); !reflect.DeepEqual(got, []string{"m.receipt"}) {
		t.Fatalf("ephemeral receipts only = %v", got)
	}
	if got := types(syncGet(t, srv, alice, withFilter(nil, `{"room":{"ephemeral":{"not_rooms":["`+room+`"]}}}`))); len(got) != 0 {
		t.Fatalf("ephemeral of a room in not_rooms = %v", got)
	}
	// The presence filter: nothing at all with types [].
	if evs := events(syncGet(t, srv, alice, withFilter(nil, `{"presence":{"types":[]}}`)).Body, "presence"); len(evs) != 0 {
		t.Fatalf("presence with types [] = %v", evs)
	}
}

// TestSyncFilterTimeline: types, not_types, senders, not_senders, limit
// and rooms of the timeline filter; the state section is then the state
// at the start of the filtered timeline.
func TestSyncFilterTimeline(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	bob := registerUser(t, srv, "bob", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, bob, room)
	adSend(t, srv, alice, room, "a1")
	adSend(t, srv, bob, room, "b1")
	adSend(t, srv, alice, room, "a2")
	setState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "t"})

	tl := func(filter string) (resp, []map[string]any) {
		r := syncGet(t, srv, alice, withFilter(nil, filter))
		return r, events(joinedRoom(r, room), "timeline")
	}
	r, evs := tl(`{"room":{"timeline":{"types":["m.room.message"],"senders":["` + alice.UserID + `"]}}}`)
	if got := bodies(evs); !reflect.DeepEqual(got, []string{"a1", "a2"}) || len(evs) != 2 {
		t.Fatalf("alice's messages = %v", eventKeys(evs))
	}
	// The state is the room's state before a1: it has the create event
	// and both members, but not the later topic.
	st := events(joinedRoom(r, room), "state")
	if !hasKey(st, "m.room.create|") || !reflect.DeepEqual(members(st), sorted(alice.UserID, bob.UserID)) || hasKey(st, "m.room.topic|") {
		t.Fatalf("state before the filtered timeline = %v", eventKeys(st))
	}
	if _, evs = tl(`{"room":{"timeline":{"types":["m.room.message"],"not_senders":["` + alice.UserID + `"]}}}`); !reflect.DeepEqual(bodies(evs), []string{"b1"}) || len(evs) != 1 {
		t.Fatalf("others' messages = %v", eventKeys(evs))
	}
	_, evs = tl(`{"room":{"timeline":{"types":["m.room.message"],"limit":1}}}`)
	if !reflect.DeepEqual(bodies(evs), []string{"a2"}) || len(evs) != 1 {
		t.Fatalf("last message = %v", eventKeys(evs))
	}
	r, _ = tl(`{"room":{"timeline":{"types":["m.room.message"],"limit":1}}}`)
	if limited, _ := obj(joinedRoom(r, room), "timeline")["limited"].(bool); !limited {
		t.Fatal("a timeline cut to its limit is not limited")
	}
	if _, evs = tl(`{"room":{"timeline":{"not_types":["m.room.message","m.room.member"]}}}`); len(bodies(evs)) != 0 || !hasKey(evs, "m.room.topic|") {
		t.Fatalf("timeline without messages = %v", eventKeys(evs))
	}
	if _, evs = tl(`{"room":{"timeline":{"not_rooms":["` + room + `"]}}}`); len(evs) != 0 {
		t.Fatalf("timeline of a room in not_rooms = %v", eventKeys(evs))
	}
	// room.rooms leaves the other rooms out altogether.
	other := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	r = syncGet(t, srv, alice, withFilter(nil, `{"room":{"rooms":["`+other+`"]}}`))
	if joinedRoom(r, room) != nil || joinedRoom(r, other) == nil {
		t.Fatalf("rooms filter: %v", obj(r.Body, "rooms", "join"))
	}

	// Incremental: a state change the timeline filter hides still reaches
	// the state section.
	tok := syncGet(t, srv, alice, nil).str("next_batch")
	setState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "hidden"})
	adSend(t, srv, alice, room, "after")
	r = syncGet(t, srv, alice, withFilter(since(tok), `{"room":{"timeline":{"types":["m.room.message"]}}}`))
	jr := joinedRoom(r, room)
	if got := bodies(events(jr, "timeline")); !reflect.DeepEqual(got, []string{"after"}) {
		t.Fatalf("incremental filtered timeline = %v", got)
	}
	if st := events(jr, "state"); !hasKey(st, "m.room.topic|") {
		t.Fatalf("the hidden topic change is not in the state: %v", eventKeys(st))
	}
}

// TestSyncLazyLoadMembers: with lazy_load_members, the state has the
// member events the timeline needs (its senders', the heroes', the user's
// own), leaves out those the device was already sent (unless
// include_redundant_members), sends them again when a response was not
// acknowledged, and never leaves out a member change in a gap.
func TestSyncLazyLoadMembers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Lazy"})
	var u []session
	for i := 1; i <= 6; i++ {
		s := registerUser(t, srv, fmt.Sprint("u", i), scPassword)
		adJoin(t, srv, s, room)
		u = append(u, s)
	}
	bob := registerUser(t, srv, "bob", scPassword)
	adJoin(t, srv, bob, room)
	adSend(t, srv, u[5], room, "from u6")

	const lazy = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`
	const redundant = `{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true},"timeline":{"limit":1}}}`
	stateMembers := func(r resp) []string { return members(events(joinedRoom(r, room), "state")) }

	// Initial: heroes alice, u1..u4; the sender u6; bob himself. Not u5.
	r0 := syncGet(t, srv, bob, withFilter(nil, lazy))
	if got, want := stateMembers(r0), sorted(alice.UserID, u[0].UserID, u[1].UserID, u[2].UserID, u[3].UserID, u[5].UserID, bob.UserID); !reflect.DeepEqual(got, want) {
		t.Fatalf("initial lazy members = %v, want %v", got, want)
	}
	if st := events(joinedRoom(r0, room), "state"); !hasKey(st, "m.room.create|") || !hasKey(st, "m.room.name|") {
		t.Fatalf("lazy loading dropped non-member state: %v", eventKeys(st))
	}
	t0 := r0.str("next_batch")

	// u6 again: the device has u6's member event.
	adSend(t, srv, u[5], room, "u6 again")
	r1 := syncGet(t, srv, bob, withFilter(since(t0), lazy))
	if got := stateMembers(r1); len(got) != 0 {
		t.Fatalf("redundant members sent: %v", got)
	}
	if got := stateMembers(syncGet(t, srv, bob, withFilter(since(t0), redundant))); !reflect.DeepEqual(got, []string{u[5].UserID}) {
		t.Fatalf("with include_redundant_members: %v, want u6", got)
	}
	t1 := r1.str("next_batch")

	// u5 speaks: its member event comes; a retry of the same since (the
	// response was lost) has it again.
	adSend(t, srv, u[4], room, "from u5")
	if got := stateMembers(syncGet(t, srv, bob, withFilter(since(t1), lazy))); !reflect.DeepEqual(got, []string{u[4].UserID}) {
		t.Fatalf("new sender's member: %v", got)
	}
	r2 := syncGet(t, srv, bob, withFilter(since(t1), lazy))
	if got := stateMembers(r2); !reflect.DeepEqual(got, []string{u[4].UserID}) {
		t.Fatalf("after a lost response: %v, want u5 again", got)
	}
	adSend(t, srv, u[4], room, "u5 again")
	r3 := syncGet(t, srv, bob, withFilter(since(r2.str("next_batch")), lazy))
	if got := stateMembers(r3); len(got) != 0 {
		t.Fatalf("acknowledged member sent again: %v", got)
	}

	// A gap with a member change of someone who does not speak: the
	// change comes anyway.
	put(t, srv, adPath("profile", u[2].UserID, "displayname"), u[2].AccessToken, map[string]any{"displayname": "Three"}).
		expect(t, http.StatusOK, "")
	for i := 0; i < 3; i++ {
		adSend(t, srv, u[5], room, fmt.Sprint("filler ", i))
	}
	r4 := syncGet(t, srv, bob, withFilter(since(r3.str("next_batch")), lazy))
	jr := joinedRoom(r4, room)
	if limited, _ := obj(jr, "timeline")["limited"].(bool); !limited {
		t.Fatal("expected a limited timeline")
	}
	found := false
	for _, e := range events(jr, "state") {
		if e["type"] == "m.room.member" && e["state_key"] == u[2].UserID && obj(e, "content")["displayname"] == "Three" {
			found = true
		}
	}
	if !found {
		t.Fatalf("the member change in the gap is missing: %v", eventKeys(events(jr, "state")))
	}

	// Without lazy loading, everyone.
	if got := stateMembers(syncGet(t, srv, bob, withFilter(nil, `{"room":{"timeline":{"limit":1}}}`))); len(got) != 8 {
		t.Fatalf("members without lazy loading: %v", got)
	}
}

// TestSyncFullState: full_state on an incremental sync gives the whole
// state of every joined room at once, with the timeline since the token.
func TestSyncFullState(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat", "name": "Full"})
	quiet := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	tok := syncGet(t, srv, alice, nil).str("next_batch")
	adSend(t, srv, alice, room, "new")
	start := time.Now()
	r := syncGet(t, srv, alice, since(tok, "full_state", "true", "timeout", "10000"))
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("full_state sync waited %s", d)
	}
	jr := joinedRoom(r, room)
	if got := bodies(events(jr, "timeline")); !reflect.DeepEqual(got, []string{"new"}) || len(events(jr, "timeline")) != 1 {
		t.Fatalf("timeline = %v, want just the new message", eventKeys(events(jr, "timeline")))
	}
	for _, key := range []string{"m.room.create|", "m.room.power_levels|", "m.room.name|", "m.room.member|" + alice.UserID} {
		if !hasKey(events(jr, "state"), key) {
			t.Fatalf("full state lacks %s: %v", key, eventKeys(events(jr, "state")))
		}
	}
	// The room with nothing new is there with its state too.
	if q := joinedRoom(r, quiet); q == nil || !hasKey(events(q, "state"), "m.room.create|") {
		t.Fatalf("quiet room in a full_state sync: %v", q)
	}
	// Without full_state, the quiet room is not.
	if q := joinedRoom(syncGet(t, srv, alice, since(tok)), quiet); q != nil {
		t.Fatalf("quiet room in an incremental sync: %v", q)
	}
}

// TestSyncUseStateAfter: use_state_after (and its unstable name) puts the
// state at the end of the timeline in state_after, and leaves out state.
func TestSyncUseStateAfter(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})

	r := syncGet(t, srv, alice, url.Values{"use_state_after": {"true"}})
	jr := joinedRoom(r, room)
	if _, ok := jr["state"]; ok {
		t.Fatal("state present with use_state_after")
	}
	// The whole state, events of the timeline included.
	if sa := events(jr, "state_after"); !hasKey(sa, "m.room.create|") || !hasKey(sa, "m.room.member|"+alice.UserID) {
		t.Fatalf("initial state_after = %v", eventKeys(sa))
	}
	tok := r.str("next_batch")

	// A state event in the timeline is in state_after too.
	topic := setState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "one"})
	adSend(t, srv, alice, room, "msg")
	r = syncGet(t, srv, alice, since(tok, "use_state_after", "true"))
	jr = joinedRoom(r, room)
	sa := events(jr, "state_after")
	if len(sa) != 1 || sa[0]["event_id"] != topic {
		t.Fatalf("state_after = %v, want the topic", eventKeys(sa))
	}
	if _, ok := jr["state"]; ok {
		t.Fatal("state present with use_state_after")
	}
	// The unstable name, under the unstable name.
	r = syncGet(t, srv, alice, since(tok, "org.matrix.msc4222.use_state_after", "true"))
	jr = joinedRoom(r, room)
	if sa := events(jr, "org.matrix.msc4222.state_after"); len(sa) != 1 || sa[0]["event_id"] != topic {
		t.Fatalf("unstable state_after = %v", eventKeys(sa))
	}
	if _, ok := jr["state_after"]; ok {
		t.Fatal("stable state_after for the unstable parameter")
	}
	// Without it, the classic state: empty, the topic is in the timeline.
	r = syncGet(t, srv, alice, since(tok))
	jr = joinedRoom(r, room)
	if st, ok := jr["state"]; !ok || len(events(jr, "state")) != 0 {
		t.Fatalf("classic state = %v", st)
	}

	// A limited timeline with a topic change in the gap and another in the
	// timeline: state has the one at the start, state_after the last.
	tok = r.str("next_batch")
	setState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "two"})
	for i := 0; i < 4; i++ {
		adSend(t, srv, alice, room, fmt.Sprint("gap ", i))
	}
	three := setState(t, srv, alice, room, "m.room.topic", "", map[string]any{"topic": "three"})
	adSend(t, srv, alice, room, "last")
	const limit2 = `{"room":{"timeline":{"limit":2}}}`
	classic := events(joinedRoom(syncGet(t, srv, alice, withFilter(since(tok), limit2)), room), "state")
	if len(classic) != 1 || obj(classic[0], "content")["topic"] != "two" {
		t.Fatalf("state at the start of a limited timeline = %v", classic)
	}
	after := events(joinedRoom(syncGet(t, srv, alice, withFilter(since(tok, "use_state_after", "true"), limit2)), room), "state_after")
	if len(after) != 1 || after[0]["event_id"] != three {
		t.Fatalf("state_after of a limited timeline = %v", after)
	}

	get(t, srv, v3+"/sync?use_state_after=maybe", alice.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

// TestSyncIncludeLeave: left rooms come on an initial sync only with
// include_leave, with their events up to the leave and the state there;
// forgotten rooms never.
func TestSyncIncludeLeave(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", scPassword)
	bob := registerUser(t, srv, "bob", scPassword)
	carol := registerUser(t, srv, "carol", scPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat", "name": "Left"})
	adJoin(t, srv, bob, room)
	adJoin(t, srv, carol, room)
	adSend(t, srv, bob, room, "hello")
	put(t, srv, roomDataPath(bob.UserID, room, "x.left"), bob.AccessToken, map[string]any{"kept": true}).expect(t, http.StatusOK, "")
	leave(t, srv, bob, room)
	adSend(t, srv, alice, room, "after bob")
	post(t, srv, adPath("rooms", room, "ban"), alice.AccessToken, map[string]any{"user_id": carol.UserID}).expect(t, http.StatusOK, "")

	if lr := leftRoom(syncGet(t, srv, bob, nil), room); lr != nil {
		t.Fatalf("left room without include_leave: %v", lr)
	}
	const includeLeave = `{"room":{"include_leave":true,"timeline":{"limit":2}}}`
	r := syncGet(t, srv, bob, withFilter(nil, includeLeave))
	lr := leftRoom(r, room)
	tl := events(lr, "timeline")
	if len(tl) != 2 || bodies(tl)[0] != "hello" || tl[1]["type"] != "m.room.member" || obj(tl[1], "content")["membership"] != "leave" {
		t.Fatalf("left room timeline = %v, want the message and the leave", eventKeys(tl))
	}
	st := events(lr, "state")
	if !hasKey(st, "m.room.create|") || !hasKey(st, "m.room.name|") || !hasKey(st, "m.room.member|"+bob.UserID) {
		t.Fatalf("left room state = %v", eventKeys(st))
	}
	// Carol's ban after Bob left is not Bob's to see.
	for _, e := range append(st, tl...) {
		if e["state_key"] == carol.UserID && obj(e, "content")["membership"] == "ban" {
			t.Fatal("an event after the leave is in the left room")
		}
	}
	if ad := events(lr, "account_data"); len(ad) != 1 || ad[0]["type"] != "x.left" {
		t.Fatalf("left room account data = %v", ad)
	}
	// With use_state_after: the state at the leave.
	r = syncGet(t, srv, bob, withFilter(url.Values{"use_state_after": {"true"}}, includeLeave))
	sa := events(leftRoom(r, room), "state_after")
	var own map[string]any
	for _, e := range sa {
		if e["type"] == "m.room.member" && e["state_key"] == bob.UserID {
			own = e
		}
	}
	if own == nil || obj(own, "content")["membership"] != "leave" {
		t.Fatalf("state_after of the left room = %v", eventKeys(sa))
	}
	// A banned user's room is a left room too.
	if lr := leftRoom(syncGet(t, srv, carol, withFilter(nil, includeLeave)), room); lr == nil {
		t.Fatal("the room carol was banned from is not in leave")
	}

	// Forgotten: never again.
	post(t, srv, adPath("rooms", room, "forget"), bob.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	if lr := leftRoom(syncGet(t, srv, bob, withFilter(nil, includeLeave)), room); lr != nil {
		t.Fatalf("forgotten room in leave: %v", lr)
	}
}
