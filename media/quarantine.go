package media

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Quarantine and protection, as Synapse's admin API has them: quarantined
// media (local or remote) is served to nobody, and protected local media
// cannot be quarantined (nor deleted by the admin API's deletion by age).
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#quarantine-media

// MXC is one media's identity: its origin server and media ID.
type MXC struct {
	Origin  spec.ServerName
	MediaID string
}

func (m MXC) String() string { return "mxc://" + string(m.Origin) + "/" + m.MediaID }

// ParseMXC splits an mxc:// URI; ok is false for anything else.
func ParseMXC(uri string) (MXC, bool) {
	const prefix = "mxc://"
	if len(uri) <= len(prefix) || uri[:len(prefix)] != prefix {
		return MXC{}, false
	}
	rest := uri[len(prefix):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			m := MXC{Origin: spec.ServerName(rest[:i]), MediaID: rest[i+1:]}
			if m.Origin == "" || !ValidMediaID(m.MediaID) {
				return MXC{}, false
			}
			return m, true
		}
	}
	return MXC{}, false
}

// quarantined answers 404 M_NOT_FOUND for quarantined media, as Synapse
// does (the same answer as for media that does not exist).
func (s *Service) quarantined(ctx context.Context, origin spec.ServerName, mediaID string) error {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM media_quarantine WHERE origin = $1 AND media_id = $2`,
		string(origin), mediaID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up quarantine of %s/%s: %w", origin, mediaID, err)
	}
	return mxerr.NotFound("Media not found")
}

// Quarantine quarantines media, skipping protected local media, and
// returns how many it newly quarantined.
func (s *Service) Quarantine(ctx context.Context, by string, media []MXC) (int, error) {
	n := 0
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		n = 0
		for _, m := range media {
			if m.Origin == s.cfg.ServerName {
				protected, err := database.Strings(ctx, tx, `SELECT media_id FROM media_protected WHERE media_id = $1`, m.MediaID)
				if err != nil {
					return fmt.Errorf("quarantine %s: %w", m, err)
				}
				if len(protected) > 0 {
					continue
				}
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO media_quarantine (origin, media_id, quarantined_by, quarantined_ts)
				VALUES ($1, $2, $3, $4) ON CONFLICT (origin, media_id) DO NOTHING`,
				string(m.Origin), m.MediaID, by, s.now().UnixMilli())
			if err != nil {
				return fmt.Errorf("quarantine %s: %w", m, err)
			}
			k, _ := res.RowsAffected()
			n += int(k)
		}
		return nil
	})
	return n, err
}

// Unquarantine lifts a quarantine.
func (s *Service) Unquarantine(ctx context.Context, m MXC) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM media_quarantine WHERE origin = $1 AND media_id = $2`,
		string(m.Origin), m.MediaID); err != nil {
		return fmt.Errorf("unquarantine %s: %w", m, err)
	}
	return nil
}

// Protect protects local media from quarantine (protected) or lifts the
// protection; unknown media is 404 M_NOT_FOUND.
func (s *Service) Protect(ctx context.Context, mediaID string, protected bool) error {
	r, err := s.lookup(ctx, mediaID)
	if err != nil {
		return err
	}
	if r == nil {
		return mxerr.NotFound("Unknown media")
	}
	q := `DELETE FROM media_protected WHERE media_id = $1`
	if protected {
		q = `INSERT INTO media_protected (media_id) VALUES ($1) ON CONFLICT (media_id) DO NOTHING`
	}
	if _, err := s.db.ExecContext(ctx, q, mediaID); err != nil {
		return fmt.Errorf("protect media %s: %w", mediaID, err)
	}
	return nil
}

// UploadsOf lists a user's uploads.
func (s *Service) UploadsOf(ctx context.Context, userID string) ([]MXC, error) {
	ids, err := database.Strings(ctx, s.db, `SELECT media_id FROM media_local WHERE uploader = $1 ORDER BY media_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("uploads of %s: %w", userID, err)
	}
	out := make([]MXC, len(ids))
	for i, id := range ids {
		out[i] = MXC{Origin: s.cfg.ServerName, MediaID: id}
	}
	return out, nil
}
