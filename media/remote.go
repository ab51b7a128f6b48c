package media

// Remote media: other servers' content, fetched over federation the first
// time a local client asks for it, kept in the file store with a row in
// media_remote, and served from there ever after. Thumbnails of remote
// media are generated here from the cached original, like local ones.
//
// https://spec.matrix.org/v1.19/server-server-api/#content-repository
// https://spec.matrix.org/v1.19/client-server-api/#content-repository

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// FederationClient is what fetching remote media needs of the federation
// client (gomatrixserverlib's fclient, which signs requests with our key).
type FederationClient interface {
	// DownloadMedia is the signed GET /_matrix/federation/v1/media/download.
	DownloadMedia(ctx context.Context, origin, destination spec.ServerName, mediaID string) (*http.Response, error)
	// DoHTTPRequest sends an unsigned request to a matrix:// URL, resolving
	// its server name as federation does: the legacy fallback.
	DoHTTPRequest(ctx context.Context, req *http.Request) (*http.Response, error)
}

// remoteFetchTimeout bounds one fetch, redirects and the legacy fallback
// included. The federation client's own timeout bounds each request too.
const remoteFetchTimeout = 2 * time.Minute

// maxRemoteErrorBytes bounds what is read of an error response or of the
// JSON metadata part: both are small JSON objects.
const maxRemoteErrorBytes = 64 << 10

// remoteFetcher is the Service's state for remote media; its zero value
// fetches nothing (no federation).
type remoteFetcher struct {
	fed     FederationClient
	allowed func(spec.ServerName) bool
	log     logrus.FieldLogger
	// plain follows the Location of a multipart answer: an ordinary URL
	// (a CDN, say), not a server name to resolve as federation does.
	plain *http.Client

	mu       sync.Mutex
	inflight map[remoteKey]*remoteFetch
}

type remoteKey struct {
	origin  spec.ServerName
	mediaID string
}

// remoteFetch is one fetch in progress; every request for the same media
// waits for it rather than fetching again.
type remoteFetch struct {
	done chan struct{}
	m    *Media
	err  error
}

// SetFederation lets the service fetch other servers' media through fc,
// from the servers allowed reports (nil: every server). Without it remote
// media that is not cached is 404 M_NOT_FOUND. Call it before serving.
func (s *Service) SetFederation(fc FederationClient, allowed func(spec.ServerName) bool, log logrus.FieldLogger) {
	s.remote.fed, s.remote.allowed, s.remote.log = fc, allowed, log
	s.remote.plain = &http.Client{Timeout: remoteFetchTimeout}
}

// isRemote reports whether m is another server's media.
func (s *Service) isRemote(m *Media) bool { return m.ServerName != s.cfg.ServerName }

// RemoteOptions qualify GetRemote.
type RemoteOptions struct {
	// Legacy is for the unauthenticated endpoints, which since the media
	// freeze serve only media cached before the legacy cutoff and never
	// fetch.
	Legacy bool
	// CacheOnly answers from the cache without contacting origin
	// (allow_remote=false, which stops request loops between servers).
	CacheOnly bool
}

// GetRemote returns the metadata of another server's media, fetching and
// caching its content on first request; concurrent requests for the same
// media share one fetch. Unknown media is 404 M_NOT_FOUND, content over
// max_upload_bytes 502 M_TOO_LARGE, an unreachable or misbehaving origin
// 502 M_UNKNOWN.
func (s *Service) GetRemote(ctx context.Context, origin spec.ServerName, mediaID string, opts RemoteOptions) (*Media, error) {
	if _, _, ok := spec.ParseAndValidateServerName(origin); !ok || origin == s.cfg.ServerName || !ValidMediaID(mediaID) {
		return nil, mxerr.NotFound("Media not found")
	}
	if err := s.quarantined(ctx, origin, mediaID); err != nil {
		return nil, err
	}
	m, err := s.lookupRemote(ctx, origin, mediaID)
	if err != nil {
		return nil, err
	}
	if m != nil {
		if opts.Legacy && !m.Created.Before(s.frozenAfter) {
			return nil, mxerr.NotFound("Media not found")
		}
		s.touch(ctx, m)
		return m, nil
	}
	r := &s.remote
	if opts.Legacy || opts.CacheOnly || r.fed == nil || (r.allowed != nil && !r.allowed(origin)) {
		return nil, mxerr.NotFound("Media not found")
	}
	return s.fetchOnce(ctx, origin, mediaID)
}

