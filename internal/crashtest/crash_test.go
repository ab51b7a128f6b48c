// Package crashtest checks Tessera's durability promise with the real
// binary: an event whose send was acknowledged survives kill -9, and the
// room's DAG is intact afterwards. It lives in its own package because it
// builds and runs the binary, which the other tests do not need.
package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binary is the built tessera; loadBinary the built tessera-load.
var binary, loadBinary string

// TestMain builds the real binaries once.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tessera-crash")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tessera")
	if out, err := exec.Command("go", "build", "-tags", "sqlite_fts5", "-o", binary, "github.com/tessera-hs/tessera/cmd/tessera").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	loadBinary = filepath.Join(dir, "tessera-load")
	if out, err := exec.Command("go", "build", "-o", loadBinary, "github.com/tessera-hs/tessera/cmd/tessera-load").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's log output for the test to read.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is a running tessera process.
type server struct {
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan error
}

var listening = regexp.MustCompile(`Tessera is listening" address="?([0-9.:]+)`)

// start runs the binary with the config (and more arguments of run, such
// as -instance) and waits until it listens.
func start(t *testing.T, cfgPath string, args ...string) *server {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"run", "-config", cfgPath}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			s.logs.WriteString(line + "\n")
			if m := listening.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case a := <-addr:
		s.url = "http://" + a
	case err := <-s.done:
		t.Fatalf("server exited before listening: %v\n%s", err, s.logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not start:\n%s", s.logs)
	}
	return s
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("server exit after SIGKILL: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("server survived SIGKILL")
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, s.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("server did not stop on SIGTERM")
	}
}

var httpClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 32},
}

// call makes one JSON request and returns the status and decoded body.
func call(ctx context.Context, method, u, token string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, err
	}
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, out, nil
}

// mustCall is call that fails the test unless the status is want.
func mustCall(t *testing.T, method, u, token string, body any, want int) map[string]any {
	t.Helper()
	status, out, err := call(context.Background(), method, u, token, body)
	if err != nil || status != want {
		t.Fatalf("%s %s: %v %d %v, want %d", method, u, err, status, out, want)
	}
	return out
}

const api = "/_matrix/client/v3"

// register creates an account through the m.login.dummy flow and returns
// its access token.
func register(t *testing.T, base, user string) string {
	t.Helper()
	body := map[string]any{"username": user, "password": "crash test password"}
	first := mustCall(t, http.MethodPost, base+api+"/register", "", body, http.StatusUnauthorized)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first["session"]}
	out := mustCall(t, http.MethodPost, base+api+"/register", "", body, http.StatusOK)
	tok, _ := out["access_token"].(string)
	if tok == "" {
		t.Fatalf("register %s: %v", user, out)
	}
	return tok
}

