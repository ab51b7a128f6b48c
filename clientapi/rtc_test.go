package clientapi_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/livekit/protocol/auth"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallsTokenService drives discovery, the lk-jwt-service endpoints and
// MSC4195's get_token against a server with the embedded SFU.
func TestCallsTokenService(t *testing.T) {
	srv := testserver.Start(t, testserver.Calls())
	raw, err := os.ReadFile(filepath.Join(srv.Config.DataDir, calls.KeysFile))
	must(t, err, "read generated LiveKit keys")
	var keys struct{ Key, Secret string }
	must(t, json.Unmarshal(raw, &keys), "parse keys")

	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{})

	// Discovery.
	serviceURL := srv.URL + calls.TokenPrefix
	r := get(t, srv, "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", alice.AccessToken).expect(t, http.StatusOK, "")
	if got := string(r.Raw); !json.Valid(r.Raw) || r.Body["rtc_transports"] == nil {
		t.Fatalf("rtc/transports: %s", got)
	}
	tr := r.Body["rtc_transports"].([]any)[0].(map[string]any)
	if tr["type"] != "livekit" || tr["livekit_service_url"] != serviceURL {
		t.Fatalf("transport = %v, want livekit at %s", tr, serviceURL)
	}
	wk := get(t, srv, "/.well-known/matrix/client", "").expect(t, http.StatusOK, "")
	foci, _ := wk.Body["org.matrix.msc4143.rtc_foci"].([]any)
	if len(foci) != 1 || foci[0].(map[string]any)["livekit_service_url"] != serviceURL {
		t.Fatalf("well-known rtc_foci: %s", wk.Raw)
	}
	// The proxy reaches LiveKit's signalling (its health check).
	if h := get(t, srv, calls.ProxyPrefix+"/", ""); h.Status != http.StatusOK || string(h.Raw) != "OK" {
		t.Fatalf("LiveKit health through the proxy: %d %s", h.Status, h.Raw)
	}

	openID := func(s session) map[string]any {
		r := post(t, srv, v3+"/user/"+s.UserID+"/openid/request_token", s.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
		return r.Body
	}
	verify := func(jwt, room, identity string) {
		t.Helper()
		tok, err := auth.ParseAPIToken(jwt)
		must(t, err, "parse jwt")
		if tok.APIKey() != keys.Key {
			t.Fatalf("jwt key = %q", tok.APIKey())
		}
		_, claims, err := tok.Verify(keys.Secret)
		must(t, err, "verify jwt with the API secret")
		v := claims.Video
		if claims.Identity != identity || v.Room != room || !v.RoomJoin || v.RoomCreate || v.RoomAdmin ||
			v.CanPublish == nil || !*v.CanPublish || v.CanSubscribe == nil || !*v.CanSubscribe {
			t.Fatalf("claims = %+v video %+v; want room %s identity %s", claims, v, room, identity)
		}
		_, _, err = tok.Verify("a-wrong-secret-that-is-long-enough-000")
		if err == nil {
			t.Fatal("jwt verifies with a wrong secret")
		}
	}
	wsURL := "ws" + srv.URL[len("http"):] + calls.ProxyPrefix

	// /get_token: good token.
	body := map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": openID(alice),
		"member": map[string]any{"id": "member1", "claimed_user_id": alice.UserID, "claimed_device_id": alice.DeviceID},
	}
	r = post(t, srv, calls.TokenPrefix+"/get_token", "", body).expect(t, http.StatusOK, "")
	if r.Body["url"] != wsURL {
		t.Fatalf("url = %v, want %s", r.Body["url"], wsURL)
	}
	verify(r.Body["jwt"].(string), calls.RoomName(roomID, "m.call#ROOM"), calls.IdentityFor(alice.UserID, alice.DeviceID, "member1"))

	// /sfu/get (legacy).
	r = post(t, srv, calls.TokenPrefix+"/sfu/get", "", map[string]any{
		"room": roomID, "openid_token": openID(alice), "device_id": alice.DeviceID,
	}).expect(t, http.StatusOK, "")
	verify(r.Body["jwt"].(string), calls.RoomName(roomID, calls.LegacySlotID), alice.UserID+":"+alice.DeviceID)

	// Forged token, claimed user mismatch, non-member.
	forged := openID(alice)
	forged["access_token"] = "oid_forged"
	body["openid_token"] = forged
	post(t, srv, calls.TokenPrefix+"/get_token", "", body).expect(t, http.StatusUnauthorized, "M_UNAUTHORIZED")
	body["openid_token"] = openID(bob)
	post(t, srv, calls.TokenPrefix+"/get_token", "", body).expect(t, http.StatusUnauthorized, "M_UNAUTHORIZED")
	body["member"] = map[string]any{"id": "m2", "claimed_user_id": bob.UserID, "claimed_device_id": bob.DeviceID}
	post(t, srv, calls.TokenPrefix+"/get_token", "", body).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// Missing fields, and the CORS preflight.
	post(t, srv, calls.TokenPrefix+"/get_token", "", map[string]any{"room_id": roomID}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	pre := do(t, srv, req{Method: http.MethodOptions, Path: calls.TokenPrefix + "/get_token"})
	if pre.Status != http.StatusOK || pre.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("OPTIONS: %d %v", pre.Status, pre.Header)
	}

	// MSC4195 homeserver endpoint.
	r = post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", alice.AccessToken, map[string]any{
		"url": wsURL, "room_id": roomID, "slot_id": "s1", "member_id": "member1",
	}).expect(t, http.StatusOK, "")
	verify(r.Body["jwt"].(string), calls.RoomName(roomID, "s1"), calls.MemberIdentity(alice.UserID, "member1"))
	post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", bob.AccessToken, map[string]any{
		"url": wsURL, "room_id": roomID, "slot_id": "s1", "member_id": "m",
	}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	post(t, srv, "/_matrix/client/v1/rtc/livekit/get_token", alice.AccessToken, map[string]any{
		"url": "wss://elsewhere.example", "room_id": roomID, "slot_id": "s1", "member_id": "m",
	}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

// TestRoomNameVectors pins the hash derivation (Base64(SHA256(canonical
// JSON array))) to values computed independently.
func TestRoomNameVectors(t *testing.T) {
	// sha256(`["!room:example.org","m.call#ROOM"]`), unpadded base64.
	if got, want := calls.RoomName("!room:example.org", "m.call#ROOM"), "TK4o8wNCXi5t5936bOvIzE/X3XFc7cgp3jGRDqK0j5E"; got != want {
		t.Fatalf("RoomName = %s, want %s", got, want)
	}
}
