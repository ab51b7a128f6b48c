package server

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/delayed"
	"github.com/tessera-hs/tessera/federation/queue"
	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/push"
	"github.com/tessera-hs/tessera/roomserver"
)

// roomCluster is the room server's view of the instance map; nil for one
// process.
func roomCluster(m *cluster.Map) *roomserver.Cluster {
	if m == nil {
		return nil
	}
	return &roomserver.Cluster{
		Instance: m.Self(), Index: m.Index(), Size: m.Size(),
		Owns: m.Owns,
		Delegate: func(ctx context.Context, roomID, op, userID string) error {
			return m.Call(ctx, m.Owner(roomID), op, delegated{RoomID: roomID, UserID: userID})
		},
	}
}

// delegated is the body of a room write one process asks the room's
// owner to run (roomserver.Cluster.Delegate).
type delegated struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
}

// registerInternal serves the calls the other instances make (under
// cluster.InternalPrefix, which the forwarder lets through only with the
// instance secret).
func (s *Server) registerInternal(r *mux.Router) {
	if s.cluster == nil {
		return
	}
	s.registerStreamsInternal(r)
	ops := map[string]func(ctx context.Context, d delegated) error{
		roomserver.DelegateProfile: func(ctx context.Context, d delegated) error {
			return s.Rooms.UpdateMemberProfileIn(ctx, d.RoomID, d.UserID)
		},
		roomserver.DelegateLeave: func(ctx context.Context, d delegated) error {
			return s.Rooms.Leave(ctx, d.UserID, d.RoomID, "")
		},
	}
	s.registerOwnerCalls(r)
	if s.fedAPI != nil {
		s.registerInternalFederation(r)
	}
	for op, f := range ops {
		r.Methods(http.MethodPost).Path(cluster.InternalPrefix + op).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !cluster.FromInstance(r) {
				httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Internal endpoint").Body())
				return
			}
			var d delegated
			if err := httpx.DecodeJSON(r, &d, false); err != nil {
				httpx.WriteJSON(w, http.StatusBadRequest, mxerr.BadJSON("%v", err).Body())
				return
			}
			if err := f(r.Context(), d); err != nil {
				s.log.WithError(err).WithFields(logrus.Fields{"op": op, "room_id": d.RoomID, "user_id": d.UserID}).
					Warn("running a room write for another instance")
				httpx.WriteJSON(w, http.StatusInternalServerError, mxerr.Unknown(http.StatusInternalServerError, "%v", err).Body())
				return
			}
			httpx.WriteJSON(w, http.StatusOK, struct{}{})
		})
	}
}

// startCluster starts applying the events the other processes commit.
func (s *Server) startCluster() {
	if s.cluster == nil {
		return
	}
	dsn := s.cfg.Database.DSN
	connect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }
	s.Rooms.ListenCluster(connect)
	s.bus.Handle(tokensKind, func(userID string) {
		s.Users.TokensRevokedElsewhere()
		if userID != "" && s.api != nil {
			// Its WebSockets check their tokens again.
			s.api.TokensRevoked(userID)
		}
	})
	s.bus.Start(connect)
}

// The kinds of the cluster bus's messages (cluster.Bus).
const (
	// tokensKind is the invalidation of revoked tokens; its key the user ID.
	tokensKind = "tokens"
	// fedQueueKind says something was queued for a destination, its key,
	// that the receiving process sends to.
	fedQueueKind = "fedqueue"
	// delayedKind says a delayed event was scheduled in a room, its key,
	// that the receiving process may own.
	delayedKind = "delayed"
	// pushRulesKind is the invalidation of a user's push rules, its key.
	pushRulesKind = "push_rules"
	// pushersKind says a user's pushers changed: the user's owner runs
	// them as stored.
	pushersKind = "pushers"
	// pushReadKind says a user's read position may have moved: the
	// user's owner updates their pushers' badges.
	pushReadKind = "push_read"
)

// pushRulesCluster has the other processes drop their cached copy of a
// user's push rules when they change here (the user's owner evaluates
// their rules), and the owner run a user's pushers changed here.
func (s *Server) pushRulesCluster() {
	if s.cluster == nil {
		return
	}
	s.Push.SetRulesChangedHook(func(userID string) { s.publish(pushRulesKind, userID) })
	s.bus.Handle(pushRulesKind, s.Push.RulesChangedElsewhere)
	s.bus.Handle(pushersKind, s.Push.PushersChangedElsewhere)
	s.bus.Handle(pushReadKind, s.Push.ReadChangedElsewhere)
}

