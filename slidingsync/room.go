package slidingsync

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/syncapi"
)

// roomReq is one room a response may carry: why it is there and what the
// connection sent of it before.
type roomReq struct {
	c     *candidate
	rules roomRules
	lists []string
	prev  *roomState // nil: never sent on this connection
}

// roomCtx is what every room of a response shares.
type roomCtx struct {
	userID, deviceID string
	now              int64 // the response's events position
	since            int64 // the request's events position (0 on a first request)
	ignored          map[string]bool
	dms              map[string]bool
	// receiptsMoved: receipts (which change unread counts) came since the
	// request's position.
	receiptsMoved bool
	rl            *roomList
}

// hero is a member a client may name a nameless room after.
type hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// room builds a room's result and what the connection will then have sent
// of the room. The result is nil when there is nothing to send (the
// connection has it all); the record may still change (a new config).
func (s *Service) room(ctx context.Context, rc *roomCtx, rr *roomReq) (map[string]any, *roomState, error) {
	switch rr.c.m.Membership {
	case spec.Join:
		return s.joinedOrLeft(ctx, rc, rr, rc.now)
	case spec.Invite, spec.Knock:
		return s.invitedRoom(ctx, rc, rr)
	default: // leave, ban: the room up to the user's leaving
		return s.joinedOrLeft(ctx, rc, rr, rr.c.m.StreamPos)
	}
}

// invitedRoom is an invite or a knock: the stripped state, once.
func (s *Service) invitedRoom(ctx context.Context, rc *roomCtx, rr *roomReq) (map[string]any, *roomState, error) {
	m := rr.c.m
	if p := rr.prev; p != nil && p.Membership == m.Membership && p.MemberPos == m.StreamPos {
		return nil, nil, nil
	}
	st, err := rc.rl.inviteState(ctx, rr.c)
	if err != nil {
		return nil, nil, err
	}
	if st == nil {
		st = []syncapi.StrippedEvent{}
	}
	out := map[string]any{
		"initial":        true,
		"membership":     m.Membership,
		"invite_state":   st,
		"stripped_state": st,
		"bump_stamp":     rr.c.bump,
		"timeline":       []any{},
		"required_state": []any{},
	}
	if len(rr.lists) > 0 {
		out["lists"] = rr.lists
	}
	next := &roomState{Pos: m.StreamPos, Membership: m.Membership, MemberPos: m.StreamPos, Rules: rr.rules, Bump: rr.c.bump}
	for _, ev := range st {
		if ev.StateKey != "" {
			continue
		}
		switch ev.Type {
		case "m.room.name":
			if n := gjson.GetBytes(ev.Content, "name"); n.Type == gjson.String && n.Str != "" {
				out["name"] = n.Str
			}
		case "m.room.avatar":
			if u := gjson.GetBytes(ev.Content, "url"); u.Type == gjson.String && u.Str != "" {
				out["avatar"] = u.Str
			}
		}
	}
	if rc.dms[m.RoomID] {
		out["is_dm"] = true
		next.IsDM = true
	}
	return out, next, nil
}

