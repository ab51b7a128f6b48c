package clientapi_test

// Send-to-device messaging: PUT /sendToDevice and the to_device section of
// /sync, and the checks on the shape of /sync responses that the sync
// tests share.
// https://spec.matrix.org/v1.19/client-server-api/#send-to-device-messaging

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const tdPassword = "password1"

// syncGet calls /sync as s with the query q, expects 200, and checks the
// response against the shape of sync.yaml.
func syncGet(t testing.TB, srv *testserver.Server, s session, q url.Values) resp {
	t.Helper()
	r := get(t, srv, v3+"/sync?"+q.Encode(), s.AccessToken).expect(t, http.StatusOK, "")
	checkSyncShape(t, r.Body, q)
	return r
}

// since is a query with a since token (and a short timeout, so a sync with
// nothing new does not wait long).
func since(tok string, extra ...string) url.Values {
	q := url.Values{"since": {tok}, "timeout": {"0"}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q
}

// obj and list read nested JSON loosely: a missing or mistyped value reads
// as nil.
func obj(v any, path ...string) map[string]any {
	m, _ := v.(map[string]any)
	for _, k := range path {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func events(v map[string]any, path ...string) []map[string]any {
	list, _ := obj(v, path...)["events"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		m, _ := e.(map[string]any)
		out = append(out, m)
	}
	return out
}

func toDeviceEvents(r resp) []map[string]any { return events(r.Body, "to_device") }

// checkSyncShape checks a /sync response against sync.yaml: the required
// fields are there and every field has its type. Events are checked in
// full unless the request had a filter with event_fields (which may leave
// out any field).
func checkSyncShape(t testing.TB, body map[string]any, q url.Values) {
	t.Helper()
	strictEvents := !strings.Contains(q.Get("filter"), "event_fields") && !strings.Contains(q.Get("filter"), "federation")
	fail := func(format string, a ...any) { t.Helper(); t.Errorf("sync response: "+format, a...) }
	if s, ok := body["next_batch"].(string); !ok || s == "" {
		fail("next_batch = %v, want a string", body["next_batch"])
	}
	isObj := func(v any) bool { _, ok := v.(map[string]any); return ok }
	isInt := func(v any) bool {
		f, ok := v.(float64)
		return ok && f == float64(int64(f))
	}
	isStr := func(v any) bool { _, ok := v.(string); return ok }
	batch := func(where string, v any, check func(string, map[string]any)) {
		if v == nil {
			return
		}
		m, ok := v.(map[string]any)
		if !ok {
			fail("%s is not an object", where)
			return
		}
		list, ok := m["events"].([]any)
		if !ok {
			fail("%s.events is not an array: %v", where, m["events"])
			return
		}
		for i, e := range list {
			em, ok := e.(map[string]any)
			if !ok {
				fail("%s.events[%d] is not an object", where, i)
				continue
			}
			check(fmt.Sprintf("%s.events[%d]", where, i), em)
		}
	}
	basicEvent := func(where string, e map[string]any) {
		if !isStr(e["type"]) || !isObj(e["content"]) {
			fail("%s lacks type or content: %v", where, e)
		}
	}
	roomEvent := func(state bool) func(string, map[string]any) {
		return func(where string, e map[string]any) {
			if !strictEvents {
				return
			}
			if !isStr(e["event_id"]) || !isStr(e["type"]) || !isStr(e["sender"]) || !isInt(e["origin_server_ts"]) || !isObj(e["content"]) {
				fail("%s is not a client event: %v", where, e)
			}
			if _, ok := e["unsigned"]; ok && !isObj(e["unsigned"]) {
				fail("%s.unsigned is not an object", where)
			}
			if state && !isStr(e["state_key"]) {
				fail("%s is a state event without state_key: %v", where, e)
			}
		}
	}
	stateAfter := q.Get("use_state_after") == "true" || q.Get("org.matrix.msc4222.use_state_after") == "true"
	stateSections := func(where string, room map[string]any) {
		for _, key := range []string{"state", "state_after", "org.matrix.msc4222.state_after"} {
			batch(where+"."+key, room[key], roomEvent(true))
		}
		if stateAfter {
			if _, ok := room["state"]; ok {
				fail("%s has state although use_state_after was set", where)
			}
		} else if _, ok := room["state_after"]; ok {
			fail("%s has state_after although use_state_after was not set", where)
		}
		if tl, ok := room["timeline"]; ok {
			tm, _ := tl.(map[string]any)
			if _, ok := tm["limited"].(bool); !ok {
				fail("%s.timeline.limited is not a boolean", where)
			}
			if pb, ok := tm["prev_batch"]; ok && !isStr(pb) {
				fail("%s.timeline.prev_batch is not a string", where)
			}
			batch(where+".timeline", tl, roomEvent(false))
		}
		batch(where+".account_data", room["account_data"], basicEvent)
	}
	rooms, _ := body["rooms"].(map[string]any)
	for _, kind := range []string{"join", "invite", "leave", "knock"} {
		if v, ok := rooms[kind]; ok && !isObj(v) {
			fail("rooms.%s is not an object", kind)
		}
		for roomID, rv := range obj(rooms, kind) {
			where := "rooms." + kind + "." + roomID
			if !strings.HasPrefix(roomID, "!") {
				fail("%s: not a room ID", where)
			}
			room, ok := rv.(map[string]any)
			if !ok {
				fail("%s is not an object", where)
				continue
			}
			switch kind {
			case "join", "leave":
				stateSections(where, room)
				if kind == "join" {
					batch(where+".ephemeral", room["ephemeral"], basicEvent)
					if sum, ok := room["summary"]; ok {
						sm, _ := sum.(map[string]any)
						if sm == nil {
							fail("%s.summary is not an object", where)
						}
						if h, ok := sm["m.heroes"]; ok {
							hs, ok := h.([]any)
							if !ok {
								fail("%s.summary.m.heroes is not an array", where)
							}
							for _, u := range hs {
								if s, _ := u.(string); !strings.HasPrefix(s, "@") {
									fail("%s.summary.m.heroes has %v", where, u)
								}
							}
						}
						for _, k := range []string{"m.joined_member_count", "m.invited_member_count"} {
							if v, ok := sm[k]; ok && !isInt(v) {
								fail("%s.summary.%s is not an integer", where, k)
							}
						}
					}
					if un, ok := room["unread_notifications"]; ok {
						for k, v := range obj(un) {
							if !isInt(v) {
								fail("%s.unread_notifications.%s is not an integer", where, k)
							}
						}
					}
				}
			case "invite", "knock":
				batch(where+"."+kind+"_state", room[kind+"_state"], func(w string, e map[string]any) {
					if !isStr(e["type"]) || !isStr(e["sender"]) || !isStr(e["state_key"]) || !isObj(e["content"]) {
						fail("%s is not a stripped state event: %v", w, e)
					}
				})
			}
		}
	}
	batch("presence", body["presence"], basicEvent)
	batch("account_data", body["account_data"], basicEvent)
	batch("to_device", body["to_device"], func(where string, e map[string]any) {
		if !isStr(e["sender"]) || !isStr(e["type"]) || !isObj(e["content"]) || len(e) != 3 {
			fail("%s is not {sender, type, content}: %v", where, e)
		}
	})
	if dl, ok := body["device_lists"]; ok {
		for _, k := range []string{"changed", "left"} {
			if v, ok := obj(dl)[k]; ok {
				if _, ok := v.([]any); !ok {
					fail("device_lists.%s is not an array", k)
				}
			}
		}
	}
	if otk, ok := body["device_one_time_keys_count"]; ok {
		for k, v := range obj(otk) {
			if !isInt(v) {
				fail("device_one_time_keys_count.%s is not an integer", k)
			}
		}
	}
}

// sendToDevice sends one /sendToDevice request.
func sendToDevice(t testing.TB, srv *testserver.Server, s session, evType, txn string, messages map[string]any) resp {
	t.Helper()
	return put(t, srv, adPath("sendToDevice", evType, txn), s.AccessToken, map[string]any{"messages": messages})
}

// wantToDevice checks the to_device events of r: each from sender, of type
// typ, with content {"n": n} for the ns given, in that order.
func wantToDevice(t testing.TB, r resp, sender, typ string, ns ...int) {
	t.Helper()
	evs := toDeviceEvents(r)
	var got []int
	for _, e := range evs {
		if e["sender"] != sender || e["type"] != typ {
			t.Fatalf("to-device event %v, want sender %s and type %s", e, sender, typ)
		}
		n, _ := obj(e, "content")["n"].(float64)
		got = append(got, int(n))
	}
	if len(ns) == 0 {
		ns = []int{}
	}
	if got == nil {
		got = []int{}
	}
	if !reflect.DeepEqual(got, ns) {
		t.Fatalf("to-device messages %v, want %v; body: %s", got, ns, r.Raw)
	}
}

// TestToDeviceDelivery: messages reach exactly the device they are for, in
// order, again and again until the device acknowledges them by syncing
// with the next token, and never after.
func TestToDeviceDelivery(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", tdPassword)
	bob1 := registerUser(t, srv, "bob", tdPassword)
	bob2 := login(t, srv, "bob", tdPassword, nil)
	tok1 := syncGet(t, srv, bob1, nil).str("next_batch")
	tok2 := syncGet(t, srv, bob2, nil).str("next_batch")
	aliceTok := syncGet(t, srv, alice, nil).str("next_batch")

	for i := 0; i < 3; i++ {
		r := sendToDevice(t, srv, alice, "m.test", fmt.Sprint("txn", i), map[string]any{
			bob1.UserID: map[string]any{bob1.DeviceID: map[string]any{"n": i}},
		}).expect(t, http.StatusOK, "")
		jsonEqual(t, r, `{}`)
	}
	first := syncGet(t, srv, bob1, since(tok1))
	wantToDevice(t, first, alice.UserID, "m.test", 0, 1, 2)
	// Bob's other device and the sender get nothing.
	wantToDevice(t, syncGet(t, srv, bob2, since(tok2)), alice.UserID, "m.test")
	wantToDevice(t, syncGet(t, srv, alice, since(aliceTok)), alice.UserID, "m.test")

	// Not acknowledged yet: the same since gives the same messages.
	again := syncGet(t, srv, bob1, since(tok1))
	wantToDevice(t, again, alice.UserID, "m.test", 0, 1, 2)
	// An initial sync gets them too (a client starting over).
	wantToDevice(t, syncGet(t, srv, bob1, nil), alice.UserID, "m.test", 0, 1, 2)

	// Syncing with the next token acknowledges them: gone for good, even
	// for a sync from the old token.
	next := first.str("next_batch")
	wantToDevice(t, syncGet(t, srv, bob1, since(next)), alice.UserID, "m.test")
	wantToDevice(t, syncGet(t, srv, bob1, since(tok1)), alice.UserID, "m.test")
	wantToDevice(t, syncGet(t, srv, bob1, nil), alice.UserID, "m.test")

	// A message sent after a response is not acknowledged by that
	// response's token.
	sendToDevice(t, srv, alice, "m.test", "txn3", map[string]any{
		bob1.UserID: map[string]any{bob1.DeviceID: map[string]any{"n": 3}},
	}).expect(t, http.StatusOK, "")
	r := syncGet(t, srv, bob1, since(next))
	wantToDevice(t, r, alice.UserID, "m.test", 3)
	wantToDevice(t, syncGet(t, srv, bob1, since(r.str("next_batch"))), alice.UserID, "m.test")

	// Messages wait across a restart.
	sendToDevice(t, srv, alice, "m.test", "txn4", map[string]any{
		bob2.UserID: map[string]any{bob2.DeviceID: map[string]any{"n": 4}},
	}).expect(t, http.StatusOK, "")
	srv.Restart()
	wantToDevice(t, syncGet(t, srv, bob2, since(tok2)), alice.UserID, "m.test", 4)
}

// TestToDeviceWildcardAndTxn: "*" reaches every device of the user (the
// ones named on their own get their own message); a transaction ID is
// done once per sending device.
func TestToDeviceWildcardAndTxn(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", tdPassword)
	alice2 := login(t, srv, "alice", tdPassword, nil)
	bob1 := registerUser(t, srv, "bob", tdPassword)
	bob2 := login(t, srv, "bob", tdPassword, nil)
	bob3 := login(t, srv, "bob", tdPassword, nil)
	carol := registerUser(t, srv, "carol", tdPassword)
	toks := map[string]string{}
	for _, s := range []session{bob1, bob2, bob3, carol} {
		toks[s.DeviceID] = syncGet(t, srv, s, nil).str("next_batch")
	}

	sendToDevice(t, srv, alice, "m.all", "w1", map[string]any{
		bob1.UserID:  map[string]any{"*": map[string]any{"n": 1}},
		carol.UserID: map[string]any{carol.DeviceID: map[string]any{"n": 1}},
	}).expect(t, http.StatusOK, "")
	sendToDevice(t, srv, alice, "m.all", "w2", map[string]any{
		bob1.UserID: map[string]any{"*": map[string]any{"n": 2}, bob3.DeviceID: map[string]any{"n": 3}},
	}).expect(t, http.StatusOK, "")
	wantToDevice(t, syncGet(t, srv, bob1, since(toks[bob1.DeviceID])), alice.UserID, "m.all", 1, 2)
	wantToDevice(t, syncGet(t, srv, bob2, since(toks[bob2.DeviceID])), alice.UserID, "m.all", 1, 2)
	wantToDevice(t, syncGet(t, srv, bob3, since(toks[bob3.DeviceID])), alice.UserID, "m.all", 1, 3)
	wantToDevice(t, syncGet(t, srv, carol, since(toks[carol.DeviceID])), alice.UserID, "m.all", 1)

	// A retry of a transaction is answered {} and sends nothing.
	msg := map[string]any{carol.UserID: map[string]any{carol.DeviceID: map[string]any{"n": 10}}}
	sendToDevice(t, srv, alice, "m.txn", "same", msg).expect(t, http.StatusOK, "")
	jsonEqual(t, sendToDevice(t, srv, alice, "m.txn", "same", msg).expect(t, http.StatusOK, ""), `{}`)
	// The same transaction ID from another device is another request.
	sendToDevice(t, srv, alice2, "m.txn", "same", msg).expect(t, http.StatusOK, "")
	r := syncGet(t, srv, carol, since(toks[carol.DeviceID]))
	var types []string
	for _, e := range toDeviceEvents(r) {
		types = append(types, e["type"].(string))
	}
	if want := []string{"m.all", "m.txn", "m.txn"}; !reflect.DeepEqual(types, want) {
		t.Fatalf("carol's messages are %v, want %v: %s", types, want, r.Raw)
	}
}

// TestToDeviceLongPollWakes: a waiting sync answers as soon as a message
// for its device arrives.
func TestToDeviceLongPollWakes(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", tdPassword)
	bob := registerUser(t, srv, "bob", tdPassword)
	tok := syncGet(t, srv, bob, nil).str("next_batch")
	type result struct {
		r   resp
		err error
		dur time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		r, err := tryDo(srv, req{Method: http.MethodGet, Path: v3 + "/sync?timeout=20000&since=" + url.QueryEscape(tok), Token: bob.AccessToken})
		done <- result{r, err, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	sendToDevice(t, srv, alice, "m.wake", "w", map[string]any{
		bob.UserID: map[string]any{bob.DeviceID: map[string]any{"n": 7}},
	}).expect(t, http.StatusOK, "")
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.dur > 5*time.Second {
		t.Fatalf("the long-poll took %s to wake", res.dur)
	}
	res.r.expect(t, http.StatusOK, "")
	wantToDevice(t, res.r, alice.UserID, "m.wake", 7)
}

// TestToDeviceBatches: a long queue comes 100 messages per response, in
// order, each response's token carrying on where it stopped.
func TestToDeviceBatches(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", tdPassword)
	bob := registerUser(t, srv, "bob", tdPassword)
	tok := syncGet(t, srv, bob, nil).str("next_batch")
	const n = 150
	for i := 0; i < n; i++ {
		sendToDevice(t, srv, alice, "m.batch", fmt.Sprint("b", i), map[string]any{
			bob.UserID: map[string]any{bob.DeviceID: map[string]any{"n": i}},
		}).expect(t, http.StatusOK, "")
	}
	seq := func(from, to int) []int {
		var out []int
		for i := from; i < to; i++ {
			out = append(out, i)
		}
		return out
	}
	r := syncGet(t, srv, bob, since(tok))
	wantToDevice(t, r, alice.UserID, "m.batch", seq(0, 100)...)
	// Before the acknowledgement, the same batch again.
	wantToDevice(t, syncGet(t, srv, bob, since(tok)), alice.UserID, "m.batch", seq(0, 100)...)
	r = syncGet(t, srv, bob, since(r.str("next_batch")))
	wantToDevice(t, r, alice.UserID, "m.batch", seq(100, n)...)
	wantToDevice(t, syncGet(t, srv, bob, since(r.str("next_batch"))), alice.UserID, "m.batch")
}

// TestToDeviceBadRequests: the refusals, and what is accepted but not
// delivered (remote users, unknown devices).
func TestToDeviceBadRequests(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", tdPassword)
	bob := registerUser(t, srv, "bob", tdPassword)
	tok := syncGet(t, srv, bob, nil).str("next_batch")
	path := v3 + "/sendToDevice/m.test/t1"

	put(t, srv, path, "", map[string]any{"messages": map[string]any{}}).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	put(t, srv, path, alice.AccessToken, "{not json").expect(t, http.StatusBadRequest, "M_NOT_JSON")
	put(t, srv, path, alice.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, path, alice.AccessToken, map[string]any{"messages": []any{}}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, path, alice.AccessToken, map[string]any{"messages": map[string]any{
		bob.UserID: map[string]any{bob.DeviceID: "not an object"},
	}}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, path, alice.AccessToken, map[string]any{"messages": map[string]any{
		"bob": map[string]any{bob.DeviceID: map[string]any{}},
	}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, path, alice.AccessToken).expect(t, http.StatusMethodNotAllowed, "M_UNRECOGNIZED")

	// Accepted, delivered to no one: a remote user (no federation yet), an
	// unknown local user, an unknown device.
	sendToDevice(t, srv, alice, "m.test", "t2", map[string]any{
		"@carol:remote.example": map[string]any{"DEV": map[string]any{"n": 1}},
		"@nobody:tessera.test":  map[string]any{"*": map[string]any{"n": 1}},
		bob.UserID:              map[string]any{"NOSUCHDEVICE": map[string]any{"n": 1}},
	}).expect(t, http.StatusOK, "")
	// An empty messages object is fine.
	sendToDevice(t, srv, alice, "m.test", "t3", map[string]any{}).expect(t, http.StatusOK, "")
	wantToDevice(t, syncGet(t, srv, bob, since(tok)), alice.UserID, "m.test")
}

// TestToDeviceDeletedDevice: a deleted device's queue goes with it, so a
// device later created with the same ID starts empty.
func TestToDeviceDeletedDevice(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", tdPassword)
	bob := registerUser(t, srv, "bob", tdPassword)
	phone := login(t, srv, "bob", tdPassword, map[string]any{"device_id": "PHONE"})
	sendToDevice(t, srv, alice, "m.test", "t1", map[string]any{
		bob.UserID: map[string]any{"PHONE": map[string]any{"n": 1}},
	}).expect(t, http.StatusOK, "")
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/PHONE", bob.AccessToken, nil, bob.UserID, tdPassword).
		expect(t, http.StatusOK, "")
	tokenDead(t, srv, phone.AccessToken, false)
	again := login(t, srv, "bob", tdPassword, map[string]any{"device_id": "PHONE"})
	wantToDevice(t, syncGet(t, srv, again, nil), alice.UserID, "m.test")

	// Logging out drops the queue too.
	sendToDevice(t, srv, alice, "m.test", "t2", map[string]any{
		bob.UserID: map[string]any{"PHONE": map[string]any{"n": 2}},
	}).expect(t, http.StatusOK, "")
	post(t, srv, v3+"/logout", again.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	third := login(t, srv, "bob", tdPassword, map[string]any{"device_id": "PHONE"})
	wantToDevice(t, syncGet(t, srv, third, nil), alice.UserID, "m.test")
}
