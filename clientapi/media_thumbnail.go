package clientapi

// GET .../thumbnail/{serverName}/{mediaId}
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/media"
)

// registerThumbnails adds the thumbnail endpoint below prefix; legacy is
// the unauthenticated one, frozen like legacy downloads.
func (a *API) registerThumbnails(r *mux.Router, prefix string, legacy bool) {
	r.Handle(prefix+"/thumbnail/{serverName}/{mediaId}", a.mediaThumbnail(legacy)).Methods(http.MethodGet)
}

func (a *API) mediaThumbnail(legacy bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p media.ThumbnailParams
		m := a.mediaLookup(w, r, legacy, func() (err error) {
			p, err = media.ParseThumbnailParams(r.URL.Query())
			return err
		})
		if m == nil {
			return
		}
		fail := func(err error) { httpx.WriteError(w, r, a.log, err) }
		t, err := a.media.Thumbnail(r.Context(), m, p.Width, p.Height, p.Method, p.Animated)
		if err != nil {
			fail(err)
			return
		}
		f, err := a.media.OpenThumb(t)
		if err != nil {
			fail(err)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", t.ContentType)
		// The spec: MUST be inline, SHOULD name a file.
		w.Header().Set("Content-Disposition", "inline; filename=thumbnail."+strings.TrimPrefix(t.ContentType, "image/"))
		serveMediaFile(w, r, legacy, t.SHA256, t.Created, f)
	})
}
