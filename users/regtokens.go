package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Registration tokens made by admins (Synapse's registration tokens admin
// API), beside the ones the config file lists. Their migrations are a
// domain of their own so that they number apart from the users domain's.
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/registration_tokens.html
var regTokenMigrations = []database.Migration{
	{Version: 1, SQL: `
-- uses_allowed NULL: unlimited; expiry_ts NULL: never. Completed
-- registrations are counted in registration_token_uses, as for tokens of
-- the config file.
CREATE TABLE registration_tokens (
	token        TEXT PRIMARY KEY,
	uses_allowed INTEGER,
	expiry_ts    INTEGER,
	created_ts   INTEGER NOT NULL
);
`},
}

// RegToken is a registration token as the admin API shows it.
type RegToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
	// FromConfig: listed in the config file, so read-only here.
	FromConfig bool `json:"-"`
}

// valid reports whether the token can still be used at now.
func (t *RegToken) valid(now int64) bool {
	return (t.ExpiryTime == nil || *t.ExpiryTime > now) && (t.UsesAllowed == nil || t.Completed < *t.UsesAllowed)
}

// regTokenChars is Synapse's alphabet for tokens.
var regTokenChars = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

func (s *Service) loadStoredTokenCount(ctx context.Context) error {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM registration_tokens`).Scan(&n); err != nil {
		return fmt.Errorf("count registration tokens: %w", err)
	}
	s.storedTokens.Store(n)
	return nil
}

// checkStoredToken is checkRegistrationToken for a token made by an admin.
func (s *Service) checkStoredToken(ctx context.Context, q database.Querier, token string) error {
	t, err := s.storedToken(ctx, q, token)
	if err != nil {
		return err
	}
	if t == nil || !t.valid(s.nowMS()) {
		return errInvalidRegToken()
	}
	return nil
}

func (s *Service) storedToken(ctx context.Context, q database.Querier, token string) (*RegToken, error) {
	t := &RegToken{Token: token}
	var uses, expiry sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT t.uses_allowed, t.expiry_ts, COALESCE(u.completed, 0)
		FROM registration_tokens t LEFT JOIN registration_token_uses u ON u.token = t.token WHERE t.token = $1`, token).
		Scan(&uses, &expiry, &t.Completed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registration token: %w", err)
	}
	if uses.Valid {
		t.UsesAllowed = &uses.Int64
	}
	if expiry.Valid {
		t.ExpiryTime = &expiry.Int64
	}
	return t, nil
}

