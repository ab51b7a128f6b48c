package keybackup

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Request bodies are checked with one rule throughout: a body that is not
// JSON is M_NOT_JSON, a required field that is absent (or null) is
// M_MISSING_PARAM, a field of the wrong type or value is M_BAD_JSON.

// maxSafeInteger is the largest integer the spec allows in JSON,
// 2^53 - 1 (https://spec.matrix.org/v1.19/appendices/#canonical-json).
const maxSafeInteger = 1<<53 - 1

// maxRoomIDBytes is the spec's limit on a room ID
// (https://spec.matrix.org/v1.19/appendices/#room-ids).
const maxRoomIDBytes = 255

// present reports whether obj has key with a value other than null.
func present(obj map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	v, ok := obj[key]
	if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
		return nil, false
	}
	return bytes.TrimSpace(v), true
}

// isObject reports whether raw (trimmed, valid JSON) is an object.
func isObject(raw json.RawMessage) bool { return len(raw) > 0 && raw[0] == '{' }

// compactObject returns the object raw, compacted; where names the field
// in the error message.
func compactObject(raw json.RawMessage, where string) (json.RawMessage, error) {
	if !isObject(raw) {
		return nil, mxerr.BadJSON("%s must be an object", where)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, mxerr.BadJSON("%s is not valid JSON", where)
	}
	return buf.Bytes(), nil
}

// objectMembers decodes the object raw into its members.
func objectMembers(raw json.RawMessage, where string) (map[string]json.RawMessage, error) {
	if !isObject(raw) {
		return nil, mxerr.BadJSON("%s must be an object", where)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, mxerr.BadJSON("%s must be an object", where)
	}
	return m, nil
}

// parseBody decodes a request body that must be a JSON object.
func parseBody(raw []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := httpx.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// requiredString reads a required string field.
func requiredString(obj map[string]json.RawMessage, key string) (string, error) {
	raw, ok := present(obj, key)
	if !ok {
		return "", mxerr.MissingParam("Missing %s", key)
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", mxerr.BadJSON("%s must be a string", key)
	}
	return s, nil
}

// versionBody is the body of POST /room_keys/version and of PUT
// /room_keys/version/{version}.
type versionBody struct {
	algorithm string
	authData  json.RawMessage // compact JSON object
	version   *string         // the optional "version" of an update
}

// parseVersionBody checks a version's body: algorithm, a non-empty
// string, and auth_data, an object, are required. The algorithm is not
// checked against a list: auth_data and the keys' session_data are the
// clients' business (the server never reads them), so a backup with an
// algorithm this server has not heard of works as well as any, as it does
// on Synapse.
func parseVersionBody(raw []byte) (versionBody, error) {
	var out versionBody
	obj, err := parseBody(raw)
	if err != nil {
		return out, err
	}
	if out.algorithm, err = requiredString(obj, "algorithm"); err != nil {
		return out, err
	}
	if out.algorithm == "" {
		return out, mxerr.BadJSON("algorithm must not be empty")
	}
	authData, ok := present(obj, "auth_data")
	if !ok {
		return out, mxerr.MissingParam("Missing auth_data")
	}
	if out.authData, err = compactObject(authData, "auth_data"); err != nil {
		return out, err
	}
	if v, ok := present(obj, "version"); ok {
		var s string
		if v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return out, mxerr.BadJSON("version must be a string")
		}
		out.version = &s
	}
	return out, nil
}

// KeyBackupData is one backed-up megolm session: the metadata the server
// compares and the client's encrypted session_data.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid
type KeyBackupData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// betterThan reports whether k should replace old, by the spec's rule:
// "if the keys have different values for is_verified, then it will keep
// the key that has is_verified set to true; if they have the same values
// for is_verified, then it will keep the key with a lower
// first_message_index; and finally, is is_verified and
// first_message_index are equal, then it will keep the key with a lower
// forwarded_count." On a tie the stored key stays.
// https://spec.matrix.org/v1.19/client-server-api/#backup-algorithm-mmegolm_backupv1curve25519-aes-sha2
func (k KeyBackupData) betterThan(old KeyBackupData) bool {
	if k.IsVerified != old.IsVerified {
		return k.IsVerified
	}
	if k.FirstMessageIndex != old.FirstMessageIndex {
		return k.FirstMessageIndex < old.FirstMessageIndex
	}
	return k.ForwardedCount < old.ForwardedCount
}

