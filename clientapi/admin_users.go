package clientapi

import (
	"net/http"
	"strconv"

	"github.com/tessera-hs/tessera/admin"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// The user admin API.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html

// adminUserJSON is a user as the list and the details show it; Tessera
// has no user types or third-party IDs, so those fields carry their
// "none" values.
func adminUserJSON(u *users.AdminUser) map[string]any {
	return map[string]any{
		"name": u.UserID, "displayname": u.DisplayName, "avatar_url": u.AvatarURL,
		"is_guest": u.IsGuest, "admin": u.IsAdmin, "deactivated": u.Deactivated, "erased": u.Erased,
		"shadow_banned": u.ShadowBanned, "locked": u.Locked, "suspended": u.Suspended, "user_type": nil, "approved": true,
		"creation_ts": u.CreatedTS, "last_seen_ts": u.LastSeenTS,
	}
}

// adminListUsers: GET /_synapse/admin/v2/users.
func (a *API) adminListUsers(r *http.Request, _ *users.Requester) (any, error) {
	q := users.UserListQuery{Name: r.URL.Query().Get("name"), UserID: r.URL.Query().Get("user_id"), OrderBy: r.URL.Query().Get("order_by")}
	var err error
	if q.From, q.Limit, q.Backwards, err = queryPage(r); err != nil {
		return nil, err
	}
	if q.Guests, err = queryBool(r, "guests", true); err != nil {
		return nil, err
	}
	if q.Deactivated, err = queryBool(r, "deactivated", false); err != nil {
		return nil, err
	}
	if r.URL.Query().Get("admins") != "" {
		b, err := queryBool(r, "admins", false)
		if err != nil {
			return nil, err
		}
		q.Admins = &b
	}
	if _, ok := users.UserOrderColumns[q.OrderBy]; q.OrderBy != "" && !ok {
		return nil, mxerr.InvalidParam("Unknown value for order_by: %s", q.OrderBy)
	}
	list, total, err := a.admin.ListUsers(r.Context(), q)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, len(list))
	for i := range list {
		out[i] = adminUserJSON(&list[i])
	}
	resp := map[string]any{"users": out, "total": total}
	if q.From+len(list) < total {
		resp["next_token"] = strconv.Itoa(q.From + len(list))
	}
	return resp, nil
}

// adminGetUser: GET /_synapse/admin/v2/users/{userId}. creation_ts is in
// seconds here, as Synapse documents it.
func (a *API) adminGetUser(r *http.Request, _ *users.Requester) (any, error) {
	u, err := a.admin.User(r.Context(), pathVar(r, "userId"))
	if err != nil {
		return nil, err
	}
	out := adminUserJSON(u)
	out["creation_ts"] = u.CreatedTS / 1000
	out["threepids"], out["external_ids"] = []any{}, []any{}
	out["appservice_id"], out["consent_server_notice_sent"], out["consent_version"], out["consent_ts"] = nil, nil, nil, nil
	return out, nil
}

// adminPutUser: PUT /_synapse/admin/v2/users/{userId}: 201 with the new
// account, 200 with a changed one.
func (a *API) adminPutUser(r *http.Request, who *users.Requester) (any, error) {
	var body admin.UserUpdate
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	created, err := a.admin.PutUser(r.Context(), who.UserID, pathVar(r, "userId"), body)
	if err != nil {
		return nil, err
	}
	u, err := a.adminGetUser(r, who)
	if err != nil {
		return nil, err
	}
	if created {
		return &httpx.Response{Status: http.StatusCreated, Body: u}, nil
	}
	return u, nil
}

