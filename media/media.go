// Package media is the content repository: files uploaded by local users,
// stored once per distinct content, and the metadata of each media ID.
//
// https://spec.matrix.org/v1.19/client-server-api/#content-repository
package media

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Config is what the media domain needs from the configuration.
type Config struct {
	ServerName spec.ServerName
	// Dir is the file store, <data_dir>/media.
	Dir               string
	MaxUploadBytes    int64
	UnusedIDLifetime  time.Duration
	MaxPendingPerUser int
	// QuotaBytesPerUser bounds the total size of a user's uploads; 0 is
	// no quota.
	QuotaBytesPerUser int64
	// LegacyCutoff: media created before it is served by the
	// unauthenticated legacy endpoints. Zero means the media_frozen_after
	// time recorded when the store was first set up.
	LegacyCutoff time.Time
}

// Service is the media domain.
type Service struct {
	db    *database.DB
	cfg   Config
	files *fileStore
	now   func() time.Time
	// frozenAfter is the legacy cutoff in effect.
	frozenAfter time.Time

	// uploaded is closed (and replaced) whenever content arrives for an
	// ID created empty, waking downloads that wait for it.
	mu       sync.Mutex
	uploaded chan struct{}

	// thumbSlots bounds concurrent thumbnail generation (each holds a
	// decoded image in memory).
	thumbSlots chan struct{}

	// remote fetches other servers' media (remote.go).
	remote remoteFetcher
	// accessed throttles the writes of last access times (retention.go).
	accessed accessTracker
}

