package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/keys"
	"github.com/tessera-hs/tessera/users"
)

// Dehydrated devices, MSC3814, at its unstable prefix (the one Element and
// matrix-rust-sdk use): a device kept on the server with no access token,
// so that room keys sent while the user has no device logged in reach
// them. /versions advertises it as org.matrix.msc3814.
// https://github.com/matrix-org/matrix-spec-proposals/pull/3814

const dehydratedPrefix = "/_matrix/client/unstable/org.matrix.msc3814.v1"

func (a *API) dehydratedRoutes(add func(prefix string, routes []route)) {
	add(dehydratedPrefix, []route{
		{http.MethodPut, "/dehydrated_device", a.authed(a.putDehydratedDevice, noGuests)},
		{http.MethodGet, "/dehydrated_device", a.authed(a.getDehydratedDevice, noGuests)},
		{http.MethodDelete, "/dehydrated_device", a.authed(a.deleteDehydratedDevice, noGuests)},
		{http.MethodPost, "/dehydrated_device/{deviceId}/events", a.authed(a.dehydratedDeviceEvents, noGuests)},
	})
}

// putDehydratedDevice: PUT /dehydrated_device. It replaces the user's
// dehydrated device (the old one and its keys and messages are deleted)
// and publishes the new one's keys, as /keys/upload would for it.
func (a *API) putDehydratedDevice(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		DeviceID    string          `json:"device_id"`
		DeviceData  json.RawMessage `json:"device_data"`
		DisplayName string          `json:"initial_device_display_name"`
		keys.UploadRequest
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.DeviceID == "" {
		return nil, mxerr.MissingParam("Missing device_id")
	}
	if d := bytes.TrimSpace(body.DeviceData); len(d) == 0 || d[0] != '{' {
		return nil, mxerr.BadJSON("device_data must be an object")
	}
	if len(body.DeviceKeys) == 0 || string(body.DeviceKeys) == "null" {
		return nil, mxerr.MissingParam("Missing device_keys")
	}
	ctx := r.Context()
	if _, err := a.users.PutDehydratedDevice(ctx, who.UserID, body.DeviceID, body.DisplayName, body.DeviceData); err != nil {
		return nil, err
	}
	if _, err := a.keys.Upload(ctx, who.UserID, body.DeviceID, body.UploadRequest); err != nil {
		// The keys are refused: so is the device.
		if _, derr := a.users.DeleteDehydratedDevice(ctx, who.UserID); derr != nil {
			a.log.WithError(derr).Error("removing a dehydrated device whose keys were refused")
		}
		return nil, err
	}
	return map[string]string{"device_id": body.DeviceID}, nil
}

// getDehydratedDevice: GET /dehydrated_device.
func (a *API) getDehydratedDevice(r *http.Request, who *users.Requester) (any, error) {
	id, data, err := a.users.DehydratedDevice(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": id, "device_data": data}, nil
}

// deleteDehydratedDevice: DELETE /dehydrated_device.
func (a *API) deleteDehydratedDevice(r *http.Request, who *users.Requester) (any, error) {
	id, err := a.users.DeleteDehydratedDevice(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": id}, nil
}

// dehydratedDeviceEvents: POST /dehydrated_device/{deviceId}/events, the
// to-device messages waiting for the dehydrated device, a page at a time;
// each request's next_batch acknowledges the page before.
func (a *API) dehydratedDeviceEvents(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		NextBatch string `json:"next_batch"`
	}
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	ctx := r.Context()
	deviceID := mux.Vars(r)["deviceId"]
	current, _, err := a.users.DehydratedDevice(ctx, who.UserID)
	if err != nil {
		return nil, err
	}
	if current != deviceID {
		return nil, mxerr.Forbidden("You may only fetch messages for your dehydrated device")
	}
	events, next, err := a.syncs.ToDevice().DeviceEvents(ctx, who.UserID, deviceID, body.NextBatch)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": events, "next_batch": next}, nil
}
