package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// jssdkSlidingRooms is how many rooms alice shares with bob before the
// clients start: more than the first window of the list, so that the
// client has to scroll.
const jssdkSlidingRooms = 50

// TestJSSDKSlidingSync runs matrix-js-sdk's simplified sliding sync
// (MSC4186) as Element Web runs it, with Rust crypto: a list of 50 rooms
// scrolled through with setListRanges, a room subscription outside the
// window, scrollback from a list room's prev_batch, subscriptions that
// widen a room's timeline (which must stay in order), messages both ways,
// typing and read receipts through their extensions, m.direct through
// account_data, an encrypted DM whose keys travel through the e2ee and
// to_device extensions, decrypted both ways, and a restart without pos.
// The script (testdata/jssdk/sliding_sync.mjs) reports each check it
// passed and each problem; set TESSERA_JSSDK_SSLOG=1 to see every sliding
// sync exchange.
func TestJSSDKSlidingSync(t *testing.T) {
	node := requireJSSDK(t)
	t.Parallel()

	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")

	// alice's rooms, each with bob and two messages; the second messages
	// go out in room order, so that the list (newest first by bump_stamp)
	// holds the rooms in the reverse order of rooms.
	n := jssdkSlidingRooms
	rooms := make([]string, n)
	names := make([]string, n)
	bodies := make([][]string, n)
	lastBodies := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("sliding room %02d", i)
		bodies[i] = []string{fmt.Sprintf("room %02d first", i), fmt.Sprintf("room %02d last", i)}
		lastBodies[i] = bodies[i][1]
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := jssdkSlidingRoom(srv, alice, bob, names[i], bodies[i][0], &rooms[i]); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("setting up the rooms: %s", strings.Join(errs, "; "))
	}
	for i, roomID := range rooms {
		rmSend(t, srv, alice, roomID, lastBodies[i])
	}

	type user struct {
		UserID      string `json:"userId"`
		DeviceID    string `json:"deviceId"`
		AccessToken string `json:"accessToken"`
	}
	cfg, err := json.Marshal(map[string]any{
		"baseUrl":       srv.URL,
		"alice":         user{alice.UserID, alice.DeviceID, alice.AccessToken},
		"bob":           user{bob.UserID, bob.DeviceID, bob.AccessToken},
		"rooms":         rooms,
		"roomNames":     names,
		"bodies":        bodies,
		"lastBodies":    lastBodies,
		"timeoutMs":     180000,
		"pollTimeoutMs": 10000,
	})
	if err != nil {
		t.Fatal(err)
	}
	// With TESSERA_JSSDK_SSLOG or _DEBUG, the script's log of each
	// exchange (and the SDK's) shows as it runs.
	echo := os.Getenv("TESSERA_JSSDK_SSLOG") != "" || os.Getenv("TESSERA_JSSDK_DEBUG") != ""
	run := runNode(node, jssdkDir, "sliding_sync.mjs", 4*time.Minute, echo, "TESSERA_JSSDK="+string(cfg))

	var res struct {
		OK       bool     `json:"ok"`
		Step     string   `json:"step"`
		Error    string   `json:"error"`
		Checks   []string `json:"checks"`
		Problems []struct {
			Step    string `json:"step"`
			Problem string `json:"problem"`
		} `json:"problems"`
		Failures  []json.RawMessage `json:"failures"`
		Trace     json.RawMessage   `json:"trace"`
		ChatRoom  string            `json:"chatRoom"`
		DMRoom    string            `json:"dmRoom"`
		Encrypted []struct {
			EventID string `json:"eventId"`
			Body    string `json:"body"`
		} `json:"encrypted"`
	}
	run.result(t, &res)
	for _, c := range res.Checks {
		t.Logf("passed: %s", c)
	}
	for _, f := range res.Failures {
		t.Logf("failed request: %s", f)
	}
	for _, p := range res.Problems {
		t.Errorf("problem at step %q: %s", p.Step, p.Problem)
	}
	if !res.OK || run.err != nil {
		var failed strings.Builder
		for _, f := range res.Failures {
			failed.WriteString("\n  ")
			failed.Write(f)
		}
		t.Fatalf("matrix-js-sdk failed at step %q: %s\nfailed requests:%s\nlast sliding sync exchanges: %s\nstderr: %s",
			res.Step, res.Error, failed.String(), tail(string(res.Trace), 12000), tail(run.stderr.String(), 6000))
	}
	if res.ChatRoom != rooms[n-1] {
		t.Errorf("the chat room is %s, want the newest room %s", res.ChatRoom, rooms[n-1])
	}
	if len(res.Encrypted) != 2 {
		t.Fatalf("encrypted messages reported: %d, want 2", len(res.Encrypted))
	}
	// The server stored the DM's messages encrypted: it cannot read them.
	for _, e := range res.Encrypted {
		ev := get(t, srv, rmRoom(res.DMRoom, "event", e.EventID), alice.AccessToken).expect(t, http.StatusOK, "")
		if ev.str("type") != "m.room.encrypted" || e.Body == "" || bytes.Contains(ev.Raw, []byte(e.Body)) {
			t.Fatalf("the stored event is not encrypted: %s", ev.Raw)
		}
	}
}

// jssdkSlidingRoom makes one of alice's rooms: named, bob invited and
// joined, a first message from alice. It runs outside the test goroutine,
// so it returns errors rather than failing the test.
func jssdkSlidingRoom(srv *testserver.Server, alice, bob session, name, body string, roomID *string) error {
	r, err := tryDo(srv, req{Method: http.MethodPost, Path: v3 + "/createRoom", Token: alice.AccessToken,
		Body: map[string]any{"preset": "private_chat", "name": name, "invite": []string{bob.UserID}}})
	if err != nil || r.Status != http.StatusOK || r.str("room_id") == "" {
		return fmt.Errorf("createRoom %s: %v %d %s", name, err, r.Status, r.Raw)
	}
	id := r.str("room_id")
	if r, err = tryDo(srv, req{Method: http.MethodPost, Path: rmRoom(id, "join"), Token: bob.AccessToken, Body: map[string]any{}}); err != nil || r.Status != http.StatusOK {
		return fmt.Errorf("bob joins %s: %v %d %s", name, err, r.Status, r.Raw)
	}
	if r, err = tryDo(srv, req{Method: http.MethodPut, Path: rmRoom(id, "send", "m.room.message", rmTxn()), Token: alice.AccessToken,
		Body: map[string]any{"msgtype": "m.text", "body": body}}); err != nil || r.Status != http.StatusOK {
		return fmt.Errorf("send in %s: %v %d %s", name, err, r.Status, r.Raw)
	}
	*roomID = id
	return nil
}
