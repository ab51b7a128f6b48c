package oauth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// StartBrowserSession signs a user in to the server's own pages and
// returns the cookie value.
func (s *Service) StartBrowserSession(ctx context.Context, userID string) (string, error) {
	cookie := randomSecret()
	now := s.nowMS()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE expires_ts < $1`, now); err != nil {
		return "", fmt.Errorf("prune browser sessions: %w", err)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO oauth_browser_sessions (session_hash, user_id, created_ts, expires_ts)
		VALUES ($1, $2, $3, $4)`, hashSecret(cookie), userID, now, now+s.cfg.SessionLifetime.Milliseconds())
	if err != nil {
		return "", fmt.Errorf("store browser session: %w", err)
	}
	return cookie, nil
}

// BrowserSession returns the user a session cookie belongs to, or "".
func (s *Service) BrowserSession(ctx context.Context, cookie string) (string, error) {
	if cookie == "" {
		return "", nil
	}
	var userID string
	err := s.db.QueryRowContext(ctx, `SELECT user_id FROM oauth_browser_sessions WHERE session_hash = $1 AND expires_ts > $2`,
		hashSecret(cookie), s.nowMS()).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("load browser session: %w", err)
	}
	return userID, nil
}

// EndBrowserSessions signs a user out of the pages everywhere (after a
// password change or deactivation); with cookie set, only that session.
func (s *Service) EndBrowserSessions(ctx context.Context, userID, cookie string) error {
	var err error
	if cookie != "" {
		_, err = s.db.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE session_hash = $1`, hashSecret(cookie))
	} else {
		_, err = s.db.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE user_id = $1`, userID)
	}
	if err != nil {
		return fmt.Errorf("end browser sessions: %w", err)
	}
	return nil
}
