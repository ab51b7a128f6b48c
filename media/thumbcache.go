package media

// Thumbnails of local media, generated on first request by Thumbnail
// (thumbnail.go) and kept in the file store with a row in media_thumbnails.
// https://spec.matrix.org/v1.19/client-server-api/#thumbnails

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Thumb is a stored thumbnail.
type Thumb struct {
	ContentType string
	Size        int64
	SHA256      string
	Created     time.Time
}

// thumbSize is one of the sizes thumbnails are made at.
type thumbSize struct {
	w, h   int
	method string
}

// thumbSizes are the spec's recommended sizes, which are Synapse's
// defaults. A request is served the smallest of them that covers it, so
// each media gets a bounded number of thumbnails however many sizes
// clients ask for ("the actual thumbnail may be larger than the size
// specified").
var thumbSizes = []thumbSize{
	{32, 32, "crop"}, {96, 96, "crop"},
	{320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"},
}

// snapThumbSize picks the stored size for a request: a crop of at most
// 96×96 is cropped at 32 or 96, anything else is scaled to the first
// scale size covering it, or the largest.
func snapThumbSize(width, height int, method string) thumbSize {
	for _, s := range thumbSizes {
		if (s.method == method || method == "crop" && s.method == "scale") && s.w >= width && s.h >= height {
			return s
		}
	}
	return thumbSizes[len(thumbSizes)-1]
}

// maxThumbnailSourceBytes: larger sources are not read into memory to be
// thumbnailed (413 M_TOO_LARGE).
const maxThumbnailSourceBytes = 64 << 20

func cannotThumbnail() *mxerr.Error {
	return mxerr.Unknown(http.StatusBadRequest, "Cannot generate thumbnails for the requested content")
}

// Thumbnail returns a thumbnail of m (local media with content) for the
// requested size and method, generating and storing it the first time.
// Content that is not an image it can decode is 400 M_UNKNOWN; one too
// large to thumbnail is 413 M_TOO_LARGE.
func (s *Service) Thumbnail(ctx context.Context, m *Media, width, height int, method string, animated bool) (*Thumb, error) {
	if method != "crop" && method != "scale" || width < 1 || height < 1 {
		return nil, mxerr.InvalidParam("Bad thumbnail size or method")
	}
	if !strings.HasPrefix(strings.ToLower(m.ContentType), "image/") {
		return nil, cannotThumbnail()
	}
	size := snapThumbSize(width, height, method)
	if t, err := s.cachedThumb(ctx, m, size, animated); t != nil || err != nil {
		return t, err
	}
	if m.Size > maxThumbnailSourceBytes {
		return nil, mxerr.TooLarge("Content is too large to thumbnail")
	}
	select {
	case s.thumbSlots <- struct{}{}:
		defer func() { <-s.thumbSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Another request may have made it while this one waited.
	if t, err := s.cachedThumb(ctx, m, size, animated); t != nil || err != nil {
		return t, err
	}
	f, err := s.Open(m)
	if err != nil {
		return nil, err
	}
	src, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("read media %s: %w", m.MediaID, err)
	}
	data, ctype, err := Thumbnail(src, size.w, size.h, size.method, animated)
	switch {
	case errors.Is(err, ErrNotImage):
		return nil, cannotThumbnail()
	case errors.Is(err, ErrImageTooBig):
		return nil, mxerr.TooLarge("Content is too large to thumbnail")
	case errors.Is(err, ErrBadThumbnailParams):
		return nil, mxerr.InvalidParam("Bad thumbnail size or method")
	case err != nil:
		return nil, fmt.Errorf("thumbnail %s: %w", m.MediaID, err)
	}
	sum, err := s.files.writeBytes(data)
	if err != nil {
		return nil, err
	}
	defer s.files.release()
	now := s.now()
	q, args := `
INSERT INTO media_thumbnails (media_id, width, height, method, animated, content_type, size, sha256, created_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
		[]any{m.MediaID, size.w, size.h, size.method, animated, ctype, len(data), sum, now.UnixMilli()}
	if s.isRemote(m) { // remote.go
		q, args = insertRemoteThumb, append(args, string(m.ServerName))
	}
	_, err = s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store thumbnail: %w", err)
	}
	return &Thumb{ContentType: ctype, Size: int64(len(data)), SHA256: sum, Created: now}, nil
}

func (s *Service) cachedThumb(ctx context.Context, m *Media, size thumbSize, animated bool) (*Thumb, error) {
	var t Thumb
	var created int64
	q, args := `
SELECT content_type, size, sha256, created_ts FROM media_thumbnails
WHERE media_id = $1 AND width = $2 AND height = $3 AND method = $4 AND animated = $5`,
		[]any{m.MediaID, size.w, size.h, size.method, animated}
	if s.isRemote(m) { // remote.go
		q, args = selectRemoteThumb, append(args, string(m.ServerName))
	}
	err := s.db.QueryRowContext(ctx, q, args...).Scan(&t.ContentType, &t.Size, &t.SHA256, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up thumbnail: %w", err)
	}
	t.Created = time.UnixMilli(created)
	return &t, nil
}

// OpenThumb opens a stored thumbnail.
func (s *Service) OpenThumb(t *Thumb) (*os.File, error) {
	f, err := s.files.open(t.SHA256)
	if err != nil {
		return nil, fmt.Errorf("open thumbnail: %w", err)
	}
	return f, nil
}
