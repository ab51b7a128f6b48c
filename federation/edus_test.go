package federation_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestTypingAndReceiptsAcrossServers: bob on B sees alice on A typing and
// stop typing, and alice sees bob's read receipt.
func TestTypingAndReceiptsAcrossServers(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	if _, err := p.alice.UserTyping(ctx, p.roomID, true, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// typing reports, from the first (initial) sync on, whether a sync
	// shows alice typing as wanted: an initial sync shows a room's typing
	// only when someone types, later ones only when it changes.
	typing := func(want bool) func(r *mautrix.RespSync) bool {
		first := true
		return func(r *mautrix.RespSync) bool {
			initial := first
			first = false
			jr, ok := r.Rooms.Join[p.roomID]
			if !ok {
				return false
			}
			for _, ev := range jr.Ephemeral.Events {
				if ev.Type != event.EphemeralEventTyping {
					continue
				}
				ids, _ := ev.Content.Raw["user_ids"].([]any)
				has := false
				for _, u := range ids {
					has = has || u == p.alice.UserID.String()
				}
				return has == want
			}
			return initial && !want
		}
	}
	syncUntil(t, p.bob, "alice typing", typing(true))
	if _, err := p.alice.UserTyping(ctx, p.roomID, false, 0); err != nil {
		t.Fatal(err)
	}
	syncUntil(t, p.bob, "alice no longer typing", typing(false))

	msg := sendText(t, p.alice, p.roomID, "read me")
	waitForMessage(t, p.bob, p.roomID, "read me")
	if err := p.bob.SendReceipt(ctx, p.roomID, msg, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	syncUntil(t, p.alice, "bob's receipt", func(r *mautrix.RespSync) bool {
		jr, ok := r.Rooms.Join[p.roomID]
		if !ok {
			return false
		}
		for _, ev := range jr.Ephemeral.Events {
			if ev.Type != event.EphemeralEventReceipt {
				continue
			}
			byEvent, _ := ev.Content.Raw[msg.String()].(map[string]any)
			reads, _ := byEvent["m.read"].(map[string]any)
			if _, ok := reads[p.bob.UserID.String()]; ok {
				return true
			}
		}
		return false
	})
}

// TestPresenceAcrossServers: bob on B sees the presence alice sets on A,
// with her status message.
func TestPresenceAcrossServers(t *testing.T) {
	p := joinedPair(t)
	ctx := context.Background()
	if err := p.alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "out to lunch"}); err != nil {
		t.Fatal(err)
	}
	syncUntil(t, p.bob, "alice's presence", func(r *mautrix.RespSync) bool {
		for _, ev := range r.Presence.Events {
			if ev.Sender == p.alice.UserID && ev.Content.Raw["presence"] == "unavailable" {
				if ev.Content.Raw["status_msg"] != "out to lunch" {
					t.Fatalf("alice's presence through B: %v", ev.Content.Raw)
				}
				return true
			}
		}
		return false
	})
	var got struct {
		Presence  string `json:"presence"`
		StatusMsg string `json:"status_msg"`
	}
	if _, err := p.bob.MakeRequest(ctx, "GET", p.bob.BuildClientURL("v3", "presence", p.alice.UserID, "status"), nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Presence != "unavailable" || got.StatusMsg != "out to lunch" {
		t.Fatalf("GET /presence of alice on B: %+v", got)
	}
}
