package clientapi

import (
	"net/http"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
	"github.com/tessera-hs/tessera/voip"
)

func (a *API) voipRoutes() []route {
	return []route{
		{http.MethodGet, "/voip/turnServer", a.authed(a.turnServer, guestOK)},
	}
}

// turnServer: GET /voip/turnServer. Credentials for the configured TURN
// server, or {} when there is none (what Synapse answers, and what clients
// take as "no relay").
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3voipturnserver
func (a *API) turnServer(r *http.Request, who *users.Requester) (any, error) {
	if who.IsGuest && !a.cfg.VoIP.TURNAllowGuests {
		return nil, mxerr.GuestAccessForbidden()
	}
	if srv := voip.Credentials(a.cfg.VoIP, who.UserID, time.Now()); srv != nil {
		return srv, nil
	}
	return struct{}{}, nil
}
