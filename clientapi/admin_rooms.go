package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/admin"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// The room admin API.
// https://element-hq.github.io/synapse/latest/admin_api/rooms.html

// adminListRooms: GET /_synapse/admin/v1/rooms.
func (a *API) adminListRooms(r *http.Request, _ *users.Requester) (any, error) {
	q := admin.RoomListQuery{SearchTerm: r.URL.Query().Get("search_term"), OrderBy: r.URL.Query().Get("order_by")}
	var err error
	if q.From, q.Limit, q.Backwards, err = queryPage(r); err != nil {
		return nil, err
	}
	if _, ok := admin.RoomOrders[q.OrderBy]; q.OrderBy != "" && !ok {
		return nil, mxerr.InvalidParam("Unknown value for order_by: %s", q.OrderBy)
	}
	for name, dst := range map[string]**bool{"public_rooms": &q.PublicRooms, "empty_rooms": &q.EmptyRooms} {
		if r.URL.Query().Get(name) != "" {
			b, err := queryBool(r, name, false)
			if err != nil {
				return nil, err
			}
			*dst = &b
		}
	}
	rooms, total, err := a.admin.ListRooms(r.Context(), q)
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []*roomserver.AdminRoom{}
	}
	out := map[string]any{"rooms": rooms, "offset": q.From, "total_rooms": total}
	if q.From+len(rooms) < total {
		out["next_batch"] = q.From + len(rooms)
	}
	if q.From > 0 {
		out["prev_batch"] = max(q.From-q.Limit, 0)
	}
	return out, nil
}

// inRoom serves h with the room ID of the path, checked.
func inRoom(h func(r *http.Request, who *users.Requester, roomID string) (any, error)) adminFunc {
	return func(r *http.Request, who *users.Requester) (any, error) {
		id, err := roomID(r)
		if err != nil {
			return nil, err
		}
		return h(r, who, id)
	}
}

