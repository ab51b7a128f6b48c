package roomserver

// Invites across servers: ours to users of other servers (their server
// signs the invite first), and theirs to our users, possibly to rooms we
// have no state of.
// https://spec.matrix.org/v1.19/server-server-api/#inviting-to-a-room

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// RemoteInviter has the invitee's server sign an invite (the federation
// edge's /invite call). roomState is the invite_room_state: full PDUs,
// as the spec requires since v1.16 (the invitee's server checks their
// signatures and that the create event is there).
type RemoteInviter interface {
	SignInvite(ctx context.Context, invite gomatrixserverlib.PDU, roomState []json.RawMessage) (gomatrixserverlib.PDU, error)
}

// SetRemoteInviter lets local users invite users of other servers.
func (s *Service) SetRemoteInviter(r RemoteInviter) { s.inviter = r }

// roomStatePDUs is the invite_room_state or knock_room_state we send
// another server: the strippedTypes events of the room's state as full
// PDUs, the create event always among them.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2inviteroomideventid
func roomStatePDUs(rs *roomState) []json.RawMessage {
	out := []json.RawMessage{}
	for _, t := range strippedTypes {
		if ev := rs.get(t, ""); ev != nil {
			out = append(out, ev.JSON())
		}
	}
	return out
}

// strippedTypes are the state events an invitee is shown.
var strippedTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// inviteRemote invites a user of another server: the invite is built on
// the room's current state, signed by the invitee's server, then stored
// and sent to the room's servers like any of our events.
func (s *Service) inviteRemote(ctx context.Context, sender, roomID, target string, content map[string]any) error {
	rs, err := s.loadRoomState(ctx, roomID)
	if err != nil {
		return err
	}
	if rs == nil {
		return mxerr.NotFound("Unknown room")
	}
	switch rs.membership(target) {
	case spec.Join:
		return mxerr.Forbidden("%s is already in the room", target)
	case spec.Ban:
		return mxerr.Forbidden("%s is banned from the room", target)
	}
	c := memberContent(spec.Invite, "", "", "", false)
	for k, v := range content {
		c[k] = v
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	pe, err := s.build(ctx, rs, EventRequest{Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: raw})
	if err != nil {
		return err
	}
	stripped := roomStatePDUs(rs)
	if ev := rs.get(spec.MRoomMember, sender); ev != nil {
		stripped = append(stripped, ev.JSON())
	}
	signed, err := s.inviter.SignInvite(ctx, pe.ev.PDU, stripped)
	if err != nil {
		return err
	}
	if signed.EventID() != pe.ev.EventID() {
		return fmt.Errorf("the invitee's server changed the invite (%s became %s)", pe.ev.EventID(), signed.EventID())
	}
	_, err = s.IngestRemote(ctx, "", signed, false)
	return err
}

// HasState reports whether we hold the room's state (we are or were in
// it), as opposed to knowing it only from an invite.
func (s *Service) HasState(ctx context.Context, roomID string) (bool, error) {
	var group int64
	err := s.db.QueryRowContext(ctx, `SELECT state_group FROM rooms WHERE room_id = $1`, roomID).Scan(&group)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("room state: %w", err)
	}
	return group != 0, nil
}

// ReceiveInvite handles another server's invite of one of our users
// (/invite v2): it checks and signs the event; for a room we hold no
// state of, it stores the invite so the user's sync shows it, with the
// stripped state the inviting server sent. The signed event is returned
// for the inviting server.
func (s *Service) ReceiveInvite(ctx context.Context, roomID spec.RoomID, ver gomatrixserverlib.RoomVersion, invite gomatrixserverlib.PDU,
	stripped []gomatrixserverlib.InviteStrippedState, verifier gomatrixserverlib.JSONVerifier) (gomatrixserverlib.PDU, error) {
	if invite.Type() != spec.MRoomMember || invite.StateKey() == nil {
		return nil, mxerr.BadJSON("Not a membership event")
	}
	if m, err := invite.Membership(); err != nil || m != spec.Invite {
		return nil, mxerr.BadJSON("Not an invite")
	}
	target, err := spec.NewUserID(*invite.StateKey(), true)
	if err != nil || target.Domain() != s.cfg.ServerName {
		return nil, mxerr.BadJSON("The invitee is not a user of this server")
	}
	if ok, err := s.profiles.Exists(ctx, target.String()); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return nil, mxerr.NotFound("Unknown user %s", target.String())
	}
	known, err := s.HasState(ctx, roomID.String())
	if err != nil {
		return nil, err
	}
	signed, err := gomatrixserverlib.HandleInvite(ctx, gomatrixserverlib.HandleInviteInput{
		RoomID:            roomID,
		RoomVersion:       ver,
		InvitedUser:       *target,
		InvitedSenderID:   spec.SenderID(target.String()),
		InviteEvent:       invite,
		StrippedState:     stripped,
		KeyID:             s.cfg.KeyID,
		PrivateKey:        s.cfg.PrivateKey,
		Verifier:          verifier,
		RoomQuerier:       inviteQuerier{s: s, known: known},
		MembershipQuerier: membershipQuerier{s},
		StateQuerier:      inviteQuerier{s: s, known: known},
		UserIDQuerier:     UserIDForSender,
	})
	if err != nil {
		return nil, err
	}
	if known {
		// The event reaches us again in a transaction, like any event of
		// a room we are in.
		return signed, nil
	}
	if err := s.storeOutOfRoomInvite(ctx, ver, signed); err != nil {
		return nil, err
	}
	return signed, nil
}

