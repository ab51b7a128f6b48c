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

// Quarantine quarantines media, and every other copy of the same content
// (local uploads and cached remote media with the same SHA-256, as
// Synapse's quarantine does), skipping protected local media; it returns
// how many it newly quarantined.
func (s *Service) Quarantine(ctx context.Context, by string, media []MXC) (int, error) {
	n := 0
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		n = 0
		all, err := s.sameContent(ctx, tx, media)
		if err != nil {
			return err
		}
		for _, m := range all {
			k, err := s.quarantineOne(ctx, tx, by, m)
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	return n, err
}

// quarantineOne quarantines one media unless it is protected local media,
// and returns 1 if it was not quarantined yet.
func (s *Service) quarantineOne(ctx context.Context, tx *database.Tx, by string, m MXC) (int, error) {
	if m.Origin == s.cfg.ServerName {
		protected, err := database.Strings(ctx, tx, `SELECT media_id FROM media_protected WHERE media_id = $1`, m.MediaID)
		if err != nil {
			return 0, fmt.Errorf("quarantine %s: %w", m, err)
		}
		if len(protected) > 0 {
			return 0, nil
		}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO media_quarantine (origin, media_id, quarantined_by, quarantined_ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT (origin, media_id) DO NOTHING`,
		string(m.Origin), m.MediaID, by, s.now().UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("quarantine %s: %w", m, err)
	}
	k, _ := res.RowsAffected()
	return int(k), nil
}

// sameContent returns media and every local or cached remote media with
// the same content as one of them (by SHA-256), each once. Media not
// stored here (remote media not cached, a media ID without content yet)
// is returned as it is.
func (s *Service) sameContent(ctx context.Context, q database.Querier, media []MXC) ([]MXC, error) {
	seen := map[MXC]bool{}
	var out []MXC
	add := func(m MXC) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	sums := map[string]bool{}
	for _, m := range media {
		add(m)
		var sum sql.NullString
		var err error
		if m.Origin == s.cfg.ServerName {
			err = q.QueryRowContext(ctx, `SELECT sha256 FROM media_local WHERE media_id = $1`, m.MediaID).Scan(&sum)
		} else {
			err = q.QueryRowContext(ctx, `SELECT sha256 FROM media_remote WHERE origin = $1 AND media_id = $2`,
				string(m.Origin), m.MediaID).Scan(&sum)
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("content of %s: %w", m, err)
		}
		if sum.Valid && !sums[sum.String] {
			sums[sum.String] = true
			copies, err := s.copiesOf(ctx, q, sum.String)
			if err != nil {
				return nil, err
			}
			for _, c := range copies {
				add(c)
			}
		}
	}
	return out, nil
}

// copiesOf lists the local and cached remote media whose content has the
// SHA-256 sum.
func (s *Service) copiesOf(ctx context.Context, q database.Querier, sum string) ([]MXC, error) {
	rows, err := q.QueryContext(ctx, `SELECT server_name, media_id FROM media_local WHERE sha256 = $1
		UNION ALL SELECT origin, media_id FROM media_remote WHERE sha256 = $1`, sum)
	if err != nil {
		return nil, fmt.Errorf("media with content %s: %w", sum, err)
	}
	defer rows.Close()
	var out []MXC
	for rows.Next() {
		var origin string
		var m MXC
		if err := rows.Scan(&origin, &m.MediaID); err != nil {
			return nil, err
		}
		m.Origin = spec.ServerName(origin)
		out = append(out, m)
	}
	return out, rows.Err()
}

// quarantinedBySystem is who quarantined an upload whose content was
// already quarantined, as Synapse names it.
const quarantinedBySystem = "system"

// quarantineIfKnownBad quarantines new media (an upload, or remote media
// just cached) whose content is that of quarantined media, as Synapse
// quarantines such uploads: the upload succeeds, and the media is served
// to nobody.
func (s *Service) quarantineIfKnownBad(ctx context.Context, tx *database.Tx, m MXC, sum string) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM media_quarantine q JOIN media_local l ON q.origin = l.server_name AND q.media_id = l.media_id
			WHERE l.sha256 = $1
		UNION ALL SELECT 1 FROM media_quarantine q JOIN media_remote r ON q.origin = r.origin AND q.media_id = r.media_id
			WHERE r.sha256 = $1
		LIMIT 1`, sum).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up quarantined content: %w", err)
	}
	_, err = s.quarantineOne(ctx, tx, quarantinedBySystem, m)
	return err
}

// Unquarantine lifts a quarantine, from every copy of the same content
// (as Synapse lifts it by hash).
func (s *Service) Unquarantine(ctx context.Context, m MXC) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		all, err := s.sameContent(ctx, tx, []MXC{m})
		if err != nil {
			return err
		}
		for _, c := range all {
			if _, err := tx.ExecContext(ctx, `DELETE FROM media_quarantine WHERE origin = $1 AND media_id = $2`,
				string(c.Origin), c.MediaID); err != nil {
				return fmt.Errorf("unquarantine %s: %w", c, err)
			}
		}
		return nil
	})
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
