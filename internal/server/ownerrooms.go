package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// ownerRooms is the room server as the domains that write events of their
// own accord see it in a cluster (delayed events sent by an action or a
// delegated call leave, incoming webhooks and the webhooks bot, server
// notices): a send, join or invite in a room another instance owns runs
// on that instance, whose sequencer holds the room, as an internal call.
// Reads and the rest are this process's.
type ownerRooms struct {
	*roomserver.Service
	m *cluster.Map
}

// The internal calls ownerRooms makes.
const (
	opSend   = "send"
	opJoin   = "join"
	opInvite = "invite"
)

// sendCall is the body of opSend.
type sendCall struct {
	RoomID    string             `json:"room_id"`
	Sender    string             `json:"sender"`
	Type      string             `json:"type"`
	StateKey  *string            `json:"state_key,omitempty"`
	Content   json.RawMessage    `json:"content"`
	Txn       *roomserver.TxnKey `json:"txn,omitempty"`
	Timestamp int64              `json:"ts,omitempty"` // ms; 0: now
}

// memberCall is the body of opJoin and opInvite.
type memberCall struct {
	RoomID   string         `json:"room_id"`
	UserID   string         `json:"user_id"` // who joins; who invites
	Target   string         `json:"target,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	IsDirect bool           `json:"is_direct,omitempty"`
	Content  map[string]any `json:"content,omitempty"`
}

// roomsFor is the room server for those domains (ownerRooms; in one
// process, the room server itself).
func (s *Server) roomsFor() ownerRooms { return ownerRooms{s.Rooms, s.cluster} }

// elsewhere reports whether roomID is another instance's.
func (r ownerRooms) elsewhere(roomID string) bool { return r.m != nil && !r.m.Owns(roomID) }

func (r ownerRooms) Send(ctx context.Context, req roomserver.SendRequest) (*roomserver.Event, error) {
	if !r.elsewhere(req.RoomID) {
		return r.Service.Send(ctx, req)
	}
	c := sendCall{RoomID: req.RoomID, Sender: req.Sender, Type: req.Type, StateKey: req.StateKey,
		Content: req.Content, Txn: req.Txn}
	if !req.Timestamp.IsZero() {
		c.Timestamp = req.Timestamp.UnixMilli()
	}
	var out struct {
		EventID string `json:"event_id"`
	}
	if err := r.m.CallJSON(ctx, r.m.Owner(req.RoomID), opSend, c, &out); err != nil {
		return nil, err
	}
	// Committed by the owner before it answered: in the shared database.
	return r.Service.Event(ctx, req.RoomID, req.Sender, out.EventID)
}

func (r ownerRooms) Join(ctx context.Context, userID, roomIDOrAlias string, content map[string]any) (string, error) {
	if !strings.HasPrefix(roomIDOrAlias, "!") || !r.elsewhere(roomIDOrAlias) {
		return r.Service.Join(ctx, userID, roomIDOrAlias, content)
	}
	var out struct {
		RoomID string `json:"room_id"`
	}
	err := r.m.CallJSON(ctx, r.m.Owner(roomIDOrAlias), opJoin,
		memberCall{RoomID: roomIDOrAlias, UserID: userID, Content: content}, &out)
	return out.RoomID, err
}

func (r ownerRooms) Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error {
	if !r.elsewhere(roomID) {
		return r.Service.Invite(ctx, sender, roomID, target, reason, isDirect)
	}
	return r.m.Call(ctx, r.m.Owner(roomID), opInvite,
		memberCall{RoomID: roomID, UserID: sender, Target: target, Reason: reason, IsDirect: isDirect})
}

// registerOwnerCalls serves ownerRooms' calls from the other instances.
func (s *Server) registerOwnerCalls(r *mux.Router) {
	serveCall(s, r, opSend, func(ctx context.Context, c *sendCall) (any, error) {
		req := roomserver.SendRequest{RoomID: c.RoomID, Sender: c.Sender, Type: c.Type, StateKey: c.StateKey,
			Content: c.Content, Txn: c.Txn}
		if c.Timestamp != 0 {
			req.Timestamp = time.UnixMilli(c.Timestamp)
		}
		ev, err := s.Rooms.Send(ctx, req)
		if err != nil {
			return nil, err
		}
		return map[string]string{"event_id": ev.EventID()}, nil
	})
	serveCall(s, r, opJoin, func(ctx context.Context, c *memberCall) (any, error) {
		roomID, err := s.Rooms.Join(ctx, c.UserID, c.RoomID, c.Content)
		return map[string]string{"room_id": roomID}, err
	})
	serveCall(s, r, opInvite, func(ctx context.Context, c *memberCall) (any, error) {
		return struct{}{}, s.Rooms.Invite(ctx, c.UserID, c.RoomID, c.Target, c.Reason, c.IsDirect)
	})
}

// serveCall serves the internal call op, whose JSON body is a T, with run;
// a Matrix error (403, 404, ...) goes back as it is, for the caller to
// return as its own.
func serveCall[T any](s *Server, r *mux.Router, op string, run func(ctx context.Context, req *T) (any, error)) {
	r.Methods(http.MethodPost).Path(cluster.InternalPrefix + op).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cluster.FromInstance(r) {
			httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Internal endpoint").Body())
			return
		}
		req := new(T)
		if err := httpx.DecodeJSON(r, req, false); err != nil {
			httpx.WriteJSON(w, http.StatusBadRequest, mxerr.BadJSON("%v", err).Body())
			return
		}
		out, err := run(r.Context(), req)
		if err != nil {
			httpx.WriteError(w, r, s.log.WithField("op", op), err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, out)
	})
}
