package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeHS is a tiny, in-memory fake of the few endpoints tessera-load uses:
// just enough to test the tool's plumbing, not a homeserver.
type fakeHS struct {
	secret   string
	open     bool // open registration with m.login.dummy
	noRooms  bool // createRoom answers 404 M_UNRECOGNIZED, as Tessera did at first
	rateOnce bool // answer the first registration POST with a 429

	mu       sync.Mutex
	limited  bool
	nonces   map[string]bool
	sessions map[string]bool
	tokens   map[string]string // access token -> user ID
	rooms    map[string]*fakeRoom
	txns     map[string]string // token + room + txn -> event ID
	bodies   map[string]string // event ID -> message body
	fail502  int               // answer this many sends 502 before taking them
	seq      int
}

type fakeRoom struct {
	public  bool
	members map[string]bool
	events  []string // event IDs, oldest first
}

func newFakeHS() *fakeHS {
	return &fakeHS{
		secret: "s3cret", nonces: map[string]bool{}, sessions: map[string]bool{},
		tokens: map[string]string{}, rooms: map[string]*fakeRoom{}, txns: map[string]string{},
		bodies: map[string]string{},
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"errcode": code, "error": msg})
}

// next returns a fresh identifier; callers hold f.mu.
func (f *fakeHS) next(prefix string) string {
	f.seq++
	return fmt.Sprintf("%s%d", prefix, f.seq)
}

// newSession creates a user and its access token; callers hold f.mu.
func (f *fakeHS) newSession(w http.ResponseWriter, localpart string) {
	userID := "@" + localpart + ":fake"
	for _, u := range f.tokens {
		if u == userID {
			writeErr(w, 400, "M_USER_IN_USE", "taken")
			return
		}
	}
	token := f.next("tok")
	f.tokens[token] = userID
	writeJSON(w, 200, map[string]string{"user_id": userID, "access_token": token, "device_id": "DEV"})
}

