package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

func (a *API) roomRoutes() []route {
	const get, post, put, del = http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []route{
		{post, "/createRoom", a.authed(a.createRoom, noGuests)},
		{post, "/join/{roomIdOrAlias}", a.authed(a.joinRoomIDOrAlias, guestOK)},
		{post, "/rooms/{roomId}/join", a.authed(a.joinRoom, guestOK)},
		{post, "/knock/{roomIdOrAlias}", a.authed(a.knock, noGuests)},
		{post, "/rooms/{roomId}/invite", a.authed(a.invite, noGuests)},
		{post, "/rooms/{roomId}/leave", a.authed(a.leave, guestOK)},
		{post, "/rooms/{roomId}/forget", a.authed(a.forget, guestOK)},
		{post, "/rooms/{roomId}/kick", a.authed(a.kick, noGuests)},
		{post, "/rooms/{roomId}/ban", a.authed(a.ban, noGuests)},
		{post, "/rooms/{roomId}/unban", a.authed(a.unban, noGuests)},
		{get, "/joined_rooms", a.authed(a.joinedRooms, guestOK)},

		{put, "/rooms/{roomId}/send/{eventType}/{txnId}", a.authed(a.sendMessage, guestOK)},
		{get, "/rooms/{roomId}/state", a.authed(a.getState, guestOK)},
		{get, "/rooms/{roomId}/state/{eventType}", a.authed(a.getStateEvent, guestOK)},
		{get, "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", a.authed(a.getStateEvent, guestOK)},
		{put, "/rooms/{roomId}/state/{eventType}", a.authed(a.putState, noGuests)},
		{put, "/rooms/{roomId}/state/{eventType}/{stateKey:.*}", a.authed(a.putState, noGuests)},
		{put, "/rooms/{roomId}/redact/{eventId}/{txnId}", a.authed(a.redact, noGuests)},
		{get, "/rooms/{roomId}/event/{eventId}", a.authed(a.getEvent, guestOK)},
		{get, "/rooms/{roomId}/members", a.authed(a.members, guestOK)},
		{get, "/rooms/{roomId}/joined_members", a.authed(a.joinedMembers, guestOK)},
		{get, "/rooms/{roomId}/messages", a.authed(a.messages, guestOK)},
		{get, "/rooms/{roomId}/context/{eventId}", a.authed(a.context, guestOK)},

		{get, "/directory/room/{roomAlias}", a.getAlias},
		{put, "/directory/room/{roomAlias}", a.authed(a.putAlias, noGuests)},
		{del, "/directory/room/{roomAlias}", a.authed(a.deleteAlias, noGuests)},
		{get, "/rooms/{roomId}/aliases", a.authed(a.roomAliases, guestOK)},
		{get, "/directory/list/room/{roomId}", a.getVisibility},
		{put, "/directory/list/room/{roomId}", a.authed(a.putVisibility, noGuests)},
	}
}

// roomID reads and checks the {roomId} path variable.
func roomID(r *http.Request) (string, error) {
	return checkRoomID(pathVar(r, "roomId"), "path")
}

// clientEvents formats state events for the viewer. Timeline events go
// through timelineEvents.
func (a *API) clientEvents(r *http.Request, who *users.Requester, evs []*roomserver.Event) []roomserver.ClientEvent {
	out := make([]roomserver.ClientEvent, len(evs))
	for i, ev := range evs {
		out[i] = a.clientEvent(r, who, ev)
	}
	return out
}

func (a *API) clientEvent(r *http.Request, who *users.Requester, ev *roomserver.Event) roomserver.ClientEvent {
	return ev.ToClient(roomserver.Viewer{UserID: who.UserID, DeviceID: who.DeviceID}, a.rooms.Redaction(r.Context(), ev))
}

