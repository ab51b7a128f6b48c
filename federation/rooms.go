package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/jsonx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// Transaction limits.
// https://spec.matrix.org/v1.19/server-server-api/#transactions
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// maxTxnBytes bounds a transaction's body.
	maxTxnBytes = 16 << 20
	// missingEventsLimit bounds one get_missing_events when filling a gap.
	missingEventsLimit = 50
)

// registerRooms adds the routes that exchange room events: joins,
// transactions, single events, state.
func (a *API) registerRooms(fed *mux.Router) {
	h := func(fn signedFunc) http.Handler { return httpx.JSON(a.log, a.signed(fn)) }
	fed.Handle("/v1/make_join/{roomId}/{userId}", h(a.makeJoin)).Methods(http.MethodGet)
	fed.Handle("/v2/send_join/{roomId}/{eventId}", h(a.sendJoin)).Methods(http.MethodPut)
	// A full transaction (50 PDUs of up to 64 KiB and 100 EDUs, which
	// to-device messages fill up to 64 KiB each) is over the 4 MiB that
	// other requests get.
	fed.Handle("/v1/send/{txnId}", httpx.JSON(a.log, a.signedTxn(a.send))).Methods(http.MethodPut)
	fed.Handle("/v2/invite/{roomId}/{eventId}", h(a.invite)).Methods(http.MethodPut)
	a.registerLeaveKnock(fed)
	// The v1 forms, deprecated but still sent by older servers, answer
	// [200, body].
	fed.Handle("/v1/send_join/{roomId}/{eventId}", h(v1Array(a.sendJoin))).Methods(http.MethodPut)
	fed.Handle("/v1/send_leave/{roomId}/{eventId}", h(v1Array(a.sendLeave))).Methods(http.MethodPut)
	fed.Handle("/v1/invite/{roomId}/{eventId}", h(v1Array(a.inviteV1))).Methods(http.MethodPut)
	fed.Handle("/v1/event/{eventId}", h(a.getEvent)).Methods(http.MethodGet)
	fed.Handle("/v1/get_missing_events/{roomId}", h(a.getMissingEvents)).Methods(http.MethodPost)
}

// pathVar is a path variable, unescaped (the router matches encoded
// paths, so that IDs with '/' in them stay one segment).
func pathVar(r *http.Request, name string) string {
	v := mux.Vars(r)[name]
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// roomID parses the {roomId} path variable.
func roomIDVar(r *http.Request) (spec.RoomID, error) {
	id, err := spec.NewRoomID(pathVar(r, "roomId"))
	if err != nil {
		return spec.RoomID{}, mxerr.InvalidParam("Invalid room ID")
	}
	return *id, nil
}

// makeJoin answers GET /make_join with a join template.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_joinroomiduserid
func (a *API) makeJoin(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	userID, err := spec.NewUserID(pathVar(r, "userId"), true)
	if err != nil {
		return nil, mxerr.InvalidParam("Invalid user ID")
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	var vers []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		vers = append(vers, gomatrixserverlib.RoomVersion(v))
	}
	if len(vers) == 0 {
		vers = []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV1} // the spec's default
	}
	res, err := a.rooms.MakeJoin(r.Context(), origin, roomID, *userID, vers)
	if err != nil {
		return nil, specError(err)
	}
	return map[string]any{"event": res.JoinTemplateEvent, "room_version": res.RoomVersion}, nil
}

// sendJoin accepts a signed join: PUT /v2/send_join.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2send_joinroomideventid
func (a *API) sendJoin(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	join, state, chain, err := a.rooms.SendJoin(r.Context(), origin, roomID, pathVar(r, "eventId"), body, a.verifier)
	if err != nil {
		return nil, specError(err)
	}
	servers, err := a.rooms.ServersInRoom(r.Context(), roomID.String())
	if err != nil {
		return nil, err
	}
	// omit_members (MSC3706) is accepted, but the whole state is sent:
	// members_omitted says so.
	return map[string]any{
		"origin":          a.cfg.ServerName,
		"state":           pduJSONs(state),
		"auth_chain":      pduJSONs(chain),
		"event":           json.RawMessage(join.JSON()),
		"members_omitted": false,
		"servers_in_room": servers,
	}, nil
}

