package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// syncResp is the part of a /sync response these tests read.
type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events    []json.RawMessage `json:"events"`
				Limited   bool              `json:"limited"`
				PrevBatch string            `json:"prev_batch"`
			} `json:"timeline"`
			State struct {
				Events []json.RawMessage `json:"events"`
			} `json:"state"`
		} `json:"join"`
		Invite map[string]struct {
			InviteState struct {
				Events []json.RawMessage `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]json.RawMessage `json:"leave"`
	} `json:"rooms"`
}

type evFields struct {
	EventID  string  `json:"event_id"`
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
	Sender   string  `json:"sender"`
	Content  struct {
		Body       string `json:"body"`
		Membership string `json:"membership"`
	} `json:"content"`
}

func fields(t *testing.T, raw json.RawMessage) evFields {
	t.Helper()
	var f evFields
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// doSync calls /sync and fails the test on anything but 200.
func doSync(t *testing.T, c *mautrix.Client, params url.Values) syncResp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.HomeserverURL.String()+"/_matrix/client/v3/sync?"+params.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e map[string]any
		json.NewDecoder(resp.Body).Decode(&e)
		t.Fatalf("/sync: %d %v", resp.StatusCode, e)
	}
	var out syncResp
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSyncInitialAndLongPoll(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Sync"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, room.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(bg, room.RoomID, "first")
	if err != nil {
		t.Fatal(err)
	}

	initial := doSync(t, bob, url.Values{})
	jr, ok := initial.Rooms.Join[room.RoomID.String()]
	if !ok || initial.NextBatch == "" {
		t.Fatalf("initial sync lacks the room or next_batch: %+v", initial)
	}
	last := fields(t, jr.Timeline.Events[len(jr.Timeline.Events)-1])
	if last.EventID != sent.EventID.String() || last.Content.Body != "first" {
		t.Fatalf("last timeline event = %+v, want the message", last)
	}
	haveCreate := false
	for _, raw := range append(jr.State.Events, jr.Timeline.Events...) {
		if fields(t, raw).Type == "m.room.create" {
			haveCreate = true
		}
	}
	if !haveCreate {
		t.Fatal("initial sync has no m.room.create in state or timeline")
	}

	// An incremental sync with nothing new waits, and wakes when a message
	// arrives rather than at its timeout.
	type result struct {
		r   syncResp
		dur time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		r := doSync(t, bob, url.Values{"since": {initial.NextBatch}, "timeout": {"20000"}})
		done <- result{r, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond)
	second, err := alice.SendText(bg, room.RoomID, "second")
	if err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.dur > 5*time.Second {
		t.Fatalf("long-poll took %s to wake", res.dur)
	}
	evs := res.r.Rooms.Join[room.RoomID.String()].Timeline.Events
	if len(evs) != 1 || fields(t, evs[0]).EventID != second.EventID.String() {
		t.Fatalf("incremental timeline = %d events, want just the new message", len(evs))
	}
	// With nothing new in the room and a short timeout, the room is not
	// in the answer (other streams, such as presence, may still move).
	empty := doSync(t, bob, url.Values{"since": {res.r.NextBatch}, "timeout": {"100"}})
	if jr, ok := empty.Rooms.Join[room.RoomID.String()]; ok && len(jr.Timeline.Events) > 0 {
		t.Fatalf("an idle sync returned timeline events %v", jr.Timeline.Events)
	}
}

// TestSyncEveryEventOnce: syncing in a loop while messages arrive sees each
// exactly once, in order, across many since tokens.
func TestSyncEveryEventOnce(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	since := doSync(t, alice, url.Values{}).NextBatch
	const n = 60
	sent := make(chan string, n)
	go func() {
		defer close(sent)
		for i := 0; i < n; i++ {
			r, err := alice.SendText(bg, room.RoomID, fmt.Sprint(i))
			if err != nil {
				t.Error(err)
				return
			}
			sent <- r.EventID.String()
		}
	}()
	var got []string
	tokens := 0
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		// The limit is above n, so no response is limited: every event must
		// come through the timelines alone.
		r := doSync(t, alice, url.Values{"since": {since}, "timeout": {"2000"}, "filter": {`{"room":{"timeline":{"limit":100}}}`}})
		jr := r.Rooms.Join[room.RoomID.String()]
		if jr.Timeline.Limited {
			t.Fatal("timeline limited below its limit")
		}
		for _, raw := range jr.Timeline.Events {
			got = append(got, fields(t, raw).EventID)
		}
		since = r.NextBatch
		tokens++
	}
	var want []string
	for id := range sent {
		want = append(want, id)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("over %d syncs got %d events %v\nwant %d %v", tokens, len(got), got, len(want), want)
	}
}

// TestSyncLimitedTimelineJoinsMessages: a limited timeline's prev_batch
// pages back through /messages with no gap and no duplicate.
func TestSyncLimitedTimelineJoinsMessages(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	since := doSync(t, alice, url.Values{}).NextBatch
	var want []string
	for i := 0; i < 25; i++ {
		r, err := alice.SendText(bg, room.RoomID, fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.EventID.String())
	}
	r := doSync(t, alice, url.Values{"since": {since}})
	jr := r.Rooms.Join[room.RoomID.String()]
	if !jr.Timeline.Limited || len(jr.Timeline.Events) != 10 || jr.Timeline.PrevBatch == "" {
		t.Fatalf("timeline: limited=%v, %d events, prev_batch %q; want limited, 10, a token",
			jr.Timeline.Limited, len(jr.Timeline.Events), jr.Timeline.PrevBatch)
	}
	got := []string{}
	for _, raw := range jr.Timeline.Events {
		got = append(got, fields(t, raw).EventID)
	}
	msgs, err := alice.Messages(bg, room.RoomID, jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 15)
	if err != nil {
		t.Fatal(err)
	}
	var older []string
	for _, ev := range msgs.Chunk {
		older = append([]string{ev.ID.String()}, older...)
	}
	all := append(older, got...)
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("prev_batch + timeline = %v\nwant %v", all, want)
	}
}

func TestSyncInviteAndLeave(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	since := doSync(t, bob, url.Values{}).NextBatch
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret", Invite: []id.UserID{bob.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	r := doSync(t, bob, url.Values{"since": {since}, "timeout": {"5000"}})
	inv, ok := r.Rooms.Invite[room.RoomID.String()]
	if !ok {
		t.Fatalf("invite not in sync: %+v", r.Rooms)
	}
	var types = map[string]bool{}
	for _, raw := range inv.InviteState.Events {
		f := fields(t, raw)
		types[f.Type] = true
		if f.Type == "m.room.member" && (f.StateKey == nil || *f.StateKey != bob.UserID.String() || f.Content.Membership != "invite") {
			t.Fatalf("invite member event = %+v", f)
		}
	}
	for _, want := range []string{"m.room.create", "m.room.name", "m.room.join_rules", "m.room.member"} {
		if !types[want] {
			t.Fatalf("invite_state lacks %s: %v", want, types)
		}
	}
	if _, err := bob.JoinRoom(bg, room.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	r = doSync(t, bob, url.Values{"since": {r.NextBatch}, "timeout": {"5000"}})
	if _, ok := r.Rooms.Join[room.RoomID.String()]; !ok {
		t.Fatalf("joined room not in sync: %+v", r.Rooms)
	}
	if _, err := bob.LeaveRoom(bg, room.RoomID); err != nil {
		t.Fatal(err)
	}
	r = doSync(t, bob, url.Values{"since": {r.NextBatch}, "timeout": {"5000"}})
	if _, ok := r.Rooms.Leave[room.RoomID.String()]; !ok {
		t.Fatalf("left room not in sync: %+v", r.Rooms)
	}
	if _, ok := r.Rooms.Join[room.RoomID.String()]; ok {
		t.Fatal("left room still listed as joined")
	}
}

// TestSyncTokenSurvivesRestart: positions are persistent, so a token from
// before a restart gives just what happened after it.
func TestSyncTokenSurvivesRestart(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	since := doSync(t, alice, url.Values{}).NextBatch
	srv.Restart()
	sent, err := alice.SendText(bg, room.RoomID, "after restart")
	if err != nil {
		t.Fatal(err)
	}
	r := doSync(t, alice, url.Values{"since": {since}, "timeout": {"5000"}})
	evs := r.Rooms.Join[room.RoomID.String()].Timeline.Events
	if len(evs) != 1 || fields(t, evs[0]).EventID != sent.EventID.String() {
		t.Fatalf("after restart: %d events, want exactly the new message", len(evs))
	}
}

func TestSyncBadParams(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	for _, q := range []string{"since=garbage", "timeout=-1", "timeout=x", "full_state=maybe", "set_presence=busy", "filter=999"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/_matrix/client/v3/sync?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Errcode string `json:"errcode"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Errcode != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s, want 400 M_INVALID_PARAM", q, resp.StatusCode, e.Errcode)
		}
	}
}

// TestSyncShutdownEndsLongPolls: stopping the server answers waiting
// long-polls at once instead of waiting out their timeouts.
func TestSyncShutdownEndsLongPolls(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	since := doSync(t, alice, url.Values{}).NextBatch
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/_matrix/client/v3/sync?timeout=60000&since="+since, nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	srv.Stop()
	<-done
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown with a waiting long-poll took %s", d)
	}
}
