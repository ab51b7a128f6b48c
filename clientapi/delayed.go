package clientapi

// Delayed events (MSC4140, unstable prefix org.matrix.msc4140): a send or
// state PUT with ?org.matrix.msc4140.delay=<ms> schedules the event instead
// of sending it, and /delayed_events restarts, sends, cancels and lists
// what is scheduled. The delayed package does the work.
// https://github.com/matrix-org/matrix-spec-proposals/pull/4140

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tessera-hs/tessera/delayed"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

const (
	delayParamName  = "org.matrix.msc4140.delay"
	delayedPrefix   = "/_matrix/client/unstable/org.matrix.msc4140"
	maxDelayIDQuery = 100 // delay_id filters per list request
)

// SetDelayed enables delayed events.
func (a *API) SetDelayed(d *delayed.Service) { a.delayed = d }

// delayedEnabled is whether /versions advertises org.matrix.msc4140.
func (a *API) delayedEnabled() bool { return a.delayed != nil && a.delayed.Enabled() }

func (a *API) delayedRoutes(add func(string, []route)) {
	const get, post = http.MethodGet, http.MethodPost
	add(delayedPrefix, []route{
		{get, "/delayed_events", a.authed(a.listDelayedEvents, guestOK)},
		// MSC4140: the delay ID alone authorises these, so that a client
		// can hand an event to a service (an SFU's token service) that
		// keeps it alive or sends it. With an access token, only the
		// user's own events.
		{post, "/delayed_events/{delayId}", a.optionalAuth(a.updateDelayedEventBody)},
		{post, "/delayed_events/{delayId}/{action}", a.optionalAuth(a.updateDelayedEvent)},
	})
}

// delayParam reads ?org.matrix.msc4140.delay: ok is false when absent.
func delayParam(r *http.Request) (d time.Duration, ok bool, err error) {
	q := r.URL.Query()
	if !q.Has(delayParamName) {
		return 0, false, nil
	}
	ms, err := strconv.ParseInt(q.Get(delayParamName), 10, 64)
	if err != nil || ms < 0 || ms > int64(time.Duration(1<<62)/time.Millisecond) {
		return 0, false, mxerr.InvalidParam("Query parameter %q must be a non-negative integer", delayParamName)
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

// scheduleDelayed stores req to be sent after delay and answers its
// delay_id. A retried send with the same transaction ID gets the same
// delay_id, as a retried send gets the same event_id.
func (a *API) scheduleDelayed(r *http.Request, who *users.Requester, req roomserver.SendRequest, delay time.Duration) (any, error) {
	if a.delayed == nil {
		return nil, mxerr.Forbidden("Sending delayed events has been disallowed")
	}
	sr := delayed.ScheduleRequest{
		UserID: who.UserID, DeviceID: who.DeviceID,
		RoomID: req.RoomID, Type: req.Type, StateKey: req.StateKey, Content: req.Content, Delay: delay,
	}
	if req.Txn != nil {
		sr.TxnKey = url.PathEscape(req.Txn.Endpoint) + "/" + req.Txn.TxnID
	}
	id, err := a.delayed.Schedule(r.Context(), sr)
	if err != nil {
		return nil, err
	}
	return map[string]string{"delay_id": id}, nil
}

// stateSent tells the delayed events that a user set a piece of state, so
// that other users' delayed updates of it are dropped. Failing that is
// logged, not answered: the event is sent.
func (a *API) stateSent(r *http.Request, req roomserver.SendRequest) {
	if a.delayed == nil || req.StateKey == nil {
		return
	}
	if err := a.delayed.StateChanged(r.Context(), req.RoomID, req.Type, *req.StateKey, req.Sender); err != nil {
		a.log.WithError(err).WithField("room_id", req.RoomID).Warn("cancelling delayed events for changed state")
	}
}

// updateDelayedEvent: POST /delayed_events/{delay_id}/{action}, with an
// empty JSON body.
func (a *API) updateDelayedEvent(r *http.Request, who *users.Requester) (any, error) {
	return a.doDelayedAction(r, who, pathVar(r, "action"))
}

// updateDelayedEventBody: POST /delayed_events/{delay_id} with
// {"action": "restart"|"send"|"cancel"}, the form of earlier revisions of
// the MSC that Element Call still uses.
func (a *API) updateDelayedEventBody(r *http.Request, who *users.Requester) (any, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httpx.Unmarshal(raw, &body); err != nil {
		return nil, err
	}
	rawAction, ok := body["action"]
	if !ok {
		return nil, mxerr.MissingParam("'action' is missing")
	}
	var action string
	if err := json.Unmarshal(rawAction, &action); err != nil {
		return nil, mxerr.InvalidParam("'action' is not one of 'cancel', 'restart', 'send'")
	}
	return a.doDelayedAction(r, who, action)
}

func (a *API) doDelayedAction(r *http.Request, who *users.Requester, action string) (any, error) {
	switch delayed.Action(action) {
	case delayed.Restart, delayed.SendNow, delayed.Cancel:
	default:
		return nil, mxerr.InvalidParam("'action' is not one of 'cancel', 'restart', 'send'")
	}
	if a.delayed == nil {
		return nil, mxerr.NotFound("Delayed event not found")
	}
	userID := ""
	if who != nil {
		userID = who.UserID
	} else if err := limit(a.delayedActions, a.clientIP(r)); err != nil {
		// Unauthenticated: limited per address, which also bounds
		// guessing at delay IDs.
		return nil, err
	}
	if err := a.delayed.Update(r.Context(), userID, pathVar(r, "delayId"), delayed.Action(action)); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// listDelayedEvents: GET /delayed_events[?status=scheduled|finalised]
// [&delay_id=...]. Without status both lists come back, and the scheduled
// one again as "delayed_events", the field of earlier revisions.
func (a *API) listDelayedEvents(r *http.Request, who *users.Requester) (any, error) {
	q := r.URL.Query()
	scheduled, finalised := true, true
	if statuses, ok := q["status"]; ok {
		scheduled, finalised = false, false
		for _, st := range statuses {
			switch st {
			case "scheduled":
				scheduled = true
			case "finalised":
				finalised = true
			default:
				return nil, mxerr.InvalidParam("Query parameter \"status\" must be one of \"scheduled\", \"finalised\"")
			}
		}
	}
	f := delayed.ListFilter{DelayIDs: q["delay_id"]}
	if len(f.DelayIDs) > maxDelayIDQuery {
		return nil, mxerr.InvalidParam("At most %d delay_id parameters are allowed", maxDelayIDQuery)
	}
	out := map[string]any{}
	if a.delayed == nil {
		out["delayed_events"] = []any{}
		return out, nil
	}
	if scheduled {
		evs, err := a.delayed.Scheduled(r.Context(), who.UserID, f)
		if err != nil {
			return nil, err
		}
		out["scheduled"] = evs
		if !q.Has("status") {
			out["delayed_events"] = evs
		}
	}
	if finalised {
		evs, err := a.delayed.Finalised(r.Context(), who.UserID, f)
		if err != nil {
			return nil, err
		}
		out["finalised"] = evs
	}
	return out, nil
}
