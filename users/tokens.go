package users

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Requester is the user and device an access token belongs to.
type Requester struct {
	UserID   string
	DeviceID string
	IsGuest  bool
	IsAdmin  bool
	// AppService is the id of the application service whose as_token
	// authenticated the request ("" for an ordinary token); rules that
	// treat services differently (rate limits, exclusive namespaces,
	// MSC4190 devices) look it up with Service.AppService.
	AppService string
	// Restrictions are what server admins set on the account (shadow
	// ban, suspension, lock, rate limit override), read with the token
	// so that the checks cost no query of their own.
	Restrictions
}

// Session is a freshly issued set of tokens for a device.
type Session struct {
	UserID       string
	DeviceID     string
	AccessToken  string
	RefreshToken string        // empty unless asked for
	ExpiresIn    time.Duration // 0: the access token does not expire
}

// ClientInfo is what a request tells us about the client, for the device's
// "last seen" fields.
type ClientInfo struct {
	IP        string
	UserAgent string
}

// NewSession describes a login: which user, which device, what tokens.
type NewSession struct {
	UserID   string
	DeviceID string // empty: a new random device ID
	// DisplayName names a newly created device; an existing device keeps
	// its name.
	DisplayName *string
	WantRefresh bool
	Client      ClientInfo
}

const maxDeviceIDBytes = 255