// joinedOrLeft is a room the user is in (upto: now) or has left (upto:
// their leave): its timeline, state and fields, all of it the first time,
// then what changed.
func (s *Service) joinedOrLeft(ctx context.Context, rc *roomCtx, rr *roomReq, upto int64) (map[string]any, *roomState, error) {
	m, prev, rules := rr.c.m, rr.prev, rr.rules
	roomID := m.RoomID
	joined := m.Membership == spec.Join
	// A room becomes new to the client when the connection never sent it,
	// or sent only an invite's stripped state.
	fresh := prev == nil || prev.Membership == spec.Invite || prev.Membership == spec.Knock
	expanded := !fresh && rules.TimelineLimit > prev.Rules.TimelineLimit
	stateExpanded := !fresh && stateKeyOfRules(rules) != stateKeyOfRules(prev.Rules)
	membershipChanged := fresh || prev.Membership != m.Membership || prev.MemberPos != m.StreamPos

	// The timeline: the latest events the first time (or when the client
	// asks for more than it had), then those since.
	from := int64(0)
	if !fresh && !expanded {
		from = min(prev.Pos, upto)
	}
	tl, limited, err := s.sync.RoomTimeline(ctx, roomID, rc.userID, rc.ignored, from, upto, rules.TimelineLimit)
	if err != nil {
		return nil, nil, err
	}
	hasEvents := len(tl) > 0 || limited
	if fresh && (len(tl) == 0 || tl[0].Type() != spec.MRoomCreate) {
		limited = true // history goes on before these: the client pages back for it
	}
	expandedTimeline := false
	if expanded {
		for _, ev := range tl {
			if ev.StreamPos <= prev.Pos {
				expandedTimeline = true
				break
			}
		}
		// Nothing new and nothing older than the client had: no news.
		hasEvents = expandedTimeline || hasNewer(tl, prev.Pos)
		// The timeline is the room's latest events again, not a sequel
		// to what the client had: limited tells it so (matrix-js-sdk then
		// files the older events as scrollback rather than appending them
		// after the newest).
		if expandedTimeline {
			limited = true
		}
	}
	if !fresh && !expanded && !limited && len(tl) > 0 {
		gap, err := s.rooms.TimelineHasGap(ctx, tl)
		if err != nil {
			return nil, nil, err
		}
		limited = gap
	}

	// The state, when something may have changed it: a timeline with
	// every event since the room was last sent and no state event in it
	// leaves the name, avatar, heroes and counts as they were, and the
	// lazy members too, unless it has senders the client was not sent.
	needState := fresh || stateExpanded || membershipChanged || limited || anyState(tl) || len(redacted(tl)) > 0
	if !needState && rules.lazy() && len(tl) > 0 {
		have := map[string]bool{}
		for _, l := range prev.Lazy {
			u, _, _ := strings.Cut(l, " ")
			have[u] = true
		}
		for _, ev := range tl {
			if !have[string(ev.SenderID())] {
				needState = true
				break
			}
		}
	}
	var cur map[roomserver.StateKey]*roomserver.Event
	if needState {
		if cur, err = s.rooms.StateAt(ctx, roomID, upto); err != nil {
			return nil, nil, err
		}
	}
	next := &roomState{Pos: upto, Membership: m.Membership, MemberPos: m.StreamPos, Rules: rules, Bump: rr.c.bump, IsDM: rc.dms[roomID]}
	if prev != nil && !fresh {
		next.Name, next.Avatar, next.Heroes = prev.Name, prev.Avatar, prev.Heroes
		next.Joined, next.Invited = prev.Joined, prev.Invited
	}
	var heroes []hero
	if cur != nil {
		next.Name = stateString(cur, "m.room.name", "name")
		next.Avatar = stateString(cur, "m.room.avatar", "url")
		ids, j, i := syncapi.Summary(cur, rc.userID)
		next.Joined, next.Invited = j, i
		next.Heroes = ""
		if next.Name == nil {
			heroes = make([]hero, 0, len(ids))
			for _, id := range ids {
				h := hero{UserID: id}
				if ev := cur[roomserver.StateKey{Type: spec.MRoomMember, StateKey: id}]; ev != nil {
					h.DisplayName = gjson.GetBytes(ev.Content(), "displayname").Str
					h.AvatarURL = gjson.GetBytes(ev.Content(), "avatar_url").Str
				}
				heroes = append(heroes, h)
			}
			b, _ := json.Marshal(heroes)
			next.Heroes = string(b)
		}
	}
	// Unread counts move with the room's events and the user's receipts
	// only: read them when one of those did.
	if prev != nil && !fresh {
		next.Notif, next.Highlight = prev.Notif, prev.Highlight
	}
	if joined && (fresh || hasEvents || membershipChanged || rc.receiptsMoved) {
		if next.Notif, next.Highlight, err = s.sync.UnreadCounts(ctx, rc.userID, roomID); err != nil {
			return nil, nil, err
		}
	}

	// The required state: all of what the config asks for the first
	// time; then what changed since the room was last sent, and what a
	// config asking for more now matches.
	var state []*roomserver.Event
	var stubs []roomserver.StateKey
	if cur != nil {
		state, stubs, err = s.requiredState(ctx, rc, rr, cur, fresh, stateExpanded, limited, tl)
		if err != nil {
			return nil, nil, err
		}
	}
	// Lazy members: those the timeline needs that the connection has not
	// sent (every one again after a gap, which tells the client to drop
	// its cached members).
	next.Lazy = nil
	if rules.lazy() && cur != nil {
		sent := map[string]bool{}
		if !fresh && !limited {
			for _, l := range prev.Lazy {
				sent[l] = true
			}
			next.Lazy = append(next.Lazy, prev.Lazy...)
		}
		inState := map[string]bool{}
		for _, ev := range state {
			inState[ev.EventID()] = true
		}
		var needed []string
		for _, ev := range tl {
			needed = append(needed, string(ev.SenderID()))
			if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
				needed = append(needed, *ev.StateKey())
			}
		}
		for _, u := range needed {
			ev := cur[roomserver.StateKey{Type: spec.MRoomMember, StateKey: u}]
			if ev == nil || inState[ev.EventID()] {
				continue
			}
			key := u + " " + ev.EventID()
			if sent[key] {
				continue
			}
			sent[key] = true
			inState[ev.EventID()] = true
			state = append(state, ev)
			next.Lazy = append(next.Lazy, key)
		}
		if len(next.Lazy) > maxLazyRemembered {
			next.Lazy = next.Lazy[len(next.Lazy)-maxLazyRemembered:]
		}
	} else if prev != nil && !fresh && !limited {
		next.Lazy = prev.Lazy
	}

	changed := func(a, b *string) bool {
		if a == nil || b == nil {
			return a != b
		}
		return *a != *b
	}
	fieldsChanged := !fresh && (changed(prev.Name, next.Name) || changed(prev.Avatar, next.Avatar) ||
		prev.Heroes != next.Heroes || prev.IsDM != next.IsDM || prev.Joined != next.Joined ||
		prev.Invited != next.Invited || prev.Notif != next.Notif || prev.Highlight != next.Highlight ||
		prev.Bump != next.Bump)
	if !fresh && !hasEvents && !membershipChanged && !fieldsChanged && len(state) == 0 && len(stubs) == 0 {
		if stateExpanded {
			// A config that asks for less (or for what the room does not
			// have): nothing to send, but remember it, so the next
			// request does not compare the state again.
			kept := *prev
			kept.Rules = rules
			return nil, &kept, nil
		}
		return nil, nil, nil
	}
	if !hasEvents && !fresh {
		next.Pos = max(next.Pos, prev.Pos)
	}

	out := map[string]any{}
	if fresh {
		out["initial"] = true
	}
	if len(rr.lists) > 0 {
		out["lists"] = rr.lists
	}
	if membershipChanged {
		out["membership"] = m.Membership
	}
	if fresh || changed(prev.Name, next.Name) {
		if next.Name != nil {
			out["name"] = *next.Name
		} else if !fresh {
			out["name"] = nil
		}
	}
	if fresh || changed(prev.Avatar, next.Avatar) {
		if next.Avatar != nil {
			out["avatar"] = *next.Avatar
		} else if !fresh {
			out["avatar"] = nil
		}
	}
	if next.Name == nil && heroes != nil && (fresh || prev.Heroes != next.Heroes) {
		out["heroes"] = heroes
	}
	if (fresh && next.IsDM) || (!fresh && prev.IsDM != next.IsDM) {
		out["is_dm"] = next.IsDM
	}
	if fresh || prev.Bump != next.Bump {
		out["bump_stamp"] = next.Bump
	}
	viewer := roomserver.Viewer{UserID: rc.userID, DeviceID: rc.deviceID}
	if fresh || len(state) > 0 || len(stubs) > 0 {
		rs := make([]any, 0, len(state)+len(stubs))
		for _, ev := range state {
			rs = append(rs, ev.ToClient(viewer, s.rooms.Redaction(ctx, ev)))
		}
		for _, k := range stubs {
			rs = append(rs, map[string]string{"type": k.Type, "state_key": k.StateKey})
		}
		out["required_state"] = rs
	}
	if fresh || hasEvents {
		events, err := s.rooms.ClientEvents(ctx, viewer, tl)
		if err != nil {
			return nil, nil, err
		}
		if events == nil {
			events = []roomserver.ClientEvent{}
		}
		out["timeline"] = events
		if len(tl) > 0 {
			first := tl[0]
			out["prev_batch"] = roomserver.Token{Depth: first.Depth(), Stream: first.StreamPos - 1}.String()
		} else {
			end, err := s.rooms.Place(ctx, roomID, roomserver.Token{Stream: upto, Live: true})
			if err != nil {
				return nil, nil, err
			}
			out["prev_batch"] = end.String()
		}
		if limited {
			out["limited"] = true
		}
		live := 0
		if rc.since > 0 {
			for _, ev := range tl {
				if ev.StreamPos > rc.since {
					live++
				}
			}
		}
		out["num_live"] = live
		if expandedTimeline {
			out["expanded_timeline"] = true
		}
	}
	if joined || fresh {
		out["joined_count"] = next.Joined
		out["invited_count"] = next.Invited
	}
	if joined {
		out["notification_count"] = next.Notif
		out["highlight_count"] = next.Highlight
	}
	return out, next, nil
}

