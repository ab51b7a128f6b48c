package roomserver

// Leaves and knocks across servers: the resident side (make_leave,
// send_leave, make_knock, send_knock) and storing the outcome of ours.
// https://spec.matrix.org/v1.19/server-server-api/#leaving-rooms-rejecting-invites
// https://spec.matrix.org/v1.19/server-server-api/#knocking-upon-a-room

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// memberTemplate builds a membership event template for another server's
// user on the room's current state: prev_events, depth and auth events
// filled in, signed by us only so it can be checked.
func (s *Service) memberTemplate(rs *roomState) func(proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	return func(proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
		proto.PrevEvents = append([]string{}, rs.extremities...)
		proto.Depth = rs.depth + 1
		b := rs.version.NewEventBuilderFromProtoEvent(proto)
		if err := b.AddAuthEvents(rs); err != nil {
			return nil, nil, err
		}
		proto.AuthEvents = b.AuthEvents
		pdu, err := b.Build(time.Now(), s.cfg.ServerName, s.cfg.KeyID, s.cfg.PrivateKey)
		if err != nil {
			return nil, nil, err
		}
		state := make([]gomatrixserverlib.PDU, 0, len(rs.state))
		for _, ev := range rs.state {
			state = append(state, ev.PDU)
		}
		return pdu, state, nil
	}
}

// residentState loads a room we are resident in, for another server's
// membership request: 404 if we are not.
func (s *Service) residentState(ctx context.Context, roomID spec.RoomID) (*roomState, error) {
	rs, err := s.loadRoomState(ctx, roomID.String())
	if err != nil {
		return nil, err
	}
	in, err := s.serverInRoom(ctx, roomID.String(), s.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	if rs == nil || !in {
		return nil, mxerr.NotFound("This server is not in room %s", roomID.String())
	}
	return rs, nil
}

// MakeLeave answers make_leave with a leave template.
func (s *Service) MakeLeave(ctx context.Context, origin spec.ServerName, roomID spec.RoomID, userID spec.UserID) (*gomatrixserverlib.HandleMakeLeaveResponse, error) {
	rs, err := s.residentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.HandleMakeLeave(gomatrixserverlib.HandleMakeLeaveInput{
		UserID: userID, SenderID: spec.SenderID(userID.String()), RoomID: roomID, RoomVersion: rs.version.Version(),
		RequestOrigin: origin, LocalServerName: s.cfg.ServerName, LocalServerInRoom: true,
		UserIDQuerier: UserIDForSender, BuildEventTemplate: s.memberTemplate(rs),
	})
}

// MakeKnock answers make_knock with a knock template.
func (s *Service) MakeKnock(ctx context.Context, origin spec.ServerName, roomID spec.RoomID, userID spec.UserID, remoteVersions []gomatrixserverlib.RoomVersion) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	if userID.Domain() != origin {
		return nil, "", mxerr.Forbidden("The knock must come from the server of the user")
	}
	rs, err := s.residentState(ctx, roomID)
	if err != nil {
		return nil, "", err
	}
	ver := rs.version.Version()
	if !slices.Contains(remoteVersions, ver) {
		return nil, "", &mxerr.Error{Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: fmt.Sprintf("The room is version %s, which your server does not support", ver), Extra: map[string]any{"room_version": ver}}
	}
	sk := userID.String()
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sk, RoomID: roomID.String(), Type: spec.MRoomMember, StateKey: &sk}
	if err := proto.SetContent(map[string]string{"membership": spec.Knock}); err != nil {
		return nil, "", err
	}
	ev, state, err := s.memberTemplate(rs)(proto)
	if err != nil {
		return nil, "", err
	}
	provider, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return nil, "", err
	}
	if err := gomatrixserverlib.Allowed(ev, provider, UserIDForSender); err != nil {
		return nil, "", mxerr.Forbidden("%s", err.Error())
	}
	return proto, ver, nil
}

// SendMembership accepts another server's signed leave or knock (send_leave
// v2, send_knock): it must be its own user's, of the kind the endpoint
// takes, signed by it; it is then stored like any remote event and sent on
// to the room's other servers.
func (s *Service) SendMembership(ctx context.Context, origin spec.ServerName, roomID spec.RoomID, eventID string, raw []byte,
	membership string, verifier gomatrixserverlib.JSONVerifier) (*Event, error) {
	ver, err := s.RoomVersion(ctx, roomID.String())
	if err != nil {
		return nil, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, InvalidEventError(err)
	}
	if ev.EventID() != eventID || ev.RoomID().String() != roomID.String() {
		return nil, mxerr.BadJSON("The event does not match the path")
	}
	if m, err := ev.Membership(); err != nil || m != membership || ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()) {
		return nil, mxerr.BadJSON("Expected a %s of the sender", membership)
	}
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil || sender.Domain() != origin {
		return nil, mxerr.Forbidden("The sender is not a user of the requesting server")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, verifier, UserIDForSender); err != nil {
		return nil, mxerr.Forbidden("Bad signature: %v", err)
	}
	stored, err := s.IngestRemote(ctx, origin, ev, true)
	if err != nil {
		if rej, ok := err.(*RejectedError); ok {
			return nil, mxerr.Forbidden("%s", rej.Reason)
		}
		return nil, err
	}
	return stored, nil
}

