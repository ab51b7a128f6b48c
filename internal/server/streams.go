package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
)

// streamKind is the cluster bus's message that a transaction took
// positions of one of the streams other than events (account data,
// receipts, presence, to-device, the key store's device lists); its key
// is "STREAM POS". It is sent inside the transaction, so it arrives only
// if the transaction commits, and the receiving process reads what
// changed up to POS and wakes its own syncs (docs/scaling.md).
const streamKind = "stream"

// keysStream is the key store's name on the bus: every key store
// transaction, which may have changed cached key counts, with the last
// device list position it took (0: none).
const keysStream = "keys"

// streamsCluster shares the streams other than events with the other
// processes of the deployment: each announces the positions it takes and
// follows theirs.
func (s *Server) streamsCluster(ctx context.Context) error {
	if s.cluster == nil {
		return nil
	}
	announce := func(ctx context.Context, tx *database.Tx, stream string, pos int64) error {
		return s.bus.PublishTx(ctx, tx, streamKind, stream+" "+strconv.FormatInt(pos, 10))
	}
	s.Users.SetStreamAnnouncer(announce)
	s.Keys.SetAnnouncer(func(ctx context.Context, tx *database.Tx, pos int64) error {
		return announce(ctx, tx, keysStream, pos)
	})
	s.Sync.ToDevice().SetAnnouncer(func(ctx context.Context, tx *database.Tx, pos int64) error {
		return announce(ctx, tx, toDeviceStream, pos)
	})
	s.bus.Handle(streamKind, s.streamMovedElsewhere)
	if err := s.Sync.Typing().SetCluster(ctx, s.db, syncapi.TypingCluster{
		Owns: s.cluster.Owns,
		Delegate: func(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
			return s.cluster.Call(ctx, s.cluster.Owner(roomID), typingOp,
				typingCall{RoomID: roomID, UserID: userID, Typing: typing, TimeoutMS: timeout.Milliseconds()})
		},
		Announce: func(ctx context.Context, tx *database.Tx, pos int64) error {
			return announce(ctx, tx, typingStream, pos)
		},
	}); err != nil {
		return err
	}
	s.Sync.Presence().SetCluster(syncapi.PresenceCluster{
		Owns: s.cluster.Owns,
		Delegate: func(ctx context.Context, call syncapi.PresenceCall) error {
			return s.cluster.Call(ctx, s.cluster.Owner(call.UserID), presenceOp, call)
		},
	})
	return nil
}

// typingOp is the internal call that runs a typing change on the room's
// owner, which keeps the room's typing users (syncapi.TypingCluster).
const typingOp = "typing"

type typingCall struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Typing    bool   `json:"typing"`
	TimeoutMS int64  `json:"timeout_ms"`
}

// presenceOp is the internal call that runs a change of a user's presence
// on the user's owner (syncapi.PresenceCluster).
const presenceOp = "presence"

// registerStreamsInternal serves the typing and presence changes other
// instances delegate to this one.
func (s *Server) registerStreamsInternal(r *mux.Router) {
	r.Methods(http.MethodPost).Path(cluster.InternalPrefix + presenceOp).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cluster.FromInstance(r) {
			httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Internal endpoint").Body())
			return
		}
		var c syncapi.PresenceCall
		if err := httpx.DecodeJSON(r, &c, false); err != nil {
			httpx.WriteJSON(w, http.StatusBadRequest, mxerr.BadJSON("%v", err).Body())
			return
		}
		if err := s.Sync.Presence().RunDelegated(r.Context(), c); err != nil {
			if e, ok := mxerr.As(err); ok {
				httpx.WriteJSON(w, e.Status, e.Body())
				return
			}
			s.log.WithError(err).WithField("user_id", c.UserID).Warn("running a presence change for another instance")
			httpx.WriteJSON(w, http.StatusInternalServerError, mxerr.Unknown(http.StatusInternalServerError, "%v", err).Body())
			return
		}
		httpx.WriteJSON(w, http.StatusOK, struct{}{})
	})
	r.Methods(http.MethodPost).Path(cluster.InternalPrefix + typingOp).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cluster.FromInstance(r) {
			httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Internal endpoint").Body())
			return
		}
		var c typingCall
		if err := httpx.DecodeJSON(r, &c, false); err != nil {
			httpx.WriteJSON(w, http.StatusBadRequest, mxerr.BadJSON("%v", err).Body())
			return
		}
		// The instance that got the request checked that the user may
		// type in the room.
		s.Sync.Typing().Set(c.RoomID, c.UserID, c.Typing, time.Duration(c.TimeoutMS)*time.Millisecond)
		httpx.WriteJSON(w, http.StatusOK, struct{}{})
	})
}

// The streams of the sync domain on the bus.
const (
	toDeviceStream = "to_device"
	typingStream   = "typing"
)

// streamMovedElsewhere applies another process's stream message (key
// "STREAM POS"), or, with key "" (the listening connection was lost,
// messages may be missing), every stream up to its committed position. It
// runs on the bus's goroutine, one message after the other.
func (s *Server) streamMovedElsewhere(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if key == "" {
		for _, stream := range users.Streams {
			s.applyStream(ctx, stream, 0)
		}
		s.applyStream(ctx, keysStream, -1)
		s.applyStream(ctx, toDeviceStream, 0)
		s.applyStream(ctx, typingStream, 0)
		return
	}
	stream, p, _ := strings.Cut(key, " ")
	pos, err := strconv.ParseInt(p, 10, 64)
	if err != nil || pos < 0 {
		s.log.WithField("key", key).Warn("ignoring a malformed stream message from another process")
		return
	}
	s.applyStream(ctx, stream, pos)
}

func (s *Server) applyStream(ctx context.Context, stream string, pos int64) {
	var err error
	switch stream {
	case keysStream:
		err = s.Keys.ChangedElsewhere(ctx, pos)
	case toDeviceStream:
		err = s.Sync.ToDevice().MovedElsewhere(ctx, pos)
	case typingStream:
		err = s.Sync.Typing().MovedElsewhere(ctx, pos)
	default:
		err = s.Users.StreamMovedElsewhere(ctx, stream, pos)
	}
	if err != nil {
		// The next message, or the next reconnection, covers this one's
		// range too; until then these syncs are not woken.
		s.log.WithError(err).WithField("stream", stream).Error("applying another process's stream positions")
	}
}