// timelineEvents formats events of a room's timeline for the viewer, with
// the aggregations of their child events and the viewer's membership at
// each.
func (a *API) timelineEvents(r *http.Request, who *users.Requester, evs []*roomserver.Event) ([]roomserver.ClientEvent, error) {
	return a.rooms.ClientEvents(r.Context(), roomserver.Viewer{UserID: who.UserID, DeviceID: who.DeviceID}, evs)
}

func (a *API) createRoom(r *http.Request, who *users.Requester) (any, error) {
	var req roomserver.CreateRoomRequest
	if err := httpx.DecodeJSON(r, &req, true); err != nil {
		return nil, err
	}
	if req.RoomAliasName != "" {
		if err := a.checkServiceAlias(who, "#"+req.RoomAliasName+":"+a.cfg.ServerName); err != nil {
			return nil, err
		}
	}
	if err := who.Check(users.ActionCreateRoom); err != nil {
		return nil, err
	}
	if who.InvitesDropped() && len(req.Invite) > 0 {
		// The room is made; the invites of a shadow-banned user are not,
		// and the answer waits as for their other dropped invites.
		req.Invite = nil
		if err := a.shadowBanWait(r.Context()); err != nil {
			return nil, err
		}
	}
	id, err := a.rooms.CreateRoom(r.Context(), who.UserID, req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": id}, nil
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func (a *API) joinRoomIDOrAlias(r *http.Request, who *users.Requester) (any, error) {
	target, err := checkRoomIDOrAlias(pathVar(r, "roomIdOrAlias"), "path")
	if err != nil {
		return nil, err
	}
	return a.doJoin(r, who, target)
}

func (a *API) joinRoom(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	return a.doJoin(r, who, id)
}

// joinContent reads a join request's body. Like Synapse, every key the
// client sends (reason, custom keys, a per-room displayname) goes into the
// m.room.member content; the keys the server owns are dropped.
func joinContent(r *http.Request) (map[string]any, error) {
	var body map[string]any
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if reason, ok := body["reason"]; ok {
		if _, isString := reason.(string); !isString {
			return nil, mxerr.BadJSON("'reason' must be a string")
		}
	}
	// third_party_signed is a request parameter, not content; membership
	// and join_authorised_via_users_server are the server's to set.
	for _, k := range []string{"membership", "join_authorised_via_users_server", "third_party_signed"} {
		delete(body, k)
	}
	return body, nil
}

func (a *API) doJoin(r *http.Request, who *users.Requester, target string) (any, error) {
	content, err := joinContent(r)
	if err != nil {
		return nil, err
	}
	if err := who.Check(users.ActionJoin); err != nil {
		return nil, err
	}
	if who.IsGuest {
		id, err := a.rooms.ResolveRoom(r.Context(), target)
		if err != nil {
			return nil, err
		}
		if ok, err := a.rooms.GuestsCanJoin(r.Context(), id); err != nil || !ok {
			if err != nil {
				return nil, err
			}
			return nil, mxerr.GuestAccessForbidden()
		}
	}
	var via []spec.ServerName
	if a.queries != nil && a.remote != nil && a.remoteAlias(target) {
		id, servers, err := a.queries.RemoteAlias(r.Context(), target)
		if err != nil {
			return nil, err
		}
		target, via = id, servers
	}
	if joined, err := a.joinRemote(r, who, target, content, via...); joined || err != nil {
		if err != nil {
			return nil, err
		}
		return map[string]string{"room_id": target}, nil
	}
	id, err := a.rooms.Join(r.Context(), who.UserID, target, content)
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": id}, nil
}

// remoteAlias reports whether an alias belongs to another server.
func (a *API) remoteAlias(alias string) bool {
	_, domain, ok := strings.Cut(alias, ":")
	return strings.HasPrefix(alias, "#") && ok && domain != a.cfg.ServerName
}

func serverStrings(ss []spec.ServerName) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

// RemoteJoiner joins rooms that live on other servers (the federation
// edge).
type RemoteJoiner interface {
	JoinRemote(ctx context.Context, userID, roomID string, servers []spec.ServerName, content map[string]any) error
	LeaveRemote(ctx context.Context, userID, roomID string, servers []spec.ServerName, reason string) error
	KnockRemote(ctx context.Context, userID, roomID string, servers []spec.ServerName, reason string) error
}

// SetRemoteJoiner lets joins reach rooms on other servers.
func (a *API) SetRemoteJoiner(j RemoteJoiner) { a.remote = j }

// joinRemote joins a room this server does not know, through the servers
// the request names (via, or the older server_name) and, for room IDs of
// versions before 12, the server in the ID. joined is false when the room
// is known here: the local join applies.
func (a *API) joinRemote(r *http.Request, who *users.Requester, target string, content map[string]any, via ...spec.ServerName) (joined bool, err error) {
	if a.remote == nil || !strings.HasPrefix(target, "!") {
		return false, nil
	}
	// A room where one of our users is joined is live here: join locally.
	// Otherwise our copy, if any, may be stale: join through a server in
	// the room.
	if live, err := a.rooms.LocallyJoined(r.Context(), target); err != nil || live {
		return false, err
	}
	has, err := a.rooms.HasState(r.Context(), target)
	if err != nil {
		return false, err
	}
	var servers []spec.ServerName
	q := r.URL.Query()
	invited := append(a.rooms.InviteServers(r.Context(), target, who.UserID), via...)
	if has {
		known, err := a.rooms.ServersInRoom(r.Context(), target)
		if err != nil {
			return false, err
		}
		invited = append(invited, known...)
	}
	for _, s := range append(append(q["via"], q["server_name"]...), serverStrings(invited)...) {
		if !slices.Contains(servers, spec.ServerName(s)) {
			servers = append(servers, spec.ServerName(s))
		}
	}
	if _, domain, ok := strings.Cut(target, ":"); ok && !slices.Contains(servers, spec.ServerName(domain)) {
		servers = append(servers, spec.ServerName(domain))
	}
	servers = slices.DeleteFunc(servers, func(s spec.ServerName) bool { return string(s) == a.cfg.ServerName })
	if len(servers) == 0 {
		if has {
			return false, nil // nobody elsewhere: our copy is all there is
		}
		return false, mxerr.NotFound("No known servers for room %s: pass via= a server in the room", target)
	}
	if content == nil {
		content = map[string]any{}
	}
	if err := a.remote.JoinRemote(r.Context(), who.UserID, target, servers, content); err != nil {
		return false, err
	}
	return true, nil
}

func (a *API) knock(r *http.Request, who *users.Requester) (any, error) {
	var body reasonBody
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	target, err := checkRoomIDOrAlias(pathVar(r, "roomIdOrAlias"), "path")
	if err != nil {
		return nil, err
	}
	if err := who.Check(users.ActionKnock); err != nil {
		return nil, err
	}
	if a.remote != nil {
		var via []spec.ServerName
		if a.queries != nil && a.remoteAlias(target) {
			id, servers, err := a.queries.RemoteAlias(r.Context(), target)
			if err != nil {
				return nil, err
			}
			target, via = id, servers
		}
		if strings.HasPrefix(target, "!") {
			live, err := a.rooms.LocallyJoined(r.Context(), target)
			if err != nil {
				return nil, err
			}
			if !live {
				servers := slices.Clone(via)
				q := r.URL.Query()
				for _, s := range append(q["via"], q["server_name"]...) {
					servers = append(servers, spec.ServerName(s))
				}
				servers = append(servers, a.rooms.MembershipServers(r.Context(), target, who.UserID)...)
				if _, domain, ok := strings.Cut(target, ":"); ok {
					servers = append(servers, spec.ServerName(domain))
				}
				servers = slices.DeleteFunc(servers, func(s spec.ServerName) bool { return string(s) == a.cfg.ServerName })
				if len(servers) > 0 {
					if err := a.remote.KnockRemote(r.Context(), who.UserID, target, servers, body.Reason); err != nil {
						return nil, err
					}
					return map[string]string{"room_id": target}, nil
				}
			}
		}
	}
	id, err := a.rooms.Knock(r.Context(), who.UserID, target, body.Reason)
	if err != nil {
		return nil, err
	}
	return map[string]string{"room_id": id}, nil
}

type targetBody struct {
	UserID   string `json:"user_id"`
	Reason   string `json:"reason"`
	IsDirect bool   `json:"is_direct"`
}

// targetOp runs a membership change that names a target user, if the
// requester's restrictions allow action.
func (a *API) targetOp(r *http.Request, who *users.Requester, action users.Action, op func(roomID string, b targetBody) error) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	var body targetBody
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.UserID == "" {
		return nil, mxerr.MissingParam("user_id is required")
	}
	if _, err := checkUserID(body.UserID, "user_id"); err != nil {
		return nil, err
	}
	if done, resp, err := a.restrict(r.Context(), who, action, nil); done {
		return resp, err
	}
	if err := op(id, body); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) invite(r *http.Request, who *users.Requester) (any, error) {
	return a.targetOp(r, who, users.ActionInvite, func(id string, b targetBody) error {
		return a.rooms.Invite(r.Context(), who.UserID, id, b.UserID, b.Reason, b.IsDirect)
	})
}

func (a *API) kick(r *http.Request, who *users.Requester) (any, error) {
	return a.targetOp(r, who, users.ActionModerate, func(id string, b targetBody) error {
		return a.rooms.Kick(r.Context(), who.UserID, id, b.UserID, b.Reason)
	})
}

func (a *API) ban(r *http.Request, who *users.Requester) (any, error) {
	return a.targetOp(r, who, users.ActionModerate, func(id string, b targetBody) error {
		return a.rooms.Ban(r.Context(), who.UserID, id, b.UserID, b.Reason)
	})
}

func (a *API) unban(r *http.Request, who *users.Requester) (any, error) {
	return a.targetOp(r, who, users.ActionModerate, func(id string, b targetBody) error {
		return a.rooms.Unban(r.Context(), who.UserID, id, b.UserID, b.Reason)
	})
}

func (a *API) leave(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	var body reasonBody
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	if a.notices != nil {
		if err := a.notices.CheckLeave(r.Context(), id, who.UserID); err != nil {
			return nil, err
		}
	}
	if a.remote != nil {
		// A room we hold no live copy of (an invite or knock from
		// another server, or one all our users have left) is left
		// through a server in it.
		live, err := a.rooms.LocallyJoined(r.Context(), id)
		if err != nil {
			return nil, err
		}
		m, err := a.rooms.Membership(r.Context(), id, who.UserID)
		if err != nil {
			return nil, err
		}
		if !live && (m == "invite" || m == "knock") {
			servers := a.rooms.MembershipServers(r.Context(), id, who.UserID)
			if err := a.remote.LeaveRemote(r.Context(), who.UserID, id, servers, body.Reason); err != nil {
				// No server in the room took the leave (gone, or no
				// longer in it): reject locally, as Synapse does, so
				// the user is not stuck with the invite.
				a.log.WithError(err).WithField("room_id", id).Info("Remote leave failed: leaving out of band")
				if err := a.rooms.LeaveOutOfBand(r.Context(), who.UserID, id, body.Reason); err != nil {
					return nil, err
				}
			}
			return struct{}{}, nil
		}
	}
	if err := a.rooms.Leave(r.Context(), who.UserID, id, body.Reason); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) forget(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.Forget(r.Context(), who.UserID, id); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) joinedRooms(r *http.Request, who *users.Requester) (any, error) {
	ids, err := a.rooms.JoinedRooms(r.Context(), who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"joined_rooms": ids}, nil
}

// readContent reads an event content body: a JSON object.
func readContent(r *http.Request) (json.RawMessage, error) {
	raw, err := httpx.ReadBody(r)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := httpx.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	return raw, nil
}

// sendMessage: PUT /rooms/{roomId}/send/{eventType}/{txnId}.
func (a *API) sendMessage(r *http.Request, who *users.Requester) (any, error) {
	return a.sendEvent(r, who, nil, func(roomID string) *roomserver.TxnKey {
		// A transaction ID is scoped to its endpoint: room and event type
		// are part of the key, so reusing an ID elsewhere is a new send.
		return &roomserver.TxnKey{UserID: who.UserID, DeviceID: who.DeviceID, TxnID: pathVar(r, "txnId"),
			Endpoint: "send/" + url.PathEscape(roomID) + "/" + url.PathEscape(pathVar(r, "eventType"))}
	})
}

// putState: PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
func (a *API) putState(r *http.Request, who *users.Requester) (any, error) {
	key := pathVar(r, "stateKey")
	return a.sendEvent(r, who, &key, nil)
}

// sendEvent sends the request's body as an event of the path's type.
func (a *API) sendEvent(r *http.Request, who *users.Requester, stateKey *string, txn func(roomID string) *roomserver.TxnKey) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	req := roomserver.SendRequest{RoomID: id, Sender: who.UserID, Type: pathVar(r, "eventType"), StateKey: stateKey, Content: content}
	if a.notices != nil && req.Type == spec.MRoomMember && stateKey != nil && *stateKey == who.UserID {
		// Leaving by a member event is /leave too: the notices room's
		// invite cannot be rejected this way either.
		var m struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(content, &m) == nil && m.Membership == spec.Leave {
			if err := a.notices.CheckLeave(r.Context(), id, who.UserID); err != nil {
				return nil, err
			}
		}
	}
	if done, resp, err := a.restrict(r.Context(), who, users.ActionSend, fakeEventID); done {
		return resp, err
	}
	if err := a.limitMessages(who); err != nil {
		return nil, err
	}
	if txn != nil {
		req.Txn = txn(id)
	}
	if req.Timestamp, err = a.appServiceTS(r, who); err != nil {
		return nil, err
	}
	if delay, ok, err := delayParam(r); err != nil {
		return nil, err
	} else if ok {
		return a.scheduleDelayed(r, who, req, delay) // MSC4140: delayed.go
	}
	ev, err := a.rooms.Send(r.Context(), req)
	if err != nil {
		return nil, err
	}
	a.stateSent(r, req)
	return map[string]string{"event_id": ev.EventID()}, nil
}

