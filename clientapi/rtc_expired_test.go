package clientapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/server"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallsExpiredOpenIDToken: an OpenID token past its hour gets no call
// token, and openid/userinfo no longer knows it.
func TestCallsExpiredOpenIDToken(t *testing.T) {
	srv := testserver.Start(t, testserver.Calls())
	alice := registerUser(t, srv, "alice", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{})
	tok := post(t, srv, v3+"/user/"+alice.UserID+"/openid/request_token", alice.AccessToken, map[string]any{}).
		expect(t, http.StatusOK, "").Body
	body := map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": tok,
		"member": map[string]any{"id": "m1", "claimed_user_id": alice.UserID, "claimed_device_id": alice.DeviceID},
	}
	post(t, srv, calls.TokenPrefix+"/get_token", "", body).expect(t, http.StatusOK, "")

	// The hour passes (the token's expiry moves into the past).
	db, err := server.OpenDatabase(context.Background(), srv.Config.Database)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(context.Background(), `UPDATE openid_tokens SET expires_ts = 1`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	post(t, srv, calls.TokenPrefix+"/get_token", "", body).expect(t, http.StatusUnauthorized, "M_UNAUTHORIZED")
}
