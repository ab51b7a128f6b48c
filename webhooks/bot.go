package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// The bot joins rooms it is invited to, disables a room's hooks when it
// leaves (kicked, banned or left), and answers "!webhook" commands:
//
//	!webhook github        a GitHub hook: URL and secret
//	!webhook generic       a generic hook: URL and secret (token)
//	!webhook list          the room's hooks
//	!webhook remove ID     removes a hook
//
// from users with the power to send state events in the room.

// Start subscribes the bot to committed events and starts its worker.
func (s *Service) Start() {
	s.rooms.Subscribe(s.onEvents)
	s.wg.Add(1)
	go s.work()
}

// Close stops the bot's worker and the delivery writer; call it before the
// room server closes.
func (s *Service) Close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.wg.Wait()
	s.deliveries.Close()
}

// onEvents runs in the room server's commit path: it only queues what the
// bot must act on.
func (s *Service) onEvents(evs []*roomserver.Event) {
	bot := s.BotUserID()
	for _, ev := range evs {
		switch {
		case ev.Type() == spec.MRoomMember && ev.StateKey() != nil && *ev.StateKey() == bot:
		case ev.Type() == spec.MRoomEncryption && ev.StateKey() != nil && *ev.StateKey() == "":
		case ev.Type() == "m.room.message" && ev.StateKey() == nil && string(ev.SenderID()) != bot &&
			strings.Contains(string(ev.Content()), "!webhook"):
		default:
			continue
		}
		select {
		case s.events <- ev:
		default:
			s.log.WithField("room_id", ev.RoomID).Warn("webhooks: the bot's queue is full; an event was dropped")
		}
	}
}

func (s *Service) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case ev := <-s.events:
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			s.handle(ctx, ev)
			cancel()
		}
	}
}

