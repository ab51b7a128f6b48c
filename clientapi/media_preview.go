package clientapi

// GET /_matrix/client/v1/media/preview_url (and the legacy
// /_matrix/media/v3 and r0 ones): URL previews, when url_previews.enabled.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1mediapreview_url

import (
	"context"
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/users"
)

// previewURLHandler is the preview_url endpoint: 404 M_UNRECOGNIZED while
// URL previews are off, as in Synapse; one previewer (and its cache) for
// every prefix it is served at.
func (a *API) previewURLHandler() http.Handler {
	c := a.cfg.URLPreviews
	if !c.Enabled {
		return httpx.JSON(a.log, previewURLDisabled)
	}
	p, err := media.NewPreviewer(context.Background(), a.media, media.PreviewConfig{
		MaxResponseBytes: c.MaxResponseBytes,
		Timeout:          c.Timeout.Std(),
		CacheLifetime:    c.CacheLifetime.Std(),
		IPRangeBlacklist: c.IPRangeBlacklist,
		IPRangeWhitelist: c.IPRangeWhitelist,
	})
	if err != nil {
		a.log.WithError(err).Error("URL previews are enabled but could not be set up")
		return httpx.JSON(a.log, func(r *http.Request) (any, error) {
			return nil, mxerr.Unknown(http.StatusInternalServerError, "URL previews are unavailable")
		})
	}
	return httpx.JSON(a.log, a.authed(func(r *http.Request, who *users.Requester) (any, error) {
		q := r.URL.Query()
		raw := q.Get("url")
		if raw == "" {
			return nil, mxerr.MissingParam("Missing url parameter")
		}
		ts, err := media.ParsePreviewTS(q.Get("ts"))
		if err != nil {
			return nil, err
		}
		return p.Preview(r.Context(), who.UserID, raw, ts)
	}, noGuests))
}
