package clientapi_test

// MSC4140 delayed events over HTTP: scheduling with
// ?org.matrix.msc4140.delay, the restart/send/cancel actions in both URL
// forms, the list, the errors, and firing after a restart.

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

const dlPrefix = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"

var dlTxnCounter atomic.Int64

func dlTxn() string { return "dltxn" + strconv.FormatInt(dlTxnCounter.Add(1), 10) }

// dlSetup starts a server with a 10 s max delay and returns it with two
// users, alice in a room she created and bob outside it.
func dlSetup(t *testing.T) (*testserver.Server, session, session, string) {
	t.Helper()
	srv := testserver.Start(t, func(c *config.Config) { c.Rooms.MaxDelayedEventDelay = config.Duration(10 * time.Second) })
	alice := registerUser(t, srv, "alice", "password-alice-1")
	bob := registerUser(t, srv, "bob", "password-bob-1")
	roomID := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "").str("room_id")
	return srv, alice, bob, roomID
}

// dlSend schedules a message and returns the response.
func dlSend(t *testing.T, srv *testserver.Server, s session, roomID, txn, body, delay string) resp {
	t.Helper()
	path := v3 + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + txn + "?org.matrix.msc4140.delay=" + delay
	return put(t, srv, path, s.AccessToken, map[string]any{"msgtype": "m.text", "body": body})
}

// dlSyncToken is the current sync position for s.
func dlSyncToken(t *testing.T, srv *testserver.Server, s session) string {
	t.Helper()
	return get(t, srv, v3+"/sync?timeout=0", s.AccessToken).expect(t, http.StatusOK, "").str("next_batch")
}

// dlTimeline syncs from since for up to within and returns the room's
// timeline events that arrived, and the last token.
func dlTimeline(t *testing.T, srv *testserver.Server, s session, roomID, since string, within time.Duration) ([]map[string]any, string) {
	t.Helper()
	var out []map[string]any
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		wait := time.Until(deadline).Milliseconds()
		r := get(t, srv, v3+"/sync?timeout="+strconv.FormatInt(wait, 10)+"&since="+url.QueryEscape(since), s.AccessToken).
			expect(t, http.StatusOK, "")
		since = r.str("next_batch")
		rooms, _ := r.Body["rooms"].(map[string]any)
		join, _ := rooms["join"].(map[string]any)
		room, _ := join[roomID].(map[string]any)
		tl, _ := room["timeline"].(map[string]any)
		evs, _ := tl["events"].([]any)
		for _, e := range evs {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
	}
	return out, since
}

