package crashtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// fedServer is a federating server's config: its server name is its
// federation address on a loopback IP, so the two need no DNS.
type fedServer struct {
	cfgPath, name string
}

// newFedServer writes the config of a federating server on ip.
func newFedServer(t *testing.T, ip string) fedServer {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	name := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tessera.yaml")
	out, err := exec.Command(binary, "generate-config", "-server-name", name, "-data-dir", filepath.Join(dir, "data"),
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
		{`(?m)^(rate_limits:\n(?:\s*#.*\n)*)  enabled: true$`, "${1}  enabled: false"},
		{`(?m)^  hash_memory_kib: \d+$`, "  hash_memory_kib: 1024"},
		{`(?m)^  hash_iterations: \d+$`, "  hash_iterations: 1"},
		{`(?m)^(federation:\n(?:\s*#.*\n)*)  enabled: false$`, "${1}  enabled: true"},
		{`(?m)^  listen: "0\.0\.0\.0:8448"$`, `  listen: "` + name + `"`},
		{`(?m)^  insecure_skip_tls_verify: false$`, "  insecure_skip_tls_verify: true"},
	} {
		re := regexp.MustCompile(edit.re)
		if !re.MatchString(cfg) {
			t.Fatalf("generated config does not match %q", edit.re)
		}
		cfg = re.ReplaceAllString(cfg, edit.repl)
	}
	cfg, _ = useTestDatabase(t, cfg, filepath.Join(dir, "data"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return fedServer{cfgPath: cfgPath, name: name}
}

// bodiesSeen pages back through a room and counts each message body.
func bodiesSeen(t *testing.T, base, token, roomID string) map[string]int {
	t.Helper()
	out := mustCall(t, http.MethodGet, roomPath(base, roomID, "messages")+"?dir=b&limit=500", token, nil, http.StatusOK)
	seen := map[string]int{}
	chunk, _ := out["chunk"].([]any)
	for _, c := range chunk {
		ev, _ := c.(map[string]any)
		if ev["type"] != "m.room.message" {
			continue
		}
		content, _ := ev["content"].(map[string]any)
		if b, ok := content["body"].(string); ok {
			seen[b]++
		}
	}
	return seen
}

// waitForBodies waits until a room, as read through base, holds every body
// in want exactly once.
func waitForBodies(t *testing.T, base, token, roomID string, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen := bodiesSeen(t, base, token, roomID)
		var missing []string
		for _, b := range want {
			switch seen[b] {
			case 0:
				missing = append(missing, b)
			case 1:
			default:
				t.Fatalf("%q arrived %d times", b, seen[b])
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages never arrived: %q", len(missing), len(want), missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestKillNineAcrossServers: two real servers share a room. The receiving
// server is killed with SIGKILL while the other keeps sending, then
// restarted: every message reaches it, once. Then the sending server is
// killed right after its sends are acknowledged, before it can have sent
// them all on, and restarted: they still all arrive, once, because each
// event is queued for the other server in the transaction that stores it.
func TestKillNineAcrossServers(t *testing.T) {
	fa, fb := newFedServer(t, "127.0.0.1"), newFedServer(t, "127.0.0.2")
	a, b := start(t, fa.cfgPath), start(t, fb.cfgPath)
	alice, bob := register(t, a.url, "alice"), register(t, b.url, "bob")
	created := mustCall(t, http.MethodPost, a.url+api+"/createRoom", alice, map[string]any{"preset": "public_chat"}, http.StatusOK)
	roomID, _ := created["room_id"].(string)
	mustCall(t, http.MethodPost, b.url+api+"/join/"+roomID+"?via="+fa.name, bob, map[string]any{}, http.StatusOK)

	var sent []string
	send := func(body string) {
		t.Helper()
		mustCall(t, http.MethodPut, roomPath(a.url, roomID, "send", "m.room.message", body), alice,
			map[string]any{"msgtype": "m.text", "body": body}, http.StatusOK)
		sent = append(sent, body)
	}

	// The receiver dies mid-stream.
	for i := range 10 {
		send(fmt.Sprintf("before B died %d", i))
	}
	b.kill(t)
	for i := range 20 {
		send(fmt.Sprintf("while B was dead %d", i))
	}
	b = start(t, fb.cfgPath)
	waitForBodies(t, b.url, bob, roomID, sent)

	// The sender dies with its last sends acknowledged but, most likely,
	// not yet sent on.
	for i := range 30 {
		send(fmt.Sprintf("just before A died %d", i))
	}
	a.kill(t)
	a = start(t, fa.cfgPath)
	defer func() {
		if t.Failed() {
			t.Logf("A:\n%s\nB:\n%s", a.logs, b.logs)
		}
	}()
	waitForBodies(t, b.url, bob, roomID, sent)

	// Both still talk.
	mustCall(t, http.MethodPut, roomPath(b.url, roomID, "send", "m.room.message", "bob-back"), bob,
		map[string]any{"msgtype": "m.text", "body": "bob is back"}, http.StatusOK)
	waitForBodies(t, a.url, alice, roomID, []string{"bob is back"})
	a.stop(t)
	b.stop(t)
}
