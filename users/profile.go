package users

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Profile limits from the spec: the whole profile under 64 KiB, keys at most
// 255 bytes.
// https://spec.matrix.org/v1.19/client-server-api/#profiles
const (
	maxProfileBytes = 64 * 1024
	maxProfileKey   = 255
)

// profileKeyRe is the spec's keyName pattern for PUT /profile/{userId}/{keyName}.
var profileKeyRe = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// Profile returns every field of a local user's profile. M_NOT_FOUND if the
// user does not exist or is deactivated.
func (s *Service) Profile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	acc, err := s.Account(ctx, userID)
	if _, ok := mxerr.As(err); ok && s.queryUnknown(ctx, userID) {
		acc, err = s.Account(ctx, userID)
	}
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return nil, mxerr.NotFound("Profile not found")
		}
		return nil, err
	}
	if acc.Deactivated {
		return nil, mxerr.NotFound("Profile not found")
	}
	return s.profileFields(ctx, s.db, userID)
}

func (s *Service) profileFields(ctx context.Context, q database.Querier, userID string) (map[string]json.RawMessage, error) {
	rows, err := q.QueryContext(ctx, `SELECT field, value_json FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	defer rows.Close()
	fields := map[string]json.RawMessage{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("read profile: %w", err)
		}
		fields[k] = json.RawMessage(v)
	}
	return fields, rows.Err()
}

// ValidateProfileKey checks a profile key against the spec's grammar and
// length limit.
func ValidateProfileKey(key string) error {
	if len(key) > maxProfileKey {
		return &mxerr.Error{Status: 400, Code: "M_KEY_TOO_LARGE", Message: "Profile key is longer than 255 bytes"}
	}
	if !profileKeyRe.MatchString(key) {
		return mxerr.InvalidParam("Invalid profile key %q", key)
	}
	return nil
}

// ValidateProfileField checks a key and value for PUT /profile.
func ValidateProfileField(key string, value json.RawMessage) error {
	if err := ValidateProfileKey(key); err != nil {
		return err
	}
	switch key {
	case "displayname", "avatar_url", "m.tz":
		var str *string
		if err := json.Unmarshal(value, &str); err != nil {
			return mxerr.BadJSON("%s must be a string", key)
		}
		if key == "avatar_url" && str != nil && *str != "" && !strings.HasPrefix(*str, "mxc://") {
			return mxerr.BadJSON("avatar_url must be an mxc:// URI")
		}
	}
	return nil
}

// SetProfileField stores one profile field.
func (s *Service) SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error {
	if err := ValidateProfileField(key, value); err != nil {
		return err
	}
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		fields, err := s.profileFields(ctx, tx, userID)
		if err != nil {
			return err
		}
		fields[key] = value
		if buf, _ := json.Marshal(fields); len(buf) > maxProfileBytes {
			return &mxerr.Error{Status: 400, Code: "M_PROFILE_TOO_LARGE", Message: "The profile would exceed 64 KiB"}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO profile_fields (user_id, field, value_json) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, field) DO UPDATE SET value_json = excluded.value_json`, userID, key, string(value))
		if err != nil {
			return fmt.Errorf("set profile field: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.profileChanged(ctx, userID, key)
	return nil
}

// DeleteProfileField removes one profile field (absent is not an error).
func (s *Service) DeleteProfileField(ctx context.Context, userID, key string) error {
	if err := ValidateProfileKey(key); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, key); err != nil {
		return fmt.Errorf("delete profile field: %w", err)
	}
	s.profileChanged(ctx, userID, key)
	return nil
}
