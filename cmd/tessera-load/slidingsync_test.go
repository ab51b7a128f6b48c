package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// startSlidingSync starts a real Tessera for the sliding sync scenarios,
// and skips the test if the server does not advertise simplified sliding
// sync (a tree from before the endpoint).
func startSlidingSync(t *testing.T) *testserver.Server {
	t.Helper()
	srv := testserver.Start(t)
	resp, err := http.Get(srv.URL + "/_matrix/client/versions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		UnstableFeatures map[string]bool `json:"unstable_features"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if !v.UnstableFeatures["org.matrix.simplified_msc3575"] {
		t.Skip("the server does not advertise org.matrix.simplified_msc3575")
	}
	return srv
}

// runAgainst runs tessera-load against srv and returns the exit code, the
// final JSON line decoded, and the output.
func runAgainst(t *testing.T, srv *testserver.Server, args ...string) (int, map[string]any, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"-hs", srv.URL, "-shared-secret", testserver.SharedSecret}, args...),
		&out, &errOut)
	return code, lastJSON(t, out.String()), out.String(), errOut.String()
}

func TestSSInitialAgainstTessera(t *testing.T) {
	t.Parallel()
	srv := startSlidingSync(t)
	// 25 rooms: more than the 20 asked for, so the list is cut.
	code, res, stdout, stderr := runAgainst(t, srv, "ss-initial", "-rooms", "25", "-messages", "3", "-r", "5", "-c", "4")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if res["scenario"] != "ss-initial" {
		t.Errorf("scenario = %v", res["scenario"])
	}
	wantFields(t, res, map[string]float64{
		"rooms": 25, "messages_per_room": 3, "repeat": 5, "range": 20, "timeline_limit": 1,
		"list_count": 25, "rooms_in_response": 20, "timeline_events": 20, "bad_responses": 0,
	})
	for _, k := range []string{"p50_ms", "p90_ms", "p99_ms", "max_ms", "bytes", "setup_seconds"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	if times, _ := res["times_ms"].([]any); len(times) != 5 {
		t.Errorf("times_ms = %v, want 5 requests", res["times_ms"])
	}
	if !strings.Contains(stdout, "list count 25, 20 rooms") {
		t.Errorf("summary:\n%s", stdout)
	}
}

// Fewer rooms than the range: all of them, and the run still passes.
func TestSSInitialFewRoomsAgainstTessera(t *testing.T) {
	t.Parallel()
	srv := startSlidingSync(t)
	code, res, stdout, stderr := runAgainst(t, srv, "ss-initial", "-rooms", "3", "-messages", "1", "-r", "2")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{"list_count": 3, "rooms_in_response": 3, "bad_responses": 0})
}

func TestSSFanoutAgainstTessera(t *testing.T) {
	t.Parallel()
	srv := startSlidingSync(t)
	// Fewer messages than the clients' timeline_limit (10): a client that
	// the loaded machine keeps from polling for a while gets them all in
	// one timeline instead of a limited one (seen on CI at load 30).
	code, res, stdout, stderr := runAgainst(t, srv, "ss-fanout", "-clients", "4", "-n", "8", "-interval", "5ms", "-drain", "5s")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if res["scenario"] != "ss-fanout" {
		t.Errorf("scenario = %v", res["scenario"])
	}
	wantFields(t, res, map[string]float64{
		"clients": 4, "messages": 8, "sent": 8, "send_errors": 0, "expected": 32, "deliveries": 32,
		"missing": 0, "duplicates": 0, "unexpected": 0, "poll_errors": 0, "pos_resets": 0, "interval_ms": 5,
	})
	for _, k := range []string{"seconds", "p50_ms", "p99_ms", "max_ms"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want > 0", k, res[k])
		}
	}
	for _, k := range []string{"all_clients", "send"} {
		m, _ := res[k].(map[string]any)
		if v, ok := m["p99_ms"].(float64); !ok || v <= 0 {
			t.Errorf("%s.p99_ms = %v, want > 0", k, m["p99_ms"])
		}
	}
	if p, _ := res["polls"].(float64); p < 4 {
		t.Errorf("polls = %v, want at least one per client", res["polls"])
	}
	if !strings.Contains(stdout, "delivered  32 of 32") {
		t.Errorf("summary:\n%s", stdout)
	}
}

