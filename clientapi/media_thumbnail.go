package clientapi

// GET .../thumbnail/{serverName}/{mediaId}
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// registerThumbnails adds the thumbnail endpoint below prefix; legacy is
// the unauthenticated one, frozen like legacy downloads.
func (a *API) registerThumbnails(r *mux.Router, prefix string, legacy bool) {
	r.Handle(prefix+"/thumbnail/{serverName}/{mediaId}", a.mediaThumbnail(legacy)).Methods(http.MethodGet)
}

type thumbParams struct {
	width, height int
	method        string
	animated      bool
}

// parseThumbParams reads width and height (required positive integers),
// method (crop or scale, scale by default, as Synapse) and animated.
func parseThumbParams(r *http.Request) (thumbParams, error) {
	q := r.URL.Query()
	p := thumbParams{method: "scale"}
	for _, dim := range []struct {
		name string
		v    *int
	}{{"width", &p.width}, {"height", &p.height}} {
		s := q.Get(dim.name)
		if s == "" {
			return p, mxerr.MissingParam("Missing integer query parameter %q", dim.name)
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return p, mxerr.InvalidParam("Query parameter %q must be a positive integer", dim.name)
		}
		*dim.v = n
	}
	if m := q.Get("method"); m != "" {
		if m != "crop" && m != "scale" {
			return p, mxerr.InvalidParam(`Query parameter "method" must be "crop" or "scale"`)
		}
		p.method = m
	}
	switch v := q.Get("animated"); v {
	case "", "false":
	case "true":
		p.animated = true
	default:
		return p, mxerr.InvalidParam(`Query parameter "animated" must be true or false`)
	}
	return p, nil
}

func (a *API) mediaThumbnail(legacy bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p thumbParams
		m := a.mediaLookup(w, r, legacy, func() (err error) {
			p, err = parseThumbParams(r)
			return err
		})
		if m == nil {
			return
		}
		fail := func(err error) { httpx.WriteError(w, r, a.log, err) }
		t, err := a.media.Thumbnail(r.Context(), m, p.width, p.height, p.method, p.animated)
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