// rateLimitOnce answers 429 the first time it is called if f.rateOnce;
// callers hold f.mu.
func (f *fakeHS) rateLimitOnce(w http.ResponseWriter) bool {
	if f.rateOnce && !f.limited {
		f.limited = true
		writeJSON(w, 429, map[string]any{"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 5})
		return true
	}
	return false
}

func (f *fakeHS) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, 404, "M_UNRECOGNIZED", "Unrecognized request")
	})
	mux.HandleFunc("GET /_synapse/admin/v1/register", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		nonce := f.next("nonce")
		f.nonces[nonce] = true
		writeJSON(w, 200, map[string]string{"nonce": nonce})
	})
	mux.HandleFunc("POST /_synapse/admin/v1/register", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Nonce, Username, Password, MAC string
			Admin                          bool
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil {
			writeErr(w, 400, "M_NOT_JSON", "bad json")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.rateLimitOnce(w) {
			return
		}
		if !f.nonces[req.Nonce] {
			writeErr(w, 400, "M_UNKNOWN", "Unrecognised nonce")
			return
		}
		delete(f.nonces, req.Nonce)
		want, _ := hex.DecodeString(sharedSecretMAC(f.secret, req.Nonce, req.Username, req.Password))
		got, _ := hex.DecodeString(req.MAC)
		if req.Admin || !hmac.Equal(got, want) {
			writeErr(w, 403, "M_FORBIDDEN", "HMAC incorrect")
			return
		}
		f.newSession(w, req.Username)
	})
	mux.HandleFunc("POST /_matrix/client/v3/register", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Username, Password string
			Auth               *struct{ Type, Session string }
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil {
			writeErr(w, 400, "M_NOT_JSON", "bad json")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.open {
			writeErr(w, 403, "M_FORBIDDEN", "Registration is not enabled on this server")
			return
		}
		if f.rateLimitOnce(w) {
			return
		}
		if req.Auth == nil || req.Auth.Type != "m.login.dummy" || !f.sessions[req.Auth.Session] {
			session := f.next("sess")
			f.sessions[session] = true
			writeJSON(w, 401, map[string]any{
				"session": session, "params": map[string]any{},
				"flows": []map[string]any{{"stages": []string{"m.login.dummy"}}},
			})
			return
		}
		f.newSession(w, req.Username)
	})
	mux.HandleFunc("POST /_matrix/client/v3/createRoom", f.authed(func(w http.ResponseWriter, r *http.Request, userID string) {
		if f.noRooms {
			writeErr(w, 404, "M_UNRECOGNIZED", "Unrecognized request")
			return
		}
		var req struct{ Preset, Name string }
		if json.NewDecoder(r.Body).Decode(&req) != nil || req.Preset == "" {
			writeErr(w, 400, "M_BAD_JSON", "want a preset")
			return
		}
		id := f.next("!room") + ":fake"
		room := &fakeRoom{public: req.Preset == "public_chat", members: map[string]bool{userID: true}}
		// create, member, power levels, join rules, history visibility, name
		for range 6 {
			room.events = append(room.events, f.next("$state"))
		}
		f.rooms[id] = room
		writeJSON(w, 200, map[string]string{"room_id": id})
	}))
	mux.HandleFunc("POST /_matrix/client/v3/join/{roomId}", f.authed(func(w http.ResponseWriter, r *http.Request, userID string) {
		room := f.rooms[r.PathValue("roomId")]
		if room == nil || !room.public {
			writeErr(w, 403, "M_FORBIDDEN", "cannot join")
			return
		}
		if !room.members[userID] {
			room.members[userID] = true
			room.events = append(room.events, f.next("$member"))
		}
		writeJSON(w, 200, map[string]string{"room_id": r.PathValue("roomId")})
	}))
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{roomId}/send/{type}/{txnId}", f.authed(func(w http.ResponseWriter, r *http.Request, userID string) {
		room := f.rooms[r.PathValue("roomId")]
		if room == nil || !room.members[userID] {
			writeErr(w, 403, "M_FORBIDDEN", "not in room")
			return
		}
		var content struct{ Msgtype, Body string }
		if json.NewDecoder(r.Body).Decode(&content) != nil || content.Msgtype != "m.text" || content.Body == "" {
			writeErr(w, 400, "M_BAD_JSON", "want an m.text")
			return
		}
		if f.fail502 > 0 {
			f.fail502--
			writeErr(w, 502, "M_UNKNOWN", "the room's owner is not reachable")
			return
		}
		key := r.Header.Get("Authorization") + "|" + r.PathValue("roomId") + "|" + r.PathValue("txnId")
		id, ok := f.txns[key]
		if !ok {
			id = f.next("$msg")
			f.txns[key] = id
			f.bodies[id] = content.Body
			room.events = append(room.events, id)
		}
		writeJSON(w, 200, map[string]string{"event_id": id})
	}))
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{roomId}/messages", f.authed(func(w http.ResponseWriter, r *http.Request, userID string) {
		room := f.rooms[r.PathValue("roomId")]
		if room == nil || !room.members[userID] {
			writeErr(w, 403, "M_FORBIDDEN", "not in room")
			return
		}
		q := r.URL.Query()
		limit, err := strconv.Atoi(q.Get("limit"))
		if q.Get("dir") != "b" || err != nil || limit < 1 {
			writeErr(w, 400, "M_INVALID_PARAM", "want dir=b and a limit")
			return
		}
		// A token "t<n>" means: the events before index n remain.
		n := len(room.events)
		if from := q.Get("from"); from != "" {
			if n, err = strconv.Atoi(strings.TrimPrefix(from, "t")); err != nil || n > len(room.events) {
				writeErr(w, 400, "M_INVALID_PARAM", "bad from")
				return
			}
		}
		start := max(0, n-limit)
		chunk := []map[string]any{}
		for i := n - 1; i >= start; i-- {
			id := room.events[i]
			chunk = append(chunk, map[string]any{"event_id": id, "type": "m.room.message",
				"content": map[string]string{"msgtype": "m.text", "body": f.bodies[id]}})
		}
		resp := map[string]any{"start": fmt.Sprintf("t%d", n), "chunk": chunk}
		if start > 0 { // as the spec says: no end once the start is reached
			resp["end"] = fmt.Sprintf("t%d", start)
		}
		writeJSON(w, 200, resp)
	}))
	return mux
}

// authed checks the access token and calls h with the user ID, holding f.mu.
func (f *fakeHS) authed(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		userID, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if !ok {
			writeErr(w, 401, "M_UNKNOWN_TOKEN", "unknown token")
			return
		}
		h(w, r, userID)
	}
}

