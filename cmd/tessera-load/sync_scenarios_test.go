package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncFake adds a /sync to fakeHS: tokens are "f<n>", where n orders every
// identifier the fake has handed out, so an event is news to a token when
// its ID's number is larger. A long-poll waits until a request that may have
// added an event, its timeout, or its client going away.
type syncFake struct {
	*fakeHS
	changed chan struct{} // closed and replaced after each write; guarded by mu

	hideFrom  string // this user's syncs never show messages
	dupFor    string // this user's syncs show every message twice
	noWaiting bool   // answer every long-poll at once, news or not
}

func newSyncFake() *syncFake {
	return &syncFake{fakeHS: newFakeHS(), changed: make(chan struct{})}
}

// fakeTimelineLimit is the spec's suggested default, as Tessera uses.
const fakeTimelineLimit = 10

// seqOf is the number in an identifier such as "$msg17".
func seqOf(id string) int {
	n, _ := strconv.Atoi(strings.TrimLeft(id, "$abcdefghijklmnopqrstuvwxyz"))
	return n
}

func (f *syncFake) handler() http.Handler {
	inner := f.fakeHS.handler()
	mux := http.NewServeMux()
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		if r.Method != http.MethodGet {
			f.mu.Lock()
			close(f.changed)
			f.changed = make(chan struct{})
			f.mu.Unlock()
		}
	}))
	mux.HandleFunc("GET /_matrix/client/v3/sync", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		userID, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		f.mu.Unlock()
		if !ok {
			writeErr(w, 401, "M_UNKNOWN_TOKEN", "unknown token")
			return
		}
		q := r.URL.Query()
		since := -1
		if s := q.Get("since"); s != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(s, "f"))
			if err != nil || !strings.HasPrefix(s, "f") {
				writeErr(w, 400, "M_INVALID_PARAM", "bad since")
				return
			}
			since = n
		}
		timeout, _ := strconv.Atoi(q.Get("timeout"))
		deadline := time.NewTimer(time.Duration(timeout) * time.Millisecond)
		defer deadline.Stop()
		for {
			f.mu.Lock()
			resp, news := f.compute(userID, since)
			ch := f.changed
			f.mu.Unlock()
			if news || since < 0 || timeout <= 0 || f.noWaiting {
				writeJSON(w, 200, resp)
				return
			}
			select {
			case <-ch:
			case <-deadline.C:
				writeJSON(w, 200, resp)
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}

// compute is the sync response for userID since token number since (-1:
// an initial sync); callers hold f.mu.
func (f *syncFake) compute(userID string, since int) (map[string]any, bool) {
	join := map[string]any{}
	for roomID, room := range f.rooms {
		if !room.members[userID] {
			continue
		}
		var evs []map[string]string
		for _, id := range room.events {
			if seqOf(id) <= since {
				continue
			}
			typ := "m.room.member"
			if strings.HasPrefix(id, "$msg") {
				typ = "m.room.message"
				if f.hideFrom != "" && strings.Contains(userID, f.hideFrom) {
					continue
				}
			}
			ev := map[string]string{"event_id": id, "type": typ, "sender": "@someone:fake"}
			evs = append(evs, ev)
			if typ == "m.room.message" && f.dupFor != "" && strings.Contains(userID, f.dupFor) {
				evs = append(evs, ev)
			}
		}
		if since >= 0 && len(evs) == 0 {
			continue
		}
		limited := len(evs) > fakeTimelineLimit
		if limited {
			evs = evs[len(evs)-fakeTimelineLimit:]
		}
		join[roomID] = map[string]any{
			"timeline": map[string]any{"events": evs, "limited": limited},
			"state":    map[string]any{"events": []any{}},
		}
	}
	resp := map[string]any{
		"next_batch": fmt.Sprintf("f%d", f.seq),
		"rooms":      map[string]any{"join": join, "invite": map[string]any{}, "leave": map[string]any{}},
	}
	return resp, len(join) > 0
}

// runSyncTool is runTool for a syncFake.
func runSyncTool(t *testing.T, f *syncFake, args ...string) (code int, result map[string]any, stdout, stderr string) {
	t.Helper()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"-hs", srv.URL, "-shared-secret", f.secret}, args...), &out, &errOut)
	result = lastJSON(t, out.String())
	return code, result, out.String(), errOut.String()
}

func lastJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "{") {
		return nil
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(last), &res); err != nil {
		t.Fatalf("final line is not JSON: %v\n%s", err, last)
	}
	return res
}

func TestFanout(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	f.rateOnce = true
	code, res, stdout, stderr := runSyncTool(t, f, "fanout", "-s", "4", "-n", "12", "-interval", "2ms")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{
		"receivers": 4, "messages": 12, "sent": 12, "send_errors": 0, "expected": 48, "deliveries": 48,
		"missing": 0, "duplicates": 0, "unexpected": 0, "poll_errors": 0, "interval_ms": 2,
	})
	for _, k := range []string{"seconds", "p50_ms", "p99_ms", "max_ms"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	for _, k := range []string{"all_receivers", "send"} {
		m, _ := res[k].(map[string]any)
		if v, ok := m["p99_ms"].(float64); !ok || v <= 0 {
			t.Errorf("%s.p99_ms = %v, want > 0", k, m["p99_ms"])
		}
	}
	if p, _ := res["polls"].(float64); p < 4 {
		t.Errorf("polls = %v, want at least one per receiver", res["polls"])
	}
	if !strings.Contains(stdout, "delivered  48 of 48") {
		t.Errorf("summary:\n%s", stdout)
	}
}

