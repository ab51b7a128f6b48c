package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// authedJSON sends a request to a running server, authenticated unless
// token is "".
func authedJSON(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// TestAdminCLI is the operator's path without a client: jobs on a stopped
// server's database with -config, and on a running one with -url/-token.
func TestAdminCLI(t *testing.T) {
	dir := t.TempDir()
	path := generate(t, dir)
	for _, u := range []string{"root", "alice", "bob"} {
		args := []string{"register-user", "-config", path, "-user", u, "-password", u + "-password"}
		if u == "root" {
			args = append(args, "-admin")
		}
		if _, stderr, code := tessera(t, dir, args...); code != 0 {
			t.Fatalf("register %s: %s", u, stderr)
		}
	}

	// Stopped server: straight to the database.
	out, stderr, code := tessera(t, dir, "admin", "reset-password", "-config", path, "-user", "alice", "-password", "alice-new-password")
	if code != 0 || !strings.Contains(out, "Reset the password of @alice:cli.test") {
		t.Fatalf("reset-password: exit %d %q %q", code, out, stderr)
	}
	if !strings.Contains(stderr, "action=reset_password") || strings.Contains(stderr, "alice-new-password") {
		t.Fatalf("audit line missing, or the password logged:\n%s", stderr)
	}
	if out, stderr, code = tessera(t, dir, "admin", "make-admin", "-config", path, "-user", "@alice:cli.test"); code != 0 {
		t.Fatalf("make-admin: exit %d %q %q", code, out, stderr)
	}
	if _, stderr, code = tessera(t, dir, "admin", "deactivate", "-config", path, "-user", "nobody"); code != 1 || !strings.Contains(stderr, "M_NOT_FOUND") {
		t.Fatalf("deactivate of an unknown user: exit %d %q", code, stderr)
	}

	srv := start(t, dir, "run", "-config", path)
	base := "http://" + srv.addr
	login := func(user, password string) (int, string) {
		status, body := postJSON(t, base+"/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": user}, "password": password})
		tok, _ := body["access_token"].(string)
		return status, tok
	}
	status, aliceTok := login("alice", "alice-new-password")
	if status != http.StatusOK {
		t.Fatalf("alice's new password: %d", status)
	}
	if status, body := authedJSON(t, http.MethodGet, base+"/_synapse/admin/v1/users/@alice:cli.test/admin", aliceTok, nil); status != 200 || body["admin"] != true {
		t.Fatalf("alice is not an admin: %d %v", status, body)
	}
	_, rootTok := login("root", "root-password")

	// Running server: through the admin API.
	status, room := authedJSON(t, http.MethodPost, base+"/_matrix/client/v3/createRoom", aliceTok, map[string]any{"preset": "public_chat"})
	if status != 200 {
		t.Fatalf("create room: %d %v", status, room)
	}
	roomID := room["room_id"].(string)
	api := []string{"-url", base, "-token", rootTok}
	out, stderr, code = tessera(t, dir, append([]string{"admin", "delete-room", "-room", roomID, "-block"}, api...)...)
	if code != 0 || !strings.Contains(out, "Deleted "+roomID) || !strings.Contains(out, "@alice:cli.test") {
		t.Fatalf("delete-room: exit %d %q %q", code, out, stderr)
	}
	if status, _ := authedJSON(t, http.MethodGet, base+"/_synapse/admin/v1/rooms/"+url.PathEscape(roomID), rootTok, nil); status != http.StatusNotFound {
		t.Fatalf("deleted room still there: %d", status)
	}
	if out, stderr, code = tessera(t, dir, append([]string{"admin", "make-admin", "-user", "@alice:cli.test", "-revoke"}, api...)...); code != 0 {
		t.Fatalf("make-admin -revoke: exit %d %q %q", code, out, stderr)
	}
	if status, _ := authedJSON(t, http.MethodGet, base+"/_synapse/admin/v1/server_version", aliceTok, nil); status != http.StatusForbidden {
		t.Fatalf("alice is still an admin: %d", status)
	}
	if out, stderr, code = tessera(t, dir, append([]string{"admin", "deactivate", "-user", "@bob:cli.test", "-erase"}, api...)...); code != 0 {
		t.Fatalf("deactivate: exit %d %q %q", code, out, stderr)
	}
	if status, _ := login("bob", "bob-password"); status != http.StatusForbidden {
		t.Fatalf("deactivated bob logs in: %d", status)
	}
	_, stderr, code = tessera(t, dir, append([]string{"admin", "reset-password", "-user", "alice", "-password", "x"}, api...)...)
	if code != 2 || !strings.Contains(stderr, "full user ID") {
		t.Fatalf("localpart with -url: exit %d %q", code, stderr)
	}
	_, stderr, code = tessera(t, dir, "admin", "make-admin", "-user", "@alice:cli.test", "-url", base, "-token", aliceTok)
	if code != 1 || !strings.Contains(stderr, "M_FORBIDDEN") {
		t.Fatalf("make-admin by a non-admin: exit %d %q", code, stderr)
	}
	srv.stop(t)

	out, stderr, code = tessera(t, dir, "admin", "purge-remote-media", "-config", path, "-older-than", "720h")
	if code != 0 || !strings.Contains(out, "Purged 0 cached remote media") {
		t.Fatalf("purge-remote-media: exit %d %q %q", code, out, stderr)
	}
}

func TestAdminCLIBadInvocations(t *testing.T) {
	dir := t.TempDir()
	path := generate(t, dir)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"admin"}, "a command is required"},
		{[]string{"admin", "frobnicate", "-config", path}, "unknown command"},
		{[]string{"admin", "reset-password", "-config", path, "-user", "a"}, "-password is required"},
		{[]string{"admin", "deactivate", "-user", "a"}, "either -config"},
		{[]string{"admin", "deactivate", "-user", "a", "-url", "http://127.0.0.1:1"}, "-url needs -token"},
		{[]string{"admin", "purge-remote-media", "-config", path}, "-older-than is required"},
	}
	for _, tt := range tests {
		_, stderr, code := tessera(t, dir, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}