// runTool runs tessera-load against f with args after -hs and returns the
// exit code, the decoded final JSON line (nil if there is none), and the
// output.
func runTool(t *testing.T, f *fakeHS, args ...string) (code int, result map[string]any, stdout, stderr string) {
	t.Helper()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"-hs", srv.URL}, args...), &out, &errOut)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; strings.HasPrefix(last, "{") {
		if err := json.Unmarshal([]byte(last), &result); err != nil {
			t.Fatalf("final line is not JSON: %v\n%s", err, last)
		}
	}
	return code, result, out.String(), errOut.String()
}

// wantFields checks numeric fields of a result.
func wantFields(t *testing.T, result map[string]any, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		got, ok := result[k].(float64)
		if !ok || got != v {
			t.Errorf("%s = %v, want %v", k, result[k], v)
		}
	}
}

func TestSend(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	f.rateOnce = true // setup must wait out a 429
	code, res, stdout, stderr := runTool(t, f, "-shared-secret", f.secret, "send", "-c", "3", "-m", "7", "-verify")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if res["scenario"] != "send" {
		t.Errorf("scenario = %v", res["scenario"])
	}
	wantFields(t, res, map[string]float64{"concurrency": 3, "messages": 21, "ok": 21, "errors": 0})
	for _, k := range []string{"seconds", "events_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	v, _ := res["verify"].(map[string]any)
	if v["ok"] != true || v["missing"] != 0.0 || v["duplicates"] != 0.0 {
		t.Errorf("verify = %v, want ok with nothing missing or duplicated", res["verify"])
	}
	if !strings.Contains(stdout, "events/s") {
		t.Errorf("no human-readable summary before the JSON:\n%s", stdout)
	}
	if !f.limited {
		t.Error("the fake never answered 429, so the retry path went untested")
	}
}

// TestSendManyRooms: -rooms spreads the senders over several rooms, and
// -verify finds each room's events in that room.
func TestSendManyRooms(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	code, res, stdout, stderr := runTool(t, f, "-shared-secret", f.secret, "send", "-c", "4", "-m", "5", "-rooms", "2", "-verify")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{"concurrency": 4, "rooms": 2, "messages": 20, "ok": 20, "errors": 0})
	v, _ := res["verify"].(map[string]any)
	if v["ok"] != true || v["missing"] != 0.0 || v["duplicates"] != 0.0 {
		t.Errorf("verify = %v, want ok with nothing missing or duplicated", res["verify"])
	}
	if !strings.Contains(stdout, "into 2 room(s)") {
		t.Errorf("summary does not name the rooms:\n%s", stdout)
	}
}

// TestSendFailureRun: a send answered 502 is retried with its transaction
// ID until it succeeds, an entry point that drops the connection without
// an answer hands the request to the next, and the per-room and per-entry
// figures say so.
func TestSendFailureRun(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	f.fail502 = 5
	fsrv := httptest.NewServer(f.handler())
	t.Cleanup(fsrv.Close)
	target, _ := url.Parse(fsrv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	// An entry point that passes the setup on but dies under every send,
	// as a process killed mid-request does.
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			proxy.ServeHTTP(w, r)
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(dying.Close)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", fsrv.URL, "-shared-secret", f.secret, "send", "-c", "4", "-m", "5", "-rooms", "2",
		"-via", dying.URL, "-retry-for", "10s", "-retry-wait", "1ms", "-verify"}, &out, &errOut)
	stdout, stderr := out.String(), errOut.String()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var res map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("final line is not JSON: %v\n%s", err, stdout)
	}
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{"ok": 20, "errors": 5, "retries": 5})
	v, _ := res["verify"].(map[string]any)
	if v["ok"] != true || v["missing"] != 0.0 || v["duplicates"] != 0.0 {
		t.Errorf("verify = %v, want ok with nothing missing or duplicated", res["verify"])
	}
	entries, _ := res["entries"].([]any)
	if len(entries) != 2 {
		t.Fatalf("entries = %v, want 2", res["entries"])
	}
	// Senders 1 and 2 (i + i/2 odd) send through the dead entry: each of
	// their 10 sends fails over once.
	if e1, _ := entries[1].(map[string]any); e1["failovers"] != 10.0 || e1["answered"] != 0.0 {
		t.Errorf("dead entry = %v, want 10 failovers and nothing answered", e1)
	}
	rooms, _ := res["per_room"].([]any)
	var acked, errs float64
	for _, r := range rooms {
		rr, _ := r.(map[string]any)
		acked += rr["acknowledged"].(float64)
		for _, n := range rr["errors"].(map[string]any) {
			errs += n.(float64)
		}
		if rr["lost"] != 0.0 || rr["duplicated"] != 0.0 || rr["longest_gap_ms"].(float64) <= 0 {
			t.Errorf("room %v", rr)
		}
	}
	if len(rooms) != 2 || acked != 20 || errs != 5 {
		t.Errorf("per_room = %v, want 2 rooms with 20 acknowledged and 5 errors", res["per_room"])
	}
}

