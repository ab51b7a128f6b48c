package roomserver

// Events made by other servers: checked against the auth rules and the
// state before them, stored, and folded into the room's current state.
// https://spec.matrix.org/v1.19/server-server-api/#checks-performed-on-receipt-of-a-pdu

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// remoteReq is an event another server made, its hashes and signatures
// already checked by the federation edge, for its room's sequencer.
type remoteReq struct {
	pdu    gomatrixserverlib.PDU
	origin spec.ServerName
	// forward: once committed, send it on to the room's other servers. We
	// do that for events given to us as the resident server (send_join,
	// send_leave, send_knock); the origin of a transaction sends its
	// events to every server itself.
	forward bool
	// state, when set, is the state before the event as another server
	// gave it (/state), for an event whose prev_events we cannot get:
	// the event then starts a new branch of the DAG from that state.
	state, authChain []gomatrixserverlib.PDU
}

// MissingPrevEventsError: some of the event's prev_events are unknown
// here; the caller fetches them (get_missing_events) and tries again.
type MissingPrevEventsError struct{ IDs []string }

func (e *MissingPrevEventsError) Error() string {
	return fmt.Sprintf("missing prev_events %v", e.IDs)
}

// RejectedError: the event failed the auth rules. It is remembered as
// rejected and never served or used as state.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "event rejected: " + e.Reason }

// errRetryBranch: a remote event forks from an event of the same batch
// whose state is not yet written; the caller tries once more.
var errRetryBranch = errors.New("event branches from an uncommitted event; try again")

// IngestRemote checks an event another server made and, if it passes,
// stores it. Its hashes and signatures must already be verified. An event
// already stored is returned as it is.
func (s *Service) IngestRemote(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU, forward bool) (*Event, error) {
	for attempt := 0; ; attempt++ {
		req := &buildReq{ctx: ctx, remote: &remoteReq{pdu: pdu, origin: origin, forward: forward}, resp: make(chan buildResult, 1)}
		ev, err := s.enqueue(ctx, pdu.RoomID().String(), req)
		var ex existingEvent
		if errors.As(err, &ex) {
			return ex.ev, nil
		}
		if errors.Is(err, errRetryBranch) && attempt == 0 {
			continue
		}
		return ev, err
	}
}

// IngestRemoteWithState stores a remote event whose prev_events we could
// not get, from the state before it that another server gave (GET /state),
// the state and its auth chain already checked for signatures. The state
// events are kept as outliers, each checked against its own auth events;
// the event is checked against them and the current state (soft failure)
// and becomes a new branch of the room, merged by state resolution.
// https://spec.matrix.org/v1.19/server-server-api/#checks-performed-on-receipt-of-a-pdu
func (s *Service) IngestRemoteWithState(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) (*Event, error) {
	req := &buildReq{ctx: ctx, remote: &remoteReq{pdu: pdu, origin: origin, state: state, authChain: authChain}, resp: make(chan buildResult, 1)}
	ev, err := s.enqueue(ctx, pdu.RoomID().String(), req)
	var ex existingEvent
	if errors.As(err, &ex) {
		return ex.ev, nil
	}
	return ev, err
}

