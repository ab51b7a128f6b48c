package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/livekit/protocol/auth"
	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallAcrossServers: bob, a user of B, gets a token for a call in a
// room of A from A's token service, which checks his OpenID token by
// asking B (openid/userinfo). As a remote user he may join the LiveKit
// room alice opened but not create one; without his membership in the
// Matrix room he gets nothing.
func TestCallAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"), testserver.Calls())
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "org.matrix.msc3417.call"}})
	if err != nil {
		t.Fatal(err)
	}
	openID := func(c *mautrix.Client) map[string]any {
		var tok map[string]any
		if _, err := c.MakeRequest(ctx, http.MethodPost, c.BuildClientURL("v3", "user", c.UserID, "openid", "request_token"), struct{}{}, &tok); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	getToken := func(c *mautrix.Client) (int, map[string]any) {
		body := map[string]any{
			"room_id": room.RoomID, "slot_id": "m.call#ROOM", "openid_token": openID(c),
			"member": map[string]any{"id": "m-" + c.DeviceID.String(), "claimed_user_id": c.UserID, "claimed_device_id": c.DeviceID},
		}
		var out map[string]any
		status := 0
		_, err := alice.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodPost, URL: a.URL + calls.TokenPrefix + "/get_token",
			RequestJSON: body, ResponseJSON: &out, Client: http.DefaultClient})
		if herr, ok := err.(mautrix.HTTPError); ok {
			status = herr.Response.StatusCode
		} else if err == nil {
			status = http.StatusOK
		} else {
			t.Fatal(err)
		}
		return status, out
	}

	// Not yet in the Matrix room: refused.
	if status, _ := getToken(bob); status != http.StatusForbidden {
		t.Fatalf("a remote user outside the room: %d, want 403", status)
	}
	if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	// Alice, a local user, opens the call; then bob may join it.
	if status, out := getToken(alice); status != http.StatusOK || out["jwt"] == nil {
		t.Fatalf("alice's token: %d %v", status, out)
	}
	status, out := getToken(bob)
	if status != http.StatusOK {
		t.Fatalf("bob's token through A: %d %v", status, out)
	}
	tok, err := auth.ParseAPIToken(out["jwt"].(string))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(a.Config.DataDir, calls.KeysFile))
	if err != nil {
		t.Fatal(err)
	}
	var keys struct{ Key, Secret string }
	if err := json.Unmarshal(raw, &keys); err != nil {
		t.Fatal(err)
	}
	_, claims, err := tok.Verify(keys.Secret)
	if err != nil {
		t.Fatalf("bob's jwt does not verify with A's secret: %v", err)
	}
	if claims.Video == nil || !claims.Video.RoomJoin || claims.Video.RoomCreate || claims.Video.Room == "" {
		t.Fatalf("bob's grants: %+v", claims.Video)
	}
}
