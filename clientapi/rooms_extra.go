package clientapi

// roomExtraRoutes are the room endpoints beyond membership, messages and
// state: the public room list, summaries, reports, upgrades and
// timestamp lookups.
func (a *API) roomExtraRoutes() []route { return nil }
