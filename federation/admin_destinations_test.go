package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// adminCall sends an admin API request to srv and decodes the answer.
func adminCall(t *testing.T, srv *testserver.Server, method, path, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader([]byte("{}")))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// TestAdminFederationDestinations: a destination that stops answering is
// listed as failing, a reset sends what was queued at once, and a
// destination that answers again is healthy.
func TestAdminFederationDestinations(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"))
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	root, err := (&synapseadmin.Client{Client: a.Client("", "")}).SharedSecretRegister(ctx, testserver.SharedSecret,
		synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "root-password", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, created.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	dest := b.Config.ServerName
	destPath := "/_synapse/admin/v1/federation/destinations/" + url.PathEscape(dest)
	sendText(t, alice, created.RoomID, "hello")
	waitForMessage(t, bob, created.RoomID, "hello")

	status, list := adminCall(t, a, http.MethodGet, "/_synapse/admin/v1/federation/destinations", root.AccessToken)
	if status != 200 || list["total"] != float64(1) {
		t.Fatalf("destinations: %d %v", status, list)
	}
	d := list["destinations"].([]any)[0].(map[string]any)
	if d["destination"] != dest || d["failure_ts"] != nil || d["retry_interval"] != float64(0) {
		t.Fatalf("healthy destination: %v", d)
	}
	if status, body := adminCall(t, a, http.MethodPost, destPath+"/reset_connection", root.AccessToken); status != 400 || body["errcode"] != "M_UNKNOWN" {
		t.Fatalf("reset of a healthy destination: %d %v", status, body)
	}
	if status, body := adminCall(t, a, http.MethodGet, "/_synapse/admin/v1/federation/destinations/nowhere.test", root.AccessToken); status != 404 || body["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("unknown destination: %d %v", status, body)
	}
	if status, _ := adminCall(t, a, http.MethodGet, destPath, alice.AccessToken); status != 403 {
		t.Fatalf("non-admin: %d", status)
	}

	// The destination's rooms: the one bob joined, not alice's other one.
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{}); err != nil {
		t.Fatal(err)
	}
	status, rooms := adminCall(t, a, http.MethodGet, destPath+"/rooms", root.AccessToken)
	if status != 200 || rooms["total"] != float64(1) {
		t.Fatalf("destination rooms: %d %v", status, rooms)
	}
	room := rooms["rooms"].([]any)[0].(map[string]any)
	if room["room_id"] != string(created.RoomID) || room["stream_ordering"].(float64) <= 0 {
		t.Fatalf("destination room: %v", room)
	}
	if _, more := rooms["next_token"]; more {
		t.Fatalf("next_token on the only page: %v", rooms)
	}
	if status, page := adminCall(t, a, http.MethodGet, destPath+"/rooms?from=1", root.AccessToken); status != 200 ||
		len(page["rooms"].([]any)) != 0 || page["total"] != float64(1) {
		t.Fatalf("past the end: %d %v", status, page)
	}
	if status, body := adminCall(t, a, http.MethodGet, "/_synapse/admin/v1/federation/destinations/nowhere.test/rooms", root.AccessToken); status != 404 || body["errcode"] != "M_NOT_FOUND" {
		t.Fatalf("rooms of an unknown destination: %d %v", status, body)
	}
	if status, body := adminCall(t, a, http.MethodGet, destPath+"/rooms", alice.AccessToken); status != 403 || body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("non-admin rooms: %d %v", status, body)
	}

	b.Stop()
	sendText(t, alice, created.RoomID, "while you were away")
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, d := adminCall(t, a, http.MethodGet, destPath, root.AccessToken)
		if d["failure_ts"] != nil {
			if d["retry_last_ts"].(float64) < d["failure_ts"].(float64) || d["retry_interval"].(float64) <= 0 {
				t.Fatalf("failing destination: %v", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination never failed: %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Restart()
	if status, body := adminCall(t, a, http.MethodPost, destPath+"/reset_connection", root.AccessToken); status != 200 {
		t.Fatalf("reset: %d %v", status, body)
	}
	waitForMessage(t, bob, created.RoomID, "while you were away")
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, d := adminCall(t, a, http.MethodGet, destPath, root.AccessToken)
		if d["failure_ts"] == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination still failing: %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
