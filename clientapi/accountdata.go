package clientapi

// accountDataRoutes are per-user data endpoints: account data, tags, read
// markers and the user directory.
func (a *API) accountDataRoutes() []route { return nil }