// pushCluster is push's share of the deployment: each user's
// notifications are evaluated and delivered by the user's owner (a hash
// of the user ID), woken over the bus by changes made elsewhere.
func (s *Server) pushCluster() *push.Cluster {
	if s.cluster == nil {
		return nil
	}
	return &push.Cluster{
		Owns:           s.cluster.Owns,
		PushersChanged: func(userID string) { s.publish(pushersKind, userID) },
		ReadChanged:    func(userID string) { s.publish(pushReadKind, userID) },
	}
}

// publish tells the other processes of an invalidation of kind for key,
// after it committed here.
func (s *Server) publish(kind, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.bus.Publish(ctx, kind, key); err != nil {
		// The others keep their copy until their next reconnection:
		// worth an operator's attention.
		s.log.WithError(err).WithField("kind", kind).Error("telling other processes of a change")
	}
}

// delayedConfig is the delayed events' config: in a cluster, each room's
// delayed events are sent by the room's owner, whose timer is woken by
// the process that schedules them.
func (s *Server) delayedConfig() delayed.Config {
	cfg := delayed.Config{MaxDelay: s.cfg.Rooms.MaxDelayedEventDelay.Std()}
	if s.cluster == nil {
		return cfg
	}
	cfg.Owns = s.cluster.Owns
	cfg.Elsewhere = func(ctx context.Context, tx *database.Tx, roomID string) error {
		return s.bus.PublishTx(ctx, tx, delayedKind, roomID)
	}
	s.bus.Handle(delayedKind, func(roomID string) {
		if roomID == "" || s.cluster.Owns(roomID) {
			s.delayed.Wake()
		}
	})
	return cfg
}

// fedQueueCluster is the federation queue's share of a deployment of
// several processes: it sends to the destinations this process owns (a
// hash of the server name), and tells their owners of what it queues for
// the others.
func (s *Server) fedQueueCluster(cfg *queue.Config, q func() *queue.Queue) {
	if s.cluster == nil {
		return
	}
	cfg.Owns = func(d spec.ServerName) bool { return s.cluster.Owns(string(d)) }
	cfg.Elsewhere = func(ctx context.Context, tx *database.Tx, d spec.ServerName) error {
		return s.bus.PublishTx(ctx, tx, fedQueueKind, string(d))
	}
	s.bus.Handle(fedQueueKind, func(dest string) {
		// The bus's goroutine: the kick starts a worker at most, but
		// an empty key reads the queue's destinations.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := q().Kick(ctx, spec.ServerName(dest)); err != nil {
			s.log.WithError(err).Error("looking for federation queues owned here")
		}
	})
}

// publishTokensRevoked tells the other processes that userID's tokens
// were revoked, so that their token caches forget them.
func (s *Server) publishTokensRevoked(userID string) {
	if s.bus == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.bus.Publish(ctx, tokensKind, userID); err != nil {
		// The others keep accepting the revoked tokens until their next
		// reconnection: worth an operator's attention.
		s.log.WithError(err).WithField("user_id", userID).Error("telling other processes of revoked tokens")
	}
}

// clusterHandler forwards room writes to their owners.
func (s *Server) clusterHandler(h http.Handler) http.Handler {
	if s.cluster == nil {
		return h
	}
	return s.cluster.Forward(s.log, s.resolveAlias, h)
}

// resolveAlias finds the room a join or knock by alias goes to, so that
// the room's owner runs it: a local alias from the database (or the
// application services), another server's by asking it. The owner
// resolves the alias again as it runs the request: one more directory
// query for a remote alias, which is the price of forwarding the request
// unchanged.
func (s *Server) resolveAlias(ctx context.Context, alias string) (string, error) {
	id, err := s.Rooms.ResolveAlias(ctx, alias)
	if err != nil || id != "" || s.fedAPI == nil {
		return id, err
	}
	if _, domain, ok := strings.Cut(alias, ":"); !ok || domain == s.cfg.ServerName {
		return "", nil
	}
	id, _, err = s.fedAPI.RemoteAlias(ctx, alias)
	return id, err
}

// allRooms is the room server as push sees it in a cluster: push
// evaluates every event of the deployment, whichever process committed
// it, for the users this process owns (push.Cluster).
type allRooms struct{ *roomserver.Service }

func (r allRooms) Subscribe(l roomserver.Listener) { r.SubscribeAll(l) }

// pushRooms is the room server push gets.
func (s *Server) pushRooms() push.Rooms {
	if s.cluster == nil {
		return s.Rooms
	}
	return allRooms{s.Rooms}
}
