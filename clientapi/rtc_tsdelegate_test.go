package clientapi_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/lkpeer"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCallsTokenServiceDelegation: Element Call and Element X hand their
// delayed leave to the token service with the token request (delay_id,
// delay_timeout, delay_cs_api_url, as lk-jwt-service takes them), or later
// with its POST /delegate_delayed_leave, so that a call survives the app
// being frozen in the background. The server keeps the leave alive while
// the participant is on the SFU and sends it when the participant goes.
func TestCallsTokenServiceDelegation(t *testing.T) {
	if testing.Short() {
		t.Skip("media test skipped in -short mode")
	}
	lksdk.SetLogger(protoLogger.GetLogger())
	srv := testserver.Start(t, testserver.Calls(), ddFast)
	alice := registerUser(t, srv, "alice", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	rs := lkRoomService(t, srv)
	service := srv.URL + calls.TokenPrefix
	openID := func() map[string]any {
		var oid map[string]any
		must(t, postJSON(srv.URL+v3+"/user/"+url.PathEscape(alice.UserID)+"/openid/request_token", alice.AccessToken, map[string]any{}, &oid), "openid")
		return oid
	}
	body := func(member, delayID string) map[string]any {
		b := map[string]any{
			"room_id": roomID, "slot_id": ddSlot, "openid_token": openID(),
			"member": map[string]any{"id": member, "claimed_user_id": alice.UserID, "claimed_device_id": alice.DeviceID},
		}
		if delayID != "" {
			b["delay_id"], b["delay_timeout"], b["delay_cs_api_url"] = delayID, 3000, srv.URL
		}
		return b
	}
	key := func(suffix string) string { return "_" + alice.UserID + "_" + alice.DeviceID + "_" + suffix }
	const delay = 3 * time.Second

	// keptAliveThenSent: the participant stays past the delay, then the
	// SFU drops it (RemoveParticipant, so that the moment is exact); the
	// leave must go out then, as an action, not on its own delay.
	keptAliveThenSent := func(t *testing.T, member, stateKey, delayID string) {
		t.Helper()
		time.Sleep(delay + 1500*time.Millisecond)
		if ddScheduled(t, srv, alice, delayID) == nil {
			t.Fatalf("the leave fired although the participant is on the SFU (finalised: %q)", ddFinalised(t, srv, alice, delayID))
		}
		_, err := rs.RemoveParticipant(context.Background(), &livekit.RoomParticipantIdentity{
			Room: calls.RoomName(roomID, ddSlot), Identity: calls.IdentityFor(alice.UserID, alice.DeviceID, member)})
		must(t, err, "remove the participant")
		took, reason := ddWaitFired(t, srv, alice, roomID, stateKey, delayID, 2*time.Second)
		if reason != "action" {
			t.Fatalf("the leave finalised with reason %q, want sent when the participant left (action)", reason)
		}
		t.Logf("leave sent %v after the participant left the SFU (delay %v)", took.Round(10*time.Millisecond), delay)
	}

	t.Run("with get_token", func(t *testing.T) {
		id := ddSchedule(t, srv, alice, roomID, key("a"), delay)
		var tok struct{ URL, JWT string }
		must(t, postJSON(service+"/get_token", "", body("m1", id), &tok), "get_token with delegation")
		p, err := lkpeer.Join(tok.URL, tok.JWT, false, 15*time.Second)
		must(t, err, "join")
		defer p.Close()
		keptAliveThenSent(t, "m1", key("a"), id)
	})

	t.Run("with delegate_delayed_leave", func(t *testing.T) {
		var tok struct{ URL, JWT string }
		must(t, postJSON(service+"/get_token", "", body("m2", ""), &tok), "get_token")
		p, err := lkpeer.Join(tok.URL, tok.JWT, false, 15*time.Second)
		must(t, err, "join")
		defer p.Close()
		id := ddSchedule(t, srv, alice, roomID, key("b"), delay)
		var out map[string]any
		must(t, postJSON(service+"/delegate_delayed_leave", "", body("m2", id), &out), "delegate_delayed_leave")
		keptAliveThenSent(t, "m2", key("b"), id)
	})

	t.Run("errors", func(t *testing.T) {
		id := ddSchedule(t, srv, alice, roomID, key("err"), time.Minute)
		partial := body("m3", "")
		partial["delay_id"] = id // no delay_timeout or delay_cs_api_url
		unknown := body("m3", "syd_nosuchdelayid")
		for _, c := range []struct {
			name, path string
			body       map[string]any
			status     int
			errcode    string
		}{
			{"get_token, partial delegation", "/get_token", partial, http.StatusBadRequest, "M_BAD_JSON"},
			{"get_token, unknown delay_id", "/get_token", unknown, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"delegate_delayed_leave, no delegation", "/delegate_delayed_leave", body("m3", ""), http.StatusBadRequest, "M_BAD_JSON"},
			{"delegate_delayed_leave, unknown delay_id", "/delegate_delayed_leave", unknown, http.StatusBadRequest, "M_INVALID_PARAM"},
		} {
			r := post(t, srv, calls.TokenPrefix+c.path, "", c.body)
			if r.Status != c.status || r.str("errcode") != c.errcode {
				t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.errcode)
			}
		}
		if ddScheduled(t, srv, alice, id) == nil {
			t.Fatal("a refused delegation touched the delayed event")
		}
	})
}