// The test server runs in this process, so its memory is this process's.
func TestSSConnsAgainstTessera(t *testing.T) {
	t.Parallel()
	srv := startSlidingSync(t)
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this system")
	}
	code, res, stdout, stderr := runAgainst(t, srv, "ss-conns", "-conns", "12", "-users", "3", "-rooms", "2", "-d", "0.5",
		"-settle", "100ms", "-poll-timeout", "10s", "-server-pid", strconv.Itoa(os.Getpid()), "-rss-interval", "50ms")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if res["scenario"] != "ss-conns" {
		t.Errorf("scenario = %v", res["scenario"])
	}
	wantFields(t, res, map[string]float64{
		"conns": 12, "users": 3, "rooms": 2, "in_flight": 12, "in_flight_at_end": 12, "wakeups": 0, "empty_wakeups": 0,
		"errors": 0, "poll_timeout_ms": 10000,
	})
	for _, k := range []string{"rss_before_mib", "rss_begin_mib", "rss_end_mib", "rss_median_mib", "rss_peak_mib"} {
		if v, ok := res[k].(float64); !ok || v <= 1 {
			t.Errorf("%s = %v, want a plausible size", k, res[k])
		}
	}
	if n, _ := res["rss_samples"].(float64); n < 2 {
		t.Errorf("rss_samples = %v, want several", res["rss_samples"])
	}
	for _, want := range []string{"ss-conns: begin: 12 long-polls in flight", "ss-conns: end: 0 long-polls answered"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// Against a server without sliding sync, each scenario stops with the
// server's 404 rather than hang or report zeros.
func TestSlidingSyncMissingEndpointFailsClearly(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"ss-initial", "-rooms", "2", "-messages", "1", "-r", "2"},
		{"ss-fanout", "-clients", "2", "-n", "2"},
		{"ss-conns", "-conns", "4", "-users", "2", "-d", "0.2", "-settle", "0s", "-poll-timeout", "5s"},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			f := newFakeHS()
			code, res, _, stderr := runTool(t, f, append([]string{"-shared-secret", f.secret, "-json-only"}, args...)...)
			if code != exitFail {
				t.Errorf("exit %d, want %d", code, exitFail)
			}
			if res != nil {
				t.Errorf("printed a result for a run that could not happen: %v", res)
			}
			for _, want := range []string{slidingSyncPath, "404", "M_UNRECOGNIZED", "does not implement"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestSlidingSyncScenarioUsage(t *testing.T) {
	t.Parallel()
	base := []string{"-hs", "http://127.0.0.1:1", "-shared-secret", "s"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ss-initial", "-rooms", "0"}, "-rooms must be"},
		{[]string{"ss-initial", "-r", "0"}, "-r must be"},
		{[]string{"ss-fanout", "-clients", "0"}, "-clients must be"},
		{[]string{"ss-fanout", "-poll-timeout", "0s"}, "-poll-timeout must be"},
		{[]string{"ss-conns", "-conns", "1000", "-users", "5"}, "more than the 100 connections a device may have"},
		{[]string{"ss-conns", "-users", "2000"}, "-users must be between"},
		{[]string{"ss-conns", "-d", "50", "-poll-timeout", "30s"}, "must exceed -settle plus -d"},
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

// slidingSyncFake adds a simplified sliding sync to syncFake, enough for
// the scenarios' plumbing: one list "all" of the user's rooms by their
// latest event, pos "f<n>" as /sync's tokens, and a long-poll that waits as
// /sync's does. It keeps no connection state: a request with pos gets the
// rooms with events after it.
func (f *syncFake) slidingSyncHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", f.handler())
	mux.HandleFunc("POST "+slidingSyncPath, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		userID, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		f.mu.Unlock()
		if !ok {
			writeErr(w, 401, "M_UNKNOWN_TOKEN", "unknown token")
			return
		}
		var req ssRequest
		if json.NewDecoder(r.Body).Decode(&req) != nil {
			writeErr(w, 400, "M_NOT_JSON", "bad json")
			return
		}
		list, ok := req.Lists["all"]
		if !ok || len(list.Ranges) != 1 || list.TimelineLimit < 1 {
			writeErr(w, 400, "M_INVALID_PARAM", "want one list all with one range")
			return
		}
		q := r.URL.Query()
		since := -1
		if p := q.Get("pos"); p != "" {
			n, err := strconv.Atoi(strings.TrimPrefix(p, "f"))
			if err != nil || !strings.HasPrefix(p, "f") {
				writeErr(w, 400, "M_UNKNOWN_POS", "unknown pos")
				return
			}
			since = n
		}
		timeout, _ := strconv.Atoi(q.Get("timeout"))
		deadline := time.NewTimer(time.Duration(timeout) * time.Millisecond)
		defer deadline.Stop()
		for {
			f.mu.Lock()
			resp, news := f.computeSliding(userID, since, list)
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

// computeSliding is the response for userID since pos number since (-1:
// none); callers hold f.mu.
func (f *syncFake) computeSliding(userID string, since int, list ssList) (map[string]any, bool) {
	type entry struct {
		id   string
		bump int
	}
	var mine []entry
	for id, room := range f.rooms {
		if room.members[userID] {
			mine = append(mine, entry{id, seqOf(room.events[len(room.events)-1])})
		}
	}
	slices.SortFunc(mine, func(a, b entry) int { return b.bump - a.bump })
	rooms := map[string]any{}
	for i, en := range mine {
		if i < list.Ranges[0][0] || i > list.Ranges[0][1] {
			continue
		}
		var evs []map[string]string
		for _, id := range f.rooms[en.id].events {
			if seqOf(id) <= since {
				continue
			}
			typ := "m.room.member"
			if strings.HasPrefix(id, "$msg") {
				typ = "m.room.message"
			}
			evs = append(evs, map[string]string{"event_id": id, "type": typ, "sender": "@someone:fake"})
		}
		if since >= 0 && len(evs) == 0 {
			continue
		}
		limited := len(evs) > list.TimelineLimit
		if limited {
			evs = evs[len(evs)-list.TimelineLimit:]
		}
		room := map[string]any{"timeline": evs, "limited": limited, "bump_stamp": en.bump}
		if since < 0 {
			room["initial"] = true
		}
		rooms[en.id] = room
	}
	return map[string]any{
		"pos":   fmt.Sprintf("f%d", f.seq),
		"lists": map[string]any{"all": map[string]int{"count": len(mine)}},
		"rooms": rooms,
	}, len(rooms) > 0
}

// runSlidingTool is runTool for a syncFake with sliding sync.
func runSlidingTool(t *testing.T, f *syncFake, args ...string) (code int, result map[string]any, stdout, stderr string) {
	t.Helper()
	srv := httptest.NewServer(f.slidingSyncHandler())
	t.Cleanup(srv.Close)
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"-hs", srv.URL, "-shared-secret", f.secret}, args...), &out, &errOut)
	return code, lastJSON(t, out.String()), out.String(), errOut.String()
}

func TestSSInitialFake(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	code, res, stdout, stderr := runSlidingTool(t, f, "ss-initial", "-rooms", "23", "-messages", "2", "-r", "4", "-c", "4")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{
		"rooms": 23, "list_count": 23, "rooms_in_response": 20, "timeline_events": 20, "bad_responses": 0, "repeat": 4,
	})
	if len(f.rooms) != 23 || len(f.txns) != 46 {
		t.Errorf("the fake has %d rooms and %d messages, want 23 and 46", len(f.rooms), len(f.txns))
	}
}

// A response short of rooms fails the run, with the figures.
func TestSSInitialNoticesBadResponses(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	// A proxy that drops one room from every response.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		f.slidingSyncHandler().ServeHTTP(rec, r)
		if r.URL.Path != slidingSyncPath || rec.Code != 200 {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		var resp map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &resp)
		for id := range resp["rooms"].(map[string]any) {
			delete(resp["rooms"].(map[string]any), id)
			break
		}
		writeJSON(w, 200, resp)
	}))
	t.Cleanup(proxy.Close)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"-hs", proxy.URL, "-shared-secret", f.secret,
		"ss-initial", "-rooms", "5", "-messages", "1", "-r", "3"}, &out, &errOut)
	if code != exitFail {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFail, out.String(), errOut.String())
	}
	res := lastJSON(t, out.String())
	wantFields(t, res, map[string]float64{"bad_responses": 3, "rooms_in_response": 4, "list_count": 5})
	if !strings.Contains(errOut.String(), "4 rooms, want 5") {
		t.Errorf("stderr:\n%s", errOut.String())
	}
}