// storeOutOfRoomInvite stores an invite to a room we hold no state of: the
// room is recorded with its version and no state, the invite gets a
// stream position (the invitee's sync sees it) and makes the membership.
func (s *Service) storeOutOfRoomInvite(ctx context.Context, ver gomatrixserverlib.RoomVersion, invite gomatrixserverlib.PDU) error {
	roomID := invite.RoomID().String()
	newRoom := string(ver)
	if v, err := s.RoomVersion(ctx, roomID); err == nil {
		if v != ver {
			return mxerr.BadJSON("Room %s is version %s here", roomID, v)
		}
		newRoom = ""
	}
	if evs, err := s.events(ctx, s.db, []string{invite.EventID()}); err != nil {
		return err
	} else if evs[invite.EventID()] != nil {
		return nil
	}
	// The origin is the inviter's server: we do not send its event on.
	origin := spec.ServerName("unknown")
	if u, err := spec.NewUserID(string(invite.SenderID()), true); err == nil {
		origin = u.Domain()
	}
	ev := &Event{PDU: invite, RoomID: roomID, Origin: origin}
	if err := s.commit.submit(&commitReq{roomID: roomID, newRoom: newRoom, events: []*pendingEvent{{ev: ev}}}); err != nil {
		return fmt.Errorf("store invite: %w", err)
	}
	s.resetRoom(roomID)
	return nil
}

// inviteQuerier answers HandleInvite's questions.
type inviteQuerier struct {
	s     *Service
	known bool
}

func (q inviteQuerier) IsKnownRoom(context.Context, spec.RoomID) (bool, error) { return q.known, nil }

func (q inviteQuerier) GetAuthEvents(ctx context.Context, ev gomatrixserverlib.PDU) (gomatrixserverlib.AuthEventProvider, error) {
	rs, err := q.s.loadRoomState(ctx, ev.RoomID().String())
	if err != nil || rs == nil {
		return nil, err
	}
	return rs, nil
}

func (q inviteQuerier) GetState(ctx context.Context, roomID spec.RoomID, wanted []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	if !q.known {
		return nil, nil
	}
	rs, err := q.s.loadRoomState(ctx, roomID.String())
	if err != nil || rs == nil {
		return nil, err
	}
	var out []gomatrixserverlib.PDU
	for _, t := range wanted {
		if ev := rs.get(t.EventType, t.StateKey); ev != nil {
			out = append(out, ev.PDU)
		}
	}
	return out, nil
}

// RemoteInviteState is what a user invited to a room we hold no state of
// is shown: the stripped state the inviting server sent (the invite's
// unsigned.invite_room_state) and the invite itself. ok is false for
// other rooms.
func (s *Service) RemoteInviteState(ctx context.Context, roomID string, pos int64) (stripped []json.RawMessage, invite *Event, ok bool, err error) {
	if has, err := s.HasState(ctx, roomID); err != nil || has {
		return nil, nil, false, err
	}
	var id string
	err = s.db.QueryRowContext(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND stream_pos = $2`, roomID, pos).Scan(&id)
	if isNoRows(err) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("invite at %d: %w", pos, err)
	}
	ev, err := s.event(ctx, id)
	if err != nil {
		return nil, nil, false, err
	}
	var u struct {
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
		KnockRoomState  []json.RawMessage `json:"knock_room_state"`
	}
	_ = json.Unmarshal(ev.Unsigned(), &u) // absent: no stripped state
	if len(u.InviteRoomState) == 0 {
		u.InviteRoomState = u.KnockRoomState
	}
	return u.InviteRoomState, ev, true, nil
}

// InviteServers are the servers that may let a user join a room they were
// invited to over federation: the inviter's.
func (s *Service) InviteServers(ctx context.Context, roomID, userID string) []spec.ServerName {
	var id, m string
	err := s.db.QueryRowContext(ctx, `SELECT event_id, membership FROM memberships WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&id, &m)
	if err != nil || m != spec.Invite {
		return nil
	}
	ev, err := s.event(ctx, id)
	if err != nil {
		return nil
	}
	u, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil {
		return nil
	}
	return []spec.ServerName{u.Domain()}
}

// LocallyJoined reports whether a user of this server is joined to the
// room: only then is our copy of the room live, and a join can be made
// here rather than through a server in the room.
func (s *Service) LocallyJoined(ctx context.Context, roomID string) (bool, error) {
	return s.serverInRoom(ctx, roomID, s.cfg.ServerName)
}
