package federation

import (
	"context"
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/users"
)

// EDUHandlers take the ephemeral events of incoming transactions; the
// server wires them to the domains.
type EDUHandlers struct {
	// Typing starts or ends a remote user's typing in a room.
	Typing func(ctx context.Context, roomID, userID string, typing bool)
	// Receipt stores a remote user's public read receipt.
	Receipt func(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error
	// Presence stores a remote user's presence.
	Presence func(ctx context.Context, st users.PresenceState) error
	// DeviceListUpdate, SigningKeyUpdate and DirectToDevice take the
	// end-to-end encryption EDUs (e2ee.go).
	DeviceListUpdate func(ctx context.Context, u gomatrixserverlib.DeviceListUpdateEvent) error
	SigningKeyUpdate func(ctx context.Context, u keys.SigningKeyUpdate) error
	DirectToDevice   func(ctx context.Context, origin spec.ServerName, m gomatrixserverlib.ToDeviceMessage) error
}

// SetEDUHandlers sets what incoming EDUs are given to.
func (a *API) SetEDUHandlers(h EDUHandlers) {
	a.edus = func(ctx context.Context, origin spec.ServerName, raw json.RawMessage) {
		a.receiveEDU(ctx, h, origin, raw)
	}
}

// receiveEDU handles one EDU. Each may speak only for users of its
// origin; anything else in it is ignored, as are EDU types we do not
// handle. EDUs get no answer, so errors are only logged.
// https://spec.matrix.org/v1.19/server-server-api/#edus
func (a *API) receiveEDU(ctx context.Context, h EDUHandlers, origin spec.ServerName, raw json.RawMessage) {
	var edu struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &edu) != nil {
		return
	}
	fromOrigin := func(userID string) bool {
		u, err := spec.NewUserID(userID, true)
		return err == nil && u.Domain() == origin
	}
	switch edu.Type {
	case spec.MDeviceListUpdate, mSigningKeyUpdate, spec.MDirectToDevice:
		a.receiveE2EEEDU(ctx, h, origin, edu.Type, edu.Content, fromOrigin)
	case spec.MTyping:
		// https://spec.matrix.org/v1.19/server-server-api/#typing-notifications
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || !fromOrigin(c.UserID) || h.Typing == nil {
			return
		}
		if m, err := a.rooms.Membership(ctx, c.RoomID, c.UserID); err != nil || m != spec.Join {
			return
		}
		if a.rooms.CheckServerACL(ctx, c.RoomID, origin) != nil {
			return
		}
		h.Typing(ctx, c.RoomID, c.UserID, c.Typing)
	case spec.MPresence:
		// https://spec.matrix.org/v1.19/server-server-api/#presence
		var c struct {
			Push []struct {
				UserID          string `json:"user_id"`
				Presence        string `json:"presence"`
				StatusMsg       string `json:"status_msg"`
				LastActiveAgo   int64  `json:"last_active_ago"`
				CurrentlyActive bool   `json:"currently_active"`
			} `json:"push"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || h.Presence == nil {
			return
		}
		now := time.Now().UnixMilli()
		for _, u := range c.Push {
			// Only users we share a room with: presence of others is
			// nobody's business here.
			if !fromOrigin(u.UserID) {
				continue
			}
			if rooms, err := a.rooms.JoinedRooms(ctx, u.UserID); err != nil || len(rooms) == 0 {
				continue
			}
			st := users.PresenceState{UserID: u.UserID, Presence: u.Presence, StatusMsg: u.StatusMsg, CurrentlyActive: u.CurrentlyActive}
			if u.LastActiveAgo > 0 {
				st.LastActiveTS = now - u.LastActiveAgo
			}
			if err := h.Presence(ctx, st); err != nil {
				a.log.WithError(err).WithField("user_id", u.UserID).Debug("ignored a remote presence")
			}
		}
	case spec.MReceipt:
		// https://spec.matrix.org/v1.19/server-server-api/#receipts
		var c map[string]map[string]map[string]struct {
			EventIDs []string `json:"event_ids"`
			Data     struct {
				TS       int64  `json:"ts"`
				ThreadID string `json:"thread_id"`
			} `json:"data"`
		}
		if json.Unmarshal(edu.Content, &c) != nil || h.Receipt == nil {
			return
		}
		for roomID, byType := range c {
			if a.rooms.CheckServerACL(ctx, roomID, origin) != nil {
				continue
			}
			for userID, r := range byType["m.read"] {
				if !fromOrigin(userID) || len(r.EventIDs) == 0 {
					continue
				}
				if err := h.Receipt(ctx, roomID, userID, r.EventIDs[0], r.Data.ThreadID, r.Data.TS); err != nil {
					a.log.WithError(err).WithField("room_id", roomID).Debug("ignored a remote receipt")
				}
			}
		}
	}
}
