package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
)

// gateway is a push gateway: it records, per pushkey, how many times each
// event was pushed.
type gateway struct {
	mu    sync.Mutex
	byKey map[string]map[string]int // pushkey -> event ID -> times
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	var body struct {
		Notification struct {
			EventID string `json:"event_id"`
			Devices []struct {
				PushKey string `json:"pushkey"`
			} `json:"devices"`
		} `json:"notification"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Notification.Devices) != 1 {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if id := body.Notification.EventID; id != "" { // "" is a badge update
		g.mu.Lock()
		k := body.Notification.Devices[0].PushKey
		if g.byKey[k] == nil {
			g.byKey[k] = map[string]int{}
		}
		g.byKey[k][id]++
		g.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"rejected":[]}`))
}

// pushed returns a copy of what pushkey received.
func (g *gateway) pushed(pushkey string) map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for id, n := range g.byKey[pushkey] {
		out[id] = n
	}
	return out
}

// waitPushed waits up to 30 s until pushkey has received every event of
// want, and returns what it received.
func (g *gateway) waitPushed(t *testing.T, pushkey string, want []string) map[string]int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := g.pushed(pushkey)
		missing := 0
		for _, id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushkey %s: %d of %d events not pushed after 30 s", pushkey, missing, len(want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With three processes, a user's pusher gets each notification once,
// whichever process committed the event: the user's owner evaluates and
// delivers them. Pushers set and deleted through another process reach
// the owner.
func TestScaleOutPush(t *testing.T) {
	g := &gateway{byKey: map[string]map[string]int{}}
	gw := httptest.NewServer(g)
	t.Cleanup(gw.Close)
	c := startScaleOut(t, func(cfg *config.Config) {
		cfg.Push.IPRangeWhitelist = []string{"127.0.0.1/32"}
		cfg.Push.InitialBackoff = config.Duration(50 * time.Millisecond)
	})
	ctx := context.Background()
	c.joinAll(t, c.bob)
	owner := c.m.Owner(c.bob.UserID.String())
	// Two other processes: the pushers are changed through them.
	var others []string
	for _, name := range c.names {
		if name != owner {
			others = append(others, name)
		}
	}
	setPusher := func(via, pushkey string, kind any) {
		t.Helper()
		cl := as(c.srv[via], c.bob)
		if _, err := cl.MakeRequest(ctx, http.MethodPost, cl.BuildClientURL("v3", "pushers", "set"), map[string]any{
			"kind": kind, "app_id": "io.tessera.test", "pushkey": pushkey, "app_display_name": "Test",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gw.URL + "/_matrix/push/v1/notify"},
		}, nil); err != nil {
			t.Fatalf("set pusher %s through %s: %v", pushkey, via, err)
		}
	}
	setPusher(others[0], "phone", "http")

	const perWriter = 5
	sent := c.sendFromAll(t, perWriter)
	g.waitPushed(t, "phone", sent)
	time.Sleep(500 * time.Millisecond) // time for a duplicate to show
	got := g.pushed("phone")
	for _, id := range sent {
		if n := got[id]; n != 1 {
			t.Errorf("event %s pushed %d times, want 1", id, n)
		}
	}
	if len(got) != len(sent) {
		t.Errorf("%d events pushed, want the %d sent", len(got), len(sent))
	}

	// Deleted through one process, set anew through the other: the
	// owner stops the old pusher and runs the new one.
	setPusher(others[1], "phone", nil)
	setPusher(others[0], "tablet", "http")
	var after []string
	for _, name := range c.names {
		resp, err := as(c.srv[name], c.alice).SendText(ctx, c.rooms[name], fmt.Sprintf("after deletion via %s", name))
		if err != nil {
			t.Fatal(err)
		}
		after = append(after, resp.EventID.String())
	}
	g.waitPushed(t, "tablet", after)
	time.Sleep(500 * time.Millisecond)
	for _, id := range after {
		if n := g.pushed("phone")[id]; n != 0 {
			t.Errorf("event %s pushed %d times to the deleted pusher", id, n)
		}
	}
}
