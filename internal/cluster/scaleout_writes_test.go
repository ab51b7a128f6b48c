package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// A room is created by the process that receives /createRoom, which picks
// an ID it owns, in every room version (from version 12 the ID is the
// create event's hash).
func TestScaleOutCreateRoom(t *testing.T) {
	c := startScaleOut(t) // one room per instance, default version
	for _, version := range []id.RoomVersion{"10", "12"} {
		for _, via := range c.names {
			for range 3 {
				c.createRoom(t, via, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: version})
			}
		}
	}
}

// The writes that do not name a room ID in the client's request, or that
// come through the admin API, run on the room's owner too: with the owner
// down they get 502 through the other processes, and work once it is
// back.
func TestScaleOutWritesGoToOwner(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	if err := c.srv["a"].Server().Users.SetAdmin(ctx, c.alice.UserID.String(), true); err != nil {
		t.Fatal(err)
	}
	roomID := c.rooms["b"]
	alias := id.RoomAlias(fmt.Sprintf("#owned-by-b:%s", c.srv["b"].ServerName()))
	if _, err := as(c.srv["b"], c.alice).CreateAlias(ctx, alias, roomID); err != nil {
		t.Fatal(err)
	}
	carol := c.srv["a"].Register("carol", "password-carol")
	dave := c.srv["a"].Register("dave", "password-dave")
	post := func(cl *mautrix.Client, path mautrix.PrefixableURLPath, body any) error {
		_, err := cl.MakeRequest(ctx, http.MethodPost, cl.BuildURL(path), body, nil)
		return err
	}
	writes := []struct {
		name string
		do   func(via string) error
	}{
		{"join by alias", func(via string) error {
			_, err := as(c.srv[via], c.bob).JoinRoom(ctx, alias.String(), nil)
			return err
		}},
		{"admin join by alias", func(via string) error {
			return post(as(c.srv[via], c.alice), mautrix.SynapseAdminURLPath{"v1", "join", alias.String()},
				map[string]string{"user_id": carol.UserID.String()})
		}},
		{"admin make_room_admin", func(via string) error {
			return post(as(c.srv[via], c.alice), mautrix.SynapseAdminURLPath{"v1", "rooms", roomID, "make_room_admin"},
				map[string]string{"user_id": carol.UserID.String()})
		}},
		{"knock by alias", func(via string) error {
			// The room is public: a knock is refused by the owner (403),
			// which it reaches only when the owner is up.
			err := post(as(c.srv[via], dave), mautrix.ClientURLPath{"v3", "knock", alias.String()}, struct{}{})
			if err != nil && !isBadGateway(err) {
				return nil
			}
			return err
		}},
		{"upgrade", func(via string) error {
			var resp struct {
				ReplacementRoom id.RoomID `json:"replacement_room"`
			}
			cl := as(c.srv[via], c.alice)
			if _, err := cl.MakeRequest(ctx, http.MethodPost, cl.BuildClientURL("v3", "rooms", roomID, "upgrade"),
				map[string]string{"new_version": "12"}, &resp); err != nil {
				return err
			}
			// Created by b, the old room's owner: b owns the new one.
			if o := c.m.Owner(resp.ReplacementRoom.String()); o != "b" {
				return fmt.Errorf("replacement room %s is owned by %s", resp.ReplacementRoom, o)
			}
			return nil
		}},
	}
	c.srv["b"].Stop()
	for _, w := range writes {
		for _, via := range []string{"a", "c"} {
			if err := w.do(via); !isBadGateway(err) {
				t.Errorf("%s through %s while b, the room's owner, is down: %v, want 502 M_UNKNOWN", w.name, via, err)
			}
		}
	}
	c.srv["b"].Restart()
	for _, w := range writes {
		if err := w.do("c"); err != nil {
			t.Errorf("%s through c once b is back: %v", w.name, err)
		}
	}
}

// A profile change through one process updates the member events of rooms
// other processes own through their owners, so that it does not fork them
// while their owners write: every room ends with one forward extremity.
func TestScaleOutProfileChange(t *testing.T) {
	c := startScaleOut(t)
	ctx := context.Background()
	c.joinAll(t, c.bob)
	var wg sync.WaitGroup
	errs := make(chan error, len(c.rooms)+3)
	for owner, roomID := range c.rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if _, err := as(c.srv[owner], c.alice).SendText(ctx, roomID, fmt.Sprintf("%d", i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 3 {
		if err := as(c.srv["a"], c.bob).SetDisplayName(ctx, fmt.Sprintf("Bob %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for owner, roomID := range c.rooms {
		var member event.MemberEventContent
		if err := as(c.srv["c"], c.alice).StateEvent(ctx, roomID, event.StateMember, c.bob.UserID.String(), &member); err != nil {
			t.Fatal(err)
		}
		if member.Displayname != "Bob 2" {
			t.Errorf("room owned by %s: bob's member event has name %q, want %q", owner, member.Displayname, "Bob 2")
		}
		// One more event merges any fork: look before it.
		ext, err := c.srv["c"].Server().Rooms.ForwardExtremities(ctx, roomID.String())
		if err != nil {
			t.Fatal(err)
		}
		if len(ext) != 1 {
			t.Errorf("room owned by %s: %d forward extremities, want 1", owner, len(ext))
		}
	}
}
