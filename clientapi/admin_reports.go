package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/tessera-hs/tessera/users"
)

// Event reports and the database statistics.
// https://element-hq.github.io/synapse/latest/admin_api/event_reports.html
// https://element-hq.github.io/synapse/latest/admin_api/statistics.html

// adminEventReport: GET /_synapse/admin/v1/event_reports/{reportId}.
func (a *API) adminEventReport(r *http.Request, _ *users.Requester) (any, error) {
	d, err := a.admin.Report(r.Context(), pathVar(r, "reportId"))
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"id": d.ID, "received_ts": d.ReceivedTS, "room_id": d.RoomID, "user_id": d.Reporter,
		"reason": d.Reason, "score": d.Score, "name": nil, "canonical_alias": nil,
	}
	if d.EventID != "" {
		out["event_id"] = d.EventID
	}
	if d.Room != nil {
		out["name"], out["canonical_alias"] = d.Room.Name, d.Room.CanonicalAlias
	}
	if d.Event != nil {
		out["sender"] = string(d.Event.SenderID())
		out["event_json"] = json.RawMessage(d.Event.JSON())
	}
	return out, nil
}

// adminDeleteEventReport: DELETE /_synapse/admin/v1/event_reports/{reportId}.
func (a *API) adminDeleteEventReport(r *http.Request, who *users.Requester) (any, error) {
	if err := a.admin.DeleteReport(r.Context(), who.UserID, pathVar(r, "reportId")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminRoomSizes: GET /_synapse/admin/v1/statistics/database/rooms.
func (a *API) adminRoomSizes(r *http.Request, _ *users.Requester) (any, error) {
	rooms, err := a.admin.RoomSizes(r.Context())
	if err != nil {
		return nil, err
	}
	return map[string]any{"rooms": rooms}, nil
}
