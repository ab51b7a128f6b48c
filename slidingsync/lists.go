package slidingsync

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/syncapi"
)

// candidate is a room the user's room list holds.
type candidate struct {
	m     roomserver.MembershipChange
	facts roomserver.RoomFacts
	// bump is the room's bump_stamp: its latest bump event's position for
	// a joined room, its membership's for the others.
	bump int64
	// invite is the stripped state of an invite or knock (loaded when
	// first needed).
	invite       []syncapi.StrippedEvent
	inviteLoaded bool
}

// roomList is the user's rooms, sorted by recency, newest first, and what
// the filters read, loaded once per request.
type roomList struct {
	s      *Service
	userID string
	rooms  []*candidate
	byID   map[string]*candidate
	// all is every membership of the user, listed or not.
	all      []roomserver.MembershipChange
	dms      map[string]bool
	ignored  map[string]bool
	tags     map[string]map[string]bool // nil until a filter needs them
	children map[string]map[string]bool // space -> children
}

// kickCache remembers whether membership events (which never change) are
// kicks or bans of a user who had joined, so a user with thousands of old
// rooms does not have their leave events read on every request.
type kickCache struct {
	mu sync.Mutex
	m  map[string]bool
}

const maxKickCache = 100_000

func (k *kickCache) get(id string) (bool, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[id]
	return v, ok
}

func (k *kickCache) put(id string, v bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= maxKickCache {
		k.m = map[string]bool{}
	}
	k.m[id] = v
}

// listRooms builds the user's room list: joined, invited and knocked
// rooms; rooms they were kicked or banned from after joining; rooms they
// left themselves only when the connection sent them before (sentBefore
// answers that).
// https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md#lists
func (s *Service) listRooms(ctx context.Context, userID string, ignored map[string]bool, adPos int64,
	sentBefore func([]string) (map[string]bool, error)) (*roomList, error) {
	mems, err := s.rooms.Memberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	rl := &roomList{s: s, userID: userID, byID: make(map[string]*candidate, len(mems)), ignored: ignored, all: mems}
	var known, selfLeft []string
	var pendingLeft []*candidate
	for _, m := range mems {
		c := &candidate{m: m, bump: m.StreamPos}
		switch m.Membership {
		case spec.Join:
			known = append(known, m.RoomID)
		case spec.Invite, spec.Knock:
			if m.Membership == spec.Invite && len(ignored) > 0 {
				// "Servers must not send room invites from ignored users."
				ev, err := s.rooms.OwnMembershipEvent(ctx, userID, m.EventID)
				if err == nil && ignored[string(ev.SenderID())] {
					continue
				}
			}
		case spec.Leave, spec.Ban:
			kicked, err := s.kickedOrBanned(ctx, userID, m)
			if err != nil {
				return nil, err
			}
			known = append(known, m.RoomID)
			if !kicked {
				if m.Membership == spec.Ban {
					continue // banned without having joined
				}
				selfLeft = append(selfLeft, m.RoomID)
				pendingLeft = append(pendingLeft, c)
				continue
			}
		default:
			continue
		}
		rl.rooms = append(rl.rooms, c)
	}
	if len(selfLeft) > 0 {
		sent, err := sentBefore(selfLeft)
		if err != nil {
			return nil, err
		}
		for _, c := range pendingLeft {
			if sent[c.m.RoomID] {
				rl.rooms = append(rl.rooms, c)
			}
		}
	}
	facts, err := s.rooms.RoomFacts(ctx, known)
	if err != nil {
		return nil, err
	}
	for _, c := range rl.rooms {
		c.facts = facts[c.m.RoomID]
		if c.m.Membership == spec.Join && c.facts.BumpPos > 0 {
			c.bump = c.facts.BumpPos
		}
		rl.byID[c.m.RoomID] = c
	}
	sort.Slice(rl.rooms, func(i, j int) bool {
		a, b := rl.rooms[i], rl.rooms[j]
		if a.bump != b.bump {
			return a.bump > b.bump
		}
		return a.m.RoomID < b.m.RoomID
	})
	if rl.dms, err = s.directRooms(ctx, userID, adPos); err != nil {
		return nil, err
	}
	return rl, nil
}

// kickedOrBanned reports whether a leave or ban of the user came from
// someone else after the user had joined (a kick, or a ban of a member);
// a leave of their own or a rejected invite is not.
func (s *Service) kickedOrBanned(ctx context.Context, userID string, m roomserver.MembershipChange) (bool, error) {
	if v, ok := s.kicks.get(m.EventID); ok {
		return v, nil
	}
	ev, err := s.rooms.OwnMembershipEvent(ctx, userID, m.EventID)
	if err != nil {
		return false, nil // not readable: leave it out of the list
	}
	prev := gjson.GetBytes(ev.PrevContent, "membership").Str
	kicked := string(ev.SenderID()) != userID && prev == spec.Join
	s.kicks.put(m.EventID, kicked)
	return kicked, nil
}

// directRooms is the set of rooms in the user's m.direct account data.
// It is remembered until the account data stream moves on.
func (s *Service) directRooms(ctx context.Context, userID string, adPos int64) (map[string]bool, error) {
	s.dms.mu.Lock()
	if e, ok := s.dms.m[userID]; ok && e.pos == adPos {
		s.dms.mu.Unlock()
		return e.rooms, nil
	}
	s.dms.mu.Unlock()
	out, err := s.loadDirectRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	s.dms.mu.Lock()
	if s.dms.m == nil || len(s.dms.m) > 10_000 {
		s.dms.m = map[string]dmEntry{}
	}
	s.dms.m[userID] = dmEntry{pos: adPos, rooms: out}
	s.dms.mu.Unlock()
	return out, nil
}

