package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/clientapi"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// streamEvents reads the sync stream (docs/websocket.md) c until want
// message events have come or the deadline, then a little longer for any
// duplicate, and returns how many times each event came.
func streamEvents(ctx context.Context, c *websocket.Conn, want int) (map[string]int, error) {
	got := map[string]int{}
	n := 0
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		wait := time.Until(deadline)
		if n >= want {
			wait = 500 * time.Millisecond
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		_, data, err := c.Read(rctx)
		cancel()
		if err != nil {
			if n >= want && rctx.Err() != nil {
				return got, nil
			}
			return got, fmt.Errorf("after %d events: %w", n, err)
		}
		var m struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							EventID string `json:"event_id"`
							Type    string `json:"type"`
						} `json:"events"`
						Limited bool `json:"limited"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			return got, fmt.Errorf("stream message: %w", err)
		}
		for roomID, r := range m.Rooms.Join {
			if r.Timeline.Limited {
				return got, fmt.Errorf("room %s: limited timeline after %d events", roomID, n)
			}
			for _, ev := range r.Timeline.Events {
				if ev.Type == event.EventMessage.Type {
					got[ev.EventID]++
					n++
				}
			}
		}
	}
	return got, fmt.Errorf("%d events in 60 s, want %d", n, want)
}

// A WebSocket client on every process gets every event once, whichever
// process committed it.
func TestScaleOutWebSockets(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	start, err := c.bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	filter := `{"room":{"timeline":{"limit":1000}}}`
	conns := map[string]*websocket.Conn{}
	for _, via := range c.names {
		conns[via] = dialStream(t, c.srv[via], c.bob.AccessToken, url.Values{"since": {start.NextBatch}, "filter": {filter}})
	}
	const perWriter = 10
	want := len(c.names) * len(c.rooms) * perWriter
	type result struct {
		via string
		got map[string]int
		err error
	}
	results := make(chan result, len(conns))
	for via, conn := range conns {
		go func() {
			got, err := streamEvents(ctx, conn, want)
			results <- result{via, got, err}
		}()
	}
	sent := c.sendFromAll(t, perWriter)
	for range conns {
		r := <-results
		if r.err != nil {
			t.Errorf("stream on %s: %v", r.via, r.err)
		}
		for _, id := range sent {
			if n := r.got[id]; n != 1 {
				t.Errorf("stream on %s: event %s came %d times, want 1", r.via, id, n)
			}
		}
		if len(r.got) != len(sent) {
			t.Errorf("stream on %s: %d distinct events, want %d", r.via, len(r.got), len(sent))
		}
	}
}

// dialStream opens the sync stream on srv, closed when the test ends.
func dialStream(t *testing.T, srv *testserver.Server, token string, q url.Values) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + clientapi.StreamPath + "?" + q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{"m.json"},
	})
	if err != nil {
		t.Fatalf("dial the stream on %s: %v", srv.URL, err)
	}
	conn.SetReadLimit(64 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}
