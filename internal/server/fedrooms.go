package server

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/federation"
	"github.com/tessera-hs/tessera/federation/queue"
	"github.com/tessera-hs/tessera/roomserver"
)

// startFederationRooms connects the room server to other servers: every
// event that must go out is queued for the other servers of its room, and
// joins of rooms elsewhere go through the federation edge.
func (s *Server) startFederationRooms(ctx context.Context, api *federation.API, client fclient.FederationClient, keyRing *gomatrixserverlib.KeyRing) error {
	q, err := queue.New(ctx, s.db, queue.Config{Origin: spec.ServerName(s.cfg.ServerName)},
		func(ctx context.Context, t gomatrixserverlib.Transaction) error {
			_, err := client.SendTransaction(ctx, t)
			return err
		}, s.log)
	if err != nil {
		return err
	}
	s.fedQueue = q
	api.SetWake(q.Wake)
	api.SetKeyRing(keyRing)
	s.api.SetRemoteJoiner(api)
	s.api.SetRemoteQueries(api)
	s.Rooms.SetRemoteInviter(api)
	s.api.SetEDUSender(eduSender{s: s, q: q})
	api.SetEDUHandlers(federation.EDUHandlers{
		Typing: func(_ context.Context, roomID, userID string, typing bool) {
			// m.typing EDUs carry no timeout: a remote user types until
			// told otherwise or for a minute, as in Synapse.
			s.Sync.Typing().Set(roomID, userID, typing, remoteTypingTimeout)
		},
		Receipt: func(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error {
			return s.Users.ReceiveRemoteReceipt(ctx, s.Rooms, roomID, userID, eventID, threadID, ts)
		},
	})

	// Events are handed over after they commit, in commit order. The
	// channel applies back-pressure rather than dropping: an event that
	// never reaches the queue is never sent.
	out := make(chan []*roomserver.Event, 256)
	s.fedOut, s.fedDone = out, make(chan struct{})
	s.Rooms.Subscribe(func(evs []*roomserver.Event) { out <- evs })
	go func() {
		defer close(s.fedDone)
		for evs := range out {
			for _, ev := range evs {
				s.sendOut(q, ev)
			}
		}
	}()
	return nil
}

const remoteTypingTimeout = time.Minute

// otherServers lists the servers with a member in the room, but us.
func (s *Server) otherServers(ctx context.Context, roomID string) []spec.ServerName {
	servers, err := s.Rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		s.log.WithError(err).WithField("room_id", roomID).Error("federation: finding the servers of a room")
		return nil
	}
	me := spec.ServerName(s.cfg.ServerName)
	return slices.DeleteFunc(servers, func(d spec.ServerName) bool { return d == me })
}

// eduSender queues typing and receipt EDUs for a room's other servers.
type eduSender struct {
	s *Server
	q *queue.Queue
}

func (e eduSender) send(ctx context.Context, roomID, typ string, content any) {
	servers := e.s.otherServers(ctx, roomID)
	if len(servers) == 0 {
		return
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return
	}
	if err := e.q.SendEDU(ctx, servers, gomatrixserverlib.EDU{Type: typ, Origin: e.s.cfg.ServerName, Content: raw}); err != nil {
		e.s.log.WithError(err).WithField("room_id", roomID).Error("federation: queueing an EDU")
	}
}

func (e eduSender) Typing(ctx context.Context, roomID, userID string, typing bool, _ time.Duration) {
	e.send(ctx, roomID, spec.MTyping, map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
}

func (e eduSender) Receipt(ctx context.Context, roomID, userID, eventID, threadID string) {
	data := map[string]any{"ts": time.Now().UnixMilli()}
	if threadID != "" {
		data["thread_id"] = threadID
	}
	e.send(ctx, roomID, spec.MReceipt, map[string]any{roomID: map[string]any{"m.read": map[string]any{
		userID: map[string]any{"event_ids": []string{eventID}, "data": data},
	}}})
}

// sendOut queues an event for the servers that must receive it: our own
// events and those we accepted as the resident server go to every other
// server with a member in the room, and a membership change also to the
// server of the member it is about (a kick or ban of its last user).
func (s *Server) sendOut(q *queue.Queue, ev *roomserver.Event) {
	if ev.Origin != "" && !ev.Forward {
		return // its origin sends it to everyone itself
	}
	ctx := context.Background()
	servers, err := s.Rooms.ServersInRoom(ctx, ev.RoomID)
	if err != nil {
		s.log.WithError(err).WithField("event_id", ev.EventID()).Error("federation: finding the servers of a room")
		return
	}
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
		if u, err := spec.NewUserID(*ev.StateKey(), true); err == nil && !slices.Contains(servers, u.Domain()) {
			servers = append(servers, u.Domain())
		}
	}
	me := spec.ServerName(s.cfg.ServerName)
	servers = slices.DeleteFunc(servers, func(d spec.ServerName) bool { return d == me || d == ev.Origin })
	if len(servers) == 0 {
		return
	}
	if err := q.SendPDU(ctx, servers, ev.JSON()); err != nil {
		s.log.WithError(err).WithField("event_id", ev.EventID()).Error("federation: queueing an event")
	}
}
