package users

import "context"

// Hooks let other domains react to account changes without this package
// depending on them; internal/server wires them. A hook runs after the
// change has committed and cannot undo it, so it reports its own failures.
type Hooks struct {
	// ProfileChanged runs after a user's display name or avatar changes
	// (the room server re-sends their member events).
	ProfileChanged func(ctx context.Context, userID string)
	// Deactivated runs after an account is deactivated (the room server
	// makes it leave its rooms).
	Deactivated func(ctx context.Context, userID string)
	// AccountDataChanged runs after a user's account data (or tags, or
	// fully-read marker) may have changed, to wake their syncs.
	AccountDataChanged func(ctx context.Context, userID string)
	// ReceiptsChanged runs after receipts in a room may have changed, to
	// wake the syncs of its members.
	ReceiptsChanged func(ctx context.Context, roomID string)
	// PresenceChangedElsewhere runs after another process of the
	// deployment stored a user's presence (docs/scaling.md), to wake the
	// syncs here of those who see it.
	PresenceChangedElsewhere func(ctx context.Context, userID string)
	// DevicesDeleted runs after devices were deleted (logout, device
	// deletion, password change, deactivation), so that what other
	// domains keep per device (to-device queues) goes with them.
	DevicesDeleted func(ctx context.Context, userID string, deviceIDs []string)
	// TokensRevoked runs after a commit that may have revoked some of a
	// user's access tokens (logout, device deletion, password change,
	// deactivation, a new login on the same device, a token refresh), so
	// that what holds a token open, the sync stream, re-checks it at once.
	// It runs right after the commit: it must not block.
	TokensRevoked func(userID string)
}

// SetHooks installs hooks; call it once, before serving requests.
func (s *Service) SetHooks(h Hooks) { s.hooks = h }

func (s *Service) accountDataChanged(ctx context.Context, userID string) {
	if s.hooks.AccountDataChanged != nil {
		s.hooks.AccountDataChanged(ctx, userID)
	}
}

func (s *Service) profileChanged(ctx context.Context, userID, field string) {
	if (field == "displayname" || field == "avatar_url") && s.hooks.ProfileChanged != nil {
		s.hooks.ProfileChanged(ctx, userID)
	}
}

func (s *Service) devicesDeleted(ctx context.Context, userID string, deviceIDs []string) {
	if len(deviceIDs) > 0 && s.hooks.DevicesDeleted != nil {
		s.hooks.DevicesDeleted(ctx, userID, deviceIDs)
	}
}

// tokensRevoked is registered with tx.AfterCommit by every transaction
// that may revoke userID's tokens: it empties the token cache, then tells
// the hook.
func (s *Service) tokensRevoked(tx interface{ AfterCommit(func()) }, userID string) {
	tx.AfterCommit(func() {
		s.auth.Invalidate()
		if s.hooks.TokensRevoked != nil {
			s.hooks.TokensRevoked(userID)
		}
	})
}

// TokensRevokedElsewhere drops the cached token lookups after another
// process of the deployment revoked tokens, so that a token logged out
// there stops working here too (docs/scaling.md). The TokensRevoked hook
// is not run: that process ran it.
func (s *Service) TokensRevokedElsewhere() { s.auth.Invalidate() }
