package clientapi_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// jssdkDir holds the npm project pinning matrix-js-sdk and the Rust crypto
// WebAssembly module; .ci/run runs npm ci there.
const jssdkDir = "testdata/jssdk"

// TestJSSDKEncryptedRoom runs matrix-js-sdk as Element Web runs it: members
// loaded lazily, Rust crypto, an encrypted room of two users; alice sends
// an encrypted message and bob must decrypt it. Sending needs the room's
// members, which the SDK loads with /members?at=<its latest next_batch>:
// a server that refuses sync tokens there breaks encrypted sends in
// Element Web.
// missingTool is how a test reacts to a missing external tool (Node, npm
// packages, Chromium): a skip on a developer's machine, a failure where
// TESSERA_REQUIRE_BROWSER is set (.ci/run installs them all), so that CI
// cannot pass by skipping.
func missingTool(t testing.TB) func(format string, args ...any) {
	return testserver.MissingTool(t)
}

// requireJSSDK skips (or, in CI, fails) a matrix-js-sdk test without Node
// or the npm packages, and returns the node binary.
func requireJSSDK(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("matrix-js-sdk test skipped in -short mode")
	}
	missing := missingTool(t)
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not installed (.ci/run installs Debian's nodejs)")
	}
	if _, err := os.Stat(filepath.Join(jssdkDir, "node_modules", "matrix-js-sdk", "package.json")); err != nil {
		missing("matrix-js-sdk missing (run npm ci in clientapi/%s): %v", jssdkDir, err)
	}
	return node
}

func TestJSSDKEncryptedRoom(t *testing.T) {
	node := requireJSSDK(t)
	t.Parallel()

	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	type user struct {
		UserID      string `json:"userId"`
		DeviceID    string `json:"deviceId"`
		AccessToken string `json:"accessToken"`
	}
	cfg, err := json.Marshal(map[string]any{
		"baseUrl":   srv.URL,
		"alice":     user{alice.UserID, alice.DeviceID, alice.AccessToken},
		"bob":       user{bob.UserID, bob.DeviceID, bob.AccessToken},
		"timeoutMs": 90000,
	})
	if err != nil {
		t.Fatal(err)
	}
	run := runNode(node, jssdkDir, "encrypted_room.mjs", 2*time.Minute, false, "TESSERA_JSSDK="+string(cfg))

	var res struct {
		OK       bool     `json:"ok"`
		Error    string   `json:"error"`
		EventID  string   `json:"eventId"`
		WireType string   `json:"wireType"`
		Body     string   `json:"body"`
		Failures []string `json:"failures"`
		Log      []string `json:"log"`
	}
	run.result(t, &res)
	if !res.OK || run.err != nil {
		t.Fatalf("matrix-js-sdk: %s\nfailed requests: %q\nsteps: %q\nstderr: %s", res.Error, res.Failures, res.Log, tail(run.stderr.String(), 8000))
	}
	if res.WireType != "m.room.encrypted" || res.EventID == "" {
		t.Fatalf("bob got %q as %q, want an m.room.encrypted event", res.EventID, res.WireType)
	}
	// The server stored it encrypted: it cannot read the body.
	ev := get(t, srv, rmRoom(mustRoomOf(t, srv, alice, res.EventID), "event", res.EventID), alice.AccessToken).expect(t, 200, "")
	if ev.str("type") != "m.room.encrypted" || bytes.Contains(ev.Raw, []byte(res.Body)) {
		t.Fatalf("the stored event is not encrypted: %s", ev.Raw)
	}
}

// mustRoomOf finds the room of an event among the user's joined rooms.
func mustRoomOf(t *testing.T, srv *testserver.Server, s session, eventID string) string {
	t.Helper()
	r := get(t, srv, v3+"/joined_rooms", s.AccessToken).expect(t, 200, "")
	rooms, _ := r.Body["joined_rooms"].([]any)
	for _, id := range rooms {
		roomID, _ := id.(string)
		if get(t, srv, rmRoom(roomID, "event", eventID), s.AccessToken).Status == 200 {
			return roomID
		}
	}
	t.Fatalf("event %s in none of %s's rooms", eventID, s.UserID)
	return ""
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
