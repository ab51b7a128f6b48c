package clientapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// TestAppServiceStream: an application service's sync stream is its
// asserted user's and device's, as /sync is (identity assertion, MSC4326):
// the first response has the puppet's rooms, requests made over the
// stream are the puppet's, and to-device messages for the asserted device
// arrive on it. An assertion the service may not make is refused before
// the upgrade.
func TestAppServiceStream(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, e2bToken, "e2b_puppet")
	puppet := "@e2b_puppet:tessera.test"
	put(t, srv, v3+"/devices/E2BDEV"+q(puppet), e2bToken, map[string]any{}).expect(t, http.StatusCreated, "")
	room := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")
	post(t, srv, v3+"/join/"+url.PathEscape(room)+q(puppet), e2bToken, map[string]any{}).expect(t, http.StatusOK, "")

	as := url.Values{"user_id": {puppet}, "device_id": {"E2BDEV"}}
	w := wsConnect(t, srv, e2bToken, wsOpts{query: as})
	first := w.next(10 * time.Second)
	if _, ok := first.Rooms.Join[room]; !ok {
		t.Fatalf("the puppet's stream does not have its room: %s", first.raw)
	}

	// A message sent over the stream is the puppet's.
	// The sync that carries it may come before the call's answer on this
	// same stream (CI saw it), so the syncs the call skipped count too.
	answer, early := w.call("send", map[string]any{"room_id": room, "txn_id": "p1",
		"content": map[string]any{"msgtype": "m.text", "body": "from the puppet"}})
	var sent struct {
		EventID string `json:"event_id"`
	}
	if answer.Error != nil || json.Unmarshal(answer.Result, &sent) != nil || sent.EventID == "" {
		t.Fatalf("send: %s", answer.raw)
	}
	carries := func(m wsMsg) bool { return m.hasEvent(id.RoomID(room), sent.EventID) }
	var m wsMsg
	found := false
	for _, s := range early {
		if carries(s) {
			m, found = s, true
			break
		}
	}
	if !found {
		m = w.nextSync(10*time.Second, carries)
	}
	for _, ev := range m.timeline(id.RoomID(room)) {
		if ev.EventID == sent.EventID && ev.Sender != puppet {
			t.Errorf("sender of the stream's message = %s, want %s", ev.Sender, puppet)
		}
	}

	// To-device for the asserted device comes down its stream.
	put(t, srv, v3+"/sendToDevice/com.example.ping/td1", alice.AccessToken, map[string]any{
		"messages": map[string]any{puppet: map[string]any{"E2BDEV": map[string]any{"n": 3}}},
	}).expect(t, http.StatusOK, "")
	td := w.nextSync(10*time.Second, func(m wsMsg) bool { return len(m.ToDeviceEvents) > 0 })
	if ev := td.ToDeviceEvents[0]; ev.Type != "com.example.ping" || ev.Sender != alice.UserID || ev.body() != "3" {
		t.Errorf("to-device on the puppet's stream = %+v", ev)
	}

	refusals := []struct {
		name    string
		query   url.Values
		status  int
		errcode string
	}{
		{"user outside the namespace", url.Values{"user_id": {alice.UserID}}, http.StatusForbidden, "M_FORBIDDEN"},
		{"unknown device", url.Values{"user_id": {puppet}, "device_id": {"NOPE"}}, http.StatusBadRequest, "M_UNKNOWN_DEVICE"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			_, resp, err := wsDialRaw(srv, e2bToken, wsOpts{query: c.query})
			if err == nil {
				t.Fatal("the stream was opened")
			}
			if resp == nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var e struct {
				ErrCode string `json:"errcode"`
			}
			if resp.StatusCode != c.status || json.Unmarshal(b, &e) != nil || e.ErrCode != c.errcode {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, b, c.status, c.errcode)
			}
		})
	}
}
