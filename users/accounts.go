package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Account is a local user account.
type Account struct {
	UserID      string
	Localpart   string
	CreatedTS   int64
	IsAdmin     bool
	IsGuest     bool
	Deactivated bool
}

// UserID builds the full user ID for a localpart on this server.
func (s *Service) UserID(localpart string) string {
	return "@" + localpart + ":" + string(s.cfg.ServerName)
}

// ValidateLocalpart applies the spec's user ID grammar for new accounts:
// lowercase a-z, digits and ._=-/+, with the whole ID at most 255 bytes. Like
// Synapse it also refuses all-digit names (guests get those) and a leading
// underscore (reserved for application services).
// https://spec.matrix.org/v1.19/appendices/#user-identifiers
func (s *Service) ValidateLocalpart(localpart string) error {
	if localpart == "" {
		return mxerr.InvalidUsername("User ID cannot be empty")
	}
	for _, r := range localpart {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-/+", r)) {
			return mxerr.InvalidUsername("User ID can only contain the characters a-z, 0-9, or '._=-/+'")
		}
	}
	if strings.Trim(localpart, digits) == "" {
		return mxerr.InvalidUsername("Numeric user IDs are reserved for guest users")
	}
	if localpart[0] == '_' {
		return mxerr.InvalidUsername("User ID may not begin with '_'")
	}
	if len(s.UserID(localpart)) > 255 {
		return mxerr.InvalidUsername("User ID is longer than 255 bytes")
	}
	return nil
}

// validateNewLocalpart is ValidateLocalpart, except that application
// services may use a leading underscore (bridges' puppets do, e.g.
// @_telegram_123), which is reserved to them.
func (s *Service) validateNewLocalpart(localpart, appService string) error {
	if appService != "" && strings.HasPrefix(localpart, "_") && len(localpart) > 1 {
		return s.ValidateLocalpart(localpart[1:])
	}
	return s.ValidateLocalpart(localpart)
}

// CheckAvailable reports M_INVALID_USERNAME or M_USER_IN_USE for a localpart
// that cannot be registered, and nil for one that can.
func (s *Service) CheckAvailable(ctx context.Context, localpart string) error {
	return s.CheckAvailableFor(ctx, localpart, "")
}

// CheckAvailableFor is CheckAvailable for a registration by an application
// service (its id; "" for anyone else): M_EXCLUSIVE for a user ID in
// another service's exclusive namespace, or outside the service's own.
func (s *Service) CheckAvailableFor(ctx context.Context, localpart, appService string) error {
	if err := s.validateNewLocalpart(localpart, appService); err != nil {
		return err
	}
	if err := s.checkExclusive(s.UserID(localpart), appService); err != nil {
		return err
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts WHERE localpart = $1`, localpart).Scan(&n)
	if err != nil {
		return fmt.Errorf("check username: %w", err)
	}
	if n > 0 {
		return mxerr.UserInUse()
	}
	return nil
}

// NewAccount describes an account to create.
type NewAccount struct {
	Localpart string // empty: a random one (numeric for guests)
	Password  string // empty: no password login (guests)
	IsAdmin   bool
	IsGuest   bool
	// RegistrationToken, if set, is consumed in the same transaction.
	RegistrationToken string
	// AppService is the id of the application service registering the
	// account: it may take a localpart with a leading underscore and
	// must stay in its namespaces. "" for anyone else, who may not take
	// a user ID an application service reserved.
	AppService string
}

// CreateAccount creates an account with its default profile (display name =
// localpart, as Synapse does).
func (s *Service) CreateAccount(ctx context.Context, na NewAccount) (*Account, error) {
	if na.Localpart == "" {
		na.Localpart = s.randomLocalpart(na.IsGuest)
	} else if err := s.validateNewLocalpart(na.Localpart, na.AppService); err != nil {
		return nil, err
	}
	if err := s.checkExclusive(s.UserID(na.Localpart), na.AppService); err != nil {
		return nil, err
	}
	var hash sql.NullString
	if na.Password != "" {
		if err := s.CheckPasswordPolicy(na.Password); err != nil {
			return nil, err
		}
		h, err := s.hashPassword(ctx, na.Password)
		if err != nil {
			return nil, err
		}
		hash = sql.NullString{String: h, Valid: true}
	}
	acc := &Account{
		UserID: s.UserID(na.Localpart), Localpart: na.Localpart, CreatedTS: s.nowMS(),
		IsAdmin: na.IsAdmin, IsGuest: na.IsGuest,
	}
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		if na.RegistrationToken != "" {
			if err := s.consumeRegistrationToken(ctx, tx, na.RegistrationToken); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts
			(user_id, localpart, password_hash, created_ts, is_admin, is_guest) VALUES ($1, $2, $3, $4, $5, $6)`,
			acc.UserID, acc.Localpart, hash, acc.CreatedTS, acc.IsAdmin, acc.IsGuest)
		if database.IsUniqueViolation(err) {
			return mxerr.UserInUse()
		}
		if err != nil {
			return err
		}
		if na.IsGuest {
			return nil
		}
		name, _ := json.Marshal(acc.Localpart)
		_, err = tx.ExecContext(ctx, `INSERT INTO profile_fields (user_id, field, value_json) VALUES ($1, 'displayname', $2)`,
			acc.UserID, string(name))
		return err
	})
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("create account: %w", err)
	}
	return acc, nil
}