// nonNegativeInt reads a required integer field in [0, 2^53-1]: an index
// and a count cannot be negative.
func nonNegativeInt(obj map[string]json.RawMessage, key, where string) (int64, error) {
	raw, ok := present(obj, key)
	if !ok {
		return 0, mxerr.MissingParam("Missing %s%s", where, key)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 || n > maxSafeInteger {
		return 0, mxerr.BadJSON("%s%s must be an integer from 0 to %d", where, key, int64(maxSafeInteger))
	}
	return n, nil
}

// parseKeyBackupData checks one session's KeyBackupData; where locates it
// in the body for error messages ("" at the top level).
func parseKeyBackupData(raw json.RawMessage, where string) (KeyBackupData, error) {
	var k KeyBackupData
	var obj map[string]json.RawMessage
	var err error
	if where == "" {
		obj, err = parseBody(raw)
	} else {
		obj, err = objectMembers(raw, strings.TrimSuffix(where, "."))
	}
	if err != nil {
		return k, err
	}
	if k.FirstMessageIndex, err = nonNegativeInt(obj, "first_message_index", where); err != nil {
		return k, err
	}
	if k.ForwardedCount, err = nonNegativeInt(obj, "forwarded_count", where); err != nil {
		return k, err
	}
	v, ok := present(obj, "is_verified")
	if !ok {
		return k, mxerr.MissingParam("Missing %sis_verified", where)
	}
	switch string(v) {
	case "true":
		k.IsVerified = true
	case "false":
	default:
		return k, mxerr.BadJSON("%sis_verified must be a boolean", where)
	}
	sd, ok := present(obj, "session_data")
	if !ok {
		return k, mxerr.MissingParam("Missing %ssession_data", where)
	}
	if k.SessionData, err = compactObject(sd, where+"session_data"); err != nil {
		return k, err
	}
	return k, nil
}

// Upload is the keys of an upload: room ID -> session ID -> key.
type Upload map[string]map[string]KeyBackupData

// Sessions is the number of sessions in u.
func (u Upload) Sessions() int {
	n := 0
	for _, s := range u {
		n += len(s)
	}
	return n
}

// checkRoomID checks the syntax of a room ID: the spec's pattern for the
// rooms of an upload is "^!", and a room ID is at most 255 bytes.
func checkRoomID(roomID string) bool {
	return len(roomID) >= 2 && roomID[0] == '!' && len(roomID) <= maxRoomIDBytes
}

// parseSessions checks a RoomKeyBackup ({"sessions": {...}}) into u.
func parseSessions(u Upload, roomID string, obj map[string]json.RawMessage, where string) error {
	raw, ok := present(obj, "sessions")
	if !ok {
		return mxerr.MissingParam("Missing %ssessions", where)
	}
	sessions, err := objectMembers(raw, where+"sessions")
	if err != nil {
		return err
	}
	keys := make(map[string]KeyBackupData, len(sessions))
	for sessionID, sraw := range sessions {
		if sessionID == "" {
			return mxerr.BadJSON("%ssessions has an empty session ID", where)
		}
		k, err := parseKeyBackupData(bytes.TrimSpace(sraw), where+"sessions."+sessionID+".")
		if err != nil {
			return err
		}
		keys[sessionID] = k
	}
	u[roomID] = keys
	return nil
}

// ParseUpload checks the body of a keys upload. Its form depends on the
// endpoint: with roomID and sessionID, one KeyBackupData; with roomID
// only, a RoomKeyBackup ({"sessions": ...}); with neither, {"rooms":
// {roomID: RoomKeyBackup}}.
//
// An upload is not bounded here beyond the server's request body limit
// (http.max_request_body_bytes, 4 MiB by default): every session costs at
// least ~100 bytes of JSON, so a request holds a few tens of thousands of
// sessions at most, each one indexed read and one write in a single
// transaction. Clients importing keys upload thousands at once, and
// refusing part of a backup would lose keys, so no smaller cap is set.
func ParseUpload(raw []byte, roomID, sessionID string) (Upload, error) {
	u := Upload{}
	if roomID != "" && !checkRoomID(roomID) {
		return nil, mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	switch {
	case sessionID != "":
		k, err := parseKeyBackupData(raw, "")
		if err != nil {
			return nil, err
		}
		u[roomID] = map[string]KeyBackupData{sessionID: k}
	case roomID != "":
		obj, err := parseBody(raw)
		if err != nil {
			return nil, err
		}
		if err := parseSessions(u, roomID, obj, ""); err != nil {
			return nil, err
		}
	default:
		obj, err := parseBody(raw)
		if err != nil {
			return nil, err
		}
		rraw, ok := present(obj, "rooms")
		if !ok {
			return nil, mxerr.MissingParam("Missing rooms")
		}
		rooms, err := objectMembers(rraw, "rooms")
		if err != nil {
			return nil, err
		}
		for rid, body := range rooms {
			if !checkRoomID(rid) {
				return nil, mxerr.BadJSON("rooms: %q is not a valid room ID", rid)
			}
			robj, err := objectMembers(bytes.TrimSpace(body), "rooms."+rid)
			if err != nil {
				return nil, err
			}
			if err := parseSessions(u, rid, robj, "rooms."+rid+"."); err != nil {
				return nil, err
			}
		}
	}
	return u, nil
}
