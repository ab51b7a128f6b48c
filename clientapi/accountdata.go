package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// accountDataRoutes are per-user data endpoints: account data, tags, read
// markers and receipts, and the user directory. None is open to guests:
// the spec's list of guest endpoints has none of them, and Synapse refuses
// guests on each.
// https://spec.matrix.org/v1.19/client-server-api/#client-behaviour-14
func (a *API) accountDataRoutes() []route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []route{
		// v1.19 has no DELETE for account data (MSC3391 is not merged).
		{get, "/user/{userId}/account_data/{type}", a.authed(a.getAccountData, noGuests)},
		{put, "/user/{userId}/account_data/{type}", a.authed(a.setAccountData, noGuests)},
		{get, "/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.getAccountData, noGuests)},
		{put, "/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.setAccountData, noGuests)},

		{get, "/user/{userId}/rooms/{roomId}/tags", a.authed(a.getTags, noGuests)},
		{put, "/user/{userId}/rooms/{roomId}/tags/{tag}", a.authed(a.setTag, noGuests)},
		{del, "/user/{userId}/rooms/{roomId}/tags/{tag}", a.authed(a.deleteTag, noGuests)},

		{post, "/rooms/{roomId}/read_markers", a.authed(a.setReadMarkers, noGuests)},
		{post, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", a.authed(a.sendReceipt, noGuests)},

		{post, "/user_directory/search", a.authed(a.searchUserDirectory, noGuests)},
	}
}

// ownData checks that the {userId} of the path is the requester: "The
// access token must be authorised to make requests for this user ID."
func ownData(r *http.Request, who *users.Requester, what string) error {
	if pathVar(r, "userId") != who.UserID {
		return mxerr.Forbidden("Cannot access %s of other users", what)
	}
	return nil
}

// getAccountData: GET /user/{userId}/account_data/{type} and
// GET /user/{userId}/rooms/{roomId}/account_data/{type} ({roomId} absent
// reads global account data).
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridaccount_datatype
func (a *API) getAccountData(r *http.Request, who *users.Requester) (any, error) {
	if err := ownData(r, who, "account data"); err != nil {
		return nil, err
	}
	return a.users.AccountData(r.Context(), who.UserID, pathVar(r, "roomId"), pathVar(r, "type"))
}

// setAccountData: PUT /user/{userId}/account_data/{type} and its room form.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridaccount_datatype
func (a *API) setAccountData(r *http.Request, who *users.Requester) (any, error) {
	if err := ownData(r, who, "account data"); err != nil {
		return nil, err
	}
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := a.users.SetAccountData(r.Context(), who.UserID, pathVar(r, "roomId"), pathVar(r, "type"), raw); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// getTags: GET /user/{userId}/rooms/{roomId}/tags.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridroomsroomidtags
func (a *API) getTags(r *http.Request, who *users.Requester) (any, error) {
	if err := ownData(r, who, "tags"); err != nil {
		return nil, err
	}
	tags, err := a.users.Tags(r.Context(), who.UserID, pathVar(r, "roomId"))
	if err != nil {
		return nil, err
	}
	return map[string]map[string]json.RawMessage{"tags": tags}, nil
}

// setTag: PUT /user/{userId}/rooms/{roomId}/tags/{tag}.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridroomsroomidtagstag
func (a *API) setTag(r *http.Request, who *users.Requester) (any, error) {
	if err := ownData(r, who, "tags"); err != nil {
		return nil, err
	}
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if err := a.users.SetTag(r.Context(), who.UserID, pathVar(r, "roomId"), pathVar(r, "tag"), raw); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteTag: DELETE /user/{userId}/rooms/{roomId}/tags/{tag}.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3useruseridroomsroomidtagstag
func (a *API) deleteTag(r *http.Request, who *users.Requester) (any, error) {
	if err := ownData(r, who, "tags"); err != nil {
		return nil, err
	}
	if err := a.users.DeleteTag(r.Context(), who.UserID, pathVar(r, "roomId"), pathVar(r, "tag")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// setReadMarkers: POST /rooms/{roomId}/read_markers.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidread_markers
func (a *API) setReadMarkers(r *http.Request, who *users.Requester) (any, error) {
	var body users.ReadMarkers
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if err := a.users.SetReadMarkers(r.Context(), a.rooms, who.UserID, pathVar(r, "roomId"), body); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// sendReceipt: POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid
func (a *API) sendReceipt(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	err = a.users.SendReceipt(r.Context(), a.rooms, who.UserID, pathVar(r, "roomId"),
		pathVar(r, "receiptType"), pathVar(r, "eventId"), raw)
	if err != nil {
		return nil, err
	}
	if a.edus != nil && pathVar(r, "receiptType") == users.ReceiptRead {
		var body struct {
			ThreadID string `json:"thread_id"`
		}
		_ = json.Unmarshal(raw, &body) // SendReceipt has checked it
		a.edus.Receipt(r.Context(), pathVar(r, "roomId"), who.UserID, pathVar(r, "eventId"), body.ThreadID)
	}
	return struct{}{}, nil
}

// searchUserDirectory: POST /user_directory/search.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3user_directorysearch
func (a *API) searchUserDirectory(r *http.Request, who *users.Requester) (any, error) {
	var body users.DirectorySearch
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	return a.users.SearchUserDirectory(r.Context(), a.rooms, who.UserID, body)
}
