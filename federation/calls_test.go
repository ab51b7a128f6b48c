package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/pion/webrtc/v4"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/lkpeer"
	"github.com/tessera-hs/tessera/internal/lkrelay"
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
	claims := verifyJWT(t, a, out["jwt"].(string))
	if claims.Video == nil || !claims.Video.RoomJoin || claims.Video.RoomCreate || claims.Video.Room == "" {
		t.Fatalf("bob's grants: %+v", claims.Video)
	}
}

// TestCallMediaAcrossServers: alice (of A, which runs the SFU) and bob (of
// B, which has none) are in a video room. Both clients follow their
// protocols end to end and media flows both ways on A's SFU:
//   - bob, as Element Call does with a token service: an OpenID token from
//     B, POST <A's livekit_service_url>/get_token, which A checks with B's
//     openid/userinfo; he publishes and subscribes;
//   - carol (also of B), as MSC4195 clients do: A's SFU URL from alice's
//     call membership event, then B's /_matrix/client/v1/rtc/livekit/get_token
//     with server_name A, which B forwards to A's federation endpoint; as a
//     remote user she may subscribe but not publish.
func TestCallMediaAcrossServers(t *testing.T) {
	if testing.Short() {
		t.Skip("media test skipped in -short mode")
	}
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"), testserver.Calls())
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	carol := b.Register("carol", "password-carol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "org.matrix.msc3417.call"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{bob, carol} {
		if _, err := c.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
			t.Fatal(err)
		}
	}
	const slot = "m.call#ROOM"
	relay := httptest.NewServer(lkrelay.PublishAfterTrackPublished())
	defer relay.Close()
	viaRelay := func(sfu string) string {
		return "ws://" + strings.TrimPrefix(relay.URL, "http://") + "/?upstream=" + url.QueryEscape(sfu)
	}
	const timeout = 20 * time.Second

	// Alice: MSC4195 on her own server; then she announces the SFU in her
	// call membership.
	var tr struct {
		Transports []struct{ Type, URL string } `json:"transports"`
	}
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v1", "rtc", "transports"), nil, &tr); err != nil {
		t.Fatal(err)
	}
	if len(tr.Transports) != 2 || tr.Transports[0].Type != "m.livekit" || tr.Transports[1].Type != "livekit" || tr.Transports[1].URL != tr.Transports[0].URL {
		t.Fatalf("A's transports: %+v", tr)
	}
	sfuURL := tr.Transports[0].URL
	aliceJWT := msc4195Token(t, alice, map[string]any{"url": sfuURL, "room_id": room.RoomID, "slot_id": slot, "member_id": "alice-member"})
	alicePeer, err := lkpeer.Join(viaRelay(sfuURL), aliceJWT, true, timeout)
	if err != nil {
		t.Fatalf("alice joins A's SFU: %v", err)
	}
	defer alicePeer.Close()
	stateKey := "_" + alice.UserID.String() + "_" + alice.DeviceID.String() + "_m.call"
	if _, err := alice.SendStateEvent(ctx, room.RoomID, event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}, stateKey, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": alice.DeviceID, "member": map[string]any{"id": "alice-member"},
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "url": sfuURL}},
	}); err != nil {
		t.Fatal(err)
	}

	// Bob: the token service, checked with openid/userinfo on B.
	var oid map[string]any
	if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "user", bob.UserID, "openid", "request_token"), struct{}{}, &oid); err != nil {
		t.Fatal(err)
	}
	var svc struct{ URL, JWT string }
	tokenStart := time.Now()
	if _, err := bob.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodPost, URL: a.URL + calls.TokenPrefix + "/get_token", Client: http.DefaultClient,
		RequestJSON: map[string]any{"room_id": room.RoomID, "slot_id": slot, "openid_token": oid,
			"member": map[string]any{"id": "bob-member", "claimed_user_id": bob.UserID, "claimed_device_id": bob.DeviceID}},
		ResponseJSON: &svc}); err != nil {
		t.Fatalf("bob's token from A's token service: %v", err)
	}
	t.Logf("bob's token from A's token service (openid/userinfo on B): %v", time.Since(tokenStart).Round(time.Millisecond))
	bobPeer, err := lkpeer.Join(viaRelay(svc.URL), svc.JWT, true, timeout)
	if err != nil {
		t.Fatalf("bob joins A's SFU: %v", err)
	}
	defer bobPeer.Close()

	// Carol: reads alice's membership on B, asks B for a token to A's SFU.
	var member struct {
		FociPreferred []struct{ URL string } `json:"foci_preferred"`
	}
	deadline := time.Now().Add(timeout)
	for carol.StateEvent(ctx, room.RoomID, event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}, stateKey, &member) != nil {
		if time.Now().After(deadline) {
			t.Fatal("alice's call membership never reached B")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(member.FociPreferred) != 1 || member.FociPreferred[0].URL != sfuURL {
		t.Fatalf("alice's membership on B: %+v", member)
	}
	tokenStart = time.Now()
	carolJWT := msc4195Token(t, carol, map[string]any{"server_name": a.Config.ServerName, "url": member.FociPreferred[0].URL,
		"room_id": room.RoomID, "slot_id": slot, "member_id": "carol-member"})
	t.Logf("carol's token to A's SFU through B (federation get_token): %v", time.Since(tokenStart).Round(time.Millisecond))
	claims := verifyJWT(t, a, carolJWT)
	if v := claims.Video; v == nil || !v.RoomJoin || v.RoomCreate || v.Room != calls.RoomName(room.RoomID.String(), slot) ||
		v.GetCanPublish() || !v.GetCanSubscribe() || v.GetCanUpdateOwnMetadata() || v.Hidden {
		t.Fatalf("carol's grants from A through B: %+v", claims.Video)
	}
	if claims.Identity != calls.MemberIdentity(carol.UserID.String(), "carol-member") {
		t.Fatalf("carol's identity %q", claims.Identity)
	}
	carolPeer, err := lkpeer.Join(viaRelay(sfuURL), carolJWT, false, timeout)
	if err != nil {
		t.Fatalf("carol joins A's SFU: %v", err)
	}
	defer carolPeer.Close()

	aliceID := calls.MemberIdentity(alice.UserID.String(), "alice-member")
	bobID := calls.IdentityFor(bob.UserID.String(), bob.DeviceID.String(), "bob-member")
	both := func(id string) []string {
		return []string{lkpeer.Key(id, webrtc.RTPCodecTypeAudio), lkpeer.Key(id, webrtc.RTPCodecTypeVideo)}
	}
	for _, c := range []struct {
		who  string
		peer *lkpeer.Peer
		want []string
	}{
		{"alice", alicePeer, both(bobID)},
		{"bob", bobPeer, both(aliceID)},
		{"carol", carolPeer, append(both(aliceID), both(bobID)...)},
	} {
		if missing := c.peer.Wait(c.want, timeout); len(missing) > 0 {
			t.Errorf("%s received no RTP from %v", c.who, missing)
			continue
		}
		for _, k := range c.want {
			d, _ := c.peer.First(k)
			t.Logf("%s: first RTP of %s after %v", c.who, k, d.Round(time.Millisecond))
		}
	}

	// Carol leaves the Matrix room on B; A hears of it over federation
	// and takes her off its SFU.
	if _, err := carol.LeaveRoom(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-carolPeer.Disconnected():
	case <-time.After(timeout):
		t.Fatal("carol left the room on B but is still on A's SFU")
	}
}

// TestCallTokenErrorsAcrossServers: what MSC4195's two get_token endpoints
// refuse, and that B relays A's refusals to its client.
func TestCallTokenErrorsAcrossServers(t *testing.T) {
	ctx := context.Background()
	a := testserver.Start(t, testserver.Federation("127.0.0.1"), testserver.Calls())
	b := testserver.Start(t, testserver.Federation("127.0.0.2"))
	alice := a.Register("alice", "password-alice")
	bob := b.Register("bob", "password-bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		Transports []struct{ URL string } `json:"transports"`
	}
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v1", "rtc", "transports"), nil, &tr); err != nil || len(tr.Transports) == 0 {
		t.Fatalf("A's transports: %+v %v", tr, err)
	}
	sfuURL := tr.Transports[0].URL
	req := func(extra map[string]any) map[string]any {
		body := map[string]any{"server_name": a.Config.ServerName, "url": sfuURL, "room_id": room.RoomID, "slot_id": "s", "member_id": "m"}
		for k, v := range extra {
			body[k] = v
		}
		return body
	}
	// Through B's client API.
	for _, tc := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"not joined (A's answer, relayed)", req(nil), http.StatusForbidden, "M_FORBIDDEN"},
		{"a room A does not know", req(map[string]any{"room_id": "!nope:" + a.Config.ServerName}), http.StatusForbidden, "M_FORBIDDEN"},
		{"no such server", req(map[string]any{"server_name": "127.0.0.9:1"}), http.StatusBadGateway, "M_UNKNOWN"},
		{"not a server name", req(map[string]any{"server_name": "not a name"}), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"missing member_id", req(map[string]any{"member_id": ""}), http.StatusBadRequest, "M_BAD_JSON"},
	} {
		status, code := clientError(ctx, bob, tc.body)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, code, tc.status, tc.code)
		}
	}
	if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	if status, code := clientError(ctx, bob, req(map[string]any{"url": "wss://elsewhere.example/livekit"})); status != http.StatusBadRequest || code != "M_INVALID_PARAM" {
		t.Errorf("another SFU's URL (A's answer, relayed): %d %s, want 400 M_INVALID_PARAM", status, code)
	}
	if status, code := clientError(ctx, bob, req(nil)); status != http.StatusOK {
		t.Errorf("bob, joined: %d %s", status, code)
	}
	// Alice asking her own server about a URL that is not its SFU.
	if status, code := clientError(ctx, alice, req(map[string]any{"url": "wss://elsewhere.example/_tessera/livekit"})); status != http.StatusBadRequest || code != "M_INVALID_PARAM" {
		t.Errorf("alice, another URL: %d %s, want 400 M_INVALID_PARAM", status, code)
	}

	// Straight to A's federation endpoint, signed by B: B may speak only
	// for its own users.
	bKey := signingKey(t, b)
	fed := func(body map[string]any) response {
		return do(t, signedRequest(t, b.ServerName(), a.ServerName(), bKey.ID, bKey.PrivateKey, http.MethodPost,
			"/_matrix/federation/v1/rtc/livekit/get_token", body))
	}
	body := req(nil)
	delete(body, "server_name")
	body["user_id"] = alice.UserID.String() // joined, but A's user
	if r := fed(body); r.status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" {
		t.Errorf("B speaking for A's user: %d %s", r.status, r.raw)
	}
	body["user_id"] = bob.UserID.String()
	r := fed(body)
	if r.status != http.StatusOK {
		t.Fatalf("B for bob: %d %s", r.status, r.raw)
	}
	if claims := verifyJWT(t, a, r.body["jwt"].(string)); claims.Video.GetCanPublish() {
		t.Error("a remote user's token may publish")
	}
	delete(body, "user_id")
	if r := fed(body); r.status != http.StatusBadRequest || r.errcode() != "M_BAD_JSON" {
		t.Errorf("no user_id: %d %s", r.status, r.raw)
	}
	// Unsigned: refused before anything is read.
	if r := request(t, http.MethodPost, "https://"+a.Config.ServerName+"/_matrix/federation/v1/rtc/livekit/get_token", []byte(`{}`)); r.status != http.StatusUnauthorized {
		t.Errorf("unsigned: %d %s", r.status, r.raw)
	}
}