func TestRoomsWithOpenRegistration(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	f.open = true
	f.rateOnce = true
	code, res, stdout, stderr := runTool(t, f, "-register-open", "rooms", "-c", "4", "-n", "10", "-json-only")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{"concurrency": 4, "rooms": 10, "ok": 10, "errors": 0})
	if v, ok := res["rooms_per_sec"].(float64); !ok || v <= 0 {
		t.Errorf("rooms_per_sec = %v", res["rooms_per_sec"])
	}
	if got := strings.Count(strings.TrimSpace(stdout), "\n"); got != 0 {
		t.Errorf("-json-only printed %d lines besides the JSON:\n%s", got, stdout)
	}
	if stderr != "" {
		t.Errorf("-json-only wrote progress to stderr:\n%s", stderr)
	}
	if len(f.rooms) != 10 {
		t.Errorf("the fake has %d rooms, want 10", len(f.rooms))
	}
}

func TestMessages(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	// 53 messages and 6 state events in pages of 10: 6 pages, the last short.
	code, res, stdout, stderr := runTool(t, f, "-shared-secret", f.secret, "messages", "-n", "53", "-limit", "10", "-c", "4")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{
		"messages": 53, "limit": 10, "pages": 6, "events_seen": 59, "messages_seen": 53, "duplicates": 0, "errors": 0,
	})
	if v, ok := res["p99_ms"].(float64); !ok || v <= 0 {
		t.Errorf("p99_ms = %v", res["p99_ms"])
	}
}

// An endpoint the server lacks must stop the run with the server's own
// errcode and error, not hang or report zeros.
func TestMissingEndpointFailsClearly(t *testing.T) {
	t.Parallel()
	for _, sc := range []string{"send", "rooms", "messages"} {
		t.Run(sc, func(t *testing.T) {
			t.Parallel()
			f := newFakeHS()
			f.noRooms = true
			code, res, _, stderr := runTool(t, f, "-shared-secret", f.secret, "-json-only", sc, "-c", "2")
			if code != exitFail {
				t.Errorf("exit %d, want %d", code, exitFail)
			}
			if res != nil {
				t.Errorf("printed a result for a run that could not happen: %v", res)
			}
			for _, want := range []string{"/createRoom", "404", "M_UNRECOGNIZED", "Unrecognized request", "does not implement"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestWrongSecretFailsClearly(t *testing.T) {
	t.Parallel()
	f := newFakeHS()
	code, _, _, stderr := runTool(t, f, "-shared-secret", "wrong", "rooms", "-n", "1")
	if code != exitFail || !strings.Contains(stderr, "M_FORBIDDEN") || !strings.Contains(stderr, "HMAC incorrect") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no hs", []string{"-shared-secret", "s", "send"}, "-hs is required"},
		{"no way to get users", []string{"-hs", "http://127.0.0.1:1", "send"}, "exactly one of"},
		{"both ways to get users", []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s", "-register-open", "send"}, "exactly one of"},
		{"not http", []string{"-hs", "ftp://x", "-shared-secret", "s", "send"}, "http:// or https://"},
		{"no scenario", []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s"}, "no scenario"},
		{"unknown scenario", []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s", "sync"}, "unknown scenario"},
		{"bad count", []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s", "send", "-c", "0"}, "-c must be"},
		{"more rooms than senders", []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s", "send", "-c", "2", "-rooms", "3"}, "-rooms must be"},
		{"stray argument", []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s", "rooms", "extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errOut); code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, errOut.String())
			}
		})
	}
}