// fetchOnce fetches the media unless a fetch of it is under way already,
// and waits for the one that is.
func (s *Service) fetchOnce(ctx context.Context, origin spec.ServerName, mediaID string) (*Media, error) {
	r := &s.remote
	key := remoteKey{origin, mediaID}
	r.mu.Lock()
	f, ok := r.inflight[key]
	if !ok {
		if r.inflight == nil {
			r.inflight = make(map[remoteKey]*remoteFetch)
		}
		f = &remoteFetch{done: make(chan struct{})}
		r.inflight[key] = f
		// Not bound to this requester: others wait for the same fetch, and
		// what it stores serves every later request.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteFetchTimeout)
		go func() {
			defer cancel()
			f.m, f.err = s.fetch(fctx, origin, mediaID)
			// The row is committed before the fetch leaves the map, so a
			// request arriving after this finds it in the cache.
			r.mu.Lock()
			delete(r.inflight, key)
			r.mu.Unlock()
			close(f.done)
		}()
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		m := *f.m // each caller its own copy
		return &m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// remoteContent is the body of a fetched media and how its origin labels it.
type remoteContent struct {
	body        io.Reader
	contentType string
	disposition string
	length      int64 // -1: unknown
}

// fetch downloads the media from origin through the authenticated
// federation endpoint, or the legacy media endpoint when origin does not
// know the first, and stores it.
func (s *Service) fetch(ctx context.Context, origin spec.ServerName, mediaID string) (*Media, error) {
	resp, err := s.remote.fed.DownloadMedia(ctx, s.cfg.ServerName, origin, mediaID)
	if err != nil {
		return nil, s.unreachable(origin, mediaID, fmt.Errorf("federation media download: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		status, code := remoteErrCode(resp)
		if code != "M_UNRECOGNIZED" {
			return nil, s.remoteError(origin, mediaID, status, code)
		}
		// A server from before Matrix 1.11: its unauthenticated endpoint,
		// with allow_remote=false so that it does not ask anyone else.
		return s.fetchLegacy(ctx, origin, mediaID)
	}
	c, closeBody, err := s.readMultipart(ctx, resp)
	if err != nil {
		return nil, s.unreachable(origin, mediaID, err)
	}
	defer closeBody()
	return s.storeRemote(ctx, origin, mediaID, c)
}

// fetchLegacy is GET /_matrix/media/v3/download/{origin}/{mediaId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixmediav3downloadservernamemediaid
func (s *Service) fetchLegacy(ctx context.Context, origin spec.ServerName, mediaID string) (*Media, error) {
	u := "matrix://" + string(origin) + "/_matrix/media/v3/download/" + url.PathEscape(string(origin)) + "/" +
		url.PathEscape(mediaID) + "?allow_remote=false"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("legacy media request: %w", err)
	}
	resp, err := s.remote.fed.DoHTTPRequest(ctx, req)
	if err != nil {
		return nil, s.unreachable(origin, mediaID, fmt.Errorf("legacy media download: %w", err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		status, code := remoteErrCode(resp)
		return nil, s.remoteError(origin, mediaID, status, code)
	}
	return s.storeRemote(ctx, origin, mediaID, remoteContent{
		body: resp.Body, contentType: resp.Header.Get("Content-Type"),
		disposition: resp.Header.Get("Content-Disposition"), length: resp.ContentLength,
	})
}

// readMultipart reads the spec's two-part answer up to the content: a JSON
// object (metadata, empty for now), then the bytes or a Location to fetch
// them from. closeBody releases what the content is read from.
func (s *Service) readMultipart(ctx context.Context, resp *http.Response) (c remoteContent, closeBody func(), err error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return c, nil, fmt.Errorf("response is %q, not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return c, nil, fmt.Errorf("read metadata part: %w", err)
	}
	if t, _, _ := mime.ParseMediaType(meta.Header.Get("Content-Type")); t != "application/json" {
		return c, nil, fmt.Errorf("metadata part is %q, not application/json", meta.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(io.LimitReader(meta, maxRemoteErrorBytes+1))
	if err != nil {
		return c, nil, fmt.Errorf("read metadata part: %w", err)
	}
	if raw = bytes.TrimSpace(raw); len(raw) > maxRemoteErrorBytes || !json.Valid(raw) || raw[0] != '{' {
		return c, nil, errors.New("metadata part is not a JSON object")
	}
	part, err := mr.NextPart()
	if err != nil {
		return c, nil, fmt.Errorf("read content part: %w", err)
	}
	loc := part.Header.Get("Location")
	if loc == "" {
		return remoteContent{body: part, contentType: part.Header.Get("Content-Type"),
			disposition: part.Header.Get("Content-Disposition"), length: -1}, func() {}, nil
	}
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return c, nil, fmt.Errorf("content part redirects to %q, not an http(s) URL", loc)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return c, nil, fmt.Errorf("redirect request: %w", err)
	}
	rr, err := s.remote.plain.Do(req)
	if err != nil {
		return c, nil, fmt.Errorf("follow redirect: %w", err)
	}
	if rr.StatusCode != http.StatusOK {
		rr.Body.Close()
		return c, nil, fmt.Errorf("redirect to %s answered %s", u.Redacted(), rr.Status)
	}
	return remoteContent{body: rr.Body, contentType: rr.Header.Get("Content-Type"),
		disposition: rr.Header.Get("Content-Disposition"), length: rr.ContentLength}, func() { rr.Body.Close() }, nil
}

// readErrReader remembers a read error of the remote body, so that a
// failure of the origin is told from one of ours (a full disk).
type readErrReader struct {
	r   io.Reader
	err error
}

func (e *readErrReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// storeRemote writes the content to the file store, at most
// max_upload_bytes of it, and records it in the cache.
func (s *Service) storeRemote(ctx context.Context, origin spec.ServerName, mediaID string, c remoteContent) (*Media, error) {
	limit := s.cfg.MaxUploadBytes
	if c.length > limit {
		return nil, remoteTooLarge(limit)
	}
	body := &readErrReader{r: c.body}
	sum, size, err := s.files.write(body, limit)
	if err == nil {
		defer s.files.release()
	}
	switch {
	case errors.Is(err, errTooLarge):
		return nil, remoteTooLarge(limit)
	case body.err != nil:
		return nil, s.unreachable(origin, mediaID, fmt.Errorf("read content: %w", body.err))
	case err != nil:
		return nil, fmt.Errorf("store remote media %s/%s: %w", origin, mediaID, err)
	}
	ctype := c.contentType
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		_, err := tx.ExecContext(ctx, `
INSERT INTO media_remote (origin, media_id, content_type, upload_name, size, sha256, fetched_ts, last_access_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (origin, media_id) DO NOTHING`,
			string(origin), mediaID, ctype, dispositionFileName(c.disposition), size, sum, s.now().UnixMilli())
		if err != nil {
			return err
		}
		return s.quarantineIfKnownBad(ctx, tx, MXC{Origin: origin, MediaID: mediaID}, sum)
	})
	if err != nil {
		return nil, fmt.Errorf("record remote media: %w", err)
	}
	m, err := s.lookupRemote(ctx, origin, mediaID)
	if err == nil && m == nil {
		err = fmt.Errorf("remote media %s/%s vanished after caching", origin, mediaID)
	}
	return m, err
}

// dispositionFileName is the file name a Content-Disposition names
// (filename*, RFC 5987, decoded by package mime), or "".
func dispositionFileName(disposition string) string {
	if disposition == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return params["filename"]
}

func (s *Service) lookupRemote(ctx context.Context, origin spec.ServerName, mediaID string) (*Media, error) {
	m := Media{ServerName: origin, MediaID: mediaID}
	var fetched int64
	err := s.db.QueryRowContext(ctx, `
SELECT content_type, upload_name, size, sha256, fetched_ts FROM media_remote WHERE origin = $1 AND media_id = $2`,
		string(origin), mediaID).Scan(&m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &fetched)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up remote media: %w", err)
	}
	m.Created = time.UnixMilli(fetched)
	return &m, nil
}

// remoteErrCode is the status and errcode of an error response ("" when
// its body is not a Matrix error).
func remoteErrCode(resp *http.Response) (int, string) {
	var e struct {
		ErrCode string `json:"errcode"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxRemoteErrorBytes))
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.ErrCode
}

// remoteError is our answer to an error answer of origin.
func (s *Service) remoteError(origin spec.ServerName, mediaID string, status int, code string) error {
	switch {
	case status == http.StatusNotFound:
		return mxerr.NotFound("Media not found")
	case code == "M_NOT_YET_UPLOADED":
		return notYetUploaded()
	case code == "M_TOO_LARGE":
		return remoteTooLarge(s.cfg.MaxUploadBytes)
	}
	return s.unreachable(origin, mediaID, fmt.Errorf("origin answered %d %s", status, code))
}

// unreachable logs why a fetch failed and answers 502: the detail (an
// address, a TLS error) is for the operator, not for the client.
func (s *Service) unreachable(origin spec.ServerName, mediaID string, err error) error {
	if s.remote.log != nil {
		s.remote.log.WithError(err).WithFields(logrus.Fields{"origin": origin, "media_id": mediaID}).
			Warn("fetching remote media failed")
	}
	return mxerr.Unknown(http.StatusBadGateway, "Failed to fetch media from %s", origin)
}

// remoteTooLarge: the spec's 502 M_TOO_LARGE, "the content is too large for
// the server to serve".
func remoteTooLarge(limit int64) *mxerr.Error {
	return &mxerr.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE",
		Message: fmt.Sprintf("Remote content is larger than the limit of %d bytes", limit)}
}

// The SQL of thumbnails of remote media (thumbcache.go): the local
// statements with origin as the last argument.
const (
	selectRemoteThumb = `
SELECT content_type, size, sha256, created_ts FROM media_remote_thumbnails
WHERE media_id = $1 AND width = $2 AND height = $3 AND method = $4 AND animated = $5 AND origin = $6`
	insertRemoteThumb = `
INSERT INTO media_remote_thumbnails (media_id, width, height, method, animated, content_type, size, sha256, created_ts, origin)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`
)
