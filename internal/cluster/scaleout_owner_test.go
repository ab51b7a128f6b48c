package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// rawPost posts body to srv's path with headers and returns the status
// and the decoded answer.
func rawPost(t *testing.T, srv *testserver.Server, path string, headers map[string]string, body any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// Writes the server makes of its own accord run on the room's owner: an
// incoming webhook's notice and a delayed event's send action (refused
// while the owner is down, rather than written by the process they
// reached; the delayed event stays scheduled), and server notices, which one
// process sends (concurrent notices to a new user through every process
// make one room, owned by that process).
func TestScaleOutJobsOnOwner(t *testing.T) {
	c := startScaleOut(t, func(cfg *config.Config) {
		cfg.Rooms.MaxDelayedEventDelay = config.Duration(time.Hour)
		cfg.Webhooks.Enabled = true
		cfg.ServerNotices = config.ServerNotices{SystemMXIDLocalpart: "notices", RoomName: "Server Notices"}
	})
	ctx := context.Background()
	room := c.rooms["b"]

	// A hook in b's room, made through c (the bot is invited and joins
	// through b).
	status, hook := rawPost(t, c.srv["c"], "/_tessera/webhooks/v1/rooms/"+url.PathEscape(room.String())+"/hooks",
		map[string]string{"Authorization": "Bearer " + c.alice.AccessToken}, map[string]any{"kind": "generic"})
	if status != http.StatusOK {
		t.Fatalf("create hook through c: %d %v", status, hook)
	}
	hookPath := "/_tessera/webhooks/v1/hook/" + hook["id"].(string)
	auth := map[string]string{"Authorization": "Bearer " + hook["secret"].(string)}
	post := func(via, text string) (int, map[string]any) {
		return rawPost(t, c.srv[via], hookPath, auth, map[string]any{"text": text})
	}
	for _, via := range c.names {
		status, res := post(via, "via "+via)
		if status != http.StatusOK || res["event_id"] == nil {
			t.Fatalf("webhook through %s: %d %v", via, status, res)
		}
		ev, err := as(c.srv["a"], c.alice).GetEvent(ctx, room, id.EventID(res["event_id"].(string)))
		if err != nil || ev.Content.Raw["body"] != "via "+via {
			t.Fatalf("webhook notice through %s: %v %v", via, err, ev)
		}
	}
	// A delayed event in b's room, sent by the action through a.
	delayedSend := func(via, txn string) string {
		t.Helper()
		cl := as(c.srv[via], c.alice)
		var res struct {
			DelayID string `json:"delay_id"`
		}
		u := cl.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", room.String(), "send", "m.room.message", txn},
			map[string]string{"org.matrix.msc4140.delay": "600000"})
		if _, err := cl.MakeRequest(ctx, http.MethodPut, u, map[string]any{"msgtype": "m.text", "body": "delayed " + txn}, &res); err != nil {
			t.Fatalf("schedule through %s: %v", via, err)
		}
		return res.DelayID
	}
	action := func(via, delayID string) (int, map[string]any) {
		return rawPost(t, c.srv[via], "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/"+delayID,
			map[string]string{"Authorization": "Bearer " + c.alice.AccessToken}, map[string]any{"action": "send"})
	}
	delayID := delayedSend("c", "d1")

	c.srv["b"].Stop()
	if status, res := post("a", "while b is down"); status/100 != 5 {
		t.Errorf("webhook through a with the room's owner down: %d %v, want a 5xx", status, res)
	}
	if status, res := action("a", delayID); status != http.StatusBadGateway {
		t.Errorf("delayed send action through a with the room's owner down: %d %v, want 502", status, res)
	}
	c.srv["b"].Restart()
	if status, res := post("a", "b is back"); status != http.StatusOK {
		t.Errorf("webhook through a after b's restart: %d %v", status, res)
	}
	// Still scheduled: the action works once the owner is back.
	if status, res := action("a", delayID); status != http.StatusOK {
		t.Errorf("delayed send action through a after b's restart: %d %v", status, res)
	}

	// Server notices to a new user, through every process at once.
	admin, err := (&synapseadmin.Client{Client: c.srv["a"].Client("", "")}).SharedSecretRegister(ctx, testserver.SharedSecret,
		synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "root-password", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	carol := c.srv["b"].Register("carol", "password-carol")
	var wg sync.WaitGroup
	for _, via := range c.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, res := rawPost(t, c.srv[via], "/_synapse/admin/v1/send_server_notice",
				map[string]string{"Authorization": "Bearer " + admin.AccessToken},
				map[string]any{"user_id": carol.UserID, "content": map[string]any{"msgtype": "m.text", "body": "notice via " + via}})
			if status != http.StatusOK {
				t.Errorf("notice through %s: %d %v", via, status, res)
			}
		}()
	}
	wg.Wait()
	resp, err := as(c.srv["c"], carol).SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rooms.Invite) != 1 {
		t.Fatalf("carol is invited to %d rooms, want one notices room", len(resp.Rooms.Invite))
	}
	for roomID := range resp.Rooms.Invite {
		if o, want := c.m.Owner(roomID.String()), c.m.Owner(cluster.ServerNoticesKey); o != want {
			t.Errorf("notices room owned by %s, want %s (the notices' process)", o, want)
		}
		if _, err := as(c.srv["a"], carol).JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		msgs, err := as(c.srv["a"], carol).Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range msgs.Chunk {
			if ev.Type.Type == "m.room.message" {
				n++
			}
		}
		if n != len(c.names) {
			t.Errorf("%d notices in the room, want %d", n, len(c.names))
		}
	}
}
