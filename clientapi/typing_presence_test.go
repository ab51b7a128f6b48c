package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// tpEvent is an ephemeral or presence event as /sync gives it.
type tpEvent struct {
	Type    string         `json:"type"`
	Sender  string         `json:"sender"`
	Content map[string]any `json:"content"`
}

// tpSync is the part of a /sync response these tests read.
type tpSync struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []tpEvent `json:"events"`
	} `json:"presence"`
	Rooms struct {
		Join map[string]struct {
			Ephemeral struct {
				Events []tpEvent `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
}

// syncTP runs /sync with params and decodes it; usable from goroutines.
func syncTP(srv *testserver.Server, token string, params url.Values) (tpSync, error) {
	var out tpSync
	path := v3 + "/sync"
	if len(params) > 0 {
		path += "?" + params.Encode()
	}
	r, err := tryDo(srv, req{Method: http.MethodGet, Path: path, Token: token})
	if err != nil {
		return out, err
	}
	if r.Status != http.StatusOK {
		return out, fmt.Errorf("/sync: status %d: %s", r.Status, r.Raw)
	}
	return out, json.Unmarshal(r.Raw, &out)
}

func mustSyncTP(t *testing.T, srv *testserver.Server, token string, params url.Values) tpSync {
	t.Helper()
	s, err := syncTP(srv, token, params)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// longPoll starts a /sync from since that waits up to 20 s; the result
// comes on the channel with how long it took.
type polled struct {
	s       tpSync
	err     error
	elapsed time.Duration
}

func longPoll(srv *testserver.Server, token, since string, extra url.Values) <-chan polled {
	ch := make(chan polled, 1)
	params := url.Values{"since": {since}, "timeout": {"20000"}}
	for k, v := range extra {
		params[k] = v
	}
	go func() {
		start := time.Now()
		s, err := syncTP(srv, token, params)
		ch <- polled{s, err, time.Since(start)}
	}()
	// Let the request reach its wait.
	time.Sleep(200 * time.Millisecond)
	return ch
}

func waitPoll(t *testing.T, ch <-chan polled, within time.Duration, what string) tpSync {
	t.Helper()
	p := <-ch
	if p.err != nil {
		t.Fatal(p.err)
	}
	if p.elapsed > within {
		t.Fatalf("%s: the long-poll took %v, want it woken within %v", what, p.elapsed, within)
	}
	return p.s
}

// pollUntil long-polls from since, again and again, until a response
// satisfies done, and fails if that takes longer than within. Other news
// (presence, say) may end a long-poll first: that is fine, the next one
// carries on from its token.
func pollUntil(t *testing.T, srv *testserver.Server, token, since string, extra url.Values, within time.Duration,
	what string, done func(tpSync) bool) tpSync {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := waitPoll(t, longPoll(srv, token, since, extra), time.Until(deadline), what)
		if done(s) {
			return s
		}
		since = s.NextBatch
	}
}

// putLater sends a PUT in 300 ms, while the test waits on a long-poll.
func putLater(t *testing.T, srv *testserver.Server, path, token string, body any) {
	go func() {
		time.Sleep(300 * time.Millisecond)
		r, err := tryDo(srv, req{Method: http.MethodPut, Path: path, Token: token, Body: body})
		if err != nil || r.Status != http.StatusOK {
			t.Errorf("PUT %s: %v %d %s", path, err, r.Status, r.Raw)
		}
	}()
}

// typingIn returns the user_ids of the room's m.typing event, and whether
// there was one.
func typingIn(s tpSync, roomID string) ([]string, bool) {
	for _, ev := range s.Rooms.Join[roomID].Ephemeral.Events {
		if ev.Type != "m.typing" {
			continue
		}
		ids := []string{}
		list, ok := ev.Content["user_ids"].([]any)
		if !ok {
			return nil, true
		}
		for _, v := range list {
			s, _ := v.(string)
			ids = append(ids, s)
		}
		return ids, true
	}
	return nil, false
}

// presenceOf returns the content of a user's m.presence event in s.
func presenceOf(t *testing.T, s tpSync, userID string) (map[string]any, bool) {
	t.Helper()
	for _, ev := range s.Presence.Events {
		if ev.Type != "m.presence" {
			t.Fatalf("presence section holds a %q event", ev.Type)
		}
		if ev.Sender == userID {
			return ev.Content, true
		}
	}
	return nil, false
}

func typingPath(roomID, userID string) string {
	return v3 + "/rooms/" + url.PathEscape(roomID) + "/typing/" + url.PathEscape(userID)
}

func presencePath(userID string) string {
	return v3 + "/presence/" + url.PathEscape(userID) + "/status"
}

// sharedRoom registers alice and bob and puts them in a room together.
func sharedRoom(t *testing.T, srv *testserver.Server) (alice, bob *mautrix.Client, roomID string) {
	t.Helper()
	alice = srv.Register("alice", "correct horse")
	bob = srv.Register("bob", "correct horse")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	_, err = bob.JoinRoom(ctx, room.RoomID.String(), nil)
	must(t, err, "join room")
	return alice, bob, room.RoomID.String()
}

func TestTypingWakesAndClears(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob, roomID := sharedRoom(t, srv)
	aliceID := alice.UserID.String()

	hasTyping := func(s tpSync) bool { _, ok := typingIn(s, roomID); return ok }
	since := mustSyncTP(t, srv, bob.AccessToken, nil).NextBatch
	putLater(t, srv, typingPath(roomID, aliceID), alice.AccessToken, map[string]any{"typing": true, "timeout": 30000})
	s := pollUntil(t, srv, bob.AccessToken, since, nil, 5*time.Second, "alice starting to type", hasTyping)
	if ids, _ := typingIn(s, roomID); !slices.Equal(ids, []string{aliceID}) {
		t.Fatalf("bob's m.typing = %v, want [%s]", ids, aliceID)
	}

	// An initial sync shows who is typing now.
	if ids, _ := typingIn(mustSyncTP(t, srv, bob.AccessToken, nil), roomID); !slices.Equal(ids, []string{aliceID}) {
		t.Fatalf("initial sync m.typing = %v, want [%s]", ids, aliceID)
	}
	// Typing again only moves the timeout: no change, nothing to send.
	put(t, srv, typingPath(roomID, aliceID), alice.AccessToken, map[string]any{"typing": true, "timeout": 30000}).
		expect(t, http.StatusOK, "")
	again := mustSyncTP(t, srv, bob.AccessToken, url.Values{"since": {s.NextBatch}, "timeout": {"0"}})
	if _, ok := typingIn(again, roomID); ok {
		t.Fatalf("typing again sent m.typing again: %+v", again.Rooms.Join[roomID])
	}

	// typing false clears the set, and the empty set is delivered.
	putLater(t, srv, typingPath(roomID, aliceID), alice.AccessToken, map[string]any{"typing": false})
	s = pollUntil(t, srv, bob.AccessToken, again.NextBatch, nil, 5*time.Second, "alice stopping", hasTyping)
	if ids, ok := typingIn(s, roomID); !ok || len(ids) != 0 {
		t.Fatalf("after typing false, m.typing = %v (present %v), want []", ids, ok)
	}
	// The typist sees it too, and an initial sync now has no m.typing.
	if _, ok := typingIn(mustSyncTP(t, srv, alice.AccessToken, nil), roomID); ok {
		t.Fatal("initial sync has m.typing with nobody typing")
	}
	// Nothing new after that.
	later := mustSyncTP(t, srv, bob.AccessToken, url.Values{"since": {s.NextBatch}, "timeout": {"0"}})
	if _, ok := typingIn(later, roomID); ok {
		t.Fatal("m.typing delivered twice")
	}
}

func TestTypingExpires(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob, roomID := sharedRoom(t, srv)
	aliceID := alice.UserID.String()

	hasTyping := func(s tpSync) bool { _, ok := typingIn(s, roomID); return ok }
	since := mustSyncTP(t, srv, bob.AccessToken, nil).NextBatch
	start := time.Now()
	put(t, srv, typingPath(roomID, aliceID), alice.AccessToken, map[string]any{"typing": true, "timeout": 500}).
		expect(t, http.StatusOK, "")
	s := pollUntil(t, srv, bob.AccessToken, since, nil, 5*time.Second, "alice starting to type", hasTyping)
	if ids, _ := typingIn(s, roomID); !slices.Equal(ids, []string{aliceID}) {
		t.Fatalf("m.typing = %v, want [%s]", ids, aliceID)
	}
	// Nobody does anything: the timeout's end wakes the long-poll with
	// the empty set.
	s = pollUntil(t, srv, bob.AccessToken, s.NextBatch, nil, 5*time.Second, "typing timing out", hasTyping)
	if ids, ok := typingIn(s, roomID); !ok || len(ids) != 0 {
		t.Fatalf("after the timeout, m.typing = %v (present %v), want []", ids, ok)
	}
	if el := time.Since(start); el < 450*time.Millisecond {
		t.Fatalf("typing ended after %v, before its 500 ms timeout", el)
	}
}

func TestTypingErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob, roomID := sharedRoom(t, srv)
	carol := srv.Register("carol", "correct horse")
	aliceID, carolID := alice.UserID.String(), carol.UserID.String()
	ok := map[string]any{"typing": true, "timeout": 1000}

	// Someone else's typing.
	put(t, srv, typingPath(roomID, bob.UserID.String()), alice.AccessToken, ok).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// A room one is not joined to, or that does not exist.
	put(t, srv, typingPath(roomID, carolID), carol.AccessToken, ok).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	put(t, srv, typingPath("!nowhere:tessera.test", aliceID), alice.AccessToken, ok).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	put(t, srv, typingPath("nowhere", aliceID), alice.AccessToken, ok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	// A left room.
	_, err := bob.LeaveRoom(ctx, id.RoomID(roomID))
	must(t, err, "leave")
	put(t, srv, typingPath(roomID, bob.UserID.String()), bob.AccessToken, ok).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	// Bad bodies.
	path := typingPath(roomID, aliceID)
	put(t, srv, path, alice.AccessToken, "{not json").expect(t, http.StatusBadRequest, "M_NOT_JSON")
	put(t, srv, path, alice.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, path, alice.AccessToken, map[string]any{"typing": true}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, path, alice.AccessToken, map[string]any{"typing": "yes", "timeout": 1000}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, path, alice.AccessToken, map[string]any{"typing": true, "timeout": "soon"}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, path, alice.AccessToken, map[string]any{"typing": true, "timeout": -5}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	// typing false needs no timeout; a long timeout is accepted (capped).
	put(t, srv, path, alice.AccessToken, map[string]any{"typing": false}).expect(t, http.StatusOK, "")
	put(t, srv, path, alice.AccessToken, map[string]any{"typing": true, "timeout": 1e12}).expect(t, http.StatusOK, "")
	// No token.
	put(t, srv, path, "", ok).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestPresenceSetAndGet(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob, _ := sharedRoom(t, srv)
	carol := srv.Register("carol", "correct horse")
	aliceID, bobID := alice.UserID.String(), bob.UserID.String()

	// Nobody has set anything: offline, and no last_active_ago.
	r := get(t, srv, presencePath(aliceID), alice.AccessToken).expect(t, http.StatusOK, "")
	if r.str("presence") != "offline" || r.Body["last_active_ago"] != nil || r.Body["currently_active"] != nil {
		t.Fatalf("fresh presence: %s", r.Raw)
	}

	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "online", "status_msg": "Busy"}).
		expect(t, http.StatusOK, "")
	for _, viewer := range []*mautrix.Client{alice, bob} {
		r = get(t, srv, presencePath(aliceID), viewer.AccessToken).expect(t, http.StatusOK, "")
		if r.str("presence") != "online" || r.str("status_msg") != "Busy" {
			t.Fatalf("presence after PUT online: %s", r.Raw)
		}
		if active, ok := r.boolean("currently_active"); !ok || !active {
			t.Fatalf("currently_active after PUT online: %s", r.Raw)
		}
		if ago, ok := r.Body["last_active_ago"].(float64); !ok || ago < 0 || ago > 10000 {
			t.Fatalf("last_active_ago after PUT online: %s", r.Raw)
		}
	}

	// Unavailable keeps last_active, has no currently_active.
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "unavailable", "status_msg": "Away"}).
		expect(t, http.StatusOK, "")
	r = get(t, srv, presencePath(aliceID), bob.AccessToken).expect(t, http.StatusOK, "")
	if r.str("presence") != "unavailable" || r.str("status_msg") != "Away" || r.Body["currently_active"] != nil ||
		r.Body["last_active_ago"] == nil {
		t.Fatalf("presence after PUT unavailable: %s", r.Raw)
	}
	// Without status_msg the message is gone; offline drops it too.
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "unavailable"}).expect(t, http.StatusOK, "")
	if r = get(t, srv, presencePath(aliceID), alice.AccessToken).expect(t, http.StatusOK, ""); r.Body["status_msg"] != nil {
		t.Fatalf("status_msg kept without one in the PUT: %s", r.Raw)
	}
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "offline", "status_msg": "gone"}).
		expect(t, http.StatusOK, "")
	if r = get(t, srv, presencePath(aliceID), alice.AccessToken).expect(t, http.StatusOK, ""); r.str("presence") != "offline" || r.Body["status_msg"] != nil {
		t.Fatalf("presence after PUT offline: %s", r.Raw)
	}

	// Errors.
	put(t, srv, presencePath(bobID), alice.AccessToken, map[string]any{"presence": "online"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "busy"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"status_msg": "x"}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "online", "status_msg": 5}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, presencePath(aliceID), alice.AccessToken, "[]").expect(t, http.StatusBadRequest, "M_BAD_JSON")
	get(t, srv, presencePath("@nobody:tessera.test"), alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	// Carol shares no room with alice.
	get(t, srv, presencePath(aliceID), carol.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	get(t, srv, presencePath(aliceID), "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestPresenceSetBySync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	aliceID := alice.UserID.String()
	presence := func() resp {
		return get(t, srv, presencePath(aliceID), alice.AccessToken).expect(t, http.StatusOK, "")
	}

	// set_presence=offline: "the client is not marked as being online".
	mustSyncTP(t, srv, alice.AccessToken, url.Values{"set_presence": {"offline"}})
	if r := presence(); r.str("presence") != "offline" {
		t.Fatalf("after a sync with set_presence=offline: %s", r.Raw)
	}
	// Unset (or online) marks the user online and active; the user's own
	// presence is in the sync that did it.
	s := mustSyncTP(t, srv, alice.AccessToken, nil)
	r := presence()
	if active, _ := r.boolean("currently_active"); r.str("presence") != "online" || !active {
		t.Fatalf("after a sync: %s", r.Raw)
	}
	if c, ok := presenceOf(t, s, aliceID); !ok || c["presence"] != "online" || c["currently_active"] != true {
		t.Fatalf("own presence in the sync that set it: %v (present %v)", c, ok)
	}
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "online", "status_msg": "here"}).
		expect(t, http.StatusOK, "")
	// unavailable marks the user idle and keeps the status message.
	mustSyncTP(t, srv, alice.AccessToken, url.Values{"set_presence": {"unavailable"}, "since": {s.NextBatch}, "timeout": {"0"}})
	if r := presence(); r.str("presence") != "unavailable" || r.str("status_msg") != "here" {
		t.Fatalf("after a sync with set_presence=unavailable: %s", r.Raw)
	}
	// offline leaves it alone.
	mustSyncTP(t, srv, alice.AccessToken, url.Values{"set_presence": {"offline"}})
	if r := presence(); r.str("presence") != "unavailable" {
		t.Fatalf("a sync with set_presence=offline changed presence: %s", r.Raw)
	}
	get(t, srv, v3+"/sync?set_presence=busy", alice.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestPresenceInSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob, roomID := sharedRoom(t, srv)
	carol := srv.Register("carol", "correct horse")
	aliceID, bobID, carolID := alice.UserID.String(), bob.UserID.String(), carol.UserID.String()

	// Alice syncs without marking herself online, so the only presence
	// news below is bob's and carol's.
	quiet := url.Values{"set_presence": {"offline"}}
	since := mustSyncTP(t, srv, alice.AccessToken, quiet).NextBatch
	poll := longPoll(srv, alice.AccessToken, since, quiet)
	put(t, srv, presencePath(bobID), bob.AccessToken, map[string]any{"presence": "online", "status_msg": "hi"}).
		expect(t, http.StatusOK, "")
	s := waitPoll(t, poll, 5*time.Second, "bob coming online")
	c, ok := presenceOf(t, s, bobID)
	if !ok || c["presence"] != "online" || c["status_msg"] != "hi" || c["currently_active"] != true {
		t.Fatalf("bob's presence in alice's sync: %v (present %v); events %+v", c, ok, s.Presence.Events)
	}
	if ago, ok := c["last_active_ago"].(float64); !ok || ago < 0 || ago > 10000 {
		t.Fatalf("last_active_ago: %v", c["last_active_ago"])
	}

	// Carol shares no room with alice: her presence is not alice's news,
	// and does not wake her.
	poll = longPoll(srv, alice.AccessToken, s.NextBatch, url.Values{"set_presence": {"offline"}, "timeout": {"1000"}})
	put(t, srv, presencePath(carolID), carol.AccessToken, map[string]any{"presence": "online"}).expect(t, http.StatusOK, "")
	p := <-poll
	if p.err != nil {
		t.Fatal(p.err)
	}
	if _, ok := presenceOf(t, p.s, carolID); ok || len(p.s.Presence.Events) != 0 {
		t.Fatalf("alice got presence she should not: %+v", p.s.Presence.Events)
	}
	if p.elapsed < 900*time.Millisecond {
		t.Fatalf("carol's presence woke alice's sync (%v)", p.elapsed)
	}

	// An initial sync has the room-mates who are not offline.
	initial := mustSyncTP(t, srv, alice.AccessToken, quiet)
	if _, ok := presenceOf(t, initial, bobID); !ok {
		t.Fatalf("initial sync lacks bob's presence: %+v", initial.Presence.Events)
	}
	if _, ok := presenceOf(t, initial, carolID); ok {
		t.Fatal("initial sync has the presence of a stranger")
	}
	if _, ok := presenceOf(t, initial, aliceID); ok {
		t.Fatal("initial sync has alice's presence while she is offline")
	}

	// Carol joins the room: alice and carol learn each other's presence
	// with the join, though neither changed.
	put(t, srv, presencePath(aliceID), alice.AccessToken, map[string]any{"presence": "unavailable"}).expect(t, http.StatusOK, "")
	carolSince := mustSyncTP(t, srv, carol.AccessToken, quiet).NextBatch
	aliceSince := mustSyncTP(t, srv, alice.AccessToken, quiet).NextBatch
	_, err := carol.JoinRoom(ctx, roomID, nil)
	must(t, err, "carol joins")
	cs := mustSyncTP(t, srv, carol.AccessToken, url.Values{"since": {carolSince}, "timeout": {"0"}, "set_presence": {"offline"}})
	if c, ok := presenceOf(t, cs, aliceID); !ok || c["presence"] != "unavailable" {
		t.Fatalf("carol's sync after joining lacks alice's presence: %+v", cs.Presence.Events)
	}
	if _, ok := presenceOf(t, cs, bobID); !ok {
		t.Fatalf("carol's sync after joining lacks bob's presence: %+v", cs.Presence.Events)
	}
	as := mustSyncTP(t, srv, alice.AccessToken, url.Values{"since": {aliceSince}, "timeout": {"0"}, "set_presence": {"offline"}})
	if c, ok := presenceOf(t, as, carolID); !ok || c["presence"] != "online" {
		t.Fatalf("alice's sync after carol joined lacks carol's presence: %+v", as.Presence.Events)
	}

	// A filter that leaves presence out.
	noPresence := `{"presence":{"not_types":["*"]}}`
	if f := mustSyncTP(t, srv, alice.AccessToken, url.Values{"filter": {noPresence}}); len(f.Presence.Events) != 0 {
		t.Fatalf("presence despite the filter: %+v", f.Presence.Events)
	}
}

func TestPresenceDisabled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Presence.Enabled = false })
	alice, bob, _ := sharedRoom(t, srv)
	aliceID, bobID := alice.UserID.String(), bob.UserID.String()

	since := mustSyncTP(t, srv, alice.AccessToken, nil).NextBatch
	// Accepted (and still checked), then ignored.
	put(t, srv, presencePath(bobID), bob.AccessToken, map[string]any{"presence": "online", "status_msg": "hi"}).
		expect(t, http.StatusOK, "")
	put(t, srv, presencePath(bobID), bob.AccessToken, map[string]any{"presence": "busy"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, presencePath(bobID), alice.AccessToken, map[string]any{"presence": "online"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	mustSyncTP(t, srv, bob.AccessToken, nil)
	for _, who := range []string{aliceID, bobID} {
		r := get(t, srv, presencePath(who), alice.AccessToken).expect(t, http.StatusOK, "")
		if len(r.Body) != 1 || r.str("presence") != "offline" {
			t.Fatalf("GET presence of %s with presence off: %s", who, r.Raw)
		}
	}
	for _, s := range []tpSync{
		mustSyncTP(t, srv, alice.AccessToken, nil),
		mustSyncTP(t, srv, alice.AccessToken, url.Values{"since": {since}, "timeout": {"0"}}),
	} {
		if len(s.Presence.Events) != 0 {
			t.Fatalf("presence events with presence off: %+v", s.Presence.Events)
		}
	}
}

func TestTypingAndPresenceAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice, bob, roomID := sharedRoom(t, srv)
	bobID := bob.UserID.String()

	// (Typing is activity: it would make an idle bob online again.)
	put(t, srv, typingPath(roomID, bobID), bob.AccessToken, map[string]any{"typing": true, "timeout": 60000}).
		expect(t, http.StatusOK, "")
	put(t, srv, presencePath(bobID), bob.AccessToken, map[string]any{"presence": "unavailable", "status_msg": "lunch"}).
		expect(t, http.StatusOK, "")
	old := mustSyncTP(t, srv, alice.AccessToken, url.Values{"set_presence": {"offline"}})
	if ids, _ := typingIn(old, roomID); !slices.Equal(ids, []string{bobID}) {
		t.Fatalf("m.typing before the restart = %v", ids)
	}

	srv.Restart()

	// Presence is stored; typing is not.
	r := get(t, srv, presencePath(bobID), alice.AccessToken).expect(t, http.StatusOK, "")
	if r.str("presence") != "unavailable" || r.str("status_msg") != "lunch" {
		t.Fatalf("bob's presence after a restart: %s", r.Raw)
	}
	if _, ok := typingIn(mustSyncTP(t, srv, alice.AccessToken, url.Values{"set_presence": {"offline"}}), roomID); ok {
		t.Fatal("typing survived a restart")
	}
	// A token from before the restart works: it neither loops nor misses
	// the first typing change after it.
	quiet := url.Values{"set_presence": {"offline"}}
	if s := mustSyncTP(t, srv, alice.AccessToken, url.Values{"since": {old.NextBatch}, "timeout": {"0"}, "set_presence": {"offline"}}); s.NextBatch == "" {
		t.Fatal("no next_batch")
	}
	putLater(t, srv, typingPath(roomID, bobID), bob.AccessToken, map[string]any{"typing": true, "timeout": 60000})
	got := pollUntil(t, srv, alice.AccessToken, old.NextBatch, quiet, 5*time.Second, "typing after a restart",
		func(s tpSync) bool { _, ok := typingIn(s, roomID); return ok })
	if ids, _ := typingIn(got, roomID); !slices.Equal(ids, []string{bobID}) {
		t.Fatalf("m.typing after the restart = %v (sync from the old token)", ids)
	}
	// And from the new token, nothing is repeated.
	again := mustSyncTP(t, srv, alice.AccessToken, url.Values{"since": {got.NextBatch}, "timeout": {"0"}, "set_presence": {"offline"}})
	if _, ok := typingIn(again, roomID); ok {
		t.Fatal("m.typing repeated")
	}
}
