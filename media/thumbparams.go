package media

import (
	"net/url"
	"strconv"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// ThumbnailParams are a thumbnail request's query parameters, the same on
// the client and federation APIs.
type ThumbnailParams struct {
	Width, Height int
	Method        string // crop or scale
	Animated      bool
}

// ParseThumbnailParams reads width and height (required positive
// integers), method (crop or scale; scale by default, as Synapse) and
// animated, with the spec's errors.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid
func ParseThumbnailParams(q url.Values) (ThumbnailParams, error) {
	p := ThumbnailParams{Method: "scale"}
	for _, dim := range []struct {
		name string
		v    *int
	}{{"width", &p.Width}, {"height", &p.Height}} {
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
	switch m := q.Get("method"); m {
	case "":
	case "crop", "scale":
		p.Method = m
	default:
		return p, mxerr.InvalidParam(`Query parameter "method" must be "crop" or "scale"`)
	}
	switch v := q.Get("animated"); v {
	case "", "false":
	case "true":
		p.Animated = true
	default:
		return p, mxerr.InvalidParam(`Query parameter "animated" must be true or false`)
	}
	return p, nil
}