// New runs the domain's migrations, opens the file store and returns the
// service.
func New(ctx context.Context, db *database.DB, cfg Config) (*Service, error) {
	if err := db.Migrate(ctx, "media", migrations); err != nil {
		return nil, err
	}
	files, err := newFileStore(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Service{db: db, cfg: cfg, files: files, now: time.Now, uploaded: make(chan struct{}),
		thumbSlots: make(chan struct{}, max(runtime.NumCPU(), 1))}
	s.frozenAfter = cfg.LegacyCutoff
	if s.frozenAfter.IsZero() {
		if s.frozenAfter, err = s.frozenMarker(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// frozenMarker returns media_frozen_after, recording now on first start.
func (s *Service) frozenMarker(ctx context.Context) (time.Time, error) {
	var ms int64
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO media_settings (name, value) VALUES ('media_frozen_after', $1) ON CONFLICT (name) DO NOTHING`,
			fmt.Sprint(s.now().UnixMilli()))
		if err != nil {
			return err
		}
		var v string
		if err := tx.QueryRowContext(ctx, `SELECT value FROM media_settings WHERE name = 'media_frozen_after'`).Scan(&v); err != nil {
			return err
		}
		_, err = fmt.Sscan(v, &ms)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("media freeze marker: %w", err)
	}
	return time.UnixMilli(ms), nil
}

// ServerName is the homeserver's name.
func (s *Service) ServerName() spec.ServerName { return s.cfg.ServerName }

// MaxUploadBytes is the largest upload accepted.
func (s *Service) MaxUploadBytes() int64 { return s.cfg.MaxUploadBytes }

// Media is the metadata of one media ID with content.
type Media struct {
	ServerName  spec.ServerName
	MediaID     string
	Uploader    string
	ContentType string
	UploadName  string
	Size        int64
	SHA256      string // hex
	Created     time.Time
}

// MXC is the media's content URI.
func (m *Media) MXC() string { return "mxc://" + string(m.ServerName) + "/" + m.MediaID }

// Errors of the content repository that the spec gives their own codes.
func notYetUploaded() *mxerr.Error {
	return &mxerr.Error{Status: http.StatusGatewayTimeout, Code: "M_NOT_YET_UPLOADED",
		Message: "Media has not been uploaded yet"}
}

func cannotOverwrite() *mxerr.Error {
	return &mxerr.Error{Status: http.StatusConflict, Code: "M_CANNOT_OVERWRITE_MEDIA",
		Message: "Media already uploaded"}
}

func tooLarge(max int64) *mxerr.Error {
	return mxerr.TooLarge("Upload is larger than the limit of %d bytes", max)
}

// mediaIDRe is the spec's grammar for a media ID.
// https://spec.matrix.org/v1.19/client-server-api/#security-considerations-5
var mediaIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// ValidMediaID reports whether id could be a media ID.
func ValidMediaID(id string) bool { return mediaIDRe.MatchString(id) }

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns 32 random characters (about 190 bits).
func newMediaID() string {
	b := make([]byte, 32)
	max := big.NewInt(int64(len(idAlphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(fmt.Sprintf("crypto/rand failed: %v", err))
		}
		b[i] = idAlphabet[v.Int64()]
	}
	return string(b)
}

// Upload stores the content read from body (at most the configured
// maximum: beyond it 413 M_TOO_LARGE and nothing is stored) under a new
// media ID. Read errors of body are returned as they are.
func (s *Service) Upload(ctx context.Context, uploader, contentType, uploadName string, body io.Reader) (*Media, error) {
	sum, size, err := s.store(ctx, uploader, body)
	if err != nil {
		return nil, err
	}
	defer s.files.release()
	now := s.now()
	m := &Media{
		ServerName: s.cfg.ServerName, MediaID: newMediaID(), Uploader: uploader,
		ContentType: contentType, UploadName: uploadName, Size: size, SHA256: sum, Created: now,
	}
	// The file is in place before the row that names it commits.
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		_, err := tx.ExecContext(ctx, `
INSERT INTO media_local (media_id, server_name, uploader, content_type, upload_name, size, sha256, created_ts, uploaded_ts, last_access_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)`,
			m.MediaID, string(m.ServerName), uploader, contentType, uploadName, size, sum, now.UnixMilli())
		if err != nil {
			return err
		}
		return s.quarantineIfKnownBad(ctx, tx, MXC{Origin: m.ServerName, MediaID: m.MediaID}, sum)
	})
	if err != nil {
		return nil, fmt.Errorf("insert media: %w", err)
	}
	return m, nil
}

// store writes body to the file store, at most the upload limit or what
// is left of the uploader's quota, whichever is less: past the first,
// 413 M_TOO_LARGE; past the second, 403 M_FORBIDDEN (the spec's answer for
// "the user has reached a quota for uploaded content").
func (s *Service) store(ctx context.Context, uploader string, body io.Reader) (string, int64, error) {
	limit, byQuota := s.cfg.MaxUploadBytes, false
	if q := s.cfg.QuotaBytesPerUser; q > 0 {
		var used int64
		if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM media_local WHERE uploader = $1 AND sha256 IS NOT NULL`,
			uploader).Scan(&used); err != nil {
			return "", 0, fmt.Errorf("media quota: %w", err)
		}
		if q-used <= 0 {
			return "", 0, quotaExceeded(q)
		}
		if q-used < limit {
			limit, byQuota = q-used, true
		}
	}
	sum, size, err := s.files.write(body, limit)
	if errors.Is(err, errTooLarge) {
		if byQuota {
			return "", 0, quotaExceeded(s.cfg.QuotaBytesPerUser)
		}
		return "", 0, tooLarge(s.cfg.MaxUploadBytes)
	}
	return sum, size, err
}

func quotaExceeded(quota int64) error {
	return mxerr.Forbidden("This upload would exceed your media quota of %d bytes", quota)
}

// Create reserves a media ID for content uploaded later with UploadTo, and
// returns it with its expiry. A user holding the maximum of pending IDs
// gets 429 M_LIMIT_EXCEEDED until the first of them expires.
func (s *Service) Create(ctx context.Context, uploader string) (mxc string, expires time.Time, err error) {
	now := s.now()
	expires = now.Add(s.cfg.UnusedIDLifetime)
	id := newMediaID()
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		// IDs that expired unused are gone for good: drop them.
		if _, err := tx.ExecContext(ctx, `DELETE FROM media_local WHERE sha256 IS NULL AND unused_expires_ts <= $1`, now.UnixMilli()); err != nil {
			return err
		}
		var n int
		var first sql.NullInt64
		if err := tx.QueryRowContext(ctx, `
SELECT COUNT(*), MIN(unused_expires_ts) FROM media_local
WHERE uploader = $1 AND sha256 IS NULL AND unused_expires_ts > $2`, uploader, now.UnixMilli()).Scan(&n, &first); err != nil {
			return err
		}
		if n >= s.cfg.MaxPendingPerUser {
			return mxerr.LimitExceeded(max(first.Int64-now.UnixMilli(), 1))
		}
		_, err := tx.ExecContext(ctx, `
INSERT INTO media_local (media_id, server_name, uploader, created_ts, unused_expires_ts)
VALUES ($1, $2, $3, $4, $5)`, id, string(s.cfg.ServerName), uploader, now.UnixMilli(), expires.UnixMilli())
		return err
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return "mxc://" + string(s.cfg.ServerName) + "/" + id, expires, nil
}

// row is a media row as stored, with or without content.
type row struct {
	Media
	hasContent bool
	expires    sql.NullInt64
}

func (s *Service) lookup(ctx context.Context, mediaID string) (*row, error) {
	var r row
	var ctype, name, sum sql.NullString
	var size sql.NullInt64
	var created int64
	var server string
	err := s.db.QueryRowContext(ctx, `
SELECT server_name, uploader, content_type, upload_name, size, sha256, created_ts, unused_expires_ts
FROM media_local WHERE media_id = $1`, mediaID).
		Scan(&server, &r.Uploader, &ctype, &name, &size, &sum, &created, &r.expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up media: %w", err)
	}
	r.ServerName, r.MediaID = spec.ServerName(server), mediaID
	r.ContentType, r.UploadName, r.Size, r.SHA256 = ctype.String, name.String, size.Int64, sum.String
	r.Created = time.UnixMilli(created)
	r.hasContent = sum.Valid
	return &r, nil
}

// expired reports whether a row without content has passed its expiry.
func (r *row) expired(now time.Time) bool {
	return !r.hasContent && r.expires.Valid && now.UnixMilli() >= r.expires.Int64
}

// UploadTo stores the content of a media ID reserved with Create. Only its
// creator may (403 M_FORBIDDEN), only once (409 M_CANNOT_OVERWRITE_MEDIA);
// an unknown or expired ID is 404 M_NOT_FOUND.
func (s *Service) UploadTo(ctx context.Context, uploader string, serverName spec.ServerName, mediaID, contentType, uploadName string, body io.Reader) error {
	if serverName != s.cfg.ServerName || !ValidMediaID(mediaID) {
		return mxerr.NotFound("Unknown media ID")
	}
	// Checked before reading the body, and again when committing: two
	// concurrent PUTs cannot both win.
	r, err := s.lookup(ctx, mediaID)
	if err != nil {
		return err
	}
	if err := s.checkUploadTo(r, uploader); err != nil {
		return err
	}
	sum, size, err := s.store(ctx, uploader, body)
	if err != nil {
		return err
	}
	defer s.files.release()
	now := s.now()
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		res, err := tx.ExecContext(ctx, `
UPDATE media_local SET content_type = $1, upload_name = $2, size = $3, sha256 = $4, uploaded_ts = $5, last_access_ts = $5
WHERE media_id = $6 AND uploader = $7 AND sha256 IS NULL AND unused_expires_ts > $5`,
			contentType, uploadName, size, sum, now.UnixMilli(), mediaID, uploader)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return s.quarantineIfKnownBad(ctx, tx, MXC{Origin: s.cfg.ServerName, MediaID: mediaID}, sum)
		}
		return cannotOverwrite() // refined below
	})
	if me, ok := mxerr.As(err); ok && me.Code == "M_CANNOT_OVERWRITE_MEDIA" {
		// Whatever changed since the first check decides the answer.
		if r, err := s.lookup(ctx, mediaID); err == nil {
			if err := s.checkUploadTo(r, uploader); err != nil {
				return err
			}
		}
		return me
	}
	if err != nil {
		return fmt.Errorf("store uploaded media: %w", err)
	}
	s.wake()
	return nil
}

