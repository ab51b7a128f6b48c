package roomserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// SendRequest is an event a client sends to a room.
type SendRequest struct {
	RoomID   string
	Sender   string
	Type     string
	StateKey *string // nil for a message event
	Content  json.RawMessage
	Txn      *TxnKey
	// Timestamp, if set, is the event's origin_server_ts instead of now:
	// application services' timestamp massaging. It does not change the
	// event's place in the DAG.
	// https://spec.matrix.org/v1.19/application-service-api/#timestamp-massaging
	Timestamp time.Time
}

// existingEvent ends a request that needs no new event, such as a state
// event identical to the current one.
type existingEvent struct{ ev *Event }

func (existingEvent) Error() string { return "event already current" }

// Send sends a message or state event. A state event identical to the
// sender's current one is not sent again: its event ID is returned, as in
// Synapse.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid
func (s *Service) Send(ctx context.Context, req SendRequest) (*Event, error) {
	if req.Type == "" {
		return nil, mxerr.InvalidParam("Event type must not be empty")
	}
	if req.Type == spec.MRoomRedaction {
		return nil, mxerr.InvalidParam("Use /redact to redact events")
	}
	if _, err := s.RoomVersion(ctx, req.RoomID); err != nil {
		return nil, err
	}
	check := func(ctx context.Context, rs *roomState) error {
		return s.checkRelation(ctx, rs, req.RoomID, req.Sender, req.Type, req.Content)
	}
	if req.StateKey != nil {
		check = func(ctx context.Context, rs *roomState) error {
			if err := s.checkRelation(ctx, rs, req.RoomID, req.Sender, req.Type, req.Content); err != nil {
				return err
			}
			if cur := rs.get(req.Type, *req.StateKey); cur != nil && string(cur.SenderID()) == req.Sender &&
				jsonEqual(cur.Content(), req.Content) && rs.membership(req.Sender) == "join" {
				return existingEvent{cur}
			}
			if req.Type == "m.room.canonical_alias" && *req.StateKey == "" {
				return s.checkCanonicalAlias(ctx, req.RoomID, req.Content)
			}
			return nil
		}
	}
	ev, err := s.submit(ctx, req.RoomID, EventRequest{
		Sender: req.Sender, Type: req.Type, StateKey: req.StateKey, Content: req.Content, Txn: req.Txn,
		ts: req.Timestamp,
	}, check)
	var ex existingEvent
	if errors.As(err, &ex) {
		return ex.ev, nil
	}
	return ev, err
}

// jsonEqual compares two JSON values by their canonical form.
func jsonEqual(a, b []byte) bool {
	ca, err1 := gomatrixserverlib.CanonicalJSON(a)
	cb, err2 := gomatrixserverlib.CanonicalJSON(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}

// checkCanonicalAlias enforces that the aliases a room advertises point to
// it: 400 M_BAD_ALIAS otherwise.
// https://spec.matrix.org/v1.19/client-server-api/#mroomcanonical_alias
func (s *Service) checkCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      string   `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return mxerr.BadJSON("Invalid m.room.canonical_alias content")
	}
	aliases := c.AltAliases
	if c.Alias != "" {
		aliases = append(aliases, c.Alias)
	}
	for _, a := range aliases {
		if err := validateAlias(a); err != nil {
			// Bad syntax is M_INVALID_PARAM; M_BAD_ALIAS is for aliases
			// that do not point to the room (room_state.yaml, 400).
			return mxerr.InvalidParam("Invalid alias %q in m.room.canonical_alias", a)
		}
		if !s.isLocal(a) {
			continue // remote aliases cannot be checked without federation
		}
		id, err := s.storedAlias(ctx, a)
		if err != nil {
			return err
		}
		if id != roomID {
			return &mxerr.Error{Status: 400, Code: "M_BAD_ALIAS", Message: "Alias " + a + " does not point to this room"}
		}
	}
	return nil
}

// Redact sends a redaction of eventID.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid
func (s *Service) Redact(ctx context.Context, roomID, sender, eventID, reason string, txn *TxnKey) (*Event, error) {
	version, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	req := EventRequest{Sender: sender, Type: spec.MRoomRedaction, Txn: txn}
	if n, err := roomVersionNumber(version); err == nil && n < 11 {
		req.Redacts = eventID
	} else {
		// From room version 11, redacts lives in content.
		content["redacts"] = eventID
	}
	req.Content, _ = json.Marshal(content)
	return s.submit(ctx, roomID, req, nil)
}

// roomVersionNumber is the number of a stable room version ("11" -> 11).
func roomVersionNumber(v gomatrixserverlib.RoomVersion) (int, error) {
	return strconv.Atoi(string(v))
}
