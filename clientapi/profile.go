package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// profileUser parses the {userId} of a profile path; remote is true for a
// user of another server (asked over federation, when it is on).
func (a *API) profileUser(r *http.Request) (userID string, remote bool, err error) {
	raw := pathVar(r, "userId")
	uid, err := spec.NewUserID(raw, false)
	if err != nil {
		return "", false, mxerr.InvalidParam("Invalid user ID %q", raw)
	}
	if string(uid.Domain()) != a.cfg.ServerName {
		if a.queries == nil {
			return "", false, mxerr.NotFound("Profile not found: profiles of remote users are not available")
		}
		return uid.String(), true, nil
	}
	return uid.String(), false, nil
}

// profile is a user's profile, from their server if it is not us.
func (a *API) profile(r *http.Request, field string) (map[string]json.RawMessage, error) {
	userID, remote, err := a.profileUser(r)
	if err != nil {
		return nil, err
	}
	if remote {
		return a.queries.RemoteProfile(r.Context(), userID, field)
	}
	return a.users.Profile(r.Context(), userID)
}

// getProfile: GET /profile/{userId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuserid
func (a *API) getProfile(r *http.Request) (any, error) {
	return a.profile(r, "")
}

// getProfileField: GET /profile/{userId}/{keyName}.
func (a *API) getProfileField(r *http.Request) (any, error) {
	fields, err := a.profile(r, pathVar(r, "keyName"))
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
	if err := who.Check(users.ActionUpdateProfile); err != nil {
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
	if err := who.Check(users.ActionUpdateProfile); err != nil {
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
	userID, remote, err := a.profileUser(r)
	if err != nil {
		return "", err
	}
	if remote {
		return "", mxerr.Forbidden("Profiles of users of other servers cannot be changed here")
	}
	if _, err := a.users.Profile(r.Context(), userID); err != nil {
		return "", err
	}
	return userID, nil
}

// RemoteQueries asks other servers about their users and aliases (the
// federation edge).
type RemoteQueries interface {
	RemoteProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	RemoteAlias(ctx context.Context, alias string) (roomID string, servers []spec.ServerName, err error)
	RemotePublicRooms(ctx context.Context, server string, limit int, since, search string, includeAll bool, thirdParty string) (any, error)
}

// SetRemoteQueries lets profile and alias lookups reach other servers.
func (a *API) SetRemoteQueries(q RemoteQueries) { a.queries = q }