func roomPath(base, roomID string, parts ...string) string {
	p := base + api + "/rooms/" + url.PathEscape(roomID)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// ack is an acknowledged send.
type ack struct {
	eventID string
	sender  int
	seq     int
}

// TestKillNineLosesNoAcknowledgedEvent: 8 clients send into one room as
// fast as they can; the server is killed with SIGKILL mid-stream. After a
// restart on the same data, every acknowledged event is there, in one
// linear DAG with no holes, and the room takes new events.
func TestKillNineLosesNoAcknowledgedEvent(t *testing.T) {
	const clients = 8
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tessera.yaml")
	out, err := exec.Command(binary, "generate-config", "-server-name", "crash.test", "-data-dir", filepath.Join(dir, "data"),
		"-listen", "127.0.0.1:0", "-open-registration", "-o", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("generate-config: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for _, edit := range []struct{ re, repl string }{
		// No rate limits: the clients send as fast as they can.
		{`(?m)^(rate_limits:\n(?:\s*#.*\n)*)  enabled: true$`, "${1}  enabled: false"},
		// Cheap password hashing: registration is not what is tested.
		{`(?m)^  hash_memory_kib: \d+$`, "  hash_memory_kib: 1024"},
		{`(?m)^  hash_iterations: \d+$`, "  hash_iterations: 1"},
	} {
		re := regexp.MustCompile(edit.re)
		if !re.MatchString(cfg) {
			t.Fatalf("generated config does not match %q:\n%s", edit.re, cfg)
		}
		cfg = re.ReplaceAllString(cfg, edit.repl)
	}
	if !strings.Contains(cfg, "open: true") {
		t.Fatalf("registration is not open in the generated config")
	}
	cfg, tdb := useTestDatabase(t, cfg, filepath.Join(dir, "data"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	srv := start(t, cfgPath)
	tokens := make([]string, clients)
	for i := range tokens {
		tokens[i] = register(t, srv.url, fmt.Sprintf("sender%d", i))
	}
	created := mustCall(t, http.MethodPost, srv.url+api+"/createRoom", tokens[0], map[string]any{"preset": "public_chat"}, http.StatusOK)
	roomID, _ := created["room_id"].(string)
	for _, tok := range tokens[1:] {
		mustCall(t, http.MethodPost, roomPath(srv.url, roomID, "join"), tok, map[string]any{}, http.StatusOK)
	}

	// Send until killed.
	var (
		mu     sync.Mutex
		acked  []ack
		count  atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Int64 // requests without an answer (killed mid-flight)
	)
	sendCtx, stopSending := context.WithCancel(context.Background())
	defer stopSending()
	for i, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; sendCtx.Err() == nil; seq++ {
				status, out, err := call(sendCtx, http.MethodPut,
					roomPath(srv.url, roomID, "send", "m.room.message", fmt.Sprintf("c%d-%d", i, seq)), tok,
					map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%d/%d", i, seq)})
				if err != nil {
					failed.Add(1)
					return // the server is gone
				}
				if status != http.StatusOK {
					t.Errorf("client %d send %d: %d %v", i, seq, status, out)
					return
				}
				id, _ := out["event_id"].(string)
				mu.Lock()
				acked = append(acked, ack{id, i, seq})
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(time.Second)
	for count.Load() < 500 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the crash test waits for traffic to build up
	}
	srv.kill(t)
	stopSending()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("killed after %d acknowledged sends; %d requests had no answer", len(acked), failed.Load())
	if len(acked) < clients {
		t.Fatalf("only %d sends acknowledged before the kill: too few to test anything", len(acked))
	}

	// The database as the kill left it: every acknowledged event is there,
	// in one linear chain with one forward extremity.
	ids := checkLinearDAG(t, tdb, roomID)
	inDB := map[string]int{}
	for i, id := range ids {
		inDB[id] = i
	}
	for _, a := range acked {
		if _, ok := inDB[a.eventID]; !ok {
			t.Errorf("acknowledged event %s (client %d #%d) is not in the database", a.eventID, a.sender, a.seq)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Restart on the same data.
	srv = start(t, cfgPath)
	for _, a := range acked {
		ev := mustCall(t, http.MethodGet, roomPath(srv.url, roomID, "event", a.eventID), tokens[0], nil, http.StatusOK)
		body, _ := ev["content"].(map[string]any)
		if body["body"] != fmt.Sprintf("%d/%d", a.sender, a.seq) {
			t.Fatalf("event %s after restart: %v", a.eventID, ev)
		}
	}
	// /messages, oldest first: exactly the database's chain, so no holes;
	// each client's acknowledged messages in the order it sent them.
	var timeline []string
	seqOf := map[string][2]int{}
	from := ""
	for {
		q := url.Values{"dir": {"f"}, "limit": {"1000"}}
		if from != "" {
			q.Set("from", from)
		}
		page := mustCall(t, http.MethodGet, roomPath(srv.url, roomID, "messages")+"?"+q.Encode(), tokens[1], nil, http.StatusOK)
		chunk, _ := page["chunk"].([]any)
		for _, c := range chunk {
			ev := c.(map[string]any)
			id := ev["event_id"].(string)
			timeline = append(timeline, id)
			if ev["type"] == "m.room.message" {
				var sender, seq int
				body, _ := ev["content"].(map[string]any)
				if _, err := fmt.Sscanf(body["body"].(string), "%d/%d", &sender, &seq); err != nil {
					t.Fatalf("message body %v", body)
				}
				seqOf[id] = [2]int{sender, seq}
			}
		}
		end, _ := page["end"].(string)
		if end == "" {
			break
		}
		from = end
	}
	if !slices.Equal(timeline, ids) {
		t.Fatalf("/messages after restart (%d events) is not the stored chain (%d events)", len(timeline), len(ids))
	}
	last := make([]int, clients)
	for i := range last {
		last[i] = -1
	}
	for _, id := range timeline {
		s, ok := seqOf[id]
		if !ok {
			continue
		}
		if s[1] <= last[s[0]] {
			t.Fatalf("client %d's message %d comes after its message %d", s[0], s[1], last[s[0]])
		}
		last[s[0]] = s[1]
	}
	for _, a := range acked {
		if seqOf[a.eventID] != [2]int{a.sender, a.seq} {
			t.Fatalf("acknowledged %s missing from /messages", a.eventID)
		}
	}

	// The room takes new events, on top of the chain.
	for i, tok := range tokens {
		mustCall(t, http.MethodPut, roomPath(srv.url, roomID, "send", "m.room.message", fmt.Sprintf("after-%d", i)), tok,
			map[string]any{"msgtype": "m.text", "body": "after the crash"}, http.StatusOK)
	}
	// A retry of a send acknowledged before the crash is still recognised.
	a := acked[len(acked)-1]
	retry := mustCall(t, http.MethodPut, roomPath(srv.url, roomID, "send", "m.room.message", fmt.Sprintf("c%d-%d", a.sender, a.seq)),
		tokens[a.sender], map[string]any{"msgtype": "m.text", "body": "retry"}, http.StatusOK)
	if retry["event_id"] != a.eventID {
		t.Fatalf("retry of %s after the crash gave %v", a.eventID, retry["event_id"])
	}
	srv.stop(t)
	after := checkLinearDAG(t, tdb, roomID)
	if len(after) != len(ids)+clients || !slices.Equal(after[:len(ids)], ids) {
		t.Fatalf("after the restart: %d events, want the %d from before and %d new", len(after), len(ids), clients)
	}
}

// checkLinearDAG reads the room's events from the database, oldest first,
// and checks they form one chain: depths 1..N in stream order, each
// event's only prev_event the one before it, and one forward extremity,
// the newest event.
func checkLinearDAG(t *testing.T, tdb testDatabase, roomID string) []string {
	t.Helper()
	ctx := context.Background()
	db := tdb.open(t)
	defer db.Close()
	var ids []string
	rows, err := db.QueryContext(ctx, `SELECT event_id, depth FROM events WHERE room_id = $1 ORDER BY stream_pos`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var depth int64
		if err := rows.Scan(&id, &depth); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if depth != int64(len(ids)) {
			t.Fatalf("event %d (%s) has depth %d", len(ids), id, depth)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if len(ids) == 0 {
		t.Fatalf("no events in room %s", roomID)
	}
	prevs := map[string][]string{}
	rows, err = db.QueryContext(ctx, `SELECT ed.event_id, ed.prev_event_id FROM event_edges ed
		JOIN events e ON e.event_id = ed.event_id WHERE e.room_id = $1`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, prev string
		if err := rows.Scan(&id, &prev); err != nil {
			t.Fatal(err)
		}
		prevs[id] = append(prevs[id], prev)
	}
	rows.Close()
	for i, id := range ids {
		var want []string
		if i > 0 {
			want = []string{ids[i-1]}
		}
		if !slices.Equal(prevs[id], want) {
			t.Fatalf("event %d (%s) has prev_events %v, want %v", i+1, id, prevs[id], want)
		}
	}
	var ext []string
	rows, err = db.QueryContext(ctx, `SELECT event_id FROM forward_extremities WHERE room_id = $1`, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ext = append(ext, id)
	}
	rows.Close()
	if !slices.Equal(ext, []string{ids[len(ids)-1]}) {
		t.Fatalf("forward extremities %v, want only the newest event %s", ext, ids[len(ids)-1])
	}
	return ids
}