// stateFromRemote turns the state another server gave into events: those
// we hold already, and the others as outliers to store, each allowed by
// its own auth events (among those given or held). Events that fail are
// left out of the state.
func (s *Service) stateFromRemote(ctx context.Context, rs *roomState, given, authChain []gomatrixserverlib.PDU) (map[tuple]*Event, []*pendingEvent, error) {
	byID := map[string]gomatrixserverlib.PDU{}
	ids := make([]string, 0, len(given)+len(authChain))
	for _, p := range slices.Concat(given, authChain) {
		if p.RoomID().String() == rs.roomID && byID[p.EventID()] == nil {
			byID[p.EventID()] = p
			ids = append(ids, p.EventID())
		}
	}
	have, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]*Event{}
	for id, ev := range have {
		known[id] = ev
	}
	var outliers []*pendingEvent
	sorted := make([]gomatrixserverlib.PDU, 0, len(byID))
	for _, p := range byID {
		sorted = append(sorted, p)
	}
	slices.SortFunc(sorted, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	for _, p := range sorted {
		if known[p.EventID()] != nil {
			continue
		}
		var auth []gomatrixserverlib.PDU
		for _, aid := range p.AuthEventIDs() {
			if a := known[aid]; a != nil {
				auth = append(auth, a.PDU)
			}
		}
		if rs.version.DomainlessRoomIDs() {
			if c := rs.get(spec.MRoomCreate, ""); c != nil && p.EventID() != c.EventID() {
				auth = append(auth, c.PDU)
			}
		}
		ae, err := gomatrixserverlib.NewAuthEvents(auth)
		if err != nil || gomatrixserverlib.Allowed(p, ae, UserIDForSender) != nil {
			continue // not allowed by its own auth events: not state
		}
		ev := &Event{PDU: p, RoomID: rs.roomID}
		known[p.EventID()] = ev
		outliers = append(outliers, &pendingEvent{ev: ev, outlier: true})
	}
	state := map[tuple]*Event{}
	for _, p := range given {
		if sk := p.StateKey(); sk != nil {
			if ev := known[p.EventID()]; ev != nil {
				state[tuple{p.Type(), *sk}] = ev
			}
		}
	}
	return state, outliers, nil
}