func (a *API) getState(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.State(r.Context(), id, who.UserID)
	if err != nil {
		return nil, err
	}
	return a.clientEvents(r, who, evs), nil
}

// getStateEvent returns the content of a state event, or the whole event
// with ?format=event.
func (a *API) getStateEvent(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.StateEvent(r.Context(), id, who.UserID, pathVar(r, "eventType"), pathVar(r, "stateKey"))
	if err != nil {
		return nil, err
	}
	if r.URL.Query().Get("format") == "event" {
		return a.clientEvent(r, who, ev), nil
	}
	return json.RawMessage(ev.Content()), nil
}

func (a *API) redact(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	var body reasonBody
	if err := httpx.DecodeJSON(r, &body, true); err != nil {
		return nil, err
	}
	eventID := pathVar(r, "eventId")
	ownEvent := func() (bool, error) {
		ev, err := a.rooms.Event(r.Context(), id, who.UserID, eventID)
		if err != nil {
			return false, err
		}
		return string(ev.SenderID()) == who.UserID, nil
	}
	if done, resp, err := a.shadowAnswer(r.Context(), who.CheckRedact(ownEvent), fakeEventID); done {
		return resp, err
	}
	if err := a.limitMessages(who); err != nil {
		return nil, err
	}
	ev, err := a.rooms.Redact(r.Context(), id, who.UserID, pathVar(r, "eventId"), body.Reason,
		&roomserver.TxnKey{UserID: who.UserID, DeviceID: who.DeviceID, TxnID: pathVar(r, "txnId"),
			Endpoint: "redact/" + url.PathEscape(id) + "/" + url.PathEscape(pathVar(r, "eventId"))})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}

