package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// What server admins set on an account besides its admin flag, through
// Synapse's admin API: shadow bans, suspensions (MSC3823), locks (MSC3939)
// and rate limit overrides. The domains that act for users (room server,
// typing, media, the client edge) read them from the Requester or with
// Restrictions, and refuse or drop what the account may not do.

// Restrictions are an account's moderation flags.
type Restrictions struct {
	// ShadowBanned: the user's events, invites and typing are dropped
	// while their requests appear to succeed.
	ShadowBanned bool
	// Suspended: the user may read, leave rooms, redact their own events
	// and log out; writes answer 403 M_USER_SUSPENDED.
	Suspended bool
	// Locked: every request but logging out answers 401 M_USER_LOCKED.
	Locked bool
	// Ratelimit replaces the configured per-user rate limits; nil: none.
	Ratelimit *RatelimitOverride
}

// RatelimitOverride is a user's own message rate limit (Synapse's
// override_ratelimit): MessagesPerSecond and BurstCount both 0 is no limit.
type RatelimitOverride struct {
	MessagesPerSecond int64 `json:"messages_per_second"`
	BurstCount        int64 `json:"burst_count"`
}

// Unlimited reports whether the override lifts every limit.
func (o *RatelimitOverride) Unlimited() bool {
	return o.MessagesPerSecond == 0 && o.BurstCount == 0
}

// Restrictions returns a local account's moderation flags; an unknown user
// has none.
func (s *Service) Restrictions(ctx context.Context, userID string) (Restrictions, error) {
	var r Restrictions
	var perSecond, burst sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT a.shadow_banned, a.suspended, a.locked, o.messages_per_second, o.burst_count
		FROM accounts a LEFT JOIN ratelimit_overrides o ON o.user_id = a.user_id WHERE a.user_id = $1`, userID).
		Scan(&r.ShadowBanned, &r.Suspended, &r.Locked, &perSecond, &burst)
	if errors.Is(err, sql.ErrNoRows) {
		return Restrictions{}, nil
	}
	if err != nil {
		return Restrictions{}, fmt.Errorf("restrictions of %s: %w", userID, err)
	}
	if perSecond.Valid {
		r.Ratelimit = &RatelimitOverride{MessagesPerSecond: perSecond.Int64, BurstCount: burst.Int64}
	}
	return r, nil
}

// SetShadowBanned shadow-bans a user or lifts the ban.
func (s *Service) SetShadowBanned(ctx context.Context, userID string, banned bool) error {
	return s.updateAccount(ctx, userID, `UPDATE accounts SET shadow_banned = $1 WHERE user_id = $2`, banned)
}

// SetSuspended suspends a user or lifts the suspension.
func (s *Service) SetSuspended(ctx context.Context, userID string, suspended bool) error {
	return s.updateAccount(ctx, userID, `UPDATE accounts SET suspended = $1 WHERE user_id = $2`, suspended)
}

// SetLocked locks an account or unlocks it. The account's sessions are
// kept, so that an unlocked user carries on where they were.
func (s *Service) SetLocked(ctx context.Context, userID string, locked bool) error {
	return s.updateAccount(ctx, userID, `UPDATE accounts SET locked = $1 WHERE user_id = $2`, locked)
}

// RatelimitOverride returns a user's rate limit override, nil if none.
func (s *Service) RatelimitOverride(ctx context.Context, userID string) (*RatelimitOverride, error) {
	r, err := s.Restrictions(ctx, userID)
	return r.Ratelimit, err
}

// SetRatelimitOverride sets (o) or removes (nil) a user's rate limit
// override.
func (s *Service) SetRatelimitOverride(ctx context.Context, userID string, o *RatelimitOverride) error {
	if o != nil && (o.MessagesPerSecond < 0 || o.BurstCount < 0) {
		return mxerr.InvalidParam("messages_per_second and burst_count must be non-negative")
	}
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		var err error
		if o == nil {
			_, err = tx.ExecContext(ctx, `DELETE FROM ratelimit_overrides WHERE user_id = $1`, userID)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count)
				VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET messages_per_second = $2, burst_count = $3`,
				userID, o.MessagesPerSecond, o.BurstCount)
		}
		if err != nil {
			return fmt.Errorf("rate limit override of %s: %w", userID, err)
		}
		// Requesters carry the override: drop the cached ones.
		s.tokensRevoked(tx, userID)
		return nil
	})
}