// buildRemote checks a remote event against the room as its sequencer
// holds it (rs) and prepares it for commit, moving rs forward. pending is
// what this turn of the sequencer has prepared before it.
func (s *Service) buildRemote(ctx context.Context, rs *roomState, rr *remoteReq, pending []*pendingEvent) (*pendingEvent, error) {
	pdu := rr.pdu
	id := pdu.EventID()
	if pdu.Version() != rs.version.Version() {
		return nil, mxerr.BadJSON("Event %s is not of the room's version %s", id, rs.version.Version())
	}
	lookup := func(ids []string) (map[string]*Event, []string, error) {
		found := make(map[string]*Event, len(ids))
		var rest []string
		for _, id := range ids {
			for _, pe := range pending {
				if pe.ev.EventID() == id {
					found[id] = pe.ev
				}
			}
			if found[id] == nil {
				rest = append(rest, id)
			}
		}
		if len(rest) == 0 {
			return found, nil, nil
		}
		evs, err := s.events(ctx, s.db, rest)
		if err != nil {
			return nil, nil, err
		}
		var missing []string
		for _, id := range rest {
			if ev, ok := evs[id]; ok {
				found[id] = ev
			} else {
				missing = append(missing, id)
			}
		}
		return found, missing, nil
	}
	if self, _, err := lookup([]string{id}); err != nil {
		return nil, err
	} else if ev := self[id]; ev != nil {
		return nil, existingEvent{ev}
	}
	if rejected, err := s.anyRejected(ctx, append([]string{id}, pdu.AuthEventIDs()...)); err != nil {
		return nil, err
	} else if rejected {
		return nil, s.reject(ctx, rr, "it or one of its auth events was rejected before")
	}
	// With all its auth events at hand, an event they do not allow is
	// rejected now: fetching its missing prev_events or the state before
	// them (get_missing_events, /state) could not save it.
	if auths, missing, err := lookup(pdu.AuthEventIDs()); err != nil {
		return nil, err
	} else if len(missing) == 0 {
		if err := allowedByAuthEvents(rs, pdu, auths); err != nil {
			return nil, s.reject(ctx, rr, err.Error())
		}
	}
	prevIDs := pdu.PrevEventIDs()
	prevs, missing, err := lookup(prevIDs)
	if err != nil {
		return nil, err
	}
	var given map[tuple]*Event
	var givenOutliers []*pendingEvent
	if len(missing) > 0 {
		if rr.state == nil {
			return nil, &MissingPrevEventsError{IDs: missing}
		}
		if given, givenOutliers, err = s.stateFromRemote(ctx, rs, rr.state, rr.authChain); err != nil {
			return nil, err
		}
		// The event's auth events may be among them.
		pending = append(slices.Clip(pending), givenOutliers...)
	}
	auths, missing, err := lookup(pdu.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, s.reject(ctx, rr, fmt.Sprintf("unknown auth events %v", missing))
	}
	if err := allowedByAuthEvents(rs, pdu, auths); err != nil {
		return nil, s.reject(ctx, rr, err.Error())
	}

	linear := given == nil && sameSet(prevIDs, rs.extremities)
	before, beforeGroup := rs.state, rs.group
	switch {
	case given != nil:
		before, beforeGroup = given, 0
	case !linear:
		for _, p := range prevs {
			if slices.ContainsFunc(pending, func(pe *pendingEvent) bool { return pe.ev == p }) {
				return nil, errRetryBranch
			}
		}
		if before, beforeGroup, err = s.stateBeforeRemote(ctx, rs, prevs); err != nil {
			return nil, fmt.Errorf("state before %s: %w", id, err)
		}
	}
	if err := gomatrixserverlib.Allowed(pdu, &roomState{state: before}, UserIDForSender); err != nil {
		return nil, s.reject(ctx, rr, "not allowed by the state before it: "+err.Error())
	}
	pe := &pendingEvent{ev: &Event{PDU: pdu, RoomID: rs.roomID, Origin: rr.origin, Forward: rr.forward}, stateGroup: beforeGroup,
		outliersBefore: givenOutliers}
	if sk := pdu.StateKey(); sk != nil {
		if prev := before[tuple{pdu.Type(), *sk}]; prev != nil {
			pe.ev.ReplacesState = prev.EventID()
			pe.ev.PrevContent = prev.Content()
			pe.ev.PrevSender = string(prev.SenderID())
		}
	}
	if pdu.Type() == spec.MRoomRedaction {
		// A redaction whose target we lack or may not touch is kept
		// but has no effect.
		if red, err := s.redactionFor(ctx, rs, pdu); err == nil {
			pe.redaction = red
		}
	}
	if linear {
		s.apply(rs, pe)
		return pe, nil
	}

	// The event branches off (or merges branches of) the DAG.
	after := before
	if sk := pdu.StateKey(); sk != nil {
		after = make(map[tuple]*Event, len(before)+1)
		for t, ev := range before {
			after[t] = ev
		}
		after[tuple{pdu.Type(), *sk}] = pe.ev
	}
	if sk := pdu.StateKey(); sk != nil || beforeGroup == 0 {
		pe.newGroup = fullGroup(s.nextGroupID(), after)
		pe.stateGroup = pe.newGroup.id
	}
	pe.ev.StateGroup = pe.stateGroup
	// Soft failure: allowed where it was sent but not by the room as it is
	// now, so it stays out of the timeline and the current state.
	// https://spec.matrix.org/v1.19/server-server-api/#soft-failure
	if err := gomatrixserverlib.Allowed(pdu, rs, UserIDForSender); err != nil {
		s.log.WithField("event_id", id).WithError(err).Info("soft-failed a remote event")
		pe.outlier = true
		return pe, nil
	}
	ext := []string{id}
	for _, e := range rs.extremities {
		if !slices.Contains(prevIDs, e) {
			ext = append(ext, e)
		}
	}
	current := after
	if len(ext) > 1 {
		if current, err = s.resolveState(ctx, rs.version, []map[tuple]*Event{rs.state, after}); err != nil {
			return nil, fmt.Errorf("resolve state at %s: %w", id, err)
		}
	}
	g := fullGroup(s.nextGroupID(), current)
	pe.currentGroup, pe.currentState = g, current
	rs.state, rs.group, rs.chainLen = current, g.id, 0
	rs.extremities = ext
	rs.depth = max(rs.depth, pdu.Depth())
	return pe, nil
}

