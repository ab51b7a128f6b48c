package server

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/federation"
	"github.com/tessera-hs/tessera/federation/queue"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/roomserver"
)

// startFederationRooms connects the room server to other servers: every
// event that must go out is queued for the other servers of its room, and
// joins of rooms elsewhere go through the federation edge.
func (s *Server) startFederationRooms(ctx context.Context, api *federation.API, client fclient.FederationClient, keyRing *gomatrixserverlib.KeyRing) error {
	qc := queue.Config{Origin: spec.ServerName(s.cfg.ServerName)}
	s.fedQueueCluster(&qc, func() *queue.Queue { return s.fedQueue })
	q, err := queue.New(ctx, s.db, qc,
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
	s.api.SetRemoteTimestamps(api)
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
		Presence:         s.Sync.Presence().SetRemote,
		DeviceListUpdate: s.Keys.ReceiveDeviceListUpdate,
		SigningKeyUpdate: s.Keys.ReceiveSigningKeyUpdate,
		DirectToDevice:   s.Sync.ToDevice().ReceiveRemote,
	})
	s.startFederationE2EE(api, q)
	s.startFederationPresence(q)

	// Each event is queued in the transaction that stores it.
	s.Rooms.SetOutbox(func(ctx context.Context, tx *database.Tx, dests []spec.ServerName, pdu []byte) error {
		return q.SendPDUTx(ctx, tx, dests, pdu)
	})
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

// startFederationE2EE connects the key store and send-to-device messaging
// to other servers: their users' keys are asked of their servers, our
// users' key changes and to-device messages go out through the queue.
func (s *Server) startFederationE2EE(api *federation.API, q *queue.Queue) {
	api.SetKeys(s.Keys)
	me := spec.ServerName(s.cfg.ServerName)
	s.Keys.SetFederation(keys.Federation{
		Client: api.KeyClient(),
		SharesRoom: func(ctx context.Context, userID string) (bool, error) {
			rooms, err := s.Rooms.JoinedRooms(ctx, userID)
			return len(rooms) > 0, err
		},
		DeviceListUpdate: func(ctx context.Context, u gomatrixserverlib.DeviceListUpdateEvent) {
			s.sendUserEDU(ctx, q, u.UserID, spec.MDeviceListUpdate, u)
		},
		SigningKeyUpdate: func(ctx context.Context, u keys.SigningKeyUpdate) {
			s.sendUserEDU(ctx, q, u.UserID, "m.signing_key_update", u)
		},
	})
	s.Rooms.Subscribe(func(evs []*roomserver.Event) { s.staleOnNewShare(evs) })
	api.SetJoinedHook(s.staleRoomMembers)
	s.Sync.ToDevice().SetRemoteSender(func(ctx context.Context, dest spec.ServerName, m gomatrixserverlib.ToDeviceMessage) error {
		raw, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return q.SendEDU(ctx, []spec.ServerName{dest}, gomatrixserverlib.EDU{Type: spec.MDirectToDevice, Origin: string(me), Content: raw})
	})
}

// sendUserEDU queues an EDU about one of our users for every other server
// that shares a room with them.
func (s *Server) sendUserEDU(ctx context.Context, q *queue.Queue, userID, typ string, content any) {
	rooms, err := s.Rooms.JoinedRooms(ctx, userID)
	if err != nil {
		s.log.WithError(err).WithField("user_id", userID).Error("federation: finding the rooms of a user")
		return
	}
	var servers []spec.ServerName
	for _, roomID := range rooms {
		for _, d := range s.otherServers(ctx, roomID) {
			if !slices.Contains(servers, d) {
				servers = append(servers, d)
			}
		}
	}
	if len(servers) == 0 {
		return
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return
	}
	if err := q.SendEDU(ctx, servers, gomatrixserverlib.EDU{Type: typ, Origin: s.cfg.ServerName, Content: raw}); err != nil {
		s.log.WithError(err).WithField("user_id", userID).Error("federation: queueing an EDU")
	}
}

// startFederationPresence sends our users' presence changes to the servers
// that share a room with them. A change is handed to one worker and
// queued from there, off the path of the request or sync that made it;
// presence is ephemeral, so a change that finds the worker's backlog full
// is dropped (the next one says the same).
func (s *Server) startFederationPresence(q *queue.Queue) {
	changes := make(chan string, 1024)
	s.Sync.Presence().SetPublishHook(func(_ context.Context, userID string) {
		s.presenceToAppServices(userID)
		select {
		case changes <- userID:
		default:
			s.log.WithField("user_id", userID).Warn("federation: presence backlog full, a change is not sent")
		}
	})
	stop := make(chan struct{})
	s.fedStop = stop
	go func() {
		for {
			var userID string
			select {
			case userID = <-changes:
			case <-stop:
				return
			}
			ctx := context.Background()
			st, err := s.Users.Presence(ctx, userID)
			if err != nil || st == nil {
				continue
			}
			push := map[string]any{"user_id": userID, "presence": st.Presence, "currently_active": st.CurrentlyActive}
			if st.LastActiveTS > 0 {
				push["last_active_ago"] = max(time.Now().UnixMilli()-st.LastActiveTS, 0)
			}
			if st.StatusMsg != "" {
				push["status_msg"] = st.StatusMsg
			}
			s.sendUserEDU(ctx, q, userID, spec.MPresence, map[string]any{"push": []any{push}})
		}
	}()
}

// staleOnNewShare marks the device lists we cache of other servers' users
// stale when we may newly share a room with them: a remote user's join,
// or our user's join (of all the room's remote members). While we shared
// no room their servers sent us no updates, so the next query must fetch
// the lists again.
func (s *Server) staleOnNewShare(evs []*roomserver.Event) {
	ctx := context.Background()
	var users []string
	for _, ev := range evs {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		if m, _ := ev.Membership(); m != spec.Join {
			continue
		}
		if target := *ev.StateKey(); !s.isLocalUser(target) {
			users = append(users, target)
			continue
		}
		s.staleRoomMembers(ctx, ev.RoomID)
	}
	if len(users) == 0 {
		return
	}
	if err := s.Keys.MarkStale(ctx, users); err != nil {
		s.log.WithError(err).Warn("device lists: marking lists stale")
	}
}

// staleRoomMembers marks the device lists of a room's remote members
// stale. Our user's join through another server calls it before the join
// is answered, so the client's first key query after it fetches them.
func (s *Server) staleRoomMembers(ctx context.Context, roomID string) {
	members, err := s.Rooms.JoinedUsers(ctx, roomID)
	if err != nil {
		s.log.WithError(err).WithField("room_id", roomID).Warn("device lists: reading the room's members")
		return
	}
	users := slices.DeleteFunc(members, s.isLocalUser)
	if err := s.Keys.MarkStale(ctx, users); err != nil {
		s.log.WithError(err).Warn("device lists: marking lists stale")
	}
}

func (s *Server) isLocalUser(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.cfg.ServerName)
}