// Action is something a user asks the server to do that a suspension or a
// shadow ban restricts (Restrictions.Check).
type Action string

// The restricted actions; the names make Synapse's messages
// ("... while account is suspended is not allowed.").
const (
	ActionSend          Action = "Sending messages"
	ActionJoin          Action = "Joining rooms"
	ActionKnock         Action = "Knocking on rooms"
	ActionInvite        Action = "Sending invites"
	ActionModerate      Action = "Kicking, banning and unbanning users"
	ActionCreateRoom    Action = "Creating rooms"
	ActionUpgradeRoom   Action = "Upgrading rooms"
	ActionSetAlias      Action = "Creating room aliases"
	ActionUpdateProfile Action = "Updating profile"
	ActionUpload        Action = "Uploading media"
	ActionTyping        Action = "Sending typing notifications"
)

// ShadowBanError ends a request of a shadow-banned user: the edge answers
// as if it had succeeded (with FakeEventID where an event ID is due),
// and nothing is stored or sent to anyone.
type ShadowBanError struct {
	// FakeEventID looks like an event ID and names no event.
	FakeEventID string
}

func (e *ShadowBanError) Error() string { return "shadow-banned user: request dropped" }

// AsShadowBan reports whether err is a ShadowBanError, and returns it.
func AsShadowBan(err error) (*ShadowBanError, bool) {
	var sb *ShadowBanError
	ok := errors.As(err, &sb)
	return sb, ok
}

// shadowDropped are the actions whose effect a shadow ban drops, as in
// Synapse: events (messages, state, redactions), invites and typing. A
// shadow-banned user still joins, leaves and changes their profile.
var shadowDropped = map[Action]bool{ActionSend: true, ActionInvite: true, ActionTyping: true}

// Check applies the restrictions to an action of the user's own request:
// a suspended user (MSC3823) gets 403 M_USER_SUSPENDED for every action
// here except typing (suspended users may read, leave rooms, reject
// invites, redact their own events — see CheckRedact — and log out); a
// shadow-banned user gets a ShadowBanError for what a shadow ban drops.
// Actions the server takes for a user (server notices, an admin's force
// join, a room shutdown) are not the user's requests and are not checked.
// https://spec.matrix.org/v1.19/client-server-api/#account-suspension
func (r Restrictions) Check(a Action) error {
	if r.Suspended && a != ActionTyping {
		return mxerr.UserSuspended("%s while account is suspended is not allowed.", a)
	}
	if r.ShadowBanned && shadowDropped[a] {
		return &ShadowBanError{FakeEventID: "$" + randomString(43, alphaNum+upperAlpha)}
	}
	return nil
}

// CheckRedact applies the restrictions to a redaction: a suspended user
// may redact only their own events (ownEvent tells, and is asked only
// then); a shadow-banned user's redactions are dropped.
func (r Restrictions) CheckRedact(ownEvent func() (bool, error)) error {
	if r.Suspended {
		own, err := ownEvent()
		if err != nil {
			return err
		}
		if !own {
			return mxerr.UserSuspended("Only redacting your own events is allowed while account is suspended.")
		}
	}
	if r.ShadowBanned {
		return &ShadowBanError{FakeEventID: "$" + randomString(43, alphaNum+upperAlpha)}
	}
	return nil
}

// InvitesDropped reports whether the invites of a room the user creates
// are dropped (the room is still made, as Synapse does).
func (r Restrictions) InvitesDropped() bool { return r.ShadowBanned }
