package media

import (
	"context"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// What the server admin API (package admin) reads and deletes of the
// content repository: a user's uploads, local media by ID or by age and
// size, and the cache of other servers' media.

// LocalMedia is one local media ID as the admin API lists it.
type LocalMedia struct {
	MediaID     string  `json:"media_id"`
	MediaType   *string `json:"media_type"`
	UploadName  *string `json:"upload_name"`
	MediaLength *int64  `json:"media_length"`
	CreatedTS   int64   `json:"created_ts"`
	// LastAccessTS: we do not record accesses; the upload time stands in.
	LastAccessTS int64 `json:"last_access_ts"`
	// QuarantinedBy is the admin who quarantined it, nil if nobody.
	QuarantinedBy *string `json:"quarantined_by"`
	// SafeFromQuarantine: an admin protected it.
	SafeFromQuarantine bool `json:"safe_from_quarantine"`
}

// UserMediaOrders maps the admin API's order_by values to columns.
var UserMediaOrders = map[string]string{
	"media_id": "media_id", "upload_name": "upload_name", "created_ts": "created_ts",
	"last_access_ts": "COALESCE(uploaded_ts, created_ts)", "media_length": "size", "media_type": "content_type",
}

// UserMedia lists one page of a user's uploads and how many there are.
func (s *Service) UserMedia(ctx context.Context, userID string, from, limit int, orderBy string, backwards bool) ([]LocalMedia, int, error) {
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM media_local WHERE uploader = $1`, userID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count user media: %w", err)
	}
	col, ok := UserMediaOrders[orderBy]
	if !ok {
		col = "created_ts"
	}
	dir := "ASC"
	if backwards {
		dir = "DESC"
	}
	rows, err := s.db.QueryContext(ctx, `SELECT media_id, content_type, upload_name, size, created_ts, COALESCE(uploaded_ts, created_ts),
			(SELECT quarantined_by FROM media_quarantine q WHERE q.origin = m.server_name AND q.media_id = m.media_id),
			EXISTS (SELECT 1 FROM media_protected p WHERE p.media_id = m.media_id)
		FROM media_local m WHERE uploader = $1 ORDER BY `+col+` `+dir+`, media_id `+dir+` LIMIT $2 OFFSET $3`, userID, limit, from)
	if err != nil {
		return nil, 0, fmt.Errorf("user media: %w", err)
	}
	defer rows.Close()
	out := []LocalMedia{}
	for rows.Next() {
		var m LocalMedia
		if err := rows.Scan(&m.MediaID, &m.MediaType, &m.UploadName, &m.MediaLength, &m.CreatedTS, &m.LastAccessTS,
			&m.QuarantinedBy, &m.SafeFromQuarantine); err != nil {
			return nil, 0, fmt.Errorf("read user media: %w", err)
		}
		out = append(out, m)
	}
	return out, total, rows.Err()
}

// UsageStat is one user's uploads in total.
type UsageStat struct {
	UserID      string `json:"user_id"`
	MediaCount  int64  `json:"media_count"`
	MediaLength int64  `json:"media_length"`
}

// UsageByUser sums each uploader's media, smallest first.
func (s *Service) UsageByUser(ctx context.Context) ([]UsageStat, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT uploader, COUNT(*), COALESCE(SUM(size), 0) FROM media_local
		GROUP BY uploader ORDER BY 3, uploader`)
	if err != nil {
		return nil, fmt.Errorf("media usage: %w", err)
	}
	defer rows.Close()
	var out []UsageStat
	for rows.Next() {
		var u UsageStat
		if err := rows.Scan(&u.UserID, &u.MediaCount, &u.MediaLength); err != nil {
			return nil, fmt.Errorf("read media usage: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// DeleteLocal deletes local media IDs with their thumbnails, and their
// files once nothing else uses them; it returns the IDs that existed.
func (s *Service) DeleteLocal(ctx context.Context, mediaIDs []string) ([]string, error) {
	var deleted, sums []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		deleted, sums = deleted[:0], sums[:0]
		for _, id := range mediaIDs {
			ids, err := database.Strings(ctx, tx, `SELECT COALESCE(sha256, '') FROM media_local WHERE media_id = $1
				UNION ALL SELECT sha256 FROM media_thumbnails WHERE media_id = $1`, id)
			if err != nil {
				return fmt.Errorf("delete media %s: %w", id, err)
			}
			if len(ids) == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM media_local WHERE media_id = $1`, id); err != nil {
				return fmt.Errorf("delete media %s: %w", id, err)
			}
			deleted, sums = append(deleted, id), append(sums, ids...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return deleted, s.removeUnused(ctx, sums)
}

// LocalBefore lists local media created before a time and bigger than
// size bytes (the profile pictures Synapse's keep_profiles spares are left
// to the caller). Protected and quarantined media are kept, as Synapse
// keeps them.
func (s *Service) LocalBefore(ctx context.Context, before time.Time, size int64) ([]string, error) {
	return database.Strings(ctx, s.db, `SELECT media_id FROM media_local m WHERE created_ts < $1 AND COALESCE(size, 0) > $2
		AND NOT EXISTS (SELECT 1 FROM media_protected p WHERE p.media_id = m.media_id)
		AND NOT EXISTS (SELECT 1 FROM media_quarantine q WHERE q.origin = m.server_name AND q.media_id = m.media_id)
		ORDER BY media_id`, before.UnixMilli(), size)
}

// removeUnused deletes the files of content no row refers to any more
// (content is shared by hash between media IDs, thumbnails and remote
// copies).
func (s *Service) removeUnused(ctx context.Context, sums []string) error {
	// Through the store, under its lock: an upload of the same content
	// in between must not lose its file.
	_, err := s.files.removeUnused(sums, func(sum string) (bool, error) { return s.contentUsed(ctx, sum) })
	return err
}
