package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Membership changes. Each is an m.room.member event that the auth rules
// judge; the checks here are the ones the auth rules leave to the server
// (for example, that unban only lifts a ban rather than kicking).
// https://spec.matrix.org/v1.19/client-server-api/#room-membership

// isLocal reports whether a user ID (or alias) belongs to this server.
func (s *Service) isLocal(id string) bool {
	return strings.HasSuffix(id, ":"+string(s.cfg.ServerName))
}

// checkInvitee refuses invitees this server cannot deliver an invite to:
// unknown local users, and (until federation) users of other servers.
func (s *Service) checkInvitee(ctx context.Context, userID string) error {
	if !s.isLocal(userID) {
		return mxerr.Forbidden("Cannot invite %s: inviting users of other servers needs federation, which is not enabled on this server", userID)
	}
	ok, err := s.profiles.Exists(ctx, userID)
	if err != nil {
		return err
	}
	if !ok {
		return mxerr.NotFound("Unknown user %s", userID)
	}
	return nil
}

// ResolveRoom turns a room ID or a local alias into a room ID the server
// knows. Rooms it does not know would need federation: M_NOT_FOUND.
func (s *Service) ResolveRoom(ctx context.Context, roomIDOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(roomIDOrAlias, "#"):
		id, err := s.ResolveAlias(ctx, roomIDOrAlias)
		if err != nil {
			return "", err
		}
		if id == "" {
			return "", mxerr.NotFound("Room alias %s not found", roomIDOrAlias)
		}
		return id, nil
	case strings.HasPrefix(roomIDOrAlias, "!"):
		if _, err := s.RoomVersion(ctx, roomIDOrAlias); err != nil {
			return "", mxerr.NotFound("No known servers for room %s: joining rooms on other servers needs federation (enabled, with via= a server in the room)", roomIDOrAlias)
		}
		return roomIDOrAlias, nil
	}
	return "", mxerr.InvalidParam("%q is neither a room ID nor a room alias", roomIDOrAlias)
}