func hasNewer(tl []*roomserver.Event, pos int64) bool {
	for _, ev := range tl {
		if ev.StreamPos > pos {
			return true
		}
	}
	return false
}

// requiredState is the state a room result carries, and stubs for state
// that went away: with rules matching (type, state key), everything the
// first time; then the events that differ from the state the room was
// last sent at, or that the rules match now and did not then.
func (s *Service) requiredState(ctx context.Context, rc *roomCtx, rr *roomReq, cur map[roomserver.StateKey]*roomserver.Event,
	fresh, stateExpanded, limited bool, tl []*roomserver.Event) ([]*roomserver.Event, []roomserver.StateKey, error) {
	rules, prev := &rr.rules, rr.prev
	if len(rules.States) == 0 {
		return nil, nil, nil
	}
	wanted := func(k roomserver.StateKey, r *roomRules) bool { return r.wants(k.Type, k.StateKey, rc.userID) }
	var out []*roomserver.Event
	if fresh {
		for k, ev := range cur {
			if wanted(k, rules) {
				out = append(out, ev)
			}
		}
		sortByStream(out)
		return out, nil, nil
	}
	// Unless the config changed, the timeline being complete and free of
	// state events means the state did not change.
	reds := redacted(tl)
	if !stateExpanded && !limited && !anyState(tl) && len(reds) == 0 {
		return nil, nil, nil
	}
	old, err := s.rooms.StateAt(ctx, rr.c.m.RoomID, prev.Pos)
	if err != nil {
		return nil, nil, err
	}
	for k, ev := range cur {
		if !wanted(k, rules) {
			continue
		}
		if o, ok := old[k]; ok && o.EventID() == ev.EventID() && wanted(k, &prev.Rules) && !reds[ev.EventID()] {
			continue
		}
		out = append(out, ev)
	}
	var stubs []roomserver.StateKey
	for k := range old {
		if _, ok := cur[k]; !ok && wanted(k, rules) && wanted(k, &prev.Rules) {
			stubs = append(stubs, k)
		}
	}
	sortByStream(out)
	sort.Slice(stubs, func(i, j int) bool {
		if stubs[i].Type != stubs[j].Type {
			return stubs[i].Type < stubs[j].Type
		}
		return stubs[i].StateKey < stubs[j].StateKey
	})
	return out, stubs, nil
}

