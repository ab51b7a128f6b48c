package media

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// accessResolution is how precisely last access times are kept: a
// download writes one at most this often per media, so that popular media
// does not cost a write per request.
const accessResolution = time.Hour

// accessTracker remembers when each media's last access was written.
type accessTracker struct {
	mu      sync.Mutex
	written map[string]time.Time
}

// maxTracked bounds the tracker; it is emptied when full (the next access
// of each media then writes once).
const maxTracked = 100_000

// touch records an access of m, for media retention. A failure to write
// it is not the download's failure: at worst the media looks older.
func (s *Service) touch(ctx context.Context, m *Media) {
	now := s.now()
	key := string(m.ServerName) + "/" + m.MediaID
	t := &s.accessed
	t.mu.Lock()
	if last, ok := t.written[key]; ok && now.Sub(last) < accessResolution {
		t.mu.Unlock()
		return
	}
	if t.written == nil || len(t.written) >= maxTracked {
		t.written = map[string]time.Time{}
	}
	t.written[key] = now
	t.mu.Unlock()
	if s.isRemote(m) {
		_, _ = s.db.ExecContext(ctx, `UPDATE media_remote SET last_access_ts = $1 WHERE origin = $2 AND media_id = $3`,
			now.UnixMilli(), string(m.ServerName), m.MediaID)
	} else {
		_, _ = s.db.ExecContext(ctx, `UPDATE media_local SET last_access_ts = $1 WHERE media_id = $2`, now.UnixMilli(), m.MediaID)
	}
}

// purgeBatch bounds the media one purge transaction deletes.
const purgeBatch = 500

// PurgeRemote deletes the cached copies of other servers' media last
// accessed before before, with their thumbnails, and the files no other
// media shares; a later request fetches the media again.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#purge-remote-media-api
func (s *Service) PurgeRemote(ctx context.Context, before time.Time) (int, error) {
	return s.purge(ctx, `SELECT origin, media_id FROM media_remote WHERE last_access_ts < $1 LIMIT $2`,
		`DELETE FROM media_remote WHERE origin = $1 AND media_id = $2`,
		`SELECT sha256 FROM media_remote WHERE origin = $1 AND media_id = $2
		UNION SELECT sha256 FROM media_remote_thumbnails WHERE origin = $1 AND media_id = $2`, before)
}

// PurgeLocal deletes local media last accessed before before, with its
// thumbnails and the files no other media shares. Its mxc:// URIs answer
// 404 M_NOT_FOUND from then on.
func (s *Service) PurgeLocal(ctx context.Context, before time.Time) (int, error) {
	return s.purge(ctx, `SELECT server_name, media_id FROM media_local WHERE sha256 IS NOT NULL AND last_access_ts < $1 LIMIT $2`,
		`DELETE FROM media_local WHERE media_id = $2 AND server_name = $1`,
		`SELECT sha256 FROM media_local WHERE server_name = $1 AND media_id = $2
		UNION SELECT sha256 FROM media_thumbnails WHERE media_id = $2`, before)
}

// purge deletes, in batches, the media list selects (rows of two
// columns, the keys del and files take), then their unused files.
func (s *Service) purge(ctx context.Context, list, del, files string, before time.Time) (int, error) {
	total := 0
	for {
		var sums []string
		n := 0
		err := s.db.WithTx(ctx, func(tx *database.Tx) error {
			rows, err := tx.QueryContext(ctx, list, before.UnixMilli(), purgeBatch)
			if err != nil {
				return err
			}
			var keys [][2]string
			for rows.Next() {
				var k [2]string
				if err := rows.Scan(&k[0], &k[1]); err != nil {
					rows.Close()
					return err
				}
				keys = append(keys, k)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			for _, k := range keys {
				found, err := database.Strings(ctx, tx, files, k[0], k[1])
				if err != nil {
					return err
				}
				sums = append(sums, found...)
				// Thumbnails go with their media (ON DELETE CASCADE).
				if _, err := tx.ExecContext(ctx, del, k[0], k[1]); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("purge media: %w", err)
		}
		total += n
		if _, err := s.files.removeUnused(sums, func(sum string) (bool, error) { return s.contentUsed(ctx, sum) }); err != nil {
			return total, err
		}
		if n < purgeBatch {
			return total, nil
		}
	}
}

// contentUsed reports whether any media or thumbnail names the file.
func (s *Service) contentUsed(ctx context.Context, sum string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 WHERE
		EXISTS (SELECT 1 FROM media_local WHERE sha256 = $1)
		OR EXISTS (SELECT 1 FROM media_remote WHERE sha256 = $1)
		OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1)
		OR EXISTS (SELECT 1 FROM media_remote_thumbnails WHERE sha256 = $1)`, sum).Scan(&one)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return false, fmt.Errorf("media file in use: %w", err)
}