// adminRoom: GET /_synapse/admin/v1/rooms/{roomId}.
func (a *API) adminRoom(r *http.Request, _ *users.Requester, id string) (any, error) {
	d, err := a.admin.RoomDetails(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// adminRoomMembers: GET /_synapse/admin/v1/rooms/{roomId}/members.
func (a *API) adminRoomMembers(r *http.Request, _ *users.Requester, id string) (any, error) {
	members, err := a.admin.Members(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"members": members, "total": len(members)}, nil
}

// adminRoomState: GET /_synapse/admin/v1/rooms/{roomId}/state.
func (a *API) adminRoomState(r *http.Request, who *users.Requester, id string) (any, error) {
	evs, err := a.admin.State(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"state": a.clientEvents(r, who, evs)}, nil
}

// adminRoomMessages: GET /_synapse/admin/v1/rooms/{roomId}/messages, as
// /messages but for any room and every event; dir defaults to "f".
func (a *API) adminRoomMessages(r *http.Request, who *users.Requester) (any, error) {
	if r.URL.Query().Get("dir") == "" {
		q := r.URL.Query()
		q.Set("dir", "f")
		r.URL.RawQuery = q.Encode()
	}
	return a.pageMessages(r, who, true)
}

// adminGetBlock: GET /_synapse/admin/v1/rooms/{roomId}/block.
func (a *API) adminGetBlock(r *http.Request, _ *users.Requester, id string) (any, error) {
	blocked, by, err := a.admin.BlockStatus(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if !blocked {
		return map[string]any{"block": false}, nil
	}
	return map[string]any{"block": true, "user_id": by}, nil
}

// adminPutBlock: PUT /_synapse/admin/v1/rooms/{roomId}/block.
func (a *API) adminPutBlock(r *http.Request, who *users.Requester, id string) (any, error) {
	var body struct {
		Block *bool `json:"block"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Block == nil {
		return nil, mxerr.MissingParam("Missing boolean 'block'")
	}
	if err := a.admin.SetBlocked(r.Context(), who.UserID, id, *body.Block); err != nil {
		return nil, err
	}
	return map[string]bool{"block": *body.Block}, nil
}

// adminMakeRoomAdmin: POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin.
func (a *API) adminMakeRoomAdmin(r *http.Request, who *users.Requester) (any, error) {
	target, err := checkRoomIDOrAlias(pathVar(r, "roomId"), "path")
	if err != nil {
		return nil, err
	}
	var body struct {
		UserID string `json:"user_id"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if body.UserID == "" {
		body.UserID = who.UserID
	}
	if err := a.admin.MakeRoomAdmin(r.Context(), who.UserID, target, body.UserID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminJoin: POST /_synapse/admin/v1/join/{roomIdOrAlias}.
func (a *API) adminJoin(r *http.Request, who *users.Requester) (any, error) {
	target, err := checkRoomIDOrAlias(pathVar(r, "roomId"), "path")
	if err != nil {
		return nil, err
	}
	var body struct {
		UserID string `json:"user_id"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.UserID == "" {
		return nil, mxerr.MissingParam("Missing param user_id")
	}
	id, err := a.admin.ForceJoin(r.Context(), who.UserID, target, body.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": id}, nil
}

// adminForwardExtremities: GET /_synapse/admin/v1/rooms/{roomId}/forward_extremities.
func (a *API) adminForwardExtremities(r *http.Request, _ *users.Requester, id string) (any, error) {
	xs, err := a.admin.ForwardExtremities(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"count": len(xs), "results": xs}, nil
}

// adminDeleteForwardExtremities: DELETE
// /_synapse/admin/v1/rooms/{roomId}/forward_extremities.
func (a *API) adminDeleteForwardExtremities(r *http.Request, who *users.Requester, id string) (any, error) {
	n, err := a.admin.DeleteForwardExtremities(r.Context(), who.UserID, id)
	if err != nil {
		return nil, err
	}
	return map[string]int64{"deleted": n}, nil
}

// adminDeleteRoom: DELETE /_synapse/admin/v2/rooms/{roomId}: starts the
// deletion and answers with its ID.
func (a *API) adminDeleteRoom(r *http.Request, who *users.Requester, id string) (any, error) {
	var body admin.DeleteRequest
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	deleteID, err := a.admin.StartDelete(r.Context(), who.UserID, id, body)
	if err != nil {
		return nil, err
	}
	return map[string]string{"delete_id": deleteID}, nil
}

// adminDeleteRoomSync: DELETE /_synapse/admin/v1/rooms/{roomId}, the older
// form, which answers when the deletion has ended.
func (a *API) adminDeleteRoomSync(r *http.Request, who *users.Requester, id string) (any, error) {
	var body admin.DeleteRequest
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	st, err := a.admin.DeleteRoom(r.Context(), who.UserID, id, body)
	if err != nil {
		return nil, err
	}
	if st.Status == admin.StatusFailed {
		return nil, mxerr.Unknown(http.StatusInternalServerError, "Room deletion failed: %s", st.Error)
	}
	return st.ShutdownRoom, nil
}

// adminDeleteStatusOfRoom: GET /_synapse/admin/v2/rooms/{roomId}/delete_status.
func (a *API) adminDeleteStatusOfRoom(r *http.Request, _ *users.Requester, id string) (any, error) {
	sts := a.admin.DeleteStatusesOfRoom(id)
	if len(sts) == 0 {
		return nil, mxerr.NotFound("No delete task for room_id '%s' found", id)
	}
	return map[string]any{"results": sts}, nil
}

// adminDeleteStatus: GET /_synapse/admin/v2/rooms/delete_status/{deleteId}.
func (a *API) adminDeleteStatus(r *http.Request, _ *users.Requester) (any, error) {
	st, ok := a.admin.DeleteStatusByID(pathVar(r, "deleteId"))
	if !ok {
		return nil, mxerr.NotFound("delete id '%s' not found", pathVar(r, "deleteId"))
	}
	out := map[string]any{"status": st.Status, "shutdown_room": st.ShutdownRoom}
	if st.Error != "" {
		out["error"] = st.Error
	}
	return out, nil
}