// redacted is the set of events the redactions among evs redact: a
// redacted state event is a change of state (a name redacted is a name
// gone) though its ID stays.
func redacted(evs []*roomserver.Event) map[string]bool {
	var out map[string]bool
	for _, ev := range evs {
		if ev.Type() != spec.MRoomRedaction {
			continue
		}
		if id := ev.RedactsID(); id != "" {
			if out == nil {
				out = map[string]bool{}
			}
			out[id] = true
		}
	}
	return out
}

func anyState(evs []*roomserver.Event) bool {
	for _, ev := range evs {
		if ev.StateKey() != nil {
			return true
		}
	}
	return false
}

func sortByStream(evs []*roomserver.Event) {
	sort.Slice(evs, func(i, j int) bool { return evs[i].StreamPos < evs[j].StreamPos })
}

// stateString is a string field of a state event with an empty state key
// (nil when the event or the field is missing or empty).
func stateString(st map[roomserver.StateKey]*roomserver.Event, typ, field string) *string {
	ev := st[roomserver.StateKey{Type: typ}]
	if ev == nil {
		return nil
	}
	v := gjson.GetBytes(ev.Content(), field)
	if v.Type != gjson.String || v.Str == "" {
		return nil
	}
	return &v.Str
}

func stateKeyOfRules(r roomRules) string {
	b, _ := json.Marshal(r.States)
	return string(b)
}