// v1Array wraps a v2 handler for its deprecated v1 form, whose answer is
// the array [200, body].
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1send_joinroomideventid
func v1Array(h signedFunc) signedFunc {
	return func(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
		res, err := h(r, origin, body)
		if err != nil {
			return nil, err
		}
		return []any{http.StatusOK, res}, nil
	}
}

func pduJSONs(evs []*roomserver.Event) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = ev.JSON()
	}
	return out
}

// txnResults remembers the answers to recent transactions by origin and
// ID, so that a retried transaction is answered without being processed
// again.
type txnResults struct {
	mu   sync.Mutex
	m    map[string]any
	keys []string
}

const maxTxnResults = 1024

func (t *txnResults) get(origin spec.ServerName, id string) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[string(origin)+"\x00"+id]
}

func (t *txnResults) put(origin spec.ServerName, id string, v any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]any{}
	}
	k := string(origin) + "\x00" + id
	if _, ok := t.m[k]; !ok {
		t.keys = append(t.keys, k)
	}
	t.m[k] = v
	for len(t.keys) > maxTxnResults {
		delete(t.m, t.keys[0])
		t.keys = t.keys[1:]
	}
}

// send receives a transaction: PUT /v1/send/{txnId}.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1sendtxnid
func (a *API) send(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	txnID := pathVar(r, "txnId")
	if res := a.txns.get(origin, txnID); res != nil {
		return res, nil
	}
	var txn struct {
		Origin string            `json:"origin"`
		PDUs   []json.RawMessage `json:"pdus"`
		EDUs   []json.RawMessage `json:"edus"`
	}
	// Not httpx.Unmarshal: its checks are for each PDU and EDU alone.
	if err := json.Unmarshal(body, &txn); err != nil {
		return nil, mxerr.BadJSON("Transaction has the wrong shape: %v", err)
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		return nil, mxerr.BadJSON("A transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs)
	}
	if a.wake != nil {
		a.wake(origin) // it is up: whatever we hold for it can go now
	}
	// The transaction is processed to the end even if the sender hangs
	// up (it died, or its request timed out): half a transaction, with
	// its answer remembered for the retry, would lose the rest.
	ctx := context.WithoutCancel(r.Context())
	results := make(map[string]any, len(txn.PDUs))
	local, elsewhere := a.splitPDUs(txn.PDUs)
	if err := a.receiveElsewhere(ctx, origin, elsewhere, results); err != nil {
		return nil, err
	}
	for _, raw := range local {
		id, err := a.receivePDU(ctx, origin, raw)
		if id == "" {
			continue // not even an event: nothing to answer for
		}
		if err != nil {
			results[id] = map[string]string{"error": err.Error()}
		} else {
			results[id] = struct{}{}
		}
	}
	for _, raw := range txn.EDUs {
		if err := jsonx.Validate(raw, maxPDUDepth); err != nil {
			// Not ours to pass on to a client (to-device content goes to
			// devices as it is): dropped, as a bad EDU always is.
			a.log.WithError(err).WithField("origin", origin).Warn("dropping an EDU that is not valid JSON")
			continue
		}
		if a.edus != nil {
			a.edus(ctx, origin, raw)
		}
	}
	res := map[string]any{"pdus": results}
	a.txns.put(origin, txnID, res)
	return res, nil
}

// receivePDU checks and stores one PDU of a transaction. It returns the
// event's ID ("" if the PDU could not be parsed at all).
func (a *API) receivePDU(ctx context.Context, origin spec.ServerName, raw json.RawMessage) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", errors.New("not an event")
	}
	ver, err := a.rooms.RoomVersion(ctx, head.RoomID)
	if err != nil {
		return "", err // a room we are not in: nothing to say
	}
	// Invalid UTF-8, a lone surrogate or deep nesting: once stored, such
	// an event breaks /sync and every transaction that carries it on.
	if err := jsonx.Validate(raw, maxPDUDepth); err != nil {
		return eventIDOf(ver, raw), fmt.Errorf("event is not valid JSON: %w", err)
	}
	if err := a.rooms.CheckServerACL(ctx, head.RoomID, origin); err != nil {
		return eventIDOf(ver, raw), err
	}
	pdu, err := parsePDU(ctx, a.verifier, ver, raw)
	if err != nil {
		return eventIDOf(ver, raw), err
	}
	if handled, err := a.outOfRoomMembership(ctx, origin, pdu); handled || err != nil {
		return pdu.EventID(), err
	}
	if _, err := a.rooms.IngestRemote(ctx, origin, pdu, false); err != nil {
		var missing *roomserver.MissingPrevEventsError
		if !errors.As(err, &missing) {
			return pdu.EventID(), err
		}
		if ferr := a.fillGap(ctx, origin, ver, pdu); ferr != nil {
			a.log.WithError(ferr).WithField("event_id", pdu.EventID()).Warn("could not fetch missing events")
		}
		_, err = a.rooms.IngestRemote(ctx, origin, pdu, false)
		if errors.As(err, &missing) {
			// The gap is too wide for get_missing_events, or the origin
			// no longer has it: take the state before the event from the
			// origin and start a new branch there.
			err = a.ingestWithState(ctx, origin, ver, pdu)
		}
		if err != nil {
			return pdu.EventID(), err
		}
	}
	return pdu.EventID(), nil
}