func (s *Service) handle(ctx context.Context, ev *roomserver.Event) {
	log := s.log.WithFields(logrus.Fields{"room_id": ev.RoomID, "event_id": ev.EventID()})
	if ev.Type() == spec.MRoomMember {
		m, err := ev.Membership()
		if err != nil {
			return
		}
		switch m {
		case spec.Invite:
			// Unless it is no longer invited (joined since, say).
			if cur, err := s.rooms.Membership(ctx, ev.RoomID, s.BotUserID()); err != nil || cur != spec.Invite {
				return
			}
			if _, err := s.rooms.Join(ctx, s.BotUserID(), ev.RoomID, nil); err != nil {
				log.WithError(err).Warn("webhooks: the bot could not join a room it was invited to")
				return
			}
			if _, err := s.rooms.StateEvent(ctx, ev.RoomID, s.BotUserID(), spec.MRoomEncryption, ""); err == nil {
				s.sayEncrypted(ctx, ev.RoomID)
			}
		case spec.Leave, spec.Ban:
			// Only the hooks made before the removal: a hook made since
			// (which invited the bot back) stays.
			if err := s.disableRoom(ctx, ev.RoomID, int64(ev.OriginServerTS())); err != nil {
				log.WithError(err).Error("webhooks: disabling a room's hooks")
			}
		}
		return
	}
	if ev.Type() == spec.MRoomEncryption {
		if m, err := s.rooms.Membership(ctx, ev.RoomID, s.BotUserID()); err == nil && m == spec.Join {
			s.sayEncrypted(ctx, ev.RoomID)
		}
		return
	}
	var c struct {
		MsgType string `json:"msgtype"`
		Body    string `json:"body"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil || c.MsgType != "m.text" {
		return
	}
	fields := strings.Fields(c.Body)
	if len(fields) == 0 || fields[0] != "!webhook" {
		return
	}
	if m, err := s.rooms.Membership(ctx, ev.RoomID, s.BotUserID()); err != nil || m != spec.Join {
		return
	}
	sender := string(ev.SenderID())
	reply := s.command(ctx, ev.RoomID, sender, fields[1:])
	reply["m.mentions"] = map[string]any{"user_ids": []string{sender}}
	reply["m.relates_to"] = map[string]any{"m.in_reply_to": map[string]string{"event_id": ev.EventID()}}
	raw, _ := json.Marshal(reply)
	if _, err := s.rooms.Send(ctx, roomserver.SendRequest{RoomID: ev.RoomID, Sender: s.BotUserID(),
		Type: "m.room.message", Content: raw}); err != nil {
		log.WithError(err).Warn("webhooks: the bot could not answer a command")
	}
}

// sayEncrypted tells a room that the bot cannot read its commands: it has
// no end-to-end encryption, and failing silently would leave people
// typing commands nobody reads.
func (s *Service) sayEncrypted(ctx context.Context, roomID string) {
	m := (&msg{}).add("This room is encrypted, so I cannot read commands sent in it. ").
		add("Its hooks still post here; to add or remove them, use the webhooks API (POST or GET ").
		add("/_tessera/webhooks/v1/rooms/" + roomID + "/hooks").
		add(") or run the commands in an unencrypted room.")
	raw, _ := json.Marshal(m.content())
	if _, err := s.rooms.Send(ctx, roomserver.SendRequest{RoomID: roomID, Sender: s.BotUserID(),
		Type: "m.room.message", Content: raw}); err != nil {
		s.log.WithError(err).WithField("room_id", roomID).Warn("webhooks: the bot could not post a notice")
	}
}

const usage = "Usage: !webhook github | !webhook generic | !webhook list | !webhook remove ID"

// command runs one "!webhook" command and returns the bot's answer.
func (s *Service) command(ctx context.Context, roomID, sender string, args []string) map[string]any {
	m := &msg{}
	if len(args) == 0 || args[0] == "help" {
		return m.add(usage).content()
	}
	if err := s.checkPower(ctx, roomID, sender); err != nil {
		if e, ok := mxerr.As(err); ok && e.Code == "M_FORBIDDEN" {
			return m.add(sender + ": you need the power level to send state events in this room to manage webhooks.").content()
		}
		s.log.WithError(err).WithField("room_id", roomID).Error("webhooks: checking power for a command")
		return m.add("Something went wrong; try again later.").content()
	}
	switch {
	case (args[0] == KindGitHub || args[0] == KindGeneric) && len(args) == 1:
		h, err := s.create(ctx, sender, roomID, args[0])
		if err != nil {
			s.log.WithError(err).WithField("room_id", roomID).Error("webhooks: creating a hook")
			return m.add("Could not create the webhook; try again later.").content()
		}
		url := s.URL("", h.ID)
		if h.Kind == KindGitHub {
			m.add("Created GitHub webhook ").bold(h.ID).add(".\nPayload URL: ").link(url, url, false).
				add("\nContent type: application/json\nSecret: ").bold(h.Secret)
		} else {
			m.add("Created generic webhook ").bold(h.ID).add(".\nURL: ").link(url, url, false).
				add("\nSecret: ").bold(h.Secret).
				add("\nPOST {\"text\": \"...\", \"html\": \"...\", \"username\": \"...\"} with Authorization: Bearer <secret>.")
		}
		m.add("\nEveryone in this room can read this secret; remove the hook if that is a problem.")
		return m.content()
	case args[0] == "list" && len(args) == 1:
		hooks, err := s.list(ctx, roomID)
		if err != nil {
			s.log.WithError(err).WithField("room_id", roomID).Error("webhooks: listing hooks")
			return m.add("Could not list the webhooks; try again later.").content()
		}
		if len(hooks) == 0 {
			return m.add("This room has no webhooks.").content()
		}
		m.add(fmt.Sprintf("%d webhook(s):", len(hooks)))
		for _, h := range hooks {
			state := ""
			if h.Disabled {
				state = " (disabled)"
			}
			m.add("\n• ").bold(h.ID).add(fmt.Sprintf(" %s, created by %s%s: %s", h.Kind, h.CreatedBy, state, s.URL("", h.ID)))
		}
		return m.content()
	case args[0] == "remove" && len(args) == 2:
		h, err := s.Get(ctx, args[1])
		if err != nil || h.RoomID != roomID {
			return m.add("No webhook " + args[1] + " in this room.").content()
		}
		if err := s.remove(ctx, h); err != nil {
			s.log.WithError(err).WithField("room_id", roomID).Error("webhooks: removing a hook")
			return m.add("Could not remove the webhook; try again later.").content()
		}
		return m.add("Removed webhook ").bold(h.ID).add(".").content()
	}
	return m.add(usage).content()
}