// ValidateDeviceID checks a device ID a client asks for, so that an edge can
// refuse it before acting on the rest of the request.
func ValidateDeviceID(deviceID string) error {
	if len(deviceID) > maxDeviceIDBytes {
		return mxerr.InvalidParam("device_id is longer than %d bytes", maxDeviceIDBytes)
	}
	return nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateSession logs a device in: it creates the device if needed and issues
// tokens. Per the spec, any tokens the device already had are revoked.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3login
func (s *Service) CreateSession(ctx context.Context, ns NewSession) (*Session, error) {
	if err := ValidateDeviceID(ns.DeviceID); err != nil {
		return nil, err
	}
	if ns.DeviceID == "" {
		ns.DeviceID = randomString(10, upperAlpha)
	}
	var sess *Session
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		now := s.nowMS()
		res, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, device_id) DO NOTHING`,
			ns.UserID, ns.DeviceID, ns.DisplayName, now, now, ns.Client.IP, ns.Client.UserAgent)
		if err != nil {
			return fmt.Errorf("create device: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// An existing device: its old tokens die with this login.
			s.tokensRevoked(tx, ns.UserID)
			if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, ns.UserID, ns.DeviceID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, ns.UserID, ns.DeviceID); err != nil {
				return err
			}
		}
		sess, err = s.issueTokens(ctx, tx, ns.UserID, ns.DeviceID, ns.WantRefresh, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	return sess, nil
}

// issueTokens stores a new access token (and refresh token, if wanted) for a
// device. prevRefresh is the refresh token this pair replaces, if any.
func (s *Service) issueTokens(ctx context.Context, tx *database.Tx, userID, deviceID string, withRefresh bool, prevRefresh *int64) (*Session, error) {
	now := s.now()
	sess := &Session{UserID: userID, DeviceID: deviceID, AccessToken: randomToken("tsa_")}
	var accessExpires int64
	var refreshID *int64
	if withRefresh {
		sess.RefreshToken = randomToken("tsr_")
		var refreshExpires int64
		if lt := s.cfg.RefreshTokenLifetime; lt > 0 {
			refreshExpires = now.Add(lt).UnixMilli()
		}
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expires_ts, prev_id)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
			hashToken(sess.RefreshToken), userID, deviceID, now.UnixMilli(), refreshExpires, prevRefresh).Scan(&id)
		if err != nil {
			return nil, fmt.Errorf("store refresh token: %w", err)
		}
		refreshID = &id
		if lt := s.cfg.AccessTokenLifetime; lt > 0 {
			sess.ExpiresIn = lt
			accessExpires = now.Add(lt).UnixMilli()
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_id)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		hashToken(sess.AccessToken), userID, deviceID, now.UnixMilli(), accessExpires, refreshID)
	if err != nil {
		return nil, fmt.Errorf("store access token: %w", err)
	}
	return sess, nil
}

// lastSeenInterval is how stale a device's "last seen" may get before a
// request updates it; updating on every request would add a write to each.
const lastSeenInterval = 5 * time.Minute

// Authenticate resolves an access token. An unknown or revoked token is 401
// M_UNKNOWN_TOKEN; an expired one says soft_logout, so the client refreshes
// or logs in again on the same device.
func (s *Service) Authenticate(ctx context.Context, token string, client ClientInfo) (*Requester, error) {
	if reg := s.appServices.ByASToken(token); reg != nil {
		return s.appServiceRequester(ctx, reg, Assertion{})
	}
	hash := hashToken(token)
	now := s.nowMS()
	if e, ok := s.auth.Get(string(hash)); ok && (e.expires == 0 || now < e.expires) &&
		now-e.lastSeen <= lastSeenInterval.Milliseconds() {
		r := e.r
		return &r, nil
	}
	gen := s.auth.Generation()
	var (
		r                 Requester
		expires           int64
		refreshID, prevID sql.NullInt64
		deactivated       bool
		lastSeen          sql.NullInt64
		perSecond, burst  sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, `SELECT t.user_id, t.device_id, t.expires_ts, t.refresh_id, rt.prev_id,
			a.is_guest, a.is_admin, a.deactivated, d.last_seen_ts,
			a.shadow_banned, a.suspended, a.locked, o.messages_per_second, o.burst_count
		FROM access_tokens t
		JOIN accounts a ON a.user_id = t.user_id
		LEFT JOIN ratelimit_overrides o ON o.user_id = t.user_id
		JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
		LEFT JOIN refresh_tokens rt ON rt.id = t.refresh_id
		WHERE t.token_hash = $1`, hash).
		Scan(&r.UserID, &r.DeviceID, &expires, &refreshID, &prevID, &r.IsGuest, &r.IsAdmin, &deactivated, &lastSeen,
			&r.ShadowBanned, &r.Suspended, &r.Locked, &perSecond, &burst)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.UnknownToken(false)
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if deactivated {
		return nil, mxerr.UnknownToken(false)
	}
	if perSecond.Valid {
		r.Ratelimit = &RatelimitOverride{MessagesPerSecond: perSecond.Int64, BurstCount: burst.Int64}
	}
	if expires != 0 && now >= expires {
		return nil, mxerr.UnknownToken(true)
	}
	if prevID.Valid {
		// First use of a refreshed access token: the refresh token it
		// replaced is revoked now, as the spec says.
		if err := s.revokeRefresh(ctx, r.UserID, refreshID.Int64, prevID.Int64); err != nil {
			return nil, err
		}
	}
	seen := lastSeen.Int64
	if !lastSeen.Valid || now-lastSeen.Int64 > lastSeenInterval.Milliseconds() {
		_, err := s.db.ExecContext(ctx, `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2, last_seen_user_agent = $3
			WHERE user_id = $4 AND device_id = $5`, now, client.IP, client.UserAgent, r.UserID, r.DeviceID)
		if err != nil {
			return nil, fmt.Errorf("update last seen: %w", err)
		}
		seen = now
	}
	if !prevID.Valid {
		s.auth.Put(string(hash), gen, authEntry{r: r, expires: expires, lastSeen: seen})
	}
	return &r, nil
}

// authEntry is a cached successful token lookup.
type authEntry struct {
	r        Requester
	expires  int64 // ms; 0 never
	lastSeen int64 // ms, as stored
}

// revokeRefresh deletes refresh token prevID (and, by cascade, any access
// token issued with it) now that its successor id has been used.
func (s *Service) revokeRefresh(ctx context.Context, userID string, id, prevID int64) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		s.tokensRevoked(tx, userID)
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE id = $1`, prevID); err != nil {
			return fmt.Errorf("revoke refresh token: %w", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET prev_id = NULL WHERE id = $1`, id)
		return err
	})
}

// Refresh exchanges a refresh token for a new access and refresh token.
// The old access token is revoked at once. The old refresh token stays
// valid (so a client whose response was lost can retry) until the new
// access or refresh token is first used; a retry replaces the unused pair.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3refresh
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Session, error) {
	var sess *Session
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		var (
			id             int64
			userID, device string
			expires        int64
			prevID         sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, `SELECT id, user_id, device_id, expires_ts, prev_id FROM refresh_tokens WHERE token_hash = $1`,
			hashToken(refreshToken)).Scan(&id, &userID, &device, &expires, &prevID)
		if errors.Is(err, sql.ErrNoRows) {
			return mxerr.UnknownToken(false)
		}
		if err != nil {
			return err
		}
		if expires != 0 && s.nowMS() >= expires {
			return mxerr.UnknownToken(true)
		}
		s.tokensRevoked(tx, userID)
		if prevID.Valid { // this token's first use revokes its predecessor
			if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE id = $1`, prevID.Int64); err != nil {
				return err
			}
		}
		// Unused pairs from earlier exchanges of this token, and the access
		// token issued with it, are replaced.
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE prev_id = $1`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE refresh_id = $1`, id); err != nil {
			return err
		}
		sess, err = s.issueTokens(ctx, tx, userID, device, true, &id)
		return err
	})
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("refresh: %w", err)
	}
	return sess, nil
}