func (a *API) getEvent(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.Event(r.Context(), id, who.UserID, pathVar(r, "eventId"))
	if err != nil {
		return nil, err
	}
	ces, err := a.timelineEvents(r, who, []*roomserver.Event{ev})
	if err != nil {
		return nil, err
	}
	return ces[0], nil
}

// optionalToken reads an optional pagination token: any token the server
// hands out, /sync's next_batch included (roomserver.ParseToken).
func optionalToken(q string) (*roomserver.Token, error) {
	if q == "" {
		return nil, nil
	}
	t, err := roomserver.ParseToken(q)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func (a *API) members(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	at, err := optionalToken(q.Get("at"))
	if err != nil {
		return nil, err
	}
	for _, p := range []string{"membership", "not_membership"} {
		switch q.Get(p) {
		case "", "join", "invite", "knock", "leave", "ban":
		default:
			return nil, mxerr.InvalidParam("%s must be one of join, invite, knock, leave, ban", p)
		}
	}
	evs, err := a.rooms.Members(r.Context(), id, who.UserID, at, q.Get("membership"), q.Get("not_membership"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": a.clientEvents(r, who, evs)}, nil
}

func (a *API) joinedMembers(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	m, err := a.rooms.JoinedMembers(r.Context(), id, who.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined": m}, nil
}

// parseLimit reads a limit parameter: def when absent, capped at max.
func parseLimit(s string, def, max int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mxerr.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, max), nil
}

// parseEventFilter reads the filter query parameter of /messages and
// /context: a RoomEventFilter as JSON.
func parseEventFilter(s string) (*roomserver.EventFilter, error) {
	if s == "" {
		return nil, nil
	}
	f, err := users.ParseRoomEventFilter([]byte(s))
	if err != nil {
		return nil, mxerr.InvalidParam("filter is not a valid RoomEventFilter")
	}
	return &roomserver.EventFilter{
		Types: f.Types, NotTypes: f.NotTypes, Senders: f.Senders, NotSenders: f.NotSenders,
		ContainsURL: f.ContainsURL, LazyLoadMembers: f.LazyLoadMembers, IncludeRedundant: f.IncludeRedundantMembers,
	}, nil
}

// messages: GET /rooms/{roomId}/messages.
func (a *API) messages(r *http.Request, who *users.Requester) (any, error) {
	return a.pageMessages(r, who, false)
}

// pageMessages answers /messages, and the admin API's room messages with
// serverAdmin (every event, whatever the admin's membership).
func (a *API) pageMessages(r *http.Request, who *users.Requester, serverAdmin bool) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := roomserver.MessagesRequest{RoomID: id, UserID: who.UserID, ServerAdmin: serverAdmin}
	switch q.Get("dir") {
	case "b":
		req.Backwards = true
	case "f":
	case "":
		return nil, mxerr.MissingParam("dir is required")
	default:
		return nil, mxerr.InvalidParam("dir must be \"b\" or \"f\"")
	}
	if req.From, err = optionalToken(q.Get("from")); err != nil {
		return nil, err
	}
	if req.To, err = optionalToken(q.Get("to")); err != nil {
		return nil, err
	}
	if req.Limit, err = parseLimit(q.Get("limit"), 10, 1000); err != nil {
		return nil, err
	}
	if req.Filter, err = parseEventFilter(q.Get("filter")); err != nil {
		return nil, err
	}
	resp, err := a.rooms.Messages(r.Context(), req)
	if err != nil {
		return nil, err
	}
	chunk, err := a.timelineEvents(r, who, resp.Chunk)
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"chunk": chunk,
		"start": resp.Start.String(),
	}
	if from := q.Get("from"); from != "" {
		out["start"] = from // the spec: "the same as the value given in from", a sync token too
	}
	if resp.End != nil {
		out["end"] = resp.End.String()
	}
	if len(resp.State) > 0 {
		out["state"] = a.clientEvents(r, who, resp.State)
	}
	return out, nil
}

// context: GET /rooms/{roomId}/context/{eventId}.
func (a *API) context(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	limit, err := parseLimit(r.URL.Query().Get("limit"), 10, 1000)
	if err != nil {
		return nil, err
	}
	filter, err := parseEventFilter(r.URL.Query().Get("filter"))
	if err != nil {
		return nil, err
	}
	resp, err := a.rooms.Context(r.Context(), id, who.UserID, pathVar(r, "eventId"), limit, filter)
	if err != nil {
		return nil, err
	}
	// One call for the three, so that their aggregations are read together.
	all := append(append([]*roomserver.Event{resp.Event}, resp.Before...), resp.After...)
	ces, err := a.timelineEvents(r, who, all)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"event":         ces[0],
		"events_before": ces[1 : 1+len(resp.Before)],
		"events_after":  ces[1+len(resp.Before):],
		"start":         resp.Start.String(),
		"end":           resp.End.String(),
		"state":         a.clientEvents(r, who, resp.State),
	}, nil
}