func TestFanoutCountsMissingAndDuplicates(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	f.hideFrom, f.dupFor = "recv1", "recv2"
	code, res, stdout, stderr := runSyncTool(t, f, "fanout", "-s", "3", "-n", "5", "-interval", "1ms", "-drain", "300ms")
	if code != exitFail {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFail, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{"expected": 15, "deliveries": 10, "missing": 5, "duplicates": 5})
	if !strings.Contains(stderr, "10 of 15 deliveries arrived (5 missing, 5 duplicates)") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestInitialSync(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	code, res, stdout, stderr := runSyncTool(t, f, "initialsync", "-k", "4", "-n", "7", "-r", "3", "-c", "3")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Each room: 6 state events and 7 messages, of which the last 10.
	wantFields(t, res, map[string]float64{
		"rooms": 4, "messages_per_room": 7, "repeat": 3, "rooms_in_response": 4,
		"timeline_events": 40, "limited_rooms": 4, "state_events": 0,
	})
	if times, _ := res["times_ms"].([]any); len(times) != 3 {
		t.Errorf("times_ms = %v, want 3 runs", res["times_ms"])
	}
	for _, k := range []string{"median_ms", "min_ms", "max_ms", "bytes"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	if len(f.rooms) != 4 || len(f.txns) != 28 {
		t.Errorf("the fake has %d rooms and %d messages, want 4 and 28", len(f.rooms), len(f.txns))
	}
}

func TestIdle(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	code, res, stdout, stderr := runSyncTool(t, f, "idle", "-s", "20", "-d", "0.3", "-settle", "50ms", "-poll-timeout", "10s")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{
		"users": 20, "in_flight": 20, "in_flight_at_end": 20, "answered_before": 0, "wakeups": 0, "empty_wakeups": 0,
		"errors": 0, "poll_timeout_ms": 10000,
	})
	if v, _ := res["idle_seconds"].(float64); v < 0.3 || v > 5 {
		t.Errorf("idle_seconds = %v, want about 0.3", res["idle_seconds"])
	}
	// The markers docs/idle-bench.sh waits for.
	for _, want := range []string{"idle: begin: 20 long-polls in flight", "idle: end: 0 long-polls answered"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "/proc/PID/status") {
		t.Errorf("no instructions for sampling the server:\n%s", stdout)
	}
}

// A poll answered with news (here: a message in the user's room) is
// followed by the next one, and counted as a wakeup, not a failure.
func TestIdleRepollsAfterNews(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	var out, errOut syncBuffer
	done := make(chan int)
	go func() {
		done <- run(context.Background(), []string{"-hs", srv.URL, "-shared-secret", f.secret,
			"idle", "-s", "3", "-d", "1s", "-settle", "0s", "-poll-timeout", "10s"}, &out, &errOut)
	}()
	// Once the idle period has begun, a user makes a room: news to itself.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errOut.String(), "idle: begin") {
		if time.Now().After(deadline) {
			t.Fatalf("no idle: begin:\n%s", errOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	var token string
	for tok, u := range f.tokens {
		if strings.HasSuffix(u, "-idle1:fake") {
			token = tok
		}
	}
	f.mu.Unlock()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/_matrix/client/v3/createRoom", strings.NewReader(`{"preset":"private_chat"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("createRoom: %v %v", err, resp)
	}
	resp.Body.Close()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	res := lastJSON(t, out.String())
	wantFields(t, res, map[string]float64{"in_flight": 3, "in_flight_at_end": 3, "wakeups": 1, "empty_wakeups": 0})
}

// A server that answers long-polls at once with nothing is not letting
// them wait, and the run says so.
func TestIdleNoticesEmptyAnswers(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	f.noWaiting = true
	code, res, _, stderr := runSyncTool(t, f, "idle", "-s", "3", "-d", "1500ms", "-settle", "0s", "-poll-timeout", "10s")
	if code != exitFail {
		t.Fatalf("exit %d, want %d\nstderr:\n%s", code, exitFail, stderr)
	}
	if w, _ := res["empty_wakeups"].(float64); w < 3 {
		t.Errorf("empty_wakeups = %v, want at least 3 (one a second for each user)", res["empty_wakeups"])
	}
	if !strings.Contains(stderr, "long-polls were answered with nothing new before their timeout") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSyncScenarioUsage(t *testing.T) {
	t.Parallel()
	base := []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"fanout", "-s", "0"}, "-s must be"},
		{[]string{"fanout", "-poll-timeout", "0s"}, "-poll-timeout must be"},
		{[]string{"initialsync", "-k", "0"}, "-k must be"},
		{[]string{"initialsync", "-r", "0"}, "-r must be"},
		{[]string{"idle", "-d", "soon"}, "number of seconds or a duration"},
		{[]string{"idle", "-d", "50", "-poll-timeout", "30s"}, "must exceed -settle plus -d"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append(base, tt.args...), &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tt.args, code, exitUsage)
		}
		if !strings.Contains(errOut.String(), tt.want) {
			t.Errorf("%v: stderr lacks %q:\n%s", tt.args, tt.want, errOut.String())
		}
	}
}
