package oauth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// CrossSigningResetWindow is how long an approval to replace the
// cross-signing keys lasts.
const CrossSigningResetWindow = 10 * time.Minute

// ApproveCrossSigningReset records that the user, signed in to the account
// page and having confirmed their password, allows their cross-signing keys
// to be replaced for the next CrossSigningResetWindow: a client signed in
// through OAuth never sees the password to complete the UIA itself.
// https://spec.matrix.org/v1.19/client-server-api/#oauth-authentication
func (s *Service) ApproveCrossSigningReset(ctx context.Context, userID string) error {
	now := s.nowMS()
	_, err := s.db.ExecContext(ctx, `INSERT INTO oauth_cross_signing_resets (user_id, approved_ts, expires_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET approved_ts = $2, expires_ts = $3`, userID, now, now+CrossSigningResetWindow.Milliseconds())
	if err != nil {
		return fmt.Errorf("approve cross-signing reset: %w", err)
	}
	return nil
}

// CrossSigningResetApproved reports whether the user's approval is current.
func (s *Service) CrossSigningResetApproved(ctx context.Context, userID string) (bool, error) {
	var expires int64
	err := s.db.QueryRowContext(ctx, `SELECT expires_ts FROM oauth_cross_signing_resets WHERE user_id = $1`, userID).Scan(&expires)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load cross-signing reset approval: %w", err)
	}
	return s.nowMS() < expires, nil
}
