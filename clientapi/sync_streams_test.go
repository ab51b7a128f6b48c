package clientapi_test

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// syncAll is a /sync response decoded loosely, for the stream sections.
type syncAll struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []struct {
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		} `json:"events"`
	} `json:"account_data"`
	Rooms struct {
		Join map[string]struct {
			AccountData struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
			} `json:"account_data"`
			Ephemeral struct {
				Events []struct {
					Type    string                                       `json:"type"`
					Content map[string]map[string]map[string]interface{} `json:"content"`
				} `json:"events"`
			} `json:"ephemeral"`
		} `json:"join"`
	} `json:"rooms"`
}

func syncRaw(t *testing.T, c *mautrix.Client, params url.Values) syncAll {
	t.Helper()
	var out syncAll
	_, err := c.MakeRequest(context.Background(), "GET", c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, queryMap(params)), nil, &out)
	if err != nil {
		t.Fatalf("/sync: %v", err)
	}
	return out
}

func queryMap(v url.Values) map[string]string {
	m := map[string]string{}
	for k := range v {
		m[k] = v.Get(k)
	}
	return m
}

func TestSyncAccountDataAndTags(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(bg, "com.example.settings", map[string]any{"theme": "dark"}); err != nil {
		t.Fatal(err)
	}
	initial := syncRaw(t, alice, url.Values{})
	found := false
	for _, ev := range initial.AccountData.Events {
		if ev.Type == "com.example.settings" && string(ev.Content) == `{"theme":"dark"}` {
			found = true
		}
	}
	if !found {
		t.Fatalf("initial sync lacks the account data: %+v", initial.AccountData)
	}

	// A tag set while a long-poll waits wakes it, as room account data.
	// Other news (alice's own presence, say) may wake it first, so poll on
	// until the tag arrives.
	type result struct {
		r   syncAll
		tag bool
	}
	done := make(chan result, 1)
	go func() {
		since := initial.NextBatch
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			r := syncRaw(t, alice, url.Values{"since": {since}, "timeout": {"5000"}})
			if len(r.Rooms.Join[room.RoomID.String()].AccountData.Events) > 0 {
				done <- result{r, true}
				return
			}
			since = r.NextBatch
		}
		done <- result{}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := alice.AddTag(bg, room.RoomID, "m.favourite", 0.5); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if !res.tag {
		t.Fatal("the tag never reached sync")
	}
	r := res.r
	jr := r.Rooms.Join[room.RoomID.String()]
	if len(jr.AccountData.Events) != 1 || jr.AccountData.Events[0].Type != "m.tag" {
		t.Fatalf("room account data after tagging: %+v", jr.AccountData)
	}
	var tags struct {
		Tags map[string]struct {
			Order float64 `json:"order"`
		} `json:"tags"`
	}
	json.Unmarshal(jr.AccountData.Events[0].Content, &tags)
	if tags.Tags["m.favourite"].Order != 0.5 {
		t.Fatalf("m.tag content: %s", jr.AccountData.Events[0].Content)
	}
	// Nothing new: the next sync has no account data.
	again := syncRaw(t, alice, url.Values{"since": {r.NextBatch}, "timeout": {"0"}})
	if len(again.AccountData.Events) != 0 || len(again.Rooms.Join[room.RoomID.String()].AccountData.Events) != 0 {
		t.Fatalf("account data delivered twice: %+v", again)
	}
}

func TestSyncReceipts(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	srv := testserver.Start(t)
	alice := srv.Register("alice", "correct horse")
	bob := srv.Register("bob", "correct horse")
	room, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(bg, room.RoomID.String(), nil); err != nil {
		t.Fatal(err)
	}
	msg, err := alice.SendText(bg, room.RoomID, "read me")
	if err != nil {
		t.Fatal(err)
	}
	since := syncRaw(t, alice, url.Values{}).NextBatch
	done := make(chan syncAll, 1)
	go func() { done <- syncRaw(t, alice, url.Values{"since": {since}, "timeout": {"20000"}}) }()
	time.Sleep(200 * time.Millisecond)
	if err := bob.SendReceipt(bg, room.RoomID, msg.EventID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	// A private receipt is never shown to others.
	if err := bob.SendReceipt(bg, room.RoomID, msg.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
		t.Fatal(err)
	}
	r := <-done
	eph := r.Rooms.Join[room.RoomID.String()].Ephemeral.Events
	if len(eph) != 1 || eph[0].Type != "m.receipt" {
		t.Fatalf("ephemeral: %+v", eph)
	}
	if _, ok := eph[0].Content[msg.EventID.String()]["m.read"][bob.UserID.String()]; !ok {
		t.Fatalf("bob's m.read receipt missing: %+v", eph[0].Content)
	}
	later := syncRaw(t, alice, url.Values{})
	for _, ev := range later.Rooms.Join[room.RoomID.String()].Ephemeral.Events {
		if _, ok := ev.Content[msg.EventID.String()]["m.read.private"]; ok {
			t.Fatal("another user's private receipt was shown")
		}
	}
}
