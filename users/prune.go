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
