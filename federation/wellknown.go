package federation

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/httpx"
)

// RegisterWellKnown serves /.well-known/matrix/server, naming where other
// servers reach our federation listener (delegation).
// https://spec.matrix.org/v1.19/server-server-api/#getwell-knownmatrixserver
func RegisterWellKnown(r *mux.Router, server string) {
	r.Handle("/.well-known/matrix/server", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		// Other servers cache it; a day is what Synapse suggests.
		w.Header().Set("Cache-Control", "max-age=86400")
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"m.server": server})
	})).Methods(http.MethodGet)
}
