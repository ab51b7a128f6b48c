package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/notices"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// SetNotices enables the server notices admin API.
func (a *API) SetNotices(n *notices.Service) { a.notices = n }

func (a *API) noticesRoutes(add func(string, []route)) {
	add("/_synapse/admin/v1", []route{
		{http.MethodPost, "/send_server_notice", a.authed(a.sendServerNotice, noGuests)},
		{http.MethodPut, "/send_server_notice/{txnId}", a.authed(a.sendServerNotice, noGuests)},
	})
}

// sendServerNotice: POST /_synapse/admin/v1/send_server_notice and
// PUT /_synapse/admin/v1/send_server_notice/{txnId}, for server admins.
// The checks come in Synapse's order: admin, body, enabled, user.
// https://element-hq.github.io/synapse/latest/admin_api/server_notices.html
func (a *API) sendServerNotice(r *http.Request, who *users.Requester) (any, error) {
	if !who.IsAdmin {
		return nil, mxerr.Forbidden("You are not a server admin")
	}
	var req struct {
		UserID   *string         `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     *string         `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	if req.UserID == nil || len(req.Content) == 0 {
		return nil, mxerr.MissingParam("Missing params: user_id and content are required")
	}
	if a.notices == nil || !a.notices.Enabled() {
		return nil, mxerr.Unknown(http.StatusBadRequest, "Server notices are not enabled on this server")
	}
	if req.Content[0] != '{' {
		return nil, mxerr.BadJSON("content must be a JSON object")
	}
	n := notices.Notice{UserID: *req.UserID, StateKey: req.StateKey, Content: req.Content}
	if req.Type != nil {
		if *req.Type == "" {
			return nil, mxerr.InvalidParam("type must not be empty")
		}
		n.Type = *req.Type
	}
	if txn := pathVar(r, "txnId"); txn != "" {
		n.Txn = &roomserver.TxnKey{UserID: who.UserID, DeviceID: who.DeviceID, Endpoint: "send_server_notice", TxnID: txn}
	}
	eventID, err := a.notices.Send(r.Context(), n)
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": eventID}, nil
}