// msc4195Token is POST /_matrix/client/v1/rtc/livekit/get_token's jwt.
func msc4195Token(t *testing.T, c *mautrix.Client, body map[string]any) string {
	t.Helper()
	var out struct {
		JWT string `json:"jwt"`
	}
	if _, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v1", "rtc", "livekit", "get_token"), body, &out); err != nil {
		t.Fatalf("%s: get_token %v: %v", c.UserID, body, err)
	}
	if out.JWT == "" {
		t.Fatalf("%s: no jwt", c.UserID)
	}
	return out.JWT
}

// clientError is the status and errcode of a client get_token request.
func clientError(ctx context.Context, c *mautrix.Client, body map[string]any) (int, string) {
	_, err := c.MakeRequest(ctx, http.MethodPost, c.BuildClientURL("v1", "rtc", "livekit", "get_token"), body, nil)
	if err == nil {
		return http.StatusOK, ""
	}
	var herr mautrix.HTTPError
	if errors.As(err, &herr) && herr.Response != nil {
		code := ""
		if herr.RespError != nil {
			code = herr.RespError.ErrCode
		}
		return herr.Response.StatusCode, code
	}
	return 0, err.Error()
}

// verifyJWT checks a LiveKit token with A's API secret and returns its
// claims.
func verifyJWT(t *testing.T, a *testserver.Server, jwt string) *auth.ClaimGrants {
	t.Helper()
	tok, err := auth.ParseAPIToken(jwt)
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
		t.Fatalf("jwt does not verify with A's secret: %v", err)
	}
	return claims
}
