package clientapi

// The content repository: uploads, downloads, the media config and (while
// URL previews are off) preview_url.
// https://spec.matrix.org/v1.19/client-server-api/#content-repository

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/users"
)

// SetMedia gives the edge the content repository; without it the media
// endpoints are not served.
func (a *API) SetMedia(m *media.Service) { a.media = m }

// mediaPrefix is where the legacy media API and every upload endpoint
// live; BodyLimit gives requests below it the media upload limit.
const mediaPrefix = "/_matrix/media/"

// BodyLimit caps request bodies: uploads to the media repository (every
// path below /_matrix/media/) at media.max_upload_bytes, everything else
// at http.max_request_body_bytes. It replaces a single httpx.LimitBody
// around the router, which would cap uploads at the JSON limit.
func BodyLimit(cfg *config.Config, next http.Handler) http.Handler {
	jsonLimited := httpx.LimitBody(cfg.HTTP.MaxRequestBodyBytes, next)
	mediaLimited := httpx.LimitBody(cfg.Media.MaxUploadBytes, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, mediaPrefix) {
			mediaLimited.ServeHTTP(w, r)
			return
		}
		jsonLimited.ServeHTTP(w, r)
	})
}

// registerMedia adds the media endpoints to r. Downloads write the file,
// not JSON, so they are plain http.Handlers that authenticate themselves.
func (a *API) registerMedia(r *mux.Router) {
	if a.media == nil {
		return
	}
	const get, post, put = http.MethodGet, http.MethodPost, http.MethodPut
	jsonRoute := func(method, path string, h httpx.HandlerFunc) {
		r.Handle(path, httpx.JSON(a.log, h)).Methods(method)
	}
	const v1 = "/_matrix/client/v1/media"
	jsonRoute(get, v1+"/config", a.authed(a.mediaConfig, guestOK))
	previewURL := a.previewURLHandler() // media_preview.go; 404 when url_previews are off
	r.Handle(v1+"/preview_url", previewURL).Methods(get)
	r.Handle(v1+"/download/{serverName}/{mediaId}", a.mediaDownload(false)).Methods(get)
	r.Handle(v1+"/download/{serverName}/{mediaId}/{fileName}", a.mediaDownload(false)).Methods(get)
	a.registerThumbnails(r, v1, false)

	jsonRoute(post, "/_matrix/media/v1/create", a.authed(a.mediaCreate, noGuests))
	// The legacy (unauthenticated-download) API, at v3 and at r0 as
	// Synapse serves it.
	for _, p := range []string{"/_matrix/media/v3", "/_matrix/media/r0"} {
		jsonRoute(get, p+"/config", a.authed(a.mediaConfig, guestOK))
		r.Handle(p+"/preview_url", previewURL).Methods(get)
		jsonRoute(post, p+"/upload", a.authed(a.mediaUpload, noGuests))
		jsonRoute(put, p+"/upload/{serverName}/{mediaId}", a.authed(a.mediaUploadTo, noGuests))
		r.Handle(p+"/download/{serverName}/{mediaId}", a.mediaDownload(true)).Methods(get)
		r.Handle(p+"/download/{serverName}/{mediaId}/{fileName}", a.mediaDownload(true)).Methods(get)
		a.registerThumbnails(r, p, true)
	}
}

// GET /_matrix/client/v1/media/config
func (a *API) mediaConfig(r *http.Request, who *users.Requester) (any, error) {
	return map[string]any{"m.upload.size": a.media.MaxUploadBytes()}, nil
}

// URL previews are off: the endpoint is not served, as in Synapse with
// url_preview_enabled false.
func previewURLDisabled(r *http.Request) (any, error) {
	return nil, mxerr.Unrecognized("URL previews are disabled on this server")
}

// uploadMeta is the content type and file name of an upload.
func uploadMeta(r *http.Request) (contentType, fileName string) {
	contentType = r.Header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return contentType, r.URL.Query().Get("filename")
}

// bodyReader remembers the error reading the request body, so that a
// client's fault (a body over the limit, a dropped connection) is told
// from the server's (a full disk).
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (a *API) uploadError(body *bodyReader, err error) error {
	if body.err == nil {
		return err
	}
	var mbe *http.MaxBytesError
	if errors.As(body.err, &mbe) {
		return mxerr.TooLarge("Upload is larger than the limit of %d bytes", a.media.MaxUploadBytes())
	}
	return httpx.BodyError(body.err)
}

// uploadAllowed applies the requester's restrictions (no uploads while
// suspended) and the per-user rate limit on uploads and upload IDs.
func (a *API) uploadAllowed(who *users.Requester) error {
	if err := who.Check(users.ActionUpload); err != nil {
		return err
	}
	if a.unlimited(who) {
		return nil
	}
	if ok, wait := a.mediaUploads.Allow(who.UserID); !ok {
		return mxerr.LimitExceeded(wait.Milliseconds())
	}
	return nil
}

