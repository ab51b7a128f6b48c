package clientapi_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestStreamTokenInProtocol: a browser offers its access token as the
// subprotocol "org.tessera.token.<token>" beside m.json (it cannot set
// headers, and a token in the URL would be logged by proxies);
// TestStreamConnect opens a stream so. A token that does not work closes
// the stream at once with 4401 and the errcode, which a browser can read
// (an HTTP refusal of a WebSocket it cannot).
func TestStreamTokenInProtocol(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)

	// A device logged out, and a token that never was.
	gone := srv.Register("gone", "correct horse")
	if _, err := gone.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, token string }{
		{"unknown token", "syt_not_a_token"},
		{"logged-out token", gone.AccessToken},
	} {
		c, resp, err := wsDialRaw(srv, tc.token, wsOpts{tokenInProtocol: true})
		if err != nil {
			body := ""
			if resp != nil {
				b, _ := io.ReadAll(resp.Body)
				body = string(b)
			}
			t.Fatalf("%s: the upgrade failed: %v %s", tc.name, err, body)
		}
		if p := c.Subprotocol(); p != "m.json" {
			t.Errorf("%s: subprotocol %q", tc.name, p)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, data, err := c.Read(ctx)
		cancel()
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4401 || ce.Reason != "M_UNKNOWN_TOKEN" {
			t.Errorf("%s: read %q, %v; want close 4401 M_UNKNOWN_TOKEN before any message", tc.name, data, err)
		}
		c.CloseNow()
	}

	// A client that can send headers still gets the HTTP refusal.
	c, resp, err := wsDialRaw(srv, "syt_not_a_token", wsOpts{})
	if err == nil {
		c.CloseNow()
		t.Fatal("a bad token in the header was upgraded")
	}
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("a bad token in the header: %v %v", resp, err)
	}
}