// KnockRoomState is the knock_room_state a knocking server's user is
// shown: full PDUs, as for invite_room_state.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1send_knockroomideventid
func (s *Service) KnockRoomState(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	rs, err := s.loadRoomState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if rs == nil {
		return []json.RawMessage{}, nil
	}
	return roomStatePDUs(rs), nil
}

// StoreOwnOutOfRoom stores the outcome of our user's leave or knock made
// through another server (send_leave, send_knock) when we hold no live
// copy of the room: the event gets a stream position and makes the
// membership, so the user's sync sees it. For a knock, stripped is the
// room state the resident server returned, kept as the event's
// unsigned.knock_room_state.
func (s *Service) StoreOwnOutOfRoom(ctx context.Context, via spec.ServerName, ev gomatrixserverlib.PDU, stripped []json.RawMessage) error {
	if len(stripped) > 0 {
		var err error
		if ev, err = ev.SetUnsigned(map[string]any{"knock_room_state": stripped}); err != nil {
			return err
		}
	}
	roomID := ev.RoomID().String()
	newRoom := string(ev.Version())
	if v, err := s.RoomVersion(ctx, roomID); err == nil {
		if v != ev.Version() {
			return mxerr.BadJSON("Room %s is version %s here", roomID, v)
		}
		newRoom = ""
	}
	if evs, err := s.events(ctx, s.db, []string{ev.EventID()}); err != nil {
		return err
	} else if evs[ev.EventID()] != nil {
		return nil
	}
	has, err := s.HasState(ctx, roomID)
	if err != nil {
		return err
	}
	pe := &pendingEvent{ev: &Event{PDU: ev, RoomID: roomID, Origin: via}}
	req := &commitReq{roomID: roomID, newRoom: newRoom, events: []*pendingEvent{pe}}
	if has {
		// Keep the room's last known state and extremities: only the
		// membership moves.
		ext, err := s.Extremities(ctx, roomID)
		if err != nil {
			return err
		}
		var group int64
		if err := s.db.QueryRowContext(ctx, `SELECT state_group FROM rooms WHERE room_id = $1`, roomID).Scan(&group); err != nil {
			return err
		}
		req.extremities, req.stateGroup, pe.stateGroup = ext, group, group
	}
	if err := s.commit.submit(req); err != nil {
		return fmt.Errorf("store %s: %w", ev.EventID(), err)
	}
	s.resetRoom(roomID)
	return nil
}

// MembershipServers are the servers through which a user can change a
// membership we hold no live copy of: the inviter's server for an invite,
// the senders of the stripped state an invite or knock carried, and the
// servers we last knew in the room.
func (s *Service) MembershipServers(ctx context.Context, roomID, userID string) []spec.ServerName {
	var out []spec.ServerName
	add := func(d spec.ServerName) {
		if d != "" && d != s.cfg.ServerName && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	for _, d := range s.InviteServers(ctx, roomID, userID) {
		add(d)
	}
	var id string
	if err := s.db.QueryRowContext(ctx, `SELECT event_id FROM memberships WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&id); err == nil {
		if ev, err := s.event(ctx, id); err == nil {
			var u struct {
				Invite []struct{ Sender string } `json:"invite_room_state"`
				Knock  []struct{ Sender string } `json:"knock_room_state"`
			}
			_ = json.Unmarshal(ev.Unsigned(), &u)
			for _, st := range append(u.Invite, u.Knock...) {
				if uid, err := spec.NewUserID(st.Sender, true); err == nil {
					add(uid.Domain())
				}
			}
		}
	}
	if servers, err := s.ServersInRoom(ctx, roomID); err == nil {
		for _, d := range servers {
			add(d)
		}
	}
	return out
}

// LeaveOutOfBand rejects an invite (or rescinds a knock) locally when no
// server in the room can be reached to do it (Synapse's "out-of-band
// leave"): we sign a leave that follows the invite or knock and store it
// as our user's membership, without sending it anywhere. The room's
// servers still see the invite; our user no longer does.
func (s *Service) LeaveOutOfBand(ctx context.Context, userID, roomID, reason string) error {
	var prevID, m string
	err := s.db.QueryRowContext(ctx, `SELECT event_id, membership FROM memberships WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&prevID, &m)
	if isNoRows(err) || (err == nil && m != spec.Invite && m != spec.Knock) {
		return mxerr.Forbidden("You are not invited to this room, nor knocking on it")
	}
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	prev, err := s.event(ctx, prevID)
	if err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(prev.Version())
	if err != nil {
		return err
	}
	content := map[string]any{"membership": spec.Leave}
	if reason != "" {
		content["reason"] = reason
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID,
		PrevEvents: []string{prevID}, AuthEvents: []string{prevID}, Depth: prev.Depth() + 1,
	}
	if err := proto.SetContent(content); err != nil {
		return err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), s.cfg.ServerName, s.cfg.KeyID, s.cfg.PrivateKey)
	if err != nil {
		return fmt.Errorf("build out-of-band leave: %w", err)
	}
	// Our name as the origin: the event is not sent on (see queueOut).
	return s.StoreOwnOutOfRoom(ctx, s.cfg.ServerName, ev, nil)
}
