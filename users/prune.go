package users

import (
	"context"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// expiredTokenGrace is how long an expired access or refresh token is
// kept: until then its client is told it was soft-logged out (the token
// expired) rather than that the token is unknown.
const expiredTokenGrace = 7 * 24 * time.Hour

// Prune deletes expired tokens, for the housekeeping job: access and
// refresh tokens expired more than expiredTokenGrace ago (an access
// token goes with its refresh token) and expired OpenID tokens.
func (s *Service) Prune(ctx context.Context, now time.Time) (int64, error) {
	cutoff := now.Add(-expiredTokenGrace).UnixMilli()
	var total int64
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, q := range []struct {
			sql string
			arg int64
		}{
			// Access tokens of the refresh tokens that go, first, so
			// that they are counted (the cascade would drop them too).
			{`DELETE FROM access_tokens WHERE refresh_id IN
				(SELECT id FROM refresh_tokens WHERE expires_ts != 0 AND expires_ts < $1)`, cutoff},
			{`DELETE FROM refresh_tokens WHERE expires_ts != 0 AND expires_ts < $1`, cutoff},
			{`DELETE FROM access_tokens WHERE expires_ts != 0 AND expires_ts < $1
				AND (refresh_id IS NULL OR refresh_id NOT IN (SELECT id FROM refresh_tokens))`, cutoff},
			{`DELETE FROM openid_tokens WHERE expires_ts < $1`, now.UnixMilli()},
		} {
			res, err := tx.ExecContext(ctx, q.sql, q.arg)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune expired tokens: %w", err)
	}
	return total, nil
}

// PurgeRoom deletes what the users domain holds of a purged room: its
// receipts and its members' room account data, tags included (Synapse's
// purge_room deletes receipts, room_account_data and room_tags).
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	return s.db.DeleteRoomRows(ctx, roomID, "receipts", "account_data")
}

// StaleDevicePruner deletes, for the housekeeping job, the devices not
// used for after (Synapse's delete_stale_devices_after): their tokens go,
// and the device deletion hooks drop their to-device queues, keys and
// pushers. A dehydrated device is never used by a client until it is
// rehydrated, so it is kept. 0 turns it off.
func (s *Service) StaleDevicePruner(after time.Duration) staleDevicePruner {
	return staleDevicePruner{s: s, after: after}
}

type staleDevicePruner struct {
	s     *Service
	after time.Duration
}

func (p staleDevicePruner) Prune(ctx context.Context, now time.Time) (int64, error) {
	if p.after <= 0 {
		return 0, nil
	}
	users, byUser, err := database.GroupedStrings(ctx, p.s.db, `SELECT d.user_id, d.device_id FROM devices d
		WHERE COALESCE(d.last_seen_ts, d.created_ts) < $1
		AND NOT EXISTS (SELECT 1 FROM dehydrated_devices h WHERE h.user_id = d.user_id AND h.device_id = d.device_id)
		ORDER BY d.user_id, d.device_id`, now.Add(-p.after).UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("stale devices: %w", err)
	}
	var n int64
	for _, userID := range users {
		if err := p.s.DeleteDevices(ctx, userID, byUser[userID]); err != nil {
			return n, fmt.Errorf("delete stale devices of %s: %w", userID, err)
		}
		n += int64(len(byUser[userID]))
	}
	return n, nil
}
