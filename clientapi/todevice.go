package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// toDeviceRoutes are send-to-device messaging. Guests may use it: the
// spec's guest access module lists it.
// https://spec.matrix.org/v1.19/client-server-api/#send-to-device-messaging
func (a *API) toDeviceRoutes() []route {
	return []route{
		{http.MethodPut, "/sendToDevice/{eventType}/{txnId}", a.authed(a.sendToDevice, guestOK)},
	}
}

// sendToDevice: PUT /sendToDevice/{eventType}/{txnId}. A retry with the
// same transaction ID from the same device is answered {} without sending
// again.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid
func (a *API) sendToDevice(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Messages == nil {
		return nil, mxerr.MissingParam("Missing messages")
	}
	err := a.syncs.ToDevice().Send(r.Context(), who.UserID, who.DeviceID, pathVar(r, "txnId"),
		pathVar(r, "eventType"), body.Messages)
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