// Room aliases: GET/PUT/DELETE /directory/room/{roomAlias}.
// https://spec.matrix.org/v1.19/client-server-api/#room-aliases
func (a *API) getAlias(r *http.Request) (any, error) {
	alias, err := checkAlias(pathVar(r, "roomAlias"), "path")
	if err != nil {
		return nil, err
	}
	if a.queries != nil && a.remoteAlias(alias) {
		id, servers, err := a.queries.RemoteAlias(r.Context(), alias)
		if err != nil {
			return nil, err
		}
		return map[string]any{"room_id": id, "servers": servers}, nil
	}
	id, err := a.rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, mxerr.NotFound("Room alias %s not found", alias)
	}
	return map[string]any{"room_id": id, "servers": []string{a.cfg.ServerName}}, nil
}

func (a *API) putAlias(r *http.Request, who *users.Requester) (any, error) {
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	if body.RoomID == "" {
		return nil, mxerr.MissingParam("room_id is required")
	}
	if err := who.Check(users.ActionSetAlias); err != nil {
		return nil, err
	}
	if _, err := checkRoomID(body.RoomID, "room_id"); err != nil {
		return nil, err
	}
	if err := a.checkServiceAlias(who, pathVar(r, "roomAlias")); err != nil {
		return nil, err
	}
	if err := a.rooms.SetAlias(r.Context(), pathVar(r, "roomAlias"), body.RoomID, who.UserID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) deleteAlias(r *http.Request, who *users.Requester) (any, error) {
	if err := a.rooms.DeleteAlias(r.Context(), pathVar(r, "roomAlias"), who.UserID, who.IsAdmin); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (a *API) roomAliases(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.rooms.State(r.Context(), id, who.UserID); err != nil {
		return nil, err
	}
	aliases, err := a.rooms.Aliases(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"aliases": aliases}, nil
}

// Room directory visibility: GET/PUT /directory/list/room/{roomId}.
func (a *API) getVisibility(r *http.Request) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	p, err := a.rooms.Published(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string]string{"visibility": map[bool]string{true: "public", false: "private"}[p]}, nil
}

func (a *API) putVisibility(r *http.Request, who *users.Requester) (any, error) {
	id, err := roomID(r)
	if err != nil {
		return nil, err
	}
	visibility, err := decodeVisibility(r)
	if err != nil {
		return nil, err
	}
	if err := a.rooms.CheckCanPublish(r.Context(), id, who.UserID, who.IsAdmin); err != nil {
		return nil, err
	}
	if err := a.rooms.SetPublished(r.Context(), id, visibility == "public"); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// decodeVisibility reads a room directory visibility body:
// {"visibility": "public" | "private"}.
func decodeVisibility(r *http.Request) (string, error) {
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return "", err
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return "", mxerr.InvalidParam("visibility must be \"public\" or \"private\"")
	}
	return body.Visibility, nil
}
