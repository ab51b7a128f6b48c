package clientapi_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestStreamClosedWhenTokenRevoked: every way of revoking an access token
// closes the streams opened with it at once (4401 M_UNKNOWN_TOKEN), not
// at the next keepalive (30 s by default, kept here). Streams of the
// user's other devices that keep their token stay open.
func TestStreamClosedWhenTokenRevoked(t *testing.T) {
	t.Parallel()
	const pw = "correct horse"
	tests := []struct {
		name string
		// revoke revokes the stream's token; phone is another device of
		// the same user, whose stream stays open when keepsPhone.
		revoke     func(t *testing.T, srv *testserver.Server, laptop, phone session)
		keepsPhone bool
	}{
		{"logout", func(t *testing.T, srv *testserver.Server, laptop, _ session) {
			post(t, srv, v3+"/logout", laptop.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
		}, true},
		{"logout all", func(t *testing.T, srv *testserver.Server, laptop, _ session) {
			post(t, srv, v3+"/logout/all", laptop.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
		}, false},
		{"device deleted from another device", func(t *testing.T, srv *testserver.Server, laptop, phone session) {
			withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/"+laptop.DeviceID, phone.AccessToken, nil, phone.UserID, pw).
				expect(t, http.StatusOK, "")
		}, true},
		{"password changed with logout_devices", func(t *testing.T, srv *testserver.Server, _, phone session) {
			withPasswordUIA(t, srv, http.MethodPost, v3+"/account/password", phone.AccessToken,
				map[string]any{"new_password": "battery staple", "logout_devices": true}, phone.UserID, pw).
				expect(t, http.StatusOK, "")
		}, true},
		{"deactivated", func(t *testing.T, srv *testserver.Server, _, phone session) {
			withPasswordUIA(t, srv, http.MethodPost, v3+"/account/deactivate", phone.AccessToken, nil, phone.UserID, pw).
				expect(t, http.StatusOK, "")
		}, false},
	}
	srv := testserver.Start(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			localpart := "user" + string(rune('a'+i))
			laptop := registerUser(t, srv, localpart, pw)
			phone := login(t, srv, localpart, pw, nil)
			lw := wsConnect(t, srv, laptop.AccessToken, wsOpts{})
			lw.next(10 * time.Second)
			pw := wsConnect(t, srv, phone.AccessToken, wsOpts{})
			pw.next(10 * time.Second)

			start := time.Now()
			tt.revoke(t, srv, laptop, phone)
			err := lw.closed(3 * time.Second)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4401 || ce.Reason != "M_UNKNOWN_TOKEN" {
				t.Fatalf("laptop's stream: closed with %v, want 4401 M_UNKNOWN_TOKEN", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("laptop's stream closed %v after the revocation", d)
			}
			if tt.keepsPhone {
				stillOpen(t, pw, 500*time.Millisecond)
			} else {
				if err := pw.closed(3 * time.Second); websocket.CloseStatus(err) != 4401 {
					t.Fatalf("phone's stream: closed with %v, want 4401", err)
				}
			}
		})
	}
}

// stillOpen fails the test if the stream closes within d; it skips the
// messages that come meanwhile.
func stillOpen(t *testing.T, w *wsClient, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-w.msgs:
			if !ok {
				t.Fatalf("stream closed: %v", w.err)
			}
		case <-deadline:
			return
		}
	}
}
