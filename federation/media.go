package federation

// The content repository over federation: other servers download our
// users' media, and thumbnails of it, with signed requests, as two-part
// multipart/mixed answers (JSON metadata, then the bytes).
// https://spec.matrix.org/v1.19/server-server-api/#content-repository

import (
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/media"
)

// mediaParts is the state of the media routes.
type mediaParts struct {
	media *media.Service
}

// SetMedia gives the edge the content repository. Call it before serving;
// until then the media routes answer 404 M_UNRECOGNIZED, as a server
// without them would.
func (a *API) SetMedia(m *media.Service) { a.media = m }

// registerMedia adds the routes for media/download, media/thumbnail.
func (a *API) registerMedia(fed *mux.Router) {
	fed.Handle("/v1/media/download/{mediaId}", a.signedStream(a.mediaDownload)).Methods(http.MethodGet)
	fed.Handle("/v1/media/thumbnail/{mediaId}", a.signedStream(a.mediaThumbnail)).Methods(http.MethodGet)
}

// streamFunc handles a verified request by writing the response itself.
// It returns an error only before it has written anything.
type streamFunc func(w http.ResponseWriter, r *http.Request, origin spec.ServerName) error

// signedStream is signed for handlers whose answer is not JSON: the same
// X-Matrix check with the same errors, then h writes the response.
func (a *API) signedStream(h streamFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var origin spec.ServerName
		verify := a.signed(func(_ *http.Request, o spec.ServerName, _ []byte) (any, error) {
			origin = o
			return nil, nil
		})
		if _, err := verify(r); err != nil {
			httpx.WriteError(w, r, a.log, err)
			return
		}
		if err := h(w, r, origin); err != nil {
			httpx.WriteError(w, r, a.log, err)
		}
	})
}

// Waiting for content not yet uploaded (timeout_ms): 20 s by default, as
// the spec says, and at most 60 s, as on the client API.
const (
	defaultMediaWait = 20 * time.Second
	maxMediaWait     = 60 * time.Second
)

// lookupMedia finds our media named by the path, waiting up to timeout_ms
// for an upload still to come. Other servers' media is not served here:
// the spec's media ID is one of ours.
func (a *API) lookupMedia(r *http.Request) (*media.Media, error) {
	if a.media == nil {
		return nil, mxerr.Unrecognized("Unrecognized request")
	}
	wait := defaultMediaWait
	if v := r.URL.Query().Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxerr.InvalidParam("timeout_ms must be a non-negative integer")
		}
		wait = time.Duration(min(ms, maxMediaWait.Milliseconds())) * time.Millisecond
	}
	return a.media.Get(r.Context(), a.cfg.ServerName, pathVar(r, "mediaId"), wait, false)
}

// GET /_matrix/federation/v1/media/download/{mediaId}
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1mediadownloadmediaid
func (a *API) mediaDownload(w http.ResponseWriter, r *http.Request, _ spec.ServerName) error {
	m, err := a.lookupMedia(r)
	if err != nil {
		return err
	}
	f, err := a.media.Open(m)
	if err != nil {
		return err
	}
	defer f.Close()
	a.writeMultipart(w, r, m.ContentType, media.ContentDisposition(m.ContentType, m.UploadName), f)
	return nil
}

// GET /_matrix/federation/v1/media/thumbnail/{mediaId}
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1mediathumbnailmediaid
func (a *API) mediaThumbnail(w http.ResponseWriter, r *http.Request, _ spec.ServerName) error {
	p, err := media.ParseThumbnailParams(r.URL.Query())
	if err != nil {
		return err
	}
	m, err := a.lookupMedia(r)
	if err != nil {
		return err
	}
	t, err := a.media.Thumbnail(r.Context(), m, p.Width, p.Height, p.Method, p.Animated)
	if err != nil {
		return err
	}
	f, err := a.media.OpenThumb(t)
	if err != nil {
		return err
	}
	defer f.Close()
	// As on the client API: inline, with a file name.
	a.writeMultipart(w, r, t.ContentType, "inline; filename=thumbnail."+strings.TrimPrefix(t.ContentType, "image/"), f)
	return nil
}

// writeMultipart answers with the spec's two parts: the metadata, an empty
// JSON object for now, then the content with its type and disposition.
// Once the status is sent an error can only cut the response short, so
// that the caller sees a truncated body rather than a complete-looking one.
func (a *API) writeMultipart(w http.ResponseWriter, r *http.Request, contentType, disposition string, content io.Reader) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	err := func() error {
		meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		if err != nil {
			return err
		}
		if _, err := io.WriteString(meta, "{}"); err != nil {
			return err
		}
		part, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":        {contentType},
			"Content-Disposition": {disposition},
		})
		if err != nil {
			return err
		}
		if _, err := io.Copy(part, content); err != nil {
			return err
		}
		return mw.Close()
	}()
	if err != nil {
		if r.Context().Err() == nil && !errors.Is(err, http.ErrHandlerTimeout) {
			a.log.WithError(err).WithFields(logrus.Fields{"path": r.URL.Path}).Warn("federation media response cut short")
		}
		panic(http.ErrAbortHandler)
	}
}
