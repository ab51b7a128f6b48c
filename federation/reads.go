package federation

// The read side of rooms over federation: the state at an event, an
// event's auth chain, history (backfill), the published room directory and
// space hierarchies; and the requests that fetch history from other
// servers (Backfill and StateBefore, the room server's HistoryFetcher).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// registerReads adds the routes for state, state_ids, event_auth, backfill, publicRooms, hierarchy.
func (a *API) registerReads(fed *mux.Router) {
	h := func(fn signedFunc) http.Handler { return httpx.JSON(a.log, a.signed(fn)) }
	fed.Handle("/v1/state/{roomId}", h(a.getState)).Methods(http.MethodGet)
	fed.Handle("/v1/state_ids/{roomId}", h(a.getStateIDs)).Methods(http.MethodGet)
	fed.Handle("/v1/event_auth/{roomId}/{eventId}", h(a.getEventAuth)).Methods(http.MethodGet)
	fed.Handle("/v1/backfill/{roomId}", h(a.getBackfill)).Methods(http.MethodGet)
	fed.Handle("/v1/publicRooms", h(a.getPublicRooms)).Methods(http.MethodGet)
	fed.Handle("/v1/publicRooms", h(a.postPublicRooms)).Methods(http.MethodPost)
	fed.Handle("/v1/hierarchy/{roomId}", h(a.getHierarchy)).Methods(http.MethodGet)
	fed.Handle("/v1/timestamp_to_event/{roomId}", h(a.timestampToEvent)).Methods(http.MethodGet)
}

// stateAt reads the room and event_id of a /state or /state_ids request
// and returns the state before the event, with its auth chain.
func (a *API) stateAt(r *http.Request, origin spec.ServerName) (state, authChain []*roomserver.Event, err error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, nil, err
	}
	eventID := r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, mxerr.MissingParam("Missing event_id")
	}
	return a.rooms.StateForServer(r.Context(), origin, roomID.String(), eventID)
}

// getState answers GET /v1/state/{roomId}?event_id=.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1stateroomid
func (a *API) getState(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	state, chain, err := a.stateAt(r, origin)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": pduJSONs(state), "auth_chain": pduJSONs(chain)}, nil
}

// getStateIDs answers GET /v1/state_ids/{roomId}?event_id=.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1state_idsroomid
func (a *API) getStateIDs(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	state, chain, err := a.stateAt(r, origin)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)}, nil
}

func eventIDs(evs []*roomserver.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID()
	}
	return out
}

// getEventAuth answers GET /v1/event_auth/{roomId}/{eventId}.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1event_authroomideventid
func (a *API) getEventAuth(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	chain, err := a.rooms.EventAuthForServer(r.Context(), origin, roomID.String(), pathVar(r, "eventId"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": pduJSONs(chain)}, nil
}

// getBackfill answers GET /v1/backfill/{roomId}?v=...&limit=: a
// transaction of the events before (and including) the v events.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1backfillroomid
func (a *API) getBackfill(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, mxerr.MissingParam("Missing v: the events to backfill from")
	}
	if q.Get("limit") == "" {
		return nil, mxerr.MissingParam("Missing limit")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 0 {
		return nil, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	evs, err := a.rooms.BackfillForServer(r.Context(), origin, roomID.String(), from, limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"origin": a.cfg.ServerName, "origin_server_ts": spec.AsTimestamp(time.Now()),
		"pdus": pduJSONs(evs),
	}, nil
}

// getPublicRooms answers GET /v1/publicRooms from our room directory.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1publicrooms
func (a *API) getPublicRooms(r *http.Request, _ spec.ServerName, _ []byte) (any, error) {
	q := r.URL.Query()
	req := roomserver.PublicRoomsRequest{Since: q.Get("since")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, mxerr.InvalidParam("limit must be an integer")
		}
		req.Limit = n
	}
	all := false
	if v := q.Get("include_all_networks"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, mxerr.InvalidParam("include_all_networks must be true or false")
		}
		all = b
	}
	if err := thirdPartyNetwork(&req, all, q.Get("third_party_instance_id")); err != nil {
		return nil, err
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// postPublicRooms answers POST /v1/publicRooms: the directory, filtered.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1publicrooms
func (a *API) postPublicRooms(r *http.Request, _ spec.ServerName, body []byte) (any, error) {
	var in roomserver.PublicRoomsBody
	if len(body) > 0 {
		if err := httpx.Unmarshal(body, &in); err != nil {
			return nil, err
		}
	}
	req := in.Request("")
	if err := thirdPartyNetwork(&req, in.IncludeAllNetworks, in.ThirdPartyInstanceID); err != nil {
		return nil, err
	}
	return a.rooms.PublicRooms(r.Context(), req)
}

// thirdPartyNetwork applies include_all_networks and
// third_party_instance_id, which the spec allows only one of.
func thirdPartyNetwork(req *roomserver.PublicRoomsRequest, all bool, instanceID string) error {
	if all && instanceID != "" {
		return mxerr.InvalidParam("third_party_instance_id cannot be used with include_all_networks")
	}
	req.ThirdPartyInstanceID = instanceID
	req.IncludeAllNetworks = all
	return nil
}

// getHierarchy answers GET /v1/hierarchy/{roomId}?suggested_only=.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1hierarchyroomid
func (a *API) getHierarchy(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	suggested := false
	if v := r.URL.Query().Get("suggested_only"); v != "" {
		if suggested, err = strconv.ParseBool(v); err != nil {
			return nil, mxerr.InvalidParam("suggested_only must be true or false")
		}
	}
	return a.rooms.SpaceHierarchyForServer(r.Context(), origin, roomID.String(), suggested)
}

// Backfill asks server for up to limit events of a room before (and
// including) from, and returns those whose format, hashes and signatures
// check out (roomserver.HistoryFetcher). One bad event does not spoil the
// rest: the room server stores what links up.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1backfillroomid
func (a *API) Backfill(ctx context.Context, server spec.ServerName, roomID string, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	ver, err := a.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	txn, err := a.client.Backfill(ctx, a.cfg.ServerName, server, roomID, limit, from)
	if err != nil {
		return nil, fmt.Errorf("backfill from %s: %w", server, err)
	}
	return a.parsePDUs(ctx, server, ver, txn.PDUs), nil
}

// StateBefore asks server for the state of a room before an event and its
// auth chain (GET /state), keeping the events that check out
// (roomserver.HistoryFetcher).
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1stateroomid
func (a *API) StateBefore(ctx context.Context, server spec.ServerName, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error) {
	ver, err := a.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	res, err := a.client.LookupState(ctx, a.cfg.ServerName, server, roomID, eventID, ver)
	if err != nil {
		return nil, nil, fmt.Errorf("state from %s: %w", server, err)
	}
	return a.parsePDUs(ctx, server, ver, rawPDUs(res.StateEvents)), a.parsePDUs(ctx, server, ver, rawPDUs(res.AuthEvents)), nil
}

var _ roomserver.HistoryFetcher = (*API)(nil)

func rawPDUs(evs gomatrixserverlib.EventJSONs) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = json.RawMessage(ev)
	}
	return out
}

// parsePDUs checks each event of an answer from server, leaving out (and
// logging) those that fail.
func (a *API) parsePDUs(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, raws []json.RawMessage) []gomatrixserverlib.PDU {
	out := make([]gomatrixserverlib.PDU, 0, len(raws))
	for _, raw := range raws {
		p, err := parsePDU(ctx, a.verifier, ver, raw)
		if err != nil {
			a.log.WithError(err).WithField("server", server).Info("dropped a bad event from another server")
			continue
		}
		out = append(out, p)
	}
	return out
}
