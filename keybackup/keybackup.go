// Package keybackup is server-side key backup: versions of a user's backup
// and the encrypted room keys stored in them. The server never sees the
// keys in the clear.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups
package keybackup

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Service is the key backup store.
type Service struct {
	db *database.DB
}

// New runs the key backup domain's migrations and builds the service.
func New(ctx context.Context, db *database.DB) (*Service, error) {
	if err := db.Migrate(ctx, "keybackup", migrations); err != nil {
		return nil, err
	}
	return &Service{db: db}, nil
}

// Versions are per user and numbered 1, 2, 3, ... as Synapse numbers
// them; the API carries them as (opaque) strings.

// parseVersion reads a version string. Only the canonical decimal form of
// a version we could have handed out is one; anything else names no
// backup, so it is 404 M_NOT_FOUND (as on Synapse) rather than a 400.
func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != v {
		return 0, false
	}
	return n, true
}

func formatVersion(n int64) string { return strconv.FormatInt(n, 10) }

func unknownVersion() error { return mxerr.NotFound("Unknown backup version") }

// wrongVersion is the 403 for keys uploaded to a backup that exists but is
// not the current one; current_version tells the client which one is.
func wrongVersion(current int64) error {
	return (&mxerr.Error{Status: http.StatusForbidden, Code: "M_WRONG_ROOM_KEYS_VERSION",
		Message: "Wrong backup version."}).With("current_version", formatVersion(current))
}

// VersionInfo is a backup version as GET /room_keys/version answers it.
type VersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// UpdateResult is the answer to a change of a backup's keys: the new etag
// and the number of keys stored.
type UpdateResult struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// etagString is the etag of a version. It is the number of changes made
// to the version's keys; a version's number is never reused, so (version,
// etag) names one state of one backup.
func etagString(n int64) string { return strconv.FormatInt(n, 10) }

// versionRow is a version's stored row.
type versionRow struct {
	version   int64
	algorithm string
	authData  string
	etag      int64
	count     int64
	deleted   bool
}

const versionColumns = `version, algorithm, auth_data, etag, key_count, deleted`

func scanVersion(row *sql.Row) (*versionRow, error) {
	var v versionRow
	err := row.Scan(&v.version, &v.algorithm, &v.authData, &v.etag, &v.count, &v.deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read backup version: %w", err)
	}
	return &v, nil
}

// getVersion reads one version, deleted or not; nil if it never existed.
func getVersion(ctx context.Context, q database.Querier, userID string, version int64) (*versionRow, error) {
	return scanVersion(q.QueryRowContext(ctx, `SELECT `+versionColumns+` FROM keybackup_versions
		WHERE user_id = $1 AND version = $2`, userID, version))
}

// latestVersion reads the user's current backup: the newest version not
// deleted; nil if there is none.
func latestVersion(ctx context.Context, q database.Querier, userID string) (*versionRow, error) {
	return scanVersion(q.QueryRowContext(ctx, `SELECT `+versionColumns+` FROM keybackup_versions
		WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1`, userID))
}

// liveVersion reads a version named by the client that must exist and not
// be deleted; 404 M_NOT_FOUND otherwise.
func liveVersion(ctx context.Context, q database.Querier, userID, version string) (*versionRow, error) {
	n, ok := parseVersion(version)
	if !ok {
		return nil, unknownVersion()
	}
	v, err := getVersion(ctx, q, userID, n)
	if err != nil {
		return nil, err
	}
	if v == nil || v.deleted {
		return nil, unknownVersion()
	}
	return v, nil
}

