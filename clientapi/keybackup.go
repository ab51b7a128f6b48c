package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/keybackup"
	"github.com/tessera-hs/tessera/users"
)

// SetKeyBackup installs the server-side key backup store; call it once,
// before serving requests.
func (a *API) SetKeyBackup(b *keybackup.Service) { a.keyBackup = b }

// keyBackupRoutes are the /room_keys endpoints. Backups are per user: every
// call acts on the requester's own backup, so no user can see or change
// another's. Guests are refused: the spec's guest access list has none of
// these endpoints, and Synapse refuses guests on them.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups
func (a *API) keyBackupRoutes() []route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []route{
		{post, "/room_keys/version", a.authed(a.createKeyBackupVersion, noGuests)},
		{get, "/room_keys/version", a.authed(a.getKeyBackupVersion, noGuests)},
		{get, "/room_keys/version/{version}", a.authed(a.getKeyBackupVersion, noGuests)},
		{put, "/room_keys/version/{version}", a.authed(a.updateKeyBackupVersion, noGuests)},
		{del, "/room_keys/version/{version}", a.authed(a.deleteKeyBackupVersion, noGuests)},

		{put, "/room_keys/keys", a.authed(a.putRoomKeys, noGuests)},
		{get, "/room_keys/keys", a.authed(a.getRoomKeys, noGuests)},
		{del, "/room_keys/keys", a.authed(a.deleteRoomKeys, noGuests)},
		{put, "/room_keys/keys/{roomId}", a.authed(a.putRoomKeys, noGuests)},
		{get, "/room_keys/keys/{roomId}", a.authed(a.getRoomKeys, noGuests)},
		{del, "/room_keys/keys/{roomId}", a.authed(a.deleteRoomKeys, noGuests)},
		{put, "/room_keys/keys/{roomId}/{sessionId}", a.authed(a.putRoomKeys, noGuests)},
		{get, "/room_keys/keys/{roomId}/{sessionId}", a.authed(a.getRoomKeys, noGuests)},
		{del, "/room_keys/keys/{roomId}/{sessionId}", a.authed(a.deleteRoomKeys, noGuests)},
	}
}

// createKeyBackupVersion: POST /room_keys/version.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3room_keysversion
func (a *API) createKeyBackupVersion(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	version, err := a.keyBackup.CreateVersion(r.Context(), who.UserID, raw)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": version}, nil
}

// getKeyBackupVersion: GET /room_keys/version (the current backup) and
// GET /room_keys/version/{version}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversion
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keysversionversion
func (a *API) getKeyBackupVersion(r *http.Request, who *users.Requester) (any, error) {
	return a.keyBackup.Version(r.Context(), who.UserID, pathVar(r, "version"))
}

// updateKeyBackupVersion: PUT /room_keys/version/{version}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keysversionversion
func (a *API) updateKeyBackupVersion(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := a.keyBackup.UpdateVersion(r.Context(), who.UserID, pathVar(r, "version"), raw); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteKeyBackupVersion: DELETE /room_keys/version/{version}.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keysversionversion
func (a *API) deleteKeyBackupVersion(r *http.Request, who *users.Requester) (any, error) {
	if err := a.keyBackup.DeleteVersion(r.Context(), who.UserID, pathVar(r, "version")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// backupVersionParam is the required version query parameter of the
// /room_keys/keys endpoints. A malformed one names no backup: the domain
// answers it with 404 M_NOT_FOUND.
func backupVersionParam(r *http.Request) (string, error) {
	q := r.URL.Query()
	if !q.Has("version") {
		return "", mxerr.MissingParam("Missing version query parameter")
	}
	return q.Get("version"), nil
}

// putRoomKeys: PUT /room_keys/keys, /room_keys/keys/{roomId} and
// /room_keys/keys/{roomId}/{sessionId}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeys
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomid
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid
func (a *API) putRoomKeys(r *http.Request, who *users.Requester) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	// The body is bounded by the server's request body limit; see
	// keybackup.ParseUpload.
	keys, err := keybackup.ParseUpload(raw, pathVar(r, "roomId"), pathVar(r, "sessionId"))
	if err != nil {
		return nil, err
	}
	return a.keyBackup.PutKeys(r.Context(), who.UserID, version, keys)
}

// roomKeyBackup is the RoomKeyBackup object: a room's sessions.
type roomKeyBackup struct {
	Sessions map[string]keybackup.KeyBackupData `json:"sessions"`
}

// getRoomKeys: GET /room_keys/keys, /room_keys/keys/{roomId} and
// /room_keys/keys/{roomId}/{sessionId}. With nothing stored, the spec
// answers {"rooms": {}} for all keys, {"sessions": {}} for a room, and
// 404 M_NOT_FOUND for a session.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeys
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeysroomid
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3room_keyskeysroomidsessionid
func (a *API) getRoomKeys(r *http.Request, who *users.Requester) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	roomID, sessionID := pathVar(r, "roomId"), pathVar(r, "sessionId")
	keys, err := a.keyBackup.Keys(r.Context(), who.UserID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		k, ok := keys[roomID][sessionID]
		if !ok {
			return nil, mxerr.NotFound("Key not found")
		}
		return k, nil
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = map[string]keybackup.KeyBackupData{}
		}
		return roomKeyBackup{Sessions: sessions}, nil
	}
	rooms := make(map[string]roomKeyBackup, len(keys))
	for rid, sessions := range keys {
		rooms[rid] = roomKeyBackup{Sessions: sessions}
	}
	return map[string]any{"rooms": rooms}, nil
}

// deleteRoomKeys: DELETE /room_keys/keys, /room_keys/keys/{roomId} and
// /room_keys/keys/{roomId}/{sessionId}.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3room_keyskeys
func (a *API) deleteRoomKeys(r *http.Request, who *users.Requester) (any, error) {
	version, err := backupVersionParam(r)
	if err != nil {
		return nil, err
	}
	return a.keyBackup.DeleteKeys(r.Context(), who.UserID, version, pathVar(r, "roomId"), pathVar(r, "sessionId"))
}