// allowedByAuthEvents checks pdu against its own auth events.
func allowedByAuthEvents(rs *roomState, pdu gomatrixserverlib.PDU, auths map[string]*Event) error {
	authPDUs := make([]gomatrixserverlib.PDU, 0, len(auths)+1)
	for _, ev := range auths {
		authPDUs = append(authPDUs, ev.PDU)
	}
	if rs.version.DomainlessRoomIDs() {
		// From room version 12 the create event is not in auth_events:
		// the room ID names it.
		if c := rs.get(spec.MRoomCreate, ""); c != nil && !slices.Contains(pdu.AuthEventIDs(), c.EventID()) {
			authPDUs = append(authPDUs, c.PDU)
		}
	}
	ae, err := gomatrixserverlib.NewAuthEvents(authPDUs)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(pdu, ae, UserIDForSender); err != nil {
		return fmt.Errorf("not allowed by its auth events: %w", err)
	}
	return nil
}

// stateBeforeRemote is the state before an event with the given prev
// events: the state after the one, or the resolution of the states after
// each (group 0 then: it is no stored group).
func (s *Service) stateBeforeRemote(ctx context.Context, rs *roomState, prevs map[string]*Event) (map[tuple]*Event, int64, error) {
	groups := map[int64]bool{}
	for _, p := range prevs {
		if p.StateGroup == 0 {
			return nil, 0, fmt.Errorf("no state known at %s", p.EventID())
		}
		groups[p.StateGroup] = true
	}
	sets := make([]map[tuple]*Event, 0, len(groups))
	var only int64
	for g := range groups {
		ids, err := s.stateOfGroup(ctx, s.db, g)
		if err != nil {
			return nil, 0, err
		}
		st, err := s.stateEvents(ctx, s.db, ids)
		if err != nil {
			return nil, 0, err
		}
		sets = append(sets, st)
		only = g
	}
	if len(sets) == 1 {
		return sets[0], only, nil
	}
	st, err := s.resolveState(ctx, rs.version, sets)
	return st, 0, err
}

// resolveState runs the room version's state resolution over state sets.
func (s *Service) resolveState(ctx context.Context, ver gomatrixserverlib.IRoomVersion, sets []map[tuple]*Event) (out map[tuple]*Event, err error) {
	// gomatrixserverlib's resolution dereferences events it expects in the
	// auth chain; a chain another server left incomplete must fail the
	// event, not the process.
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("state resolution failed: %v", r)
		}
	}()
	byID := map[string]*Event{}
	stateSets := make([][]gomatrixserverlib.PDU, 0, len(sets))
	var all []*Event
	for _, set := range sets {
		pdus := make([]gomatrixserverlib.PDU, 0, len(set))
		for _, ev := range set {
			pdus = append(pdus, ev.PDU)
			if byID[ev.EventID()] == nil {
				byID[ev.EventID()] = ev
				all = append(all, ev)
			}
		}
		stateSets = append(stateSets, pdus)
	}
	chain, err := s.authChain(ctx, all)
	if err != nil {
		return nil, err
	}
	// The state sets' events go in too: from room version 12 the create
	// event is in no auth_events, and the resolution still walks to it.
	chainPDUs := make([]gomatrixserverlib.PDU, 0, len(chain)+len(all))
	for _, ev := range all {
		chainPDUs = append(chainPDUs, ev.PDU)
	}
	for _, ev := range chain {
		if byID[ev.EventID()] == nil {
			byID[ev.EventID()] = ev
			chainPDUs = append(chainPDUs, ev.PDU)
		}
	}
	if ver.StateResAlgorithm() == gomatrixserverlib.StateResV2_1 {
		if out, ok := resolveV21(sets, byID); ok {
			return out, nil
		}
	}
	resolved, err := gomatrixserverlib.ResolveConflictsNew(ver.Version(), stateSets, chainPDUs, UserIDForSender,
		func(string) bool { return false }) // rejected events never reach a state set
	if err != nil {
		return nil, err
	}
	out = make(map[tuple]*Event, len(resolved))
	for _, p := range resolved {
		if sk := p.StateKey(); sk != nil {
			if ev := byID[p.EventID()]; ev != nil {
				out[tuple{p.Type(), *sk}] = ev
			}
		}
	}
	return out, nil
}