// adminDeactivate: POST /_synapse/admin/v1/deactivate/{userId}.
func (a *API) adminDeactivate(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		Erase bool `json:"erase"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if err := a.admin.Deactivate(r.Context(), who.UserID, pathVar(r, "userId"), body.Erase); err != nil {
		return nil, err
	}
	// No identity server is ever bound here, so there was nothing to unbind.
	return map[string]string{"id_server_unbind_result": "success"}, nil
}

// adminResetPassword: POST /_synapse/admin/v1/reset_password/{userId}.
func (a *API) adminResetPassword(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.NewPassword == nil || *body.NewPassword == "" {
		return nil, mxerr.MissingParam("Missing param new_password")
	}
	logout := body.LogoutDevices == nil || *body.LogoutDevices
	if err := a.admin.ResetPassword(r.Context(), who.UserID, pathVar(r, "userId"), *body.NewPassword, logout); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminWhois: GET /_synapse/admin/v1/whois/{userId}: the user's devices'
// last connections (we keep one per device).
func (a *API) adminWhois(r *http.Request, _ *users.Requester) (any, error) {
	userID := pathVar(r, "userId")
	devices, err := a.admin.Devices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	conns := []map[string]any{}
	for _, d := range devices {
		if d.LastSeenTS == nil {
			continue
		}
		conns = append(conns, map[string]any{"ip": d.LastSeenIP, "last_seen": *d.LastSeenTS, "user_agent": d.UserAgent})
	}
	return map[string]any{"user_id": userID, "devices": map[string]any{
		"": map[string]any{"sessions": []any{map[string]any{"connections": conns}}},
	}}, nil
}

// adminJoinedRooms: GET /_synapse/admin/v1/users/{userId}/joined_rooms.
func (a *API) adminJoinedRooms(r *http.Request, _ *users.Requester) (any, error) {
	rooms, err := a.admin.JoinedRooms(r.Context(), pathVar(r, "userId"))
	if err != nil {
		return nil, err
	}
	if rooms == nil {
		rooms = []string{}
	}
	return map[string]any{"joined_rooms": rooms, "total": len(rooms)}, nil
}

// adminAccountData: GET /_synapse/admin/v1/users/{userId}/accountdata.
func (a *API) adminAccountData(r *http.Request, _ *users.Requester) (any, error) {
	data, err := a.admin.AccountData(r.Context(), pathVar(r, "userId"))
	if err != nil {
		return nil, err
	}
	global := data[""]
	delete(data, "")
	return map[string]any{"account_data": map[string]any{"global": global, "rooms": data}}, nil
}

// adminGetAdmin: GET /_synapse/admin/v1/users/{userId}/admin.
func (a *API) adminGetAdmin(r *http.Request, _ *users.Requester) (any, error) {
	u, err := a.admin.User(r.Context(), pathVar(r, "userId"))
	if err != nil {
		return nil, err
	}
	return map[string]bool{"admin": u.IsAdmin}, nil
}

// adminPutAdmin: PUT /_synapse/admin/v1/users/{userId}/admin. An admin
// cannot take their own rights away, as in Synapse.
func (a *API) adminPutAdmin(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		Admin *bool `json:"admin"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Admin == nil {
		return nil, mxerr.MissingParam("Missing 'admin' key")
	}
	userID := pathVar(r, "userId")
	if userID == who.UserID && !*body.Admin {
		return nil, mxerr.Unknown(http.StatusBadRequest, "You may not demote yourself.")
	}
	if err := a.admin.SetAdmin(r.Context(), who.UserID, userID, *body.Admin); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminUsernameAvailable: GET /_synapse/admin/v1/username_available.
func (a *API) adminUsernameAvailable(r *http.Request, _ *users.Requester) (any, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		return nil, mxerr.MissingParam("Missing string query parameter 'username'")
	}
	if err := a.admin.UsernameAvailable(r.Context(), name); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

func adminDeviceJSON(userID string, d users.AdminDevice) map[string]any {
	return map[string]any{
		"device_id": d.DeviceID, "display_name": d.DisplayName, "last_seen_ip": d.LastSeenIP,
		"last_seen_ts": d.LastSeenTS, "last_seen_user_agent": d.UserAgent, "user_id": userID,
	}
}

// adminDevices: GET /_synapse/admin/v2/users/{userId}/devices.
func (a *API) adminDevices(r *http.Request, _ *users.Requester) (any, error) {
	userID := pathVar(r, "userId")
	devices, err := a.admin.Devices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, len(devices))
	for i, d := range devices {
		out[i] = adminDeviceJSON(userID, d)
	}
	return map[string]any{"devices": out, "total": len(out)}, nil
}

// adminDevice: GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}.
func (a *API) adminDevice(r *http.Request, _ *users.Requester) (any, error) {
	userID, deviceID := pathVar(r, "userId"), pathVar(r, "deviceId")
	devices, err := a.admin.Devices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	for _, d := range devices {
		if d.DeviceID == deviceID {
			return adminDeviceJSON(userID, d), nil
		}
	}
	return nil, mxerr.NotFound("No device found")
}

// adminDeleteDevice: DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}.
func (a *API) adminDeleteDevice(r *http.Request, who *users.Requester) (any, error) {
	if err := a.admin.DeleteDevices(r.Context(), who.UserID, pathVar(r, "userId"), []string{pathVar(r, "deviceId")}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminDeleteDevices: POST /_synapse/admin/v2/users/{userId}/delete_devices.
func (a *API) adminDeleteDevices(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		Devices *[]string `json:"devices"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.Devices == nil {
		return nil, mxerr.MissingParam("Missing param devices")
	}
	if err := a.admin.DeleteDevices(r.Context(), who.UserID, pathVar(r, "userId"), *body.Devices); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// adminCreateDevice: POST /_synapse/admin/v2/users/{userId}/devices:
// 201 for a new device, 200 for one that existed.
func (a *API) adminCreateDevice(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		DeviceID string `json:"device_id"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	created, err := a.admin.CreateDevice(r.Context(), who.UserID, pathVar(r, "userId"), body.DeviceID)
	if err != nil {
		return nil, err
	}
	if created {
		return &httpx.Response{Status: http.StatusCreated, Body: struct{}{}}, nil
	}
	return struct{}{}, nil
}

// adminRenameDevice: PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}.
func (a *API) adminRenameDevice(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if body.DisplayName == nil {
		return struct{}{}, nil // nothing to change, as in Synapse
	}
	if err := a.admin.RenameDevice(r.Context(), who.UserID, pathVar(r, "userId"), pathVar(r, "deviceId"), *body.DisplayName); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
