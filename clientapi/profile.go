package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// profileUser parses the {userId} of a profile path and refuses users of
// other servers, whose profiles need federation.
func (a *API) profileUser(r *http.Request) (string, error) {
	raw := pathVar(r, "userId")
	uid, err := spec.NewUserID(raw, false)
	if err != nil {
		return "", mxerr.InvalidParam("Invalid user ID %q", raw)
	}
	if string(uid.Domain()) != a.cfg.ServerName {
		return "", mxerr.NotFound("Profile not found: profiles of remote users are not available")
	}
	return uid.String(), nil
}

// getProfile: GET /profile/{userId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuserid
func (a *API) getProfile(r *http.Request) (any, error) {
	userID, err := a.profileUser(r)
	if err != nil {
		return nil, err
	}
	return a.users.Profile(r.Context(), userID)
}

// getProfileField: GET /profile/{userId}/{keyName}.
func (a *API) getProfileField(r *http.Request) (any, error) {
	userID, err := a.profileUser(r)
	if err != nil {
		return nil, err
	}
	fields, err := a.users.Profile(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	key := pathVar(r, "keyName")
	v, ok := fields[key]
	if !ok {
		return nil, mxerr.NotFound("Profile field %q not set", key)
	}
	return map[string]json.RawMessage{key: v}, nil
}

// Length limits Synapse applies to the two classic fields.
const (
	maxDisplayNameLen = 256
	maxAvatarURLLen   = 1000
)

// setProfileField: PUT /profile/{userId}/{keyName}. Users may change only
// their own profile (admins anyone's, as in Synapse).
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3profileuseridkeyname
func (a *API) setProfileField(r *http.Request, who *users.Requester) (any, error) {
	userID, err := a.ownProfile(r, who)
	if err != nil {
		return nil, err
	}
	// An invalid key is reported as such, even if the body lacks it too.
	key := pathVar(r, "keyName")
	if err := users.ValidateProfileKey(key); err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	value, ok := body[key]
	if !ok {
		return nil, mxerr.MissingParam("The body must contain the field %q", key)
	}
	var str string
	if json.Unmarshal(value, &str) == nil {
		if key == "displayname" && len([]rune(str)) > maxDisplayNameLen {
			return nil, mxerr.InvalidParam("displayname is longer than %d characters", maxDisplayNameLen)
		}
		if key == "avatar_url" && len(str) > maxAvatarURLLen {
			return nil, mxerr.InvalidParam("avatar_url is longer than %d characters", maxAvatarURLLen)
		}
	}
	if err := a.users.SetProfileField(r.Context(), userID, key, value); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteProfileField: DELETE /profile/{userId}/{keyName}.
func (a *API) deleteProfileField(r *http.Request, who *users.Requester) (any, error) {
	userID, err := a.ownProfile(r, who)
	if err != nil {
		return nil, err
	}
	if err := a.users.DeleteProfileField(r.Context(), userID, pathVar(r, "keyName")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) ownProfile(r *http.Request, who *users.Requester) (string, error) {
	// Permission first: changing anyone else's profile, remote users'
	// included, is the spec's 403, not a 404 about where they live.
	raw := pathVar(r, "userId")
	if raw != who.UserID && !who.IsAdmin {
		return "", mxerr.Forbidden("You cannot change another user's profile")
	}
	userID, err := a.profileUser(r)
	if err != nil {
		return "", err
	}
	if _, err := a.users.Profile(r.Context(), userID); err != nil {
		return "", err
	}
	return userID, nil
}