// configTokens are the config file's tokens with their counts.
func (s *Service) configTokens(ctx context.Context) ([]RegToken, error) {
	var out []RegToken
	for _, ct := range s.cfg.RegistrationTokens {
		t := RegToken{Token: ct.Token, FromConfig: true}
		if ct.UsesAllowed > 0 {
			n := int64(ct.UsesAllowed)
			t.UsesAllowed = &n
		}
		if ct.Expires != "" {
			exp, _ := time.Parse(time.RFC3339, ct.Expires) // validated at load
			ms := exp.UnixMilli()
			t.ExpiryTime = &ms
		}
		err := s.db.QueryRowContext(ctx, `SELECT completed FROM registration_token_uses WHERE token = $1`, ct.Token).Scan(&t.Completed)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("registration token uses: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

// RegistrationTokens lists every token, the config file's first; valid,
// if set, keeps only the tokens that are (or are not) still usable.
func (s *Service) RegistrationTokens(ctx context.Context, valid *bool) ([]RegToken, error) {
	all, err := s.configTokens(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := database.Strings(ctx, s.db, `SELECT token FROM registration_tokens ORDER BY created_ts, token`)
	if err != nil {
		return nil, fmt.Errorf("list registration tokens: %w", err)
	}
	for _, id := range ids {
		t, err := s.storedToken(ctx, s.db, id)
		if err != nil {
			return nil, err
		}
		if t != nil {
			all = append(all, *t)
		}
	}
	out := []RegToken{}
	now := s.nowMS()
	for _, t := range all {
		if valid == nil || t.valid(now) == *valid {
			out = append(out, t)
		}
	}
	return out, nil
}

// RegistrationToken returns one token; M_NOT_FOUND if there is none.
func (s *Service) RegistrationToken(ctx context.Context, token string) (*RegToken, error) {
	all, err := s.RegistrationTokens(ctx, nil)
	if err != nil {
		return nil, err
	}
	for _, t := range all {
		if t.Token == token {
			return &t, nil
		}
	}
	return nil, mxerr.NotFound("No such registration token: %s", token)
}

// NewRegToken is a token to create; an empty Token is generated, Length
// characters long.
type NewRegToken struct {
	Token       string
	Length      int
	UsesAllowed *int64
	ExpiryTime  *int64
}

// CreateRegistrationToken stores a new token.
func (s *Service) CreateRegistrationToken(ctx context.Context, nt NewRegToken) (*RegToken, error) {
	if nt.Token == "" {
		if nt.Length <= 0 || nt.Length > 64 {
			return nil, mxerr.InvalidParam("length must be an integer between 1 and 64")
		}
		nt.Token = randomString(nt.Length, alphaNum+upperAlpha+"._~-")
	} else if !regTokenChars.MatchString(nt.Token) {
		return nil, mxerr.InvalidParam("token must consist only of characters matched by the regex [A-Za-z0-9._~-] and be at most 64 characters long")
	}
	if err := checkTokenLimits(s.nowMS(), nt.UsesAllowed, nt.ExpiryTime); err != nil {
		return nil, err
	}
	for _, ct := range s.cfg.RegistrationTokens {
		if ct.Token == nt.Token {
			return nil, mxerr.InvalidParam("Token already exists")
		}
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO registration_tokens (token, uses_allowed, expiry_ts, created_ts)
		VALUES ($1, $2, $3, $4)`, nt.Token, nt.UsesAllowed, nt.ExpiryTime, s.nowMS())
	if database.IsUniqueViolation(err) {
		return nil, mxerr.InvalidParam("Token already exists")
	}
	if err != nil {
		return nil, fmt.Errorf("create registration token: %w", err)
	}
	s.storedTokens.Add(1)
	return s.RegistrationToken(ctx, nt.Token)
}

func checkTokenLimits(now int64, uses, expiry *int64) error {
	if uses != nil && *uses < 0 {
		return mxerr.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	if expiry != nil && *expiry < now {
		return mxerr.InvalidParam("expiry_time must not be in the past")
	}
	return nil
}

// TokenUpdate changes a token's limits: Set* says which fields to change
// (to nil: unlimited, never).
type TokenUpdate struct {
	SetUses, SetExpiry      bool
	UsesAllowed, ExpiryTime *int64
}

// UpdateRegistrationToken changes a token made by an admin.
func (s *Service) UpdateRegistrationToken(ctx context.Context, token string, u TokenUpdate) (*RegToken, error) {
	if err := s.storedOnly(ctx, token); err != nil {
		return nil, err
	}
	if err := checkTokenLimits(s.nowMS(), u.UsesAllowed, u.ExpiryTime); err != nil {
		return nil, err
	}
	if u.SetUses {
		if _, err := s.db.ExecContext(ctx, `UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2`, u.UsesAllowed, token); err != nil {
			return nil, fmt.Errorf("update registration token: %w", err)
		}
	}
	if u.SetExpiry {
		if _, err := s.db.ExecContext(ctx, `UPDATE registration_tokens SET expiry_ts = $1 WHERE token = $2`, u.ExpiryTime, token); err != nil {
			return nil, fmt.Errorf("update registration token: %w", err)
		}
	}
	return s.RegistrationToken(ctx, token)
}

// DeleteRegistrationToken deletes a token made by an admin.
func (s *Service) DeleteRegistrationToken(ctx context.Context, token string) error {
	if err := s.storedOnly(ctx, token); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("delete registration token: %w", err)
	}
	n, _ := res.RowsAffected()
	s.storedTokens.Add(-n)
	return nil
}

// storedOnly refuses changes to the config file's tokens and unknown ones.
func (s *Service) storedOnly(ctx context.Context, token string) error {
	for _, ct := range s.cfg.RegistrationTokens {
		if ct.Token == token {
			return mxerr.Unknown(400, "Token %s is set in the config file; change it there", token)
		}
	}
	t, err := s.storedToken(ctx, s.db, token)
	if err != nil {
		return err
	}
	if t == nil {
		return mxerr.NotFound("No such registration token: %s", token)
	}
	return nil
}
