package admin

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/users"
)

// Moderating accounts: shadow bans, suspensions, locks and rate limit
// overrides. The flags live with the accounts (package users); the domains
// that act for a user enforce them.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html

// ShadowBan shadow-bans a local user (banned) or lifts the ban: their
// requests keep succeeding, but what they send reaches nobody.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html#controlling-whether-a-user-is-shadow-banned
func (s *Service) ShadowBan(ctx context.Context, actor, userID string, banned bool) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.SetShadowBanned(ctx, userID, banned); err != nil {
		return err
	}
	s.Audit(actor, "shadow_ban", userID, logrus.Fields{"shadow_banned": banned})
	return nil
}

// Suspend suspends a local user (MSC3823) or lifts the suspension.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html#suspendunsuspend-account
func (s *Service) Suspend(ctx context.Context, actor, userID string, suspended bool) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.SetSuspended(ctx, userID, suspended); err != nil {
		return err
	}
	s.Audit(actor, "suspend_user", userID, logrus.Fields{"suspended": suspended})
	return nil
}

// RatelimitOverride returns a local user's rate limit override, nil if
// none.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html#override-ratelimiting-for-users
func (s *Service) RatelimitOverride(ctx context.Context, userID string) (*users.RatelimitOverride, error) {
	if _, err := s.existing(ctx, userID); err != nil {
		return nil, err
	}
	return s.users.RatelimitOverride(ctx, userID)
}

// SetRatelimitOverride sets (o) or removes (nil) a local user's rate
// limit override.
func (s *Service) SetRatelimitOverride(ctx context.Context, actor, userID string, o *users.RatelimitOverride) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.users.SetRatelimitOverride(ctx, userID, o); err != nil {
		return err
	}
	if o == nil {
		s.Audit(actor, "delete_ratelimit_override", userID, nil)
	} else {
		s.Audit(actor, "set_ratelimit_override", userID, logrus.Fields{
			"messages_per_second": o.MessagesPerSecond, "burst_count": o.BurstCount})
	}
	return nil
}