func TestSSFanoutFake(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	code, res, stdout, stderr := runSlidingTool(t, f, "ss-fanout", "-clients", "4", "-n", "12", "-interval", "2ms")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{
		"clients": 4, "messages": 12, "sent": 12, "expected": 48, "deliveries": 48,
		"missing": 0, "duplicates": 0, "unexpected": 0, "poll_errors": 0,
	})
	if v, ok := res["p99_ms"].(float64); !ok || v <= 0 {
		t.Errorf("p99_ms = %v, want > 0", res["p99_ms"])
	}
}

func TestSSConnsFake(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	code, res, stdout, stderr := runSlidingTool(t, f, "ss-conns", "-conns", "20", "-users", "4", "-rooms", "3", "-d", "0.3",
		"-settle", "50ms", "-poll-timeout", "10s", "-server-pid", strconv.Itoa(os.Getpid()))
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantFields(t, res, map[string]float64{
		"conns": 20, "users": 4, "rooms": 3, "in_flight": 20, "in_flight_at_end": 20, "wakeups": 0, "empty_wakeups": 0, "errors": 0,
	})
	if v, ok := res["rss_peak_mib"].(float64); !ok || v <= 1 {
		t.Errorf("rss_peak_mib = %v", res["rss_peak_mib"])
	}
}

// A server that answers long-polls at once with nothing fails ss-conns.
func TestSSConnsNoticesEmptyAnswers(t *testing.T) {
	t.Parallel()
	f := newSyncFake()
	f.noWaiting = true
	code, res, _, stderr := runSlidingTool(t, f, "ss-conns", "-conns", "3", "-users", "1", "-d", "1500ms",
		"-settle", "0s", "-poll-timeout", "10s")
	if code != exitFail {
		t.Fatalf("exit %d, want %d\nstderr:\n%s", code, exitFail, stderr)
	}
	if w, _ := res["empty_wakeups"].(float64); w < 3 {
		t.Errorf("empty_wakeups = %v, want at least 3", res["empty_wakeups"])
	}
}