// outOfRoomMembership takes a leave or ban of one of our users who is only
// invited to or knocking on a room we hold no state of (a denied knock, a
// withdrawn invite): without the room's state we cannot check it against
// the auth rules, so, like the invite itself, it is taken on the word of
// its sender's server, which must be the origin. It reports whether pdu
// was such an event.
func (a *API) outOfRoomMembership(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU) (bool, error) {
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil {
		return false, nil
	}
	target, err := spec.NewUserID(*pdu.StateKey(), true)
	if err != nil || target.Domain() != a.cfg.ServerName {
		return false, nil
	}
	if m, err := pdu.Membership(); err != nil || (m != spec.Leave && m != spec.Ban) {
		return false, nil
	}
	roomID := pdu.RoomID().String()
	if has, err := a.rooms.HasState(ctx, roomID); err != nil || has {
		return false, err
	}
	current, err := a.rooms.Membership(ctx, roomID, target.String())
	if err != nil {
		return false, err
	}
	if current != spec.Invite && current != spec.Knock {
		return false, nil
	}
	if sender, err := spec.NewUserID(string(pdu.SenderID()), true); err != nil || sender.Domain() != origin {
		return true, errors.New("the sender is not a user of the origin")
	}
	return true, a.rooms.StoreOwnOutOfRoom(ctx, origin, pdu, nil)
}

// parsePDU checks a PDU's content hash (a wrong one redacts it), its size
// and format for the room version, and its signatures.
// https://spec.matrix.org/v1.19/server-server-api/#checks-performed-on-receipt-of-a-pdu
func parsePDU(ctx context.Context, verifier gomatrixserverlib.JSONVerifier, ver gomatrixserverlib.RoomVersion, raw []byte) (gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, fmt.Errorf("unsupported room version %s", ver)
	}
	pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid event: %w", err)
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, verifier, roomserver.UserIDForSender); err != nil {
		return nil, fmt.Errorf("bad signature: %w", err)
	}
	return pdu, nil
}

// eventIDOf computes the ID of an event that failed its checks, for the
// transaction's answer.
func eventIDOf(ver gomatrixserverlib.RoomVersion, raw []byte) string {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return ""
	}
	if pdu, err := verImpl.NewEventFromTrustedJSON(raw, false); err == nil {
		return pdu.EventID()
	}
	return ""
}

// fillGap fetches the events between the room's extremities and pdu from
// the server that sent pdu, and stores them oldest first.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1get_missing_eventsroomid
func (a *API) fillGap(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU) error {
	roomID := pdu.RoomID().String()
	ext, err := a.rooms.Extremities(ctx, roomID)
	if err != nil {
		return err
	}
	res, err := a.client.LookupMissingEvents(ctx, a.cfg.ServerName, origin, roomID, fclient.MissingEvents{
		Limit: missingEventsLimit, EarliestEvents: ext, LatestEvents: []string{pdu.EventID()},
	}, ver)
	if err != nil {
		return fmt.Errorf("get_missing_events: %w", err)
	}
	// A bad event is left out (those after it that need it fail in turn);
	// the rest of the answer is still good.
	evs := a.parsePDUs(ctx, origin, ver, rawPDUs(res.Events))
	slices.SortFunc(evs, func(x, y gomatrixserverlib.PDU) int { return int(x.Depth() - y.Depth()) })
	for _, p := range evs {
		_, err := a.rooms.IngestRemote(ctx, origin, p, false)
		var missing *roomserver.MissingPrevEventsError
		if errors.As(err, &missing) {
			// The gap is wider than limit (a long partition): the oldest
			// events of the answer start from the state the origin gives
			// at them, so that the answer and the history it holds are
			// kept instead of dropped.
			err = a.ingestWithState(ctx, origin, ver, p)
		}
		if err != nil {
			var rej *roomserver.RejectedError
			if !errors.As(err, &rej) {
				return fmt.Errorf("missing event %s: %w", p.EventID(), err)
			}
		}
	}
	return nil
}

