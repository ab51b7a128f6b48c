package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Room-side effects of account changes.

// roomsWith lists the rooms where userID's membership is one of ms.
func (s *Service) roomsWith(ctx context.Context, userID string, ms ...string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, membership FROM memberships WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, m string
		if err := rows.Scan(&id, &m); err != nil {
			return nil, err
		}
		for _, want := range ms {
			if m == want {
				out = append(out, id)
			}
		}
	}
	return out, rows.Err()
}

// LeaveAll makes a deactivated user leave every room they are in, and
// reject their invites and withdraw their knocks, as Synapse does: a
// deactivated account must not linger as a member.
func (s *Service) LeaveAll(ctx context.Context, userID string) error {
	rooms, err := s.roomsWith(ctx, userID, "join", "invite", "knock")
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range rooms {
		if remote, err := s.elsewhere(ctx, id, DelegateLeave, userID); remote {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := s.Leave(ctx, userID, id, ""); err != nil {
			errs = append(errs, fmt.Errorf("leave %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// UpdateMemberProfile re-sends a user's join event in every room they have
// joined, carrying their new display name and avatar, so that members see
// the change (clients read names from member events).
func (s *Service) UpdateMemberProfile(ctx context.Context, userID string) error {
	rooms, err := s.roomsWith(ctx, userID, "join")
	if err != nil {
		return err
	}
	name, avatar, err := s.profiles.MemberProfile(ctx, userID)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range rooms {
		if remote, err := s.elsewhere(ctx, id, DelegateProfile, userID); remote {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := s.updateMemberProfile(ctx, id, userID, name, avatar); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UpdateMemberProfileIn is UpdateMemberProfile for one room, which this
// process owns: another process asks for it (Cluster.Delegate).
func (s *Service) UpdateMemberProfileIn(ctx context.Context, roomID, userID string) error {
	name, avatar, err := s.profiles.MemberProfile(ctx, userID)
	if err != nil {
		return err
	}
	return s.updateMemberProfile(ctx, roomID, userID, name, avatar)
}

// updateMemberProfile re-sends userID's join event in roomID with name
// and avatar, unless it has them already.
func (s *Service) updateMemberProfile(ctx context.Context, id, userID, name, avatar string) error {
	_, err := s.submitBuilt(ctx, id, EventRequest{Sender: userID, Type: spec.MRoomMember, StateKey: &userID},
		func(ctx context.Context, rs *roomState) error {
			cur := rs.get(spec.MRoomMember, userID)
			if cur == nil {
				return errNoChange
			}
			if m, _ := cur.Membership(); m != "join" {
				return errNoChange
			}
			var c struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			}
			_ = json.Unmarshal(cur.Content(), &c)
			if c.DisplayName == name && c.AvatarURL == avatar {
				return errNoChange
			}
			return nil
		},
		func() (json.RawMessage, error) {
			return json.Marshal(memberContent("join", name, avatar, "", false))
		})
	if err != nil && !errors.Is(err, errNoChange) {
		return fmt.Errorf("update member event in %s: %w", id, err)
	}
	return nil
}

// errNoChange ends a request that would change nothing.
var errNoChange = errors.New("no change")