// CreateVersion creates a new backup version from the body of POST
// /room_keys/version and returns its version. It becomes the current
// backup: the next number after every version the user has had, deleted
// ones included.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3room_keysversion
func (s *Service) CreateVersion(ctx context.Context, userID string, raw []byte) (string, error) {
	body, err := parseVersionBody(raw)
	if err != nil {
		return "", err
	}
	var version int64
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM keybackup_versions WHERE user_id = $1`,
			userID).Scan(&version); err != nil {
			return fmt.Errorf("next backup version: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO keybackup_versions (user_id, version, algorithm, auth_data)
			VALUES ($1, $2, $3, $4)`, userID, version, body.algorithm, string(body.authData)); err != nil {
			return fmt.Errorf("create backup version: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return formatVersion(version), nil
}

// Version describes one backup version, or the current one when version
// is ""; 404 M_NOT_FOUND if there is none (or it was deleted).
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversion
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversionversion
func (s *Service) Version(ctx context.Context, userID, version string) (*VersionInfo, error) {
	var v *versionRow
	var err error
	if version == "" {
		v, err = latestVersion(ctx, s.db, userID)
		if err == nil && v == nil {
			err = mxerr.NotFound("No current backup version")
		}
	} else {
		v, err = liveVersion(ctx, s.db, userID, version)
	}
	if err != nil {
		return nil, err
	}
	return &VersionInfo{
		Algorithm: v.algorithm,
		AuthData:  json.RawMessage(v.authData),
		Count:     v.count,
		ETag:      etagString(v.etag),
		Version:   formatVersion(v.version),
	}, nil
}

// UpdateVersion replaces a version's auth_data with the body of PUT
// /room_keys/version/{version}. The body's algorithm must be the
// version's, and its version, if any, the one of the path: 400
// M_INVALID_PARAM otherwise. The keys and the etag do not change.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keysversionversion
func (s *Service) UpdateVersion(ctx context.Context, userID, version string, raw []byte) error {
	body, err := parseVersionBody(raw)
	if err != nil {
		return err
	}
	if body.version != nil && *body.version != version {
		return mxerr.InvalidParam("Version in body does not match the version in the path")
	}
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		v, err := liveVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		if v.algorithm != body.algorithm {
			return mxerr.InvalidParam("Algorithm does not match")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE keybackup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2`,
			userID, v.version, string(body.authData)); err != nil {
			return fmt.Errorf("update backup version: %w", err)
		}
		return nil
	})
}

// DeleteVersion deletes a version and all its keys. Deleting a version
// already deleted succeeds, as the spec asks; one that never existed is
// 404 M_NOT_FOUND.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keysversionversion
func (s *Service) DeleteVersion(ctx context.Context, userID, version string) error {
	n, ok := parseVersion(version)
	if !ok {
		return unknownVersion()
	}
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		v, err := getVersion(ctx, tx, userID, n)
		if err != nil {
			return err
		}
		if v == nil {
			return unknownVersion()
		}
		if v.deleted {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM keybackup_keys WHERE user_id = $1 AND version = $2`, userID, n); err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE keybackup_versions SET deleted = 1, key_count = 0, auth_data = '{}'
			WHERE user_id = $1 AND version = $2`, userID, n); err != nil {
			return fmt.Errorf("delete backup version: %w", err)
		}
		return nil
	})
}

// DeleteAllForUser deletes every backup version of a user and their keys,
// for account deactivation. Version numbers stay taken.
func (s *Service) DeleteAllForUser(ctx context.Context, userID string) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM keybackup_keys WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE keybackup_versions SET deleted = 1, key_count = 0, auth_data = '{}'
			WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("delete backup versions: %w", err)
		}
		return nil
	})
}

// PutKeys stores uploaded keys in a backup version, which must be the
// current one: 404 M_NOT_FOUND if it does not exist or was deleted, 403
// M_WRONG_ROOM_KEYS_VERSION (with current_version) if it exists but a
// newer one has been created since. A session the version already holds
// is replaced only if the upload is better (KeyBackupData.betterThan).
// The etag changes if and only if a key was added or replaced.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeys
func (s *Service) PutKeys(ctx context.Context, userID, version string, keys Upload) (*UpdateResult, error) {
	var res UpdateResult
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		v, err := liveVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		cur, err := latestVersion(ctx, tx, userID)
		if err != nil {
			return err
		}
		if cur.version != v.version {
			return wrongVersion(cur.version)
		}
		added, changed := int64(0), false
		for roomID, sessions := range keys {
			for sessionID, k := range sessions {
				var old KeyBackupData
				err := tx.QueryRowContext(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM keybackup_keys
					WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`,
					userID, v.version, roomID, sessionID).Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified)
				switch {
				case errors.Is(err, sql.ErrNoRows):
					added++
				case err != nil:
					return fmt.Errorf("read backup key: %w", err)
				case !k.betterThan(old):
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO keybackup_keys (user_id, version, room_id, session_id,
						first_message_index, forwarded_count, is_verified, session_data)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
					ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
						first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count,
						is_verified = excluded.is_verified, session_data = excluded.session_data`,
					userID, v.version, roomID, sessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified,
					string(k.SessionData)); err != nil {
					return fmt.Errorf("store backup key: %w", err)
				}
				changed = true
			}
		}
		res = UpdateResult{ETag: etagString(v.etag), Count: v.count}
		if !changed {
			return nil
		}
		res = UpdateResult{ETag: etagString(v.etag + 1), Count: v.count + added}
		if _, err := tx.ExecContext(ctx, `UPDATE keybackup_versions SET etag = etag + 1, key_count = key_count + $3
			WHERE user_id = $1 AND version = $2`, userID, v.version, added); err != nil {
			return fmt.Errorf("update backup etag: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// keysFilter is the WHERE clause and arguments selecting a version's keys,
// of one room when roomID is not "", of one session when sessionID is not
// "" either.
func keysFilter(userID string, version int64, roomID, sessionID string) (string, []any) {
	where := `user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		where += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			where += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	return where, args
}