// ingestWithState stores an event whose prev_events we cannot get, from
// the state before it that its origin gives (GET /state), every event of
// which must carry valid signatures.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1stateroomid
func (a *API) ingestWithState(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU) error {
	res, err := a.client.LookupState(ctx, a.cfg.ServerName, origin, pdu.RoomID().String(), pdu.EventID(), ver)
	if err != nil {
		return fmt.Errorf("state at %s from %s: %w", pdu.EventID(), origin, err)
	}
	parse := func(raws gomatrixserverlib.EventJSONs) []gomatrixserverlib.PDU {
		var out []gomatrixserverlib.PDU
		for _, raw := range raws {
			if p, err := parsePDU(ctx, a.verifier, ver, raw); err == nil {
				out = append(out, p)
			}
		}
		return out
	}
	_, err = a.rooms.IngestRemoteWithState(ctx, origin, pdu, parse(res.StateEvents), parse(res.AuthEvents))
	return err
}

// getEvent serves one event: GET /v1/event/{eventId}.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1eventeventid
func (a *API) getEvent(r *http.Request, origin spec.ServerName, _ []byte) (any, error) {
	ev, err := a.rooms.EventForServer(r.Context(), origin, pathVar(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), ev.RoomID, origin); err != nil {
		return nil, err
	}
	return map[string]any{
		"origin": a.cfg.ServerName, "origin_server_ts": spec.AsTimestamp(time.Now()),
		"pdus": []json.RawMessage{ev.JSON()},
	}, nil
}

// getMissingEvents walks back from latest_events to earliest_events:
// POST /v1/get_missing_events/{roomId}.
func (a *API) getMissingEvents(r *http.Request, origin spec.ServerName, body []byte) (any, error) {
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckServerACL(r.Context(), roomID.String(), origin); err != nil {
		return nil, err
	}
	var req fclient.MissingEvents
	if err := httpx.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	if req.Limit <= 0 {
		req.Limit = 10
	}
	evs, err := a.rooms.MissingEvents(r.Context(), origin, roomID.String(), req.EarliestEvents, req.LatestEvents, min(req.Limit, 100), int64(req.MinDepth))
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": pduJSONs(evs)}, nil
}

// specError turns gomatrixserverlib's Matrix errors into ours.
func specError(err error) error {
	var me spec.MatrixError
	if errors.As(err, &me) {
		status := http.StatusBadRequest
		switch me.ErrCode {
		case spec.ErrorForbidden:
			status = http.StatusForbidden
		case spec.ErrorNotFound:
			status = http.StatusNotFound
		}
		return &mxerr.Error{Status: status, Code: string(me.ErrCode), Message: me.Err}
	}
	var ise spec.InternalServerError
	if errors.As(err, &ise) {
		return fmt.Errorf("%s", ise.Err)
	}
	return err
}

// roomParts is what the room routes keep beyond the API's own fields.
type roomParts struct {
	txns txnResults
	// wake, if set, tells the outbound queue a server is up.
	wake func(spec.ServerName)
	// edus, if set, takes the EDUs of incoming transactions.
	edus func(ctx context.Context, origin spec.ServerName, raw json.RawMessage)
	// keyRing verifies the state a join returns.
	keyRing *gomatrixserverlib.KeyRing
}

// SetWake sets what incoming transactions tell the outbound queue.
func (a *API) SetWake(f func(spec.ServerName)) { a.wake = f }

// SetKeyRing sets the key ring joins verify the returned state with.
func (a *API) SetKeyRing(k *gomatrixserverlib.KeyRing) { a.keyRing = k }
