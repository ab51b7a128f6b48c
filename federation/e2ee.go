package federation

import "github.com/gorilla/mux"

// registerE2EE adds the routes for user/devices, user/keys/query, user/keys/claim.
func (a *API) registerE2EE(fed *mux.Router) {}