func (s *Service) randomLocalpart(guest bool) string {
	if guest {
		return randomString(12, digits)
	}
	return "u" + randomString(11, alphaNum)
}

// Account looks up a local account by user ID; M_NOT_FOUND if none.
func (s *Service) Account(ctx context.Context, userID string) (*Account, error) {
	a := &Account{}
	err := s.db.QueryRowContext(ctx, `SELECT user_id, localpart, created_ts, is_admin, is_guest, deactivated
		FROM accounts WHERE user_id = $1`, userID).
		Scan(&a.UserID, &a.Localpart, &a.CreatedTS, &a.IsAdmin, &a.IsGuest, &a.Deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("No such user")
	}
	if err != nil {
		return nil, fmt.Errorf("look up account: %w", err)
	}
	return a, nil
}

// ResolveUser turns a login identifier (a localpart or a full user ID) into
// a local user ID. Localparts are matched case-insensitively, as all new
// accounts are lowercase.
func (s *Service) ResolveUser(identifier string) (string, error) {
	if strings.HasPrefix(identifier, "@") {
		local, server, ok := strings.Cut(identifier[1:], ":")
		if !ok || server != string(s.cfg.ServerName) {
			return "", mxerr.Forbidden("Invalid username or password")
		}
		identifier = local
	}
	return s.UserID(strings.ToLower(identifier)), nil
}

// errBadCredentials is the one answer for an unknown user or a wrong
// password, so the two cannot be told apart.
func errBadCredentials() *mxerr.Error { return mxerr.Forbidden("Invalid username or password") }

// CheckPassword verifies a user's password. It answers M_FORBIDDEN for a
// missing account or a wrong password (taking the same time for both) and
// M_USER_DEACTIVATED for a deactivated account with the right password,
// M_USER_LOCKED for a locked one.
func (s *Service) CheckPassword(ctx context.Context, userID, password string) error {
	var hash sql.NullString
	var deactivated, locked bool
	err := s.db.QueryRowContext(ctx, `SELECT password_hash, deactivated, locked FROM accounts WHERE user_id = $1`, userID).
		Scan(&hash, &deactivated, &locked)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !hash.Valid) {
		_, _ = s.verifyPassword(ctx, s.dummyHash, password)
		if err == nil && deactivated {
			return mxerr.UserDeactivated()
		}
		return errBadCredentials()
	}
	if err != nil {
		return fmt.Errorf("look up password: %w", err)
	}
	ok, err := s.verifyPassword(ctx, hash.String, password)
	if err != nil {
		return fmt.Errorf("verify password of %s: %w", userID, err)
	}
	if !ok {
		return errBadCredentials()
	}
	if deactivated {
		return mxerr.UserDeactivated()
	}
	if locked {
		// A new session would answer M_USER_LOCKED to every request; as
		// Synapse, say so at once (only to the password's owner).
		return mxerr.UserLocked()
	}
	return nil
}