// Keys reads the keys of a backup version (any version not deleted, not
// only the current one): all of them, a room's (roomID set) or one
// session's (roomID and sessionID set). The result maps room ID to session
// ID to key; it is empty when there is none, which the edge answers as the
// spec says for each form. 404 M_NOT_FOUND if the version does not exist
// or was deleted.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeys
func (s *Service) Keys(ctx context.Context, userID, version, roomID, sessionID string) (Upload, error) {
	v, err := liveVersion(ctx, s.db, userID, version)
	if err != nil {
		return nil, err
	}
	where, args := keysFilter(userID, v.version, roomID, sessionID)
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM keybackup_keys WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read backup keys: %w", err)
	}
	defer rows.Close()
	out := Upload{}
	for rows.Next() {
		var rid, sid, data string
		var k KeyBackupData
		if err := rows.Scan(&rid, &sid, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, fmt.Errorf("read backup keys: %w", err)
		}
		k.SessionData = json.RawMessage(data)
		if out[rid] == nil {
			out[rid] = map[string]KeyBackupData{}
		}
		out[rid][sid] = k
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read backup keys: %w", err)
	}
	return out, nil
}

// DeleteKeys deletes keys from a backup version (any version not deleted):
// all of them, a room's or one session's, as for Keys. The etag changes
// only if a key was deleted. 404 M_NOT_FOUND if the version does not
// exist or was deleted.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeys
func (s *Service) DeleteKeys(ctx context.Context, userID, version, roomID, sessionID string) (*UpdateResult, error) {
	var res UpdateResult
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		v, err := liveVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		where, args := keysFilter(userID, v.version, roomID, sessionID)
		r, err := tx.ExecContext(ctx, `DELETE FROM keybackup_keys WHERE `+where, args...)
		if err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		res = UpdateResult{ETag: etagString(v.etag), Count: v.count}
		if n == 0 {
			return nil
		}
		res = UpdateResult{ETag: etagString(v.etag + 1), Count: v.count - n}
		if _, err := tx.ExecContext(ctx, `UPDATE keybackup_versions SET etag = etag + 1, key_count = key_count - $3
			WHERE user_id = $1 AND version = $2`, userID, v.version, n); err != nil {
			return fmt.Errorf("update backup etag: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// PurgeRoom deletes every user's backed-up keys of a purged room, as
// Synapse's purge_room deletes e2e_room_keys: each backup that loses keys
// gets a new etag and its count, so that clients see the change.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, q := range []string{
			`UPDATE keybackup_versions SET etag = etag + 1, key_count = key_count -
				(SELECT COUNT(*) FROM keybackup_keys k WHERE k.user_id = keybackup_versions.user_id
					AND k.version = keybackup_versions.version AND k.room_id = $1)
			WHERE EXISTS (SELECT 1 FROM keybackup_keys k WHERE k.user_id = keybackup_versions.user_id
				AND k.version = keybackup_versions.version AND k.room_id = $1)`,
			`DELETE FROM keybackup_keys WHERE room_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, roomID); err != nil {
				return fmt.Errorf("purge the backed-up keys of %s: %w", roomID, err)
			}
		}
		return nil
	})
}
