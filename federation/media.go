package federation

import "github.com/gorilla/mux"

// registerMedia adds the routes for media/download, media/thumbnail.
func (a *API) registerMedia(fed *mux.Router) {}