// SetPassword changes a user's password. Unless keepOthers, every device but
// keepDevice is logged out (its tokens revoked and the device deleted), as
// /account/password's logout_devices asks by default.
func (s *Service) SetPassword(ctx context.Context, userID, newPassword, keepDevice string, keepOthers bool) error {
	if err := s.CheckPasswordPolicy(newPassword); err != nil {
		return err
	}
	hash, err := s.hashPassword(ctx, newPassword)
	if err != nil {
		return err
	}
	var deleted []string
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET password_hash = $1 WHERE user_id = $2`, hash, userID); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		if keepOthers {
			return nil
		}
		var err error
		deleted, err = s.deleteDevicesExcept(ctx, tx, userID, keepDevice)
		return err
	})
	if err != nil {
		return err
	}
	s.devicesDeleted(ctx, userID, deleted)
	return nil
}

// Deactivate makes an account unusable for good: its password is removed,
// every device and token deleted, and with erase its profile too. The user
// ID is never handed out again.
func (s *Service) Deactivate(ctx context.Context, userID string, erase bool) error {
	var deleted []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		s.tokensRevoked(tx, userID)
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET deactivated = 1, password_hash = NULL WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("deactivate: %w", err)
		}
		var err error
		if deleted, err = s.deleteDevicesExcept(ctx, tx, userID, ""); err != nil {
			return fmt.Errorf("deactivate: delete devices: %w", err)
		}
		if erase {
			if _, err := tx.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("deactivate: erase profile: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.devicesDeleted(ctx, userID, deleted)
	if s.hooks.Deactivated != nil {
		s.hooks.Deactivated(ctx, userID)
	}
	return nil
}

// RegistrationTokensRequired reports whether /register needs a token: the
// config file lists some, or an admin made some.
func (s *Service) RegistrationTokensRequired() bool {
	return len(s.cfg.RegistrationTokens) > 0 || s.storedTokens.Load() > 0
}

// ValidRegistrationToken reports whether token can still be used.
// https://spec.matrix.org/v1.19/client-server-api/#token-authenticated-registration
func (s *Service) ValidRegistrationToken(ctx context.Context, token string) (bool, error) {
	err := s.checkRegistrationToken(ctx, s.db, token)
	if _, ok := mxerr.As(err); ok {
		return false, nil
	}
	return err == nil, err
}

func (s *Service) checkRegistrationToken(ctx context.Context, q database.Querier, token string) error {
	for _, t := range s.cfg.RegistrationTokens {
		if t.Token != token {
			continue
		}
		if t.Expires != "" {
			exp, _ := time.Parse(time.RFC3339, t.Expires) // validated at load
			if !s.now().Before(exp) {
				return errInvalidRegToken()
			}
		}
		if t.UsesAllowed == 0 {
			return nil
		}
		var used int
		err := q.QueryRowContext(ctx, `SELECT completed FROM registration_token_uses WHERE token = $1`, token).Scan(&used)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("registration token uses: %w", err)
		}
		if used >= t.UsesAllowed {
			return errInvalidRegToken()
		}
		return nil
	}
	return s.checkStoredToken(ctx, q, token)
}

func errInvalidRegToken() *mxerr.Error {
	return mxerr.Unauthorized("Invalid registration token")
}

func (s *Service) consumeRegistrationToken(ctx context.Context, tx *database.Tx, token string) error {
	if err := s.checkRegistrationToken(ctx, tx, token); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO registration_token_uses (token, completed) VALUES ($1, 1)
		ON CONFLICT (token) DO UPDATE SET completed = registration_token_uses.completed + 1`, token)
	return err
}
