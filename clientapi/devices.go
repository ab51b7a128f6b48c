package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// deviceJSON is the spec's Device object.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3devices
type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  *string `json:"last_seen_ip,omitempty"`
	LastSeenTS  *int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d users.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

func (a *API) listDevices(r *http.Request, who *users.Requester) (any, error) {
	devices, err := a.users.Devices(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, len(devices))
	for i, d := range devices {
		out[i] = toDeviceJSON(d)
	}
	return map[string]any{"devices": out}, nil
}

func (a *API) getDevice(r *http.Request, who *users.Requester) (any, error) {
	d, err := a.users.Device(r.Context(), who.UserID, pathVar(r, "deviceId"))
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(*d), nil
}

// maxDeviceNameLen matches Synapse's limit on device display names.
const maxDeviceNameLen = 100

func (a *API) updateDevice(r *http.Request, who *users.Requester) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpx.DecodeJSON(r, &req, false); err != nil {
		return nil, err
	}
	deviceID := pathVar(r, "deviceId")
	if req.DisplayName != nil && len([]rune(*req.DisplayName)) > maxDeviceNameLen {
		return nil, mxerr.InvalidParam("display_name is longer than %d characters", maxDeviceNameLen)
	}
	// An application service creates its users' devices here (201),
	// without logging in (spec v1.17, MSC4190).
	if a.managesDevices(who) {
		created, err := a.users.CreateDevice(r.Context(), who.UserID, deviceID, req.DisplayName)
		if err != nil {
			return nil, err
		}
		if created {
			return &httpx.Response{Status: http.StatusCreated, Body: struct{}{}}, nil
		}
		return struct{}{}, nil
	}
	if req.DisplayName == nil {
		// Nothing to change, but the device must exist.
		_, err := a.users.Device(r.Context(), who.UserID, deviceID)
		return struct{}{}, err
	}
	if len([]rune(*req.DisplayName)) > maxDeviceNameLen {
		return nil, mxerr.InvalidParam("display_name is longer than %d characters", maxDeviceNameLen)
	}
	if err := a.users.SetDeviceDisplayName(r.Context(), who.UserID, deviceID, *req.DisplayName); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteDevice: DELETE /devices/{deviceId}, behind UIA.
func (a *API) deleteDevice(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	// No 404 for an unknown device: the spec answers 200 for a device that
	// "had been removed previously" (so a retried DELETE succeeds), as
	// Synapse does; DeleteDevices ignores IDs the user does not have.
	deviceID := pathVar(r, "deviceId")
	if !a.managesDevices(who) {
		if err := a.passwordUIA(r, who, "DELETE /devices/"+deviceID, raw); err != nil {
			return nil, err
		}
	}
	if err := a.users.DeleteDevices(r.Context(), who.UserID, []string{deviceID}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteDevices: POST /delete_devices, behind UIA.
func (a *API) deleteDevices(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Devices *[]string `json:"devices"`
	}
	if err := httpx.Unmarshal(raw, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxerr.MissingParam("devices is required")
	}
	if !a.managesDevices(who) {
		if err := a.passwordUIA(r, who, "POST /delete_devices", raw); err != nil {
			return nil, err
		}
	}
	if err := a.users.DeleteDevices(r.Context(), who.UserID, *req.Devices); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// managesDevices reports whether the requester is an application service,
// which manages its users' devices (spec v1.17, MSC4190): it creates them
// with PUT /devices/{deviceId} and deletes them, and replaces cross-signing
// keys, without user-interactive auth.
func (a *API) managesDevices(who *users.Requester) bool {
	return a.users.AppService(who) != nil
}