// authChain is every event reachable from evs through auth_events.
func (s *Service) authChain(ctx context.Context, evs []*Event) ([]*Event, error) {
	seen := map[string]bool{}
	var out []*Event
	var next []string
	for _, ev := range evs {
		next = append(next, ev.AuthEventIDs()...)
	}
	for len(next) > 0 {
		var ids []string
		for _, id := range next {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		next = nil
		if len(ids) == 0 {
			break
		}
		found, err := s.events(ctx, s.db, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if ev := found[id]; ev != nil {
				out = append(out, ev)
				next = append(next, ev.AuthEventIDs()...)
			}
		}
	}
	return out, nil
}

// AuthChain is the auth chain of the given events, as PDUs.
func (s *Service) AuthChain(ctx context.Context, evs []*Event) ([]*Event, error) {
	return s.authChain(ctx, evs)
}

func fullGroup(id int64, st map[tuple]*Event) *newStateGroup {
	g := &newStateGroup{id: id, entries: make(stateIDs, len(st))}
	for t, ev := range st {
		g.entries[t] = ev.EventID()
	}
	return g
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// reject remembers a remote event as rejected and returns why.
func (s *Service) reject(ctx context.Context, rr *remoteReq, reason string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO rejected_events (event_id, room_id, origin, reason, json, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING`,
		rr.pdu.EventID(), rr.pdu.RoomID().String(), string(rr.origin), reason, string(rr.pdu.JSON()), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store rejected event: %w", err)
	}
	s.log.WithField("event_id", rr.pdu.EventID()).WithField("origin", rr.origin).Info("rejected a remote event: " + reason)
	return &RejectedError{Reason: reason}
}

func (s *Service) anyRejected(ctx context.Context, ids []string) (bool, error) {
	for _, id := range ids {
		var one int
		err := s.db.QueryRowContext(ctx, `SELECT 1 FROM rejected_events WHERE event_id = $1`, id).Scan(&one)
		if err == nil {
			return true, nil
		}
		if !isNoRows(err) {
			return false, fmt.Errorf("rejected events: %w", err)
		}
	}
	return false, nil
}

// IsRejected reports whether an event was rejected.
func (s *Service) IsRejected(ctx context.Context, id string) (bool, error) {
	return s.anyRejected(ctx, []string{id})
}

// Extremities are the room's forward extremities: what get_missing_events
// asks for events after.
func (s *Service) Extremities(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT event_id FROM forward_extremities WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("extremities: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// ServersInRoom lists the servers with a joined member in the room.
func (s *Service) ServersInRoom(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("servers in room: %w", err)
	}
	defer rows.Close()
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for rows.Next() {
		var uid string
		if err := rows.Scan(&uid); err != nil {
			return nil, err
		}
		u, err := spec.NewUserID(uid, true)
		if err != nil {
			continue
		}
		if d := u.Domain(); !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out, rows.Err()
}

// MakeJoin answers another server's make_join: a join event template for
// its user, built on the room's current extremities.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_joinroomiduserid
func (s *Service) MakeJoin(ctx context.Context, origin spec.ServerName, roomID spec.RoomID, userID spec.UserID, remoteVersions []gomatrixserverlib.RoomVersion) (*gomatrixserverlib.HandleMakeJoinResponse, error) {
	rs, err := s.loadRoomState(ctx, roomID.String())
	if err != nil {
		return nil, err
	}
	if rs == nil {
		return nil, mxerr.NotFound("Unknown room")
	}
	localIn := false
	for t, ev := range rs.state {
		if t.Type != spec.MRoomMember {
			continue
		}
		if u, err := spec.NewUserID(t.StateKey, true); err == nil && u.Domain() == s.cfg.ServerName {
			if m, _ := ev.Membership(); m == spec.Join {
				localIn = true
				break
			}
		}
	}
	return gomatrixserverlib.HandleMakeJoin(gomatrixserverlib.HandleMakeJoinInput{
		Context:            ctx,
		UserID:             userID,
		SenderID:           spec.SenderID(userID.String()),
		RoomID:             roomID,
		RoomVersion:        rs.version.Version(),
		RemoteVersions:     remoteVersions,
		RequestOrigin:      origin,
		LocalServerName:    s.cfg.ServerName,
		LocalServerInRoom:  localIn,
		RoomQuerier:        restrictedQuerier{s: s, rs: rs},
		UserIDQuerier:      UserIDForSender,
		BuildEventTemplate: s.memberTemplate(rs),
	})
}

// restrictedQuerier answers gomatrixserverlib's questions about restricted
// joins from a room state.
type restrictedQuerier struct {
	s  *Service
	rs *roomState
}

func (q restrictedQuerier) CurrentStateEvent(_ context.Context, _ spec.RoomID, typ, key string) (gomatrixserverlib.PDU, error) {
	if ev := q.rs.get(typ, key); ev != nil {
		return ev.PDU, nil
	}
	return nil, nil
}

func (q restrictedQuerier) InvitePending(_ context.Context, _ spec.RoomID, sender spec.SenderID) (bool, error) {
	return q.rs.membership(string(sender)) == spec.Invite, nil
}

// RestrictedRoomJoinInfo answers for one room of the join rule's allow
// list (allowed): whether we are in it (only then are its memberships
// current), whether the joining user is joined to it, and which of our
// users are joined to it and to the restricted room, one of whom will
// vouch for the join (join_authorised_via_users_server).
// https://spec.matrix.org/v1.19/client-server-api/#restricted-rooms
func (q restrictedQuerier) RestrictedRoomJoinInfo(ctx context.Context, allowed spec.RoomID, sender spec.SenderID, local spec.ServerName) (*gomatrixserverlib.RestrictedRoomJoinInfo, error) {
	in, err := q.s.serverInRoom(ctx, allowed.String(), local)
	if err != nil || !in {
		return &gomatrixserverlib.RestrictedRoomJoinInfo{}, err
	}
	ars, err := q.s.loadRoomState(ctx, allowed.String())
	if err != nil || ars == nil {
		return &gomatrixserverlib.RestrictedRoomJoinInfo{}, err
	}
	info := &gomatrixserverlib.RestrictedRoomJoinInfo{
		LocalServerInRoom: true,
		UserJoinedToRoom:  ars.membership(string(sender)) == spec.Join,
	}
	for t, ev := range ars.state {
		if t.Type != spec.MRoomMember || !q.s.isLocal(t.StateKey) {
			continue
		}
		if m, _ := ev.Membership(); m == spec.Join && q.rs.membership(t.StateKey) == spec.Join {
			// The restricted room's member event: the authorising user
			// must be joined there.
			info.JoinedUsers = append(info.JoinedUsers, q.rs.get(spec.MRoomMember, t.StateKey).PDU)
		}
	}
	return info, nil
}

// SendJoin accepts another server's signed join (send_join v2) and returns
// the join as stored, with the state before it and the auth chain of both.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv2send_joinroomideventid
func (s *Service) SendJoin(ctx context.Context, origin spec.ServerName, roomID spec.RoomID, eventID string, raw []byte, verifier gomatrixserverlib.JSONVerifier) (join *Event, state, authChain []*Event, err error) {
	ver, err := s.RoomVersion(ctx, roomID.String())
	if err != nil {
		return nil, nil, nil, err
	}
	res, err := gomatrixserverlib.HandleSendJoin(gomatrixserverlib.HandleSendJoinInput{
		Context:                   ctx,
		RoomID:                    roomID,
		EventID:                   eventID,
		JoinEvent:                 raw,
		RoomVersion:               ver,
		RequestOrigin:             origin,
		LocalServerName:           s.cfg.ServerName,
		KeyID:                     s.cfg.KeyID,
		PrivateKey:                s.cfg.PrivateKey,
		Verifier:                  verifier,
		MembershipQuerier:         membershipQuerier{s},
		UserIDQuerier:             UserIDForSender,
		StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
	})
	if err != nil {
		return nil, nil, nil, err
	}
	join, err = s.IngestRemote(ctx, origin, res.JoinEvent, true)
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := s.stateBeforeStateEvent(ctx, join)
	if err != nil {
		return nil, nil, nil, err
	}
	state = SortByStreamTuple(st)
	authChain, err = s.authChain(ctx, append(slices.Clone(state), join))
	return join, state, authChain, err
}

// stateBeforeStateEvent is the state a state event replaced a tuple of.
func (s *Service) stateBeforeStateEvent(ctx context.Context, ev *Event) (map[tuple]*Event, error) {
	ids, err := s.stateOfGroup(ctx, s.db, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	st, err := s.stateEvents(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	if sk := ev.StateKey(); sk != nil {
		t := tuple{ev.Type(), *sk}
		delete(st, t)
		if ev.ReplacesState != "" {
			prev, err := s.event(ctx, ev.ReplacesState)
			if err == nil {
				st[t] = prev
			}
		}
	}
	return st, nil
}

// SortByStreamTuple returns a state map's events in stream order.
func SortByStreamTuple(m map[tuple]*Event) []*Event {
	out := make([]*Event, 0, len(m))
	for _, ev := range m {
		out = append(out, ev)
	}
	slices.SortFunc(out, func(a, b *Event) int { return int(a.StreamPos - b.StreamPos) })
	return out
}

type membershipQuerier struct{ s *Service }

func (q membershipQuerier) CurrentMembership(ctx context.Context, roomID spec.RoomID, sender spec.SenderID) (string, error) {
	m, err := q.s.Membership(ctx, roomID.String(), string(sender))
	if m == "" {
		m = spec.Leave
	}
	return m, err
}

// StoreRemoteJoin stores a room joined over federation (make_join and
// send_join, done by the federation edge): the state and auth chain the
// resident server returned, as outliers, then the join on top of them.
// via is that server: it sends the join to the room's other servers.
func (s *Service) StoreRemoteJoin(ctx context.Context, via spec.ServerName, ver gomatrixserverlib.RoomVersion, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU) (*Event, error) {
	roomID := join.RoomID().String()
	known, err := s.RoomVersion(ctx, roomID)
	newRoom := ""
	if err != nil {
		if me, ok := mxerr.As(err); !ok || me.Code != "M_NOT_FOUND" {
			return nil, err
		}
		newRoom = string(ver)
	} else if known != ver {
		return nil, mxerr.BadJSON("Room %s is version %s here, not %s", roomID, known, ver)
	}
	byID := map[string]gomatrixserverlib.PDU{}
	var order []string
	for _, p := range slices.Concat(authChain, state) {
		if p.EventID() == join.EventID() || byID[p.EventID()] != nil {
			continue
		}
		byID[p.EventID()] = p
		order = append(order, p.EventID())
	}
	have, err := s.events(ctx, s.db, order)
	if err != nil {
		return nil, err
	}
	var pending []*pendingEvent
	events := map[string]*Event{}
	for _, id := range order {
		if ev := have[id]; ev != nil {
			events[id] = ev
			continue
		}
		ev := &Event{PDU: byID[id], RoomID: roomID}
		events[id] = ev
		pending = append(pending, &pendingEvent{ev: ev, outlier: true})
	}
	after := map[tuple]*Event{}
	for _, p := range state {
		if sk := p.StateKey(); sk != nil && p.EventID() != join.EventID() {
			after[tuple{p.Type(), *sk}] = events[p.EventID()]
		}
	}
	je := &Event{PDU: join, RoomID: roomID, Origin: via}
	if prev := after[tuple{spec.MRoomMember, *join.StateKey()}]; prev != nil {
		je.ReplacesState, je.PrevContent, je.PrevSender = prev.EventID(), prev.Content(), string(prev.SenderID())
	}
	after[tuple{spec.MRoomMember, *join.StateKey()}] = je
	g := fullGroup(s.nextGroupID(), after)
	je.StateGroup = g.id
	pending = append(pending, &pendingEvent{ev: je, stateGroup: g.id, newGroup: g, currentState: after})
	if err := s.commit.submit(&commitReq{
		roomID: roomID, newRoom: newRoom, events: pending, extremities: []string{join.EventID()}, stateGroup: g.id,
	}); err != nil {
		return nil, fmt.Errorf("store joined room: %w", err)
	}
	s.resetRoom(roomID)
	return je, nil
}

// resetRoom makes the room's sequencer, if it runs, load the room's state
// again before its next event: something wrote the room behind its back.
func (s *Service) resetRoom(roomID string) {
	s.mu.Lock()
	r := s.rooms[roomID]
	s.mu.Unlock()
	if r == nil {
		return
	}
	req := &buildReq{ctx: context.Background(), reset: true, resp: make(chan buildResult, 1)}
	_, _ = s.enqueue(context.Background(), roomID, req)
}

// SignJSON signs a JSON object as this server (for an invite we receive,
// which the invitee's server must sign).
func (s *Service) SignKey() (spec.ServerName, gomatrixserverlib.KeyID, ed25519.PrivateKey) {
	return s.cfg.ServerName, s.cfg.KeyID, s.cfg.PrivateKey
}

// serverInRoom reports whether a server has a member joined to the room:
// the test for serving it the room's events (servers whose users left or
// never joined get nothing).
func (s *Service) serverInRoom(ctx context.Context, roomID string, server spec.ServerName) (bool, error) {
	servers, err := s.ServersInRoom(ctx, roomID)
	if err != nil {
		return false, err
	}
	return slices.Contains(servers, server), nil
}

// EventForServer returns an event another server asked for, if it may
// see it: a server with a member in the room.
func (s *Service) EventForServer(ctx context.Context, origin spec.ServerName, eventID string) (*Event, error) {
	ev, err := s.event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	ok, err := s.serverInRoom(ctx, ev.RoomID, origin)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("Your server has no member in this room")
	}
	return ev, nil
}

// MissingEvents answers get_missing_events: the events before latest, back
// to (not including) earliest, found by walking prev_events breadth first
// from latest, at most limit of them and none shallower than minDepth.
// They are returned oldest first, as the asking server stores them, and as
// origin may see them: an event from history it may not see is redacted.
// https://spec.matrix.org/v1.19/server-server-api/#post_matrixfederationv1get_missing_eventsroomid
func (s *Service) MissingEvents(ctx context.Context, origin spec.ServerName, roomID string, earliest, latest []string, limit int, minDepth int64) ([]*Event, error) {
	ok, err := s.serverInRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.Forbidden("Your server has no member in this room")
	}
	seen := map[string]bool{}
	for _, id := range earliest {
		seen[id] = true
	}
	for _, id := range latest {
		seen[id] = true
	}
	var frontier []string
	latestEvs, err := s.events(ctx, s.db, latest)
	if err != nil {
		return nil, err
	}
	for _, ev := range latestEvs {
		if ev.RoomID == roomID {
			frontier = append(frontier, ev.PrevEventIDs()...)
		}
	}
	var out []*Event
	for len(frontier) > 0 && len(out) < limit {
		var ids []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		frontier = nil
		found, err := s.events(ctx, s.db, ids)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			ev := found[id]
			if ev == nil || ev.RoomID != roomID || ev.StreamPos < 0 || ev.Depth() < minDepth {
				continue
			}
			out = append(out, ev)
			if len(out) == limit {
				break
			}
			frontier = append(frontier, ev.PrevEventIDs()...)
		}
	}
	// The walk went backwards; the asking server stores from the oldest.
	slices.SortStableFunc(out, func(a, b *Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	return s.filterForServer(ctx, origin, out)
}
