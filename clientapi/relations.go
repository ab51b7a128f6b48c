package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// Event relationships and threads.
// https://spec.matrix.org/v1.19/client-server-api/#relationship-types

func (a *API) relationsRoutes(add func(prefix string, routes []route)) {
	const get = http.MethodGet
	add("/_matrix/client/v1", []route{
		{get, "/rooms/{roomId}/relations/{eventId}", a.authed(a.relations, guestOK)},
		{get, "/rooms/{roomId}/relations/{eventId}/{relType}", a.authed(a.relations, guestOK)},
		{get, "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", a.authed(a.relations, guestOK)},
		{get, "/rooms/{roomId}/threads", a.authed(a.threads, guestOK)},
	})
}

// relations: GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *API) relations(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := roomserver.RelationsRequest{
		RoomID: id, UserID: who.UserID, EventID: pathVar(r, "eventId"),
		RelType: pathVar(r, "relType"), EventType: pathVar(r, "eventType"),
	}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		req.Forwards = true
	default:
		return nil, mxerr.InvalidParam("dir must be \"b\" or \"f\"")
	}
	if req.From, err = optionalToken(q.Get("from")); err != nil {
		return nil, err
	}
	if req.To, err = optionalToken(q.Get("to")); err != nil {
		return nil, err
	}
	if req.Limit, err = parseLimit(q.Get("limit"), 5, 100); err != nil {
		return nil, err
	}
	req.Limit = max(req.Limit, 1)
	recurse := q.Has("recurse")
	switch q.Get("recurse") {
	case "true":
		req.Recurse = true
	case "false":
	default:
		if recurse {
			return nil, mxerr.InvalidParam("recurse must be true or false")
		}
	}
	resp, err := a.rooms.Relations(r.Context(), req)
	if err != nil {
		return nil, err
	}
	chunk, err := a.timelineEvents(r, who, resp.Chunk)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"chunk": chunk}
	if resp.NextBatch != nil {
		out["next_batch"] = resp.NextBatch.String()
	}
	if req.From != nil {
		out["prev_batch"] = req.From.String()
	}
	if recurse {
		// Present exactly when the client gave recurse.
		out["recursion_depth"] = resp.RecursionDepth
	}
	return out, nil
}

// threads: GET /v1/rooms/{roomId}/threads.
func (a *API) threads(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := roomserver.ThreadsRequest{RoomID: id, UserID: who.UserID}
	switch q.Get("include") {
	case "", "all":
	case "participated":
		req.Participated = true
	default:
		return nil, mxerr.InvalidParam("include must be \"all\" or \"participated\"")
	}
	if req.From, err = optionalToken(q.Get("from")); err != nil {
		return nil, err
	}
	if req.Limit, err = parseLimit(q.Get("limit"), 20, 100); err != nil {
		return nil, err
	}
	if req.Limit == 0 {
		return nil, mxerr.InvalidParam("limit must be greater than zero")
	}
	resp, err := a.rooms.Threads(r.Context(), req)
	if err != nil {
		return nil, err
	}
	chunk, err := a.timelineEvents(r, who, resp.Chunk)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"chunk": chunk}
	if resp.NextBatch != nil {
		out["next_batch"] = resp.NextBatch.String()
	}
	return out, nil
}
