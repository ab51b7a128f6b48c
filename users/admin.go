package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// What the server admin API (package admin) reads and changes of accounts:
// listings across every account, and changes no user can make to
// themselves (the admin flag).

// AdminUser is an account as the admin API lists it.
type AdminUser struct {
	Account
	DisplayName *string
	AvatarURL   *string
	// LastSeenTS is the latest last_seen_ts of the user's devices.
	LastSeenTS *int64
	// Erased: deactivated with erase, so the profile is gone.
	Erased bool
	// ShadowBanned, Suspended and Locked are the account's moderation
	// flags (moderation.go).
	ShadowBanned, Suspended, Locked bool
}

// UserListQuery filters and orders ListUsers, as Synapse's
// GET /_synapse/admin/v2/users does.
type UserListQuery struct {
	// Name matches the user ID or display name, case-insensitively.
	Name string
	// UserID matches the user ID only (Synapse's user_id parameter).
	UserID            string
	Guests            bool // include guests
	Deactivated       bool // include deactivated accounts
	Admins            *bool
	OrderBy           string // one of UserOrderColumns' keys; "" is name
	Backwards         bool
	From, Limit       int
	IncludeLastSeenTS bool
}

// UserOrderColumns maps the admin API's order_by values to columns of the
// listing query.
var UserOrderColumns = map[string]string{
	"name": "a.user_id", "is_guest": "a.is_guest", "admin": "a.is_admin", "user_type": "a.user_id",
	"deactivated": "a.deactivated", "shadow_banned": "a.shadow_banned", "displayname": "displayname",
	"avatar_url": "avatar_url", "creation_ts": "a.created_ts", "last_seen_ts": "last_seen_ts",
}

const adminUserSelect = `SELECT a.user_id, a.localpart, a.created_ts, a.is_admin, a.is_guest, a.deactivated,
	a.shadow_banned, a.suspended, a.locked,
	(SELECT value_json FROM profile_fields p WHERE p.user_id = a.user_id AND p.field = 'displayname') AS displayname,
	(SELECT value_json FROM profile_fields p WHERE p.user_id = a.user_id AND p.field = 'avatar_url') AS avatar_url,
	(SELECT MAX(last_seen_ts) FROM devices d WHERE d.user_id = a.user_id) AS last_seen_ts
	FROM accounts a`

// ListUsers returns one page of accounts and the number that match.
func (s *Service) ListUsers(ctx context.Context, q UserListQuery) ([]AdminUser, int, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if !q.Guests {
		where = append(where, "a.is_guest = 0")
	}
	if !q.Deactivated {
		where = append(where, "a.deactivated = 0")
	}
	if q.Admins != nil {
		where = append(where, "a.is_admin = "+arg(*q.Admins))
	}
	if q.UserID != "" {
		where = append(where, "LOWER(a.user_id) LIKE "+arg("%"+strings.ToLower(q.UserID)+"%"))
	}
	if q.Name != "" {
		p := arg("%" + strings.ToLower(q.Name) + "%")
		where = append(where, "(LOWER(a.user_id) LIKE "+p+" OR EXISTS (SELECT 1 FROM profile_fields p WHERE p.user_id = a.user_id"+
			" AND p.field = 'displayname' AND LOWER(p.value_json) LIKE "+p+"))")
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts a`+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count users: %w", err)
	}
	col, ok := UserOrderColumns[q.OrderBy]
	if !ok {
		col = "a.user_id"
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	// The user ID breaks ties, so that pages never overlap.
	query := adminUserSelect + cond + " ORDER BY " + col + " " + dir + ", a.user_id " + dir +
		" LIMIT " + arg(q.Limit) + " OFFSET " + arg(q.From)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []AdminUser
	for rows.Next() {
		u, err := scanAdminUser(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, *u)
	}
	return out, total, rows.Err()
}

// AdminUser returns one account with its profile; M_NOT_FOUND if none.
func (s *Service) AdminUser(ctx context.Context, userID string) (*AdminUser, error) {
	rows, err := s.db.QueryContext(ctx, adminUserSelect+` WHERE a.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("look up user: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("look up user: %w", err)
		}
		return nil, mxerr.NotFound("User not found")
	}
	return scanAdminUser(rows)
}

func scanAdminUser(rows *sql.Rows) (*AdminUser, error) {
	var u AdminUser
	var name, avatar sql.NullString
	var seen sql.NullInt64
	if err := rows.Scan(&u.UserID, &u.Localpart, &u.CreatedTS, &u.IsAdmin, &u.IsGuest, &u.Deactivated,
		&u.ShadowBanned, &u.Suspended, &u.Locked, &name, &avatar, &seen); err != nil {
		return nil, fmt.Errorf("read user: %w", err)
	}
	u.DisplayName, u.AvatarURL = jsonString(name), jsonString(avatar)
	if seen.Valid {
		u.LastSeenTS = &seen.Int64
	}
	// Deactivation keeps the display name unless the profile was erased.
	u.Erased = u.Deactivated && !name.Valid
	return &u, nil
}

// jsonString decodes a profile field stored as JSON, if it is a string.
func jsonString(v sql.NullString) *string {
	if !v.Valid {
		return nil
	}
	var s string
	if json.Unmarshal([]byte(v.String), &s) != nil {
		return nil
	}
	return &s
}

// SetAdmin grants or takes away server admin rights.
func (s *Service) SetAdmin(ctx context.Context, userID string, admin bool) error {
	return s.updateAccount(ctx, userID, `UPDATE accounts SET is_admin = $1 WHERE user_id = $2`, admin)
}

// Reactivate makes a deactivated account usable again; it needs a new
// password (deactivation removed the old one) to log in with one.
func (s *Service) Reactivate(ctx context.Context, userID string) error {
	return s.updateAccount(ctx, userID, `UPDATE accounts SET deactivated = 0 WHERE user_id = $1`)
}

// updateAccount runs one UPDATE of a user's account row (userID is the
// last argument) and drops cached tokens, whose requester carries the
// account's flags.
func (s *Service) updateAccount(ctx context.Context, userID, query string, args ...any) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		res, err := tx.ExecContext(ctx, query, append(args, userID)...)
		if err != nil {
			return fmt.Errorf("update account %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mxerr.NotFound("User not found")
		}
		s.tokensRevoked(tx, userID)
		return nil
	})
}

// AdminDevice is a device as the admin API lists it.
type AdminDevice struct {
	Device
	UserAgent *string
}

// AdminDevices lists a user's devices with their last user agent.
func (s *Service) AdminDevices(ctx context.Context, userID string) ([]AdminDevice, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []AdminDevice
	for rows.Next() {
		var d AdminDevice
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenTS, &d.LastSeenIP, &d.UserAgent); err != nil {
			return nil, fmt.Errorf("read device: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// AllAccountData returns a user's global and per-room account data, keyed
// by room ID ("" for global) and type.
func (s *Service) AllAccountData(ctx context.Context, userID string) (map[string]map[string]json.RawMessage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, type, content FROM account_data WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("account data: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]json.RawMessage{"": {}}
	for rows.Next() {
		var room, typ, content string
		if err := rows.Scan(&room, &typ, &content); err != nil {
			return nil, fmt.Errorf("read account data: %w", err)
		}
		if out[room] == nil {
			out[room] = map[string]json.RawMessage{}
		}
		out[room][typ] = json.RawMessage(content)
	}
	return out, rows.Err()
}