// dmCache remembers users' m.direct rooms at an account data position.
type dmCache struct {
	mu sync.Mutex
	m  map[string]dmEntry
}

type dmEntry struct {
	pos   int64
	rooms map[string]bool
}

func (s *Service) loadDirectRooms(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := s.users.AccountData(ctx, userID, "", "m.direct")
	if err != nil || len(raw) == 0 {
		return map[string]bool{}, nil // none set
	}
	var direct map[string][]string
	out := map[string]bool{}
	if json.Unmarshal(raw, &direct) == nil {
		for _, rooms := range direct {
			for _, r := range rooms {
				out[r] = true
			}
		}
	}
	return out, nil
}

// inviteState loads an invite's or knock's stripped state.
func (rl *roomList) inviteState(ctx context.Context, c *candidate) ([]syncapi.StrippedEvent, error) {
	if c.inviteLoaded {
		return c.invite, nil
	}
	st, _, err := rl.s.sync.InviteState(ctx, c.m, rl.userID)
	if err != nil {
		return nil, err
	}
	c.invite, c.inviteLoaded = st, true
	return st, nil
}

// roomType is the room's type and encryption, from its state or, for an
// invite, its stripped state.
func (rl *roomList) typeAndEncryption(ctx context.Context, c *candidate) (string, bool, error) {
	if c.facts.Known {
		return c.facts.Type, c.facts.Encrypted, nil
	}
	st, err := rl.inviteState(ctx, c)
	if err != nil {
		return "", false, err
	}
	typ, enc := "", false
	for _, ev := range st {
		switch {
		case ev.Type == spec.MRoomCreate && ev.StateKey == "":
			typ = gjson.GetBytes(ev.Content, "type").Str
		case ev.Type == "m.room.encryption" && ev.StateKey == "":
			enc = true
		}
	}
	return typ, enc, nil
}

// filter returns the rooms of the list that pass its filters, in order.
func (rl *roomList) filter(ctx context.Context, f *Filters) ([]*candidate, error) {
	if f == nil {
		return rl.rooms, nil
	}
	if len(f.Tags) > 0 || len(f.NotTags) > 0 {
		if err := rl.loadTags(ctx); err != nil {
			return nil, err
		}
	}
	var spaceChildren map[string]bool
	if f.Spaces != nil {
		var err error
		if spaceChildren, err = rl.spaceChildren(ctx, f.Spaces); err != nil {
			return nil, err
		}
	}
	out := make([]*candidate, 0, len(rl.rooms))
	for _, c := range rl.rooms {
		id := c.m.RoomID
		if f.IsDM != nil && rl.dms[id] != *f.IsDM {
			continue
		}
		if f.IsInvite != nil && (c.m.Membership == spec.Invite) != *f.IsInvite {
			continue
		}
		if f.IsEncrypted != nil || f.RoomTypes != nil || f.NotRoomTypes != nil {
			typ, enc, err := rl.typeAndEncryption(ctx, c)
			if err != nil {
				return nil, err
			}
			if f.IsEncrypted != nil && enc != *f.IsEncrypted {
				continue
			}
			if f.RoomTypes != nil && !typeListed(f.RoomTypes, typ) {
				continue
			}
			if f.NotRoomTypes != nil && typeListed(f.NotRoomTypes, typ) {
				continue
			}
		}
		if spaceChildren != nil && !spaceChildren[id] {
			continue
		}
		if len(f.Tags) > 0 || len(f.NotTags) > 0 {
			tags := rl.tags[id]
			if slices.ContainsFunc(f.NotTags, func(t string) bool { return tags[t] }) {
				continue
			}
			if len(f.Tags) > 0 && !slices.ContainsFunc(f.Tags, func(t string) bool { return tags[t] }) {
				continue
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// typeListed: null in the filter stands for rooms without a type.
func typeListed(list []*string, typ string) bool {
	for _, t := range list {
		if (t == nil && typ == "") || (t != nil && *t == typ) {
			return true
		}
	}
	return false
}

func (rl *roomList) loadTags(ctx context.Context) error {
	if rl.tags != nil {
		return nil
	}
	rl.tags = map[string]map[string]bool{}
	entries, err := rl.s.users.AccountDataSince(ctx, rl.userID, 0)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.RoomID == "" || e.Type != "m.tag" {
			continue
		}
		var content struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if json.Unmarshal(e.Content, &content) != nil {
			continue
		}
		set := map[string]bool{}
		for t := range content.Tags {
			set[t] = true
		}
		rl.tags[e.RoomID] = set
	}
	return nil
}

// spaceChildren is the set of rooms that are m.space.child (with a via)
// of the given spaces the user is joined to; subspaces are not followed.
func (rl *roomList) spaceChildren(ctx context.Context, spaces []string) (map[string]bool, error) {
	if rl.children == nil {
		rl.children = map[string]map[string]bool{}
	}
	out := map[string]bool{}
	for _, space := range spaces {
		kids, ok := rl.children[space]
		if !ok {
			kids = map[string]bool{}
			if c := rl.byID[space]; c != nil && c.m.Membership == spec.Join {
				st, err := rl.s.rooms.StateAt(ctx, space, rl.s.rooms.CurrentPos())
				if err != nil {
					return nil, err
				}
				for k, ev := range st {
					if k.Type == "m.space.child" && gjson.GetBytes(ev.Content(), "via").IsArray() &&
						len(gjson.GetBytes(ev.Content(), "via").Array()) > 0 {
						kids[k.StateKey] = true
					}
				}
			}
			rl.children[space] = kids
		}
		for id := range kids {
			out[id] = true
		}
	}
	return out, nil
}
