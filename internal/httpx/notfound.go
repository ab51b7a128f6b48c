package httpx

import (
	"net/http"
	"regexp"

	"github.com/gorilla/mux"
)

// NotFoundOr405 returns a handler for requests r matched no route of:
// methodNotAllowed when some route has the request's path (with another
// method), notFound otherwise. gorilla/mux reports the method mismatch
// only when no later route fails on its path, so in a router with many
// routes a known path called with the wrong method came out as 404; the
// spec and Synapse answer it with 405 M_UNRECOGNIZED.
// https://spec.matrix.org/v1.19/client-server-api/#common-error-codes
func NotFoundOr405(r *mux.Router, notFound, methodNotAllowed http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if pathKnown(r, req.URL.EscapedPath()) {
			methodNotAllowed.ServeHTTP(w, req)
			return
		}
		notFound.ServeHTTP(w, req)
	})
}

// pathKnown reports whether a route of r with a method matcher has this
// path. Routes without methods (prefix handlers) would have matched.
func pathKnown(r *mux.Router, path string) bool {
	known := false
	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		if known {
			return nil
		}
		if _, err := route.GetMethods(); err != nil {
			return nil
		}
		expr, err := route.GetPathRegexp()
		if err != nil {
			return nil
		}
		if re, err := regexp.Compile(expr); err == nil && re.MatchString(path) {
			known = true
		}
		return nil
	})
	return known
}