func (s *Service) checkUploadTo(r *row, uploader string) error {
	switch {
	case r == nil || !r.expires.Valid: // not created with /create
		return mxerr.NotFound("Unknown media ID")
	case r.Uploader != uploader:
		return mxerr.Forbidden("Only the creator of this media ID may upload to it")
	case r.hasContent:
		return cannotOverwrite()
	case r.expired(s.now()):
		return mxerr.NotFound("Media ID has expired")
	}
	return nil
}

func (s *Service) wake() {
	s.mu.Lock()
	close(s.uploaded)
	s.uploaded = make(chan struct{})
	s.mu.Unlock()
}

func (s *Service) waitChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploaded
}

// Get returns the metadata of local media with content. An ID created
// empty and not yet uploaded is waited for, up to wait, then 504
// M_NOT_YET_UPLOADED. Unknown, expired, remote (see GetRemote) and, when
// legacy, media created after the legacy cutoff are 404 M_NOT_FOUND.
func (s *Service) Get(ctx context.Context, serverName spec.ServerName, mediaID string, wait time.Duration, legacy bool) (*Media, error) {
	if serverName != s.cfg.ServerName || !ValidMediaID(mediaID) {
		return nil, mxerr.NotFound("Media not found")
	}
	if err := s.quarantined(ctx, serverName, mediaID); err != nil {
		return nil, err
	}
	deadline := s.now().Add(wait)
	for {
		woken := s.waitChan() // before the lookup: no upload slips between
		r, err := s.lookup(ctx, mediaID)
		if err != nil {
			return nil, err
		}
		now := s.now()
		if r == nil || r.expired(now) || (legacy && !r.Created.Before(s.frozenAfter)) {
			return nil, mxerr.NotFound("Media not found")
		}
		if r.hasContent {
			s.touch(ctx, &r.Media)
			return &r.Media, nil
		}
		left := deadline.Sub(now)
		if left <= 0 {
			return nil, notYetUploaded()
		}
		if r.expires.Valid {
			left = min(left, time.UnixMilli(r.expires.Int64).Sub(now)+time.Millisecond)
		}
		t := time.NewTimer(left)
		select {
		case <-woken:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

// Open opens the content of m.
func (s *Service) Open(m *Media) (*os.File, error) {
	f, err := s.files.open(m.SHA256)
	if err != nil {
		return nil, fmt.Errorf("open media %s: %w", m.MediaID, err)
	}
	return f, nil
}