// POST /_matrix/media/v3/upload
func (a *API) mediaUpload(r *http.Request, who *users.Requester) (any, error) {
	if err := a.uploadAllowed(who); err != nil {
		return nil, err
	}
	ctype, name := uploadMeta(r)
	body := &bodyReader{r: r.Body}
	m, err := a.media.Upload(r.Context(), who.UserID, ctype, name, body)
	if err != nil {
		return nil, a.uploadError(body, err)
	}
	return map[string]any{"content_uri": m.MXC()}, nil
}

// POST /_matrix/media/v1/create
func (a *API) mediaCreate(r *http.Request, who *users.Requester) (any, error) {
	if err := a.uploadAllowed(who); err != nil {
		return nil, err
	}
	mxc, expires, err := a.media.Create(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": mxc, "unused_expires_at": expires.UnixMilli()}, nil
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
func (a *API) mediaUploadTo(r *http.Request, who *users.Requester) (any, error) {
	if err := a.uploadAllowed(who); err != nil {
		return nil, err
	}
	ctype, name := uploadMeta(r)
	body := &bodyReader{r: r.Body}
	err := a.media.UploadTo(r.Context(), who.UserID, spec.ServerName(pathVar(r, "serverName")),
		pathVar(r, "mediaId"), ctype, name, body)
	if err != nil {
		return nil, a.uploadError(body, err)
	}
	return struct{}{}, nil
}

// Waiting for content not yet uploaded: timeout_ms, 20 s by default and
// at most 60 s, as in Synapse.
const (
	defaultMediaWait = 20 * time.Second
	maxMediaWait     = 60 * time.Second
)

func mediaWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return defaultMediaWait, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, mxerr.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return time.Duration(min(ms, maxMediaWait.Milliseconds())) * time.Millisecond, nil
}

// mediaRequester authenticates a raw media request as the JSON routes do.
func (a *API) mediaRequester(r *http.Request) (*users.Requester, error) {
	token, err := accessToken(r)
	if err != nil {
		return nil, err
	}
	return a.authenticate(r, token)
}

// setMediaSecurityHeaders are on every media response: served content
// must not run as part of a page of this origin.
// https://spec.matrix.org/v1.19/client-server-api/#serving-inline-content
func setMediaSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
}

// mediaLookup does what every media read starts with: the security
// headers, authentication (not on the legacy endpoints), the endpoint's own
// parameters (check, may be nil), timeout_ms and the lookup, which may wait
// for an asynchronous upload. On failure it has answered and returns nil.
func (a *API) mediaLookup(w http.ResponseWriter, r *http.Request, legacy bool, check func() error) *media.Media {
	setMediaSecurityHeaders(w.Header())
	fail := func(err error) *media.Media {
		if r.Context().Err() == nil { // else the client left while waiting
			httpx.WriteError(w, r, a.log, err)
		}
		return nil
	}
	if !legacy {
		if _, err := a.mediaRequester(r); err != nil {
			return fail(err)
		}
	}
	if check != nil {
		if err := check(); err != nil {
			return fail(err)
		}
	}
	wait, err := mediaWait(r)
	if err != nil {
		return fail(err)
	}
	server, mediaID := spec.ServerName(pathVar(r, "serverName")), pathVar(r, "mediaId")
	var m *media.Media
	if server == a.media.ServerName() {
		m, err = a.media.Get(r.Context(), server, mediaID, wait, legacy)
	} else {
		// Fetched over federation on first request; allow_remote=false
		// (the legacy API's loop breaker) answers from the cache only.
		m, err = a.media.GetRemote(r.Context(), server, mediaID, media.RemoteOptions{
			Legacy: legacy, CacheOnly: r.URL.Query().Get("allow_remote") == "false"})
	}
	if err != nil {
		return fail(err)
	}
	return m
}

// serveMediaFile answers with an open media or thumbnail file; the caller
// has set Content-Type and Content-Disposition. Range and If-None-Match
// are http.ServeContent's.
func serveMediaFile(w http.ResponseWriter, r *http.Request, legacy bool, sha256 string, created time.Time, f io.ReadSeeker) {
	h := w.Header()
	h.Set("ETag", `"`+sha256+`"`)
	if legacy {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "private, max-age=31536000, immutable")
	}
	http.ServeContent(w, r, "", created, f)
}

// mediaDownload serves GET .../download/{serverName}/{mediaId}[/{fileName}];
// legacy is the unauthenticated /_matrix/media one, which serves only media
// from before the freeze.
func (a *API) mediaDownload(legacy bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := a.mediaLookup(w, r, legacy, nil)
		if m == nil {
			return
		}
		f, err := a.media.Open(m)
		if err != nil {
			httpx.WriteError(w, r, a.log, err)
			return
		}
		defer f.Close()
		name := m.UploadName
		if fn := pathVar(r, "fileName"); fn != "" {
			name = fn
		}
		w.Header().Set("Content-Type", media.ServedContentType(m.ContentType))
		w.Header().Set("Content-Disposition", media.ContentDisposition(m.ContentType, name))
		serveMediaFile(w, r, legacy, m.SHA256, m.Created, f)
	})
}