// dlBodies are the bodies of the m.room.message events in evs.
func dlBodies(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		if e["type"] == "m.room.message" {
			c, _ := e["content"].(map[string]any)
			b, _ := c["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

func dlHas(evs []map[string]any, body string) bool {
	for _, b := range dlBodies(evs) {
		if b == body {
			return true
		}
	}
	return false
}

func TestDelayedMessageLifecycle(t *testing.T) {
	srv, alice, _, roomID := dlSetup(t)
	since := dlSyncToken(t, srv, alice)

	// Fires after its delay.
	txn := dlTxn()
	r := dlSend(t, srv, alice, roomID, txn, "timed", "300").expect(t, http.StatusOK, "")
	id := r.str("delay_id")
	if id == "" {
		t.Fatalf("no delay_id: %s", r.Raw)
	}
	if _, ok := r.Body["event_id"]; ok {
		t.Fatalf("a delayed send must not answer an event_id: %s", r.Raw)
	}
	// The same transaction again is a retry: same delay_id.
	if again := dlSend(t, srv, alice, roomID, txn, "timed", "300").expect(t, http.StatusOK, "").str("delay_id"); again != id {
		t.Fatalf("retried txn got %q, want %q", again, id)
	}
	evs, since := dlTimeline(t, srv, alice, roomID, since, 100*time.Millisecond)
	if dlHas(evs, "timed") {
		t.Fatal("delayed message arrived before its delay")
	}
	evs, since = dlTimeline(t, srv, alice, roomID, since, 1500*time.Millisecond)
	if got := dlBodies(evs); len(got) != 1 || got[0] != "timed" {
		t.Fatalf("timeline bodies = %v, want [timed] once", got)
	}
	for _, e := range evs {
		if e["type"] == "m.room.message" && e["sender"] != alice.UserID {
			t.Fatalf("sender = %v, want %s", e["sender"], alice.UserID)
		}
	}

	// Restart postpones; each URL form works. The delay is long enough
	// that a loaded machine (the whole suite runs in parallel) still
	// restarts it in time: each restart comes after more than half of it.
	id = dlSend(t, srv, alice, roomID, dlTxn(), "restarted", "1500").expect(t, http.StatusOK, "").str("delay_id")
	start := time.Now()
	var lastRestart time.Time
	for _, path := range []string{dlPrefix + "/" + id + "/restart", dlPrefix + "/" + id} {
		time.Sleep(900 * time.Millisecond)
		post(t, srv, path, alice.AccessToken, map[string]any{"action": "restart"}).expect(t, http.StatusOK, "")
		lastRestart = time.Now()
	}
	// Past the original deadline (and the first restart's), before the
	// last restart's.
	evs, since = dlTimeline(t, srv, alice, roomID, since, 700*time.Millisecond)
	if dlHas(evs, "restarted") && time.Since(lastRestart) < 1500*time.Millisecond {
		t.Fatalf("restarted event fired after %v, before its restarted deadline", time.Since(start))
	}
	evs, since = dlTimeline(t, srv, alice, roomID, since, 3000*time.Millisecond)
	if !dlHas(evs, "restarted") {
		t.Fatal("restarted event never fired")
	}

	// Cancel prevents it.
	id = dlSend(t, srv, alice, roomID, dlTxn(), "cancelled", "200").expect(t, http.StatusOK, "").str("delay_id")
	post(t, srv, dlPrefix+"/"+id+"/cancel", alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	evs, since = dlTimeline(t, srv, alice, roomID, since, 600*time.Millisecond)
	if dlHas(evs, "cancelled") {
		t.Fatal("cancelled event fired")
	}
	post(t, srv, dlPrefix+"/"+id+"/restart", alice.AccessToken, map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// Send fires now, long before its delay.
	id = dlSend(t, srv, alice, roomID, dlTxn(), "sent now", "9000").expect(t, http.StatusOK, "").str("delay_id")
	post(t, srv, dlPrefix+"/"+id, alice.AccessToken, map[string]any{"action": "send"}).expect(t, http.StatusOK, "")
	evs, _ = dlTimeline(t, srv, alice, roomID, since, 200*time.Millisecond)
	if !dlHas(evs, "sent now") {
		t.Fatal("send action did not send")
	}

	// Finalised lists the outcomes.
	fin := get(t, srv, dlPrefix+"?status=finalised", alice.AccessToken).expect(t, http.StatusOK, "")
	if _, ok := fin.Body["scheduled"]; ok {
		t.Fatalf("status=finalised listed scheduled events: %s", fin.Raw)
	}
	list, _ := fin.Body["finalised"].([]any)
	outcomes := map[string]string{}
	for _, f := range list {
		m := f.(map[string]any)
		de := m["delayed_event"].(map[string]any)
		c := de["content"].(map[string]any)
		outcomes[c["body"].(string)] = m["outcome"].(string) + "/" + m["reason"].(string)
	}
	want := map[string]string{"timed": "send/delay", "restarted": "send/delay", "cancelled": "cancel/action", "sent now": "send/action"}
	for k, v := range want {
		if outcomes[k] != v {
			t.Errorf("finalised %q = %q, want %q (all: %v)", k, outcomes[k], v, outcomes)
		}
	}
}

func TestDelayedStateEventAndList(t *testing.T) {
	srv, alice, _, roomID := dlSetup(t)
	since := dlSyncToken(t, srv, alice)
	key := "_" + alice.UserID + "_" + alice.DeviceID
	path := v3 + "/rooms/" + url.PathEscape(roomID) + "/state/org.matrix.msc3401.call.member/" + url.PathEscape(key) +
		"?org.matrix.msc4140.delay=400"
	id := put(t, srv, path, alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "").str("delay_id")
	if id == "" {
		t.Fatal("no delay_id")
	}

	r := get(t, srv, dlPrefix, alice.AccessToken).expect(t, http.StatusOK, "")
	list, _ := r.Body["delayed_events"].([]any)
	if len(list) != 1 {
		t.Fatalf("delayed_events = %s", r.Raw)
	}
	ev := list[0].(map[string]any)
	if ev["delay_id"] != id || ev["room_id"] != roomID || ev["type"] != "org.matrix.msc3401.call.member" ||
		ev["state_key"] != key || ev["delay"] != float64(400) {
		t.Fatalf("listed %v", ev)
	}
	if rs, _ := ev["running_since"].(float64); rs <= 0 || rs > float64(time.Now().UnixMilli()) {
		t.Fatalf("running_since = %v", ev["running_since"])
	}
	if c, ok := ev["content"].(map[string]any); !ok || len(c) != 0 {
		t.Fatalf("content = %v", ev["content"])
	}
	if sched, _ := r.Body["scheduled"].([]any); len(sched) != 1 {
		t.Fatalf("scheduled = %s", r.Raw)
	}

	evs, _ := dlTimeline(t, srv, alice, roomID, since, 1500*time.Millisecond)
	var fired bool
	for _, e := range evs {
		if e["type"] == "org.matrix.msc3401.call.member" && e["state_key"] == key {
			fired = true
		}
	}
	if !fired {
		t.Fatalf("delayed state event did not fire; timeline %v", evs)
	}
	state := get(t, srv, v3+"/rooms/"+url.PathEscape(roomID)+"/state/org.matrix.msc3401.call.member/"+url.PathEscape(key),
		alice.AccessToken)
	state.expect(t, http.StatusOK, "")
	r = get(t, srv, dlPrefix+"?status=scheduled", alice.AccessToken).expect(t, http.StatusOK, "")
	if sched, ok := r.Body["scheduled"].([]any); !ok || len(sched) != 0 {
		t.Fatalf("after firing, scheduled = %s", r.Raw)
	}
}

func TestDelayedErrors(t *testing.T) {
	srv, alice, bob, roomID := dlSetup(t)
	id := dlSend(t, srv, alice, roomID, dlTxn(), "x", "5000").expect(t, http.StatusOK, "").str("delay_id")

	tooLong := dlSend(t, srv, alice, roomID, dlTxn(), "x", "10001").expect(t, http.StatusBadRequest, "M_UNKNOWN")
	if tooLong.Body["org.matrix.msc4140.errcode"] != "M_MAX_DELAY_EXCEEDED" ||
		tooLong.Body["org.matrix.msc4140.max_delay"] != float64(10000) || tooLong.Body["max_delay"] != float64(10000) {
		t.Fatalf("over-max body: %s", tooLong.Raw)
	}

	tests := []struct {
		name    string
		method  string
		path    string
		token   string
		body    any
		status  int
		errcode string
	}{
		{"bad delay", http.MethodPut, v3 + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + dlTxn() +
			"?org.matrix.msc4140.delay=soon", alice.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"negative delay", http.MethodPut, v3 + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + dlTxn() +
			"?org.matrix.msc4140.delay=-5", alice.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"not in room", http.MethodPut, v3 + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + dlTxn() +
			"?org.matrix.msc4140.delay=100", bob.AccessToken, map[string]any{}, 403, "M_FORBIDDEN"},
		{"unknown id", http.MethodPost, dlPrefix + "/syd_nope/cancel", alice.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		{"unknown id body form", http.MethodPost, dlPrefix + "/syd_nope", alice.AccessToken, map[string]any{"action": "send"}, 404, "M_NOT_FOUND"},
		{"other user's cancel", http.MethodPost, dlPrefix + "/" + id + "/cancel", bob.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		{"other user's send", http.MethodPost, dlPrefix + "/" + id, bob.AccessToken, map[string]any{"action": "send"}, 404, "M_NOT_FOUND"},
		{"bad action", http.MethodPost, dlPrefix + "/" + id + "/explode", alice.AccessToken, map[string]any{}, 400, "M_INVALID_PARAM"},
		{"missing action", http.MethodPost, dlPrefix + "/" + id, alice.AccessToken, map[string]any{}, 400, "M_MISSING_PARAM"},
		{"no token, unknown id", http.MethodPost, dlPrefix + "/syd_nope/cancel", "", map[string]any{}, 404, "M_NOT_FOUND"},
		{"bad token", http.MethodPost, dlPrefix + "/" + id + "/cancel", "not-a-token", map[string]any{}, 401, "M_UNKNOWN_TOKEN"},
		{"bad status", http.MethodGet, dlPrefix + "?status=pending", alice.AccessToken, nil, 400, "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			do(t, srv, req{Method: tt.method, Path: tt.path, Token: tt.token, Body: tt.body}).expect(t, tt.status, tt.errcode)
		})
	}
	// Bob's attempts left alice's event alone, and bob sees none of hers.
	if l, _ := get(t, srv, dlPrefix, alice.AccessToken).Body["delayed_events"].([]any); len(l) != 1 {
		t.Fatalf("alice's list = %v", l)
	}
	if l, ok := get(t, srv, dlPrefix, bob.AccessToken).Body["delayed_events"].([]any); !ok || len(l) != 0 {
		t.Fatalf("bob's list = %v", l)
	}
}

// TestDelayedByDelayIDAlone: MSC4140's management endpoints take the delay
// ID as their authority, so that a client can hand its event to a
// service (lk-jwt-service keeps Element Call's leave alive this way).
func TestDelayedByDelayIDAlone(t *testing.T) {
	srv, alice, _, roomID := dlSetup(t)
	since := dlSyncToken(t, srv, alice)
	id := dlSend(t, srv, alice, roomID, dlTxn(), "last will", "5000").expect(t, http.StatusOK, "").str("delay_id")
	before := time.Now().UnixMilli()
	time.Sleep(20 * time.Millisecond)
	for _, path := range []string{dlPrefix + "/" + id + "/restart", dlPrefix + "/" + id} {
		body := map[string]any{}
		if !strings.HasSuffix(path, "/restart") {
			body["action"] = "restart"
		}
		post(t, srv, path, "", body).expect(t, http.StatusOK, "")
	}
	r := get(t, srv, dlPrefix+"?status=scheduled", alice.AccessToken).expect(t, http.StatusOK, "")
	sched, _ := r.Body["scheduled"].([]any)
	if len(sched) != 1 || int64(sched[0].(map[string]any)["running_since"].(float64)) <= before {
		t.Fatalf("after unauthenticated restarts: %s", r.Raw)
	}
	post(t, srv, dlPrefix+"/"+id+"/send", "", map[string]any{}).expect(t, http.StatusOK, "")
	if evs, _ := dlTimeline(t, srv, alice, roomID, since, 5*time.Second); !dlHas(evs, "last will") {
		t.Fatalf("sent by delay ID: timeline %v", dlBodies(evs))
	}
	post(t, srv, dlPrefix+"/"+id+"/restart", "", map[string]any{}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
}

func TestDelayedVersions(t *testing.T) {
	srv := testserver.Start(t)
	r := get(t, srv, "/_matrix/client/versions", "").expect(t, http.StatusOK, "")
	if f, _ := r.Body["unstable_features"].(map[string]any); f["org.matrix.msc4140"] != true {
		t.Fatalf("unstable_features = %v", r.Body["unstable_features"])
	}
}

func TestDelayedSurvivesRestart(t *testing.T) {
	srv, alice, _, roomID := dlSetup(t)
	// The delay outlasts the restart, which takes more than a second on
	// a loaded machine (on PostgreSQL especially): the event must still be
	// scheduled when it is listed afterwards.
	dlSend(t, srv, alice, roomID, dlTxn(), "after restart", "5000").expect(t, http.StatusOK, "")
	since := dlSyncToken(t, srv, alice)
	srv.Restart()
	if l, _ := get(t, srv, dlPrefix, alice.AccessToken).Body["delayed_events"].([]any); len(l) != 1 {
		t.Fatalf("after restart, scheduled = %v", l)
	}
	evs, _ := dlTimeline(t, srv, alice, roomID, since, 8*time.Second)
	if !dlHas(evs, "after restart") {
		t.Fatal("delayed event pending at restart never fired")
	}
}