// RoomVersion returns a known room's version; M_NOT_FOUND otherwise.
func (s *Service) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.RoomVersion, error) {
	if v, ok := s.versions.Load(roomID); ok {
		return v.(gomatrixserverlib.RoomVersion), nil
	}
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT room_version FROM rooms WHERE room_id = $1`, roomID).Scan(&v)
	if isNoRows(err) {
		return "", mxerr.NotFound("Unknown room")
	}
	if err != nil {
		return "", fmt.Errorf("room version: %w", err)
	}
	s.versions.Store(roomID, gomatrixserverlib.RoomVersion(v))
	return gomatrixserverlib.RoomVersion(v), nil
}

// member sends an m.room.member event. extra adds to the content after
// check has run (check may decide what goes in it).
func (s *Service) member(ctx context.Context, roomID, sender, target, membership string, extra func() map[string]any, check checkFunc) (*Event, error) {
	var name, avatar string
	if (membership == "join" || membership == "invite" || membership == "knock") && s.isLocal(target) {
		var err error
		if name, avatar, err = s.profiles.MemberProfile(ctx, target); err != nil {
			return nil, err
		}
	}
	req := EventRequest{Sender: sender, Type: spec.MRoomMember, StateKey: &target}
	return s.submitBuilt(ctx, roomID, req, check, func() (json.RawMessage, error) {
		c := memberContent(membership, name, avatar, "", false)
		if extra != nil {
			for k, v := range extra() {
				c[k] = v
			}
		}
		return json.Marshal(c)
	})
}

func reasonOnly(reason string) func() map[string]any {
	return func() map[string]any {
		if reason == "" {
			return nil
		}
		return map[string]any{"reason": reason}
	}
}

var errAlreadyJoined = mxerr.Forbidden("already joined")

// Join makes userID join a room it knows, by ID or alias. content holds
// the client's keys for the member event (reason, custom keys), which are
// kept; membership is always "join". Joining a room one has already joined
// changes nothing and succeeds.
func (s *Service) Join(ctx context.Context, userID, roomIDOrAlias string, content map[string]any) (string, error) {
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	if s.joinGuard != nil {
		if err := s.joinGuard(ctx, roomID, userID); err != nil {
			return "", err
		}
	}
	extra := make(map[string]any, len(content)+1)
	for k, v := range content {
		if k != "membership" && k != "join_authorised_via_users_server" {
			extra[k] = v
		}
	}
	check := func(ctx context.Context, rs *roomState) error {
		if rs.membership(userID) == "join" {
			return errAlreadyJoined
		}
		via, err := s.restrictedJoinVia(ctx, rs, userID)
		if err != nil {
			return err
		}
		if via != "" {
			extra["join_authorised_via_users_server"] = via
		}
		return nil
	}
	// check may add to extra, so the content is made after it has run.
	_, err = s.member(ctx, roomID, userID, userID, "join", func() map[string]any { return extra }, check)
	if err == errAlreadyJoined {
		return roomID, nil
	}
	return roomID, err
}

// restrictedJoinVia handles joins to rooms with the restricted join rules:
// if the user may join only through membership of another room, it names a
// local member who can invite, to vouch for the join.
// https://spec.matrix.org/v1.19/client-server-api/#restricted-rooms
func (s *Service) restrictedJoinVia(ctx context.Context, rs *roomState, userID string) (string, error) {
	jr := rs.get(spec.MRoomJoinRules, "")
	if jr == nil {
		return "", nil
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if err := json.Unmarshal(jr.Content(), &c); err != nil {
		return "", nil
	}
	if c.JoinRule != "restricted" && c.JoinRule != "knock_restricted" {
		return "", nil
	}
	if m := rs.membership(userID); m == "invite" || m == "join" {
		return "", nil
	}
	allowed := false
	for _, a := range c.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		m, err := s.Membership(ctx, a.RoomID, userID)
		if err != nil {
			return "", err
		}
		if m == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", mxerr.Forbidden("You are not invited to this room, nor a member of a room that allows joining it")
	}
	pl, err := powerLevels(rs)
	if err != nil {
		return "", err
	}
	for t, ev := range rs.state {
		if t.Type != spec.MRoomMember || !s.isLocal(t.StateKey) {
			continue
		}
		if m, _ := ev.Membership(); m == "join" && pl.UserLevel(spec.SenderID(t.StateKey)) >= pl.Invite {
			return t.StateKey, nil
		}
	}
	return "", mxerr.Forbidden("No member of this room on this server can authorise your join")
}

// Leave makes userID leave (or reject an invite to, or withdraw a knock
// from) a room.
func (s *Service) Leave(ctx context.Context, userID, roomID, reason string) error {
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return err
	}
	_, err := s.member(ctx, roomID, userID, userID, "leave", reasonOnly(reason), func(ctx context.Context, rs *roomState) error {
		switch rs.membership(userID) {
		case "join", "invite", "knock":
			return nil
		}
		return mxerr.Forbidden("You are not a member of this room")
	})
	return err
}

// Invite invites target to a room.
func (s *Service) Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error {
	if _, err := spec.NewUserID(target, true); err != nil {
		return mxerr.InvalidParam("Invalid user ID %q", target)
	}
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return err
	}
	if !s.isLocal(target) && s.inviter != nil {
		content := map[string]any{}
		if reason != "" {
			content["reason"] = reason
		}
		if isDirect {
			content["is_direct"] = true
		}
		return s.inviteRemote(ctx, sender, roomID, target, content)
	}
	if err := s.checkInvitee(ctx, target); err != nil {
		return err
	}
	extra := func() map[string]any {
		e := map[string]any{}
		if reason != "" {
			e["reason"] = reason
		}
		if isDirect {
			e["is_direct"] = true
		}
		return e
	}
	_, err := s.member(ctx, roomID, sender, target, "invite", extra, func(ctx context.Context, rs *roomState) error {
		switch rs.membership(target) {
		case "join":
			return mxerr.Forbidden("%s is already in the room", target)
		case "ban":
			return mxerr.Forbidden("%s is banned from the room", target)
		}
		return nil
	})
	return err
}

// Kick removes target from a room.
func (s *Service) Kick(ctx context.Context, sender, roomID, target, reason string) error {
	return s.moderate(ctx, sender, roomID, target, "leave", reason, func(m string) error {
		if m != "join" && m != "invite" && m != "knock" {
			return mxerr.Forbidden("%s is not in the room", target)
		}
		return nil
	})
}

// Ban bans target from a room.
func (s *Service) Ban(ctx context.Context, sender, roomID, target, reason string) error {
	return s.moderate(ctx, sender, roomID, target, "ban", reason, nil)
}

// Unban lifts a ban. It refuses a target who is not banned, so it can
// never act as a kick.
func (s *Service) Unban(ctx context.Context, sender, roomID, target, reason string) error {
	return s.moderate(ctx, sender, roomID, target, "leave", reason, func(m string) error {
		if m != "ban" {
			return mxerr.Forbidden("%s is not banned", target)
		}
		return nil
	})
}

func (s *Service) moderate(ctx context.Context, sender, roomID, target, membership, reason string, pre func(current string) error) error {
	if _, err := spec.NewUserID(target, true); err != nil {
		return mxerr.InvalidParam("Invalid user ID %q", target)
	}
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return err
	}
	_, err := s.member(ctx, roomID, sender, target, membership, reasonOnly(reason), func(ctx context.Context, rs *roomState) error {
		if rs.membership(sender) != "join" {
			return mxerr.Forbidden("You are not in this room")
		}
		if pre != nil {
			return pre(rs.membership(target))
		}
		return nil
	})
	return err
}

// Knock asks to join a room whose join rule is knock.
func (s *Service) Knock(ctx context.Context, userID, roomIDOrAlias, reason string) (string, error) {
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	_, err = s.member(ctx, roomID, userID, userID, "knock", reasonOnly(reason), func(ctx context.Context, rs *roomState) error {
		switch rs.membership(userID) {
		case "join":
			return mxerr.Forbidden("You are already in this room")
		case "invite":
			return mxerr.Forbidden("You are already invited to this room")
		}
		return nil
	})
	return roomID, err
}

// Forget hides a room the user has left from their lists.
func (s *Service) Forget(ctx context.Context, userID, roomID string) error {
	m, err := s.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	switch m {
	case "join", "invite", "knock":
		return mxerr.Unknown(400, "You must leave the room before forgetting it")
	case "":
		return mxerr.NotFound("You have never been in this room")
	}
	_, err = s.db.ExecContext(ctx, `UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2`, roomID, userID)
	s.memberships.Invalidate()
	return err
}

// Membership returns a user's current membership of a room ("" if none).
func (s *Service) Membership(ctx context.Context, roomID, userID string) (string, error) {
	key := [2]string{roomID, userID}
	if m, ok := s.membership.Get(key); ok {
		return m, nil
	}
	gen := s.membership.Generation()
	var m string
	err := s.db.QueryRowContext(ctx, `SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&m)
	if err != nil && !isNoRows(err) {
		return "", fmt.Errorf("membership: %w", err)
	}
	s.membership.Put(key, gen, m)
	return m, nil
}

// JoinedRooms lists the rooms a user has joined.
func (s *Service) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join' ORDER BY room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("joined rooms: %w", err)
	}
	defer rows.Close()
	rooms := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		rooms = append(rooms, id)
	}
	return rooms, rows.Err()
}
