package users

import (
	"context"
	"encoding/json"
	"fmt"
)

// MemberProfile returns the display name and avatar a user's membership
// events carry ("" for what is not set). The room server calls it when it
// builds m.room.member events.
func (s *Service) MemberProfile(ctx context.Context, userID string) (string, string, error) {
	fields, err := s.profileFields(ctx, s.db, userID)
	if err != nil {
		return "", "", fmt.Errorf("member profile: %w", err)
	}
	str := func(k string) string {
		var v string
		_ = json.Unmarshal(fields[k], &v)
		return v
	}
	return str("displayname"), str("avatar_url"), nil
}

// Exists reports whether userID is an active local account.
func (s *Service) Exists(ctx context.Context, userID string) (bool, error) {
	var deactivated bool
	err := s.db.QueryRowContext(ctx, `SELECT deactivated FROM accounts WHERE user_id = $1`, userID).Scan(&deactivated)
	if isNoRowsErr(err) && s.queryUnknown(ctx, userID) {
		err = s.db.QueryRowContext(ctx, `SELECT deactivated FROM accounts WHERE user_id = $1`, userID).Scan(&deactivated)
	}
	if isNoRowsErr(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("account exists: %w", err)
	}
	return !deactivated, nil
}
