package admin

import (
	"context"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/roomserver"
)

// RoomListQuery filters, orders and pages GET /_synapse/admin/v1/rooms.
type RoomListQuery struct {
	SearchTerm  string
	OrderBy     string // a key of RoomOrders; "" is name
	Backwards   bool
	From, Limit int
	// PublicRooms and EmptyRooms, when set, keep only rooms that are (or
	// are not) in the directory, and that have (or have no) joined member.
	PublicRooms, EmptyRooms *bool
}

// RoomOrders are the admin room list's orders: each a "less" of two rooms,
// and whether it runs largest first by default (as Synapse's sizes do).
var RoomOrders = map[string]struct {
	less func(a, b *roomserver.AdminRoom) bool
	desc bool
}{
	"name":                 {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.Name, b.Name) }, false},
	"alphabetical":         {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.Name, b.Name) }, false},
	"canonical_alias":      {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.CanonicalAlias, b.CanonicalAlias) }, false},
	"joined_members":       {func(a, b *roomserver.AdminRoom) bool { return a.JoinedMembers < b.JoinedMembers }, true},
	"size":                 {func(a, b *roomserver.AdminRoom) bool { return a.JoinedMembers < b.JoinedMembers }, true},
	"joined_local_members": {func(a, b *roomserver.AdminRoom) bool { return a.JoinedLocalMembers < b.JoinedLocalMembers }, true},
	"version":              {func(a, b *roomserver.AdminRoom) bool { return a.Version < b.Version }, false},
	"creator":              {func(a, b *roomserver.AdminRoom) bool { return a.Creator < b.Creator }, false},
	"encryption":           {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.Encryption, b.Encryption) }, false},
	"federatable":          {func(a, b *roomserver.AdminRoom) bool { return !a.Federatable && b.Federatable }, false},
	"public":               {func(a, b *roomserver.AdminRoom) bool { return !a.Public && b.Public }, false},
	"join_rules":           {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.JoinRules, b.JoinRules) }, false},
	"guest_access":         {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.GuestAccess, b.GuestAccess) }, false},
	"history_visibility":   {func(a, b *roomserver.AdminRoom) bool { return lessStr(a.HistoryVisibility, b.HistoryVisibility) }, false},
	"state_events":         {func(a, b *roomserver.AdminRoom) bool { return a.StateEvents < b.StateEvents }, true},
}

// lessStr orders optional strings, absent ones first.
func lessStr(a, b *string) bool {
	switch {
	case a == nil:
		return b != nil
	case b == nil:
		return false
	}
	return *a < *b
}

// ListRooms returns one page of the rooms that match and how many match.
func (s *Service) ListRooms(ctx context.Context, q RoomListQuery) ([]*roomserver.AdminRoom, int, error) {
	all, err := s.rooms.AdminRooms(ctx, "")
	if err != nil {
		return nil, 0, err
	}
	term := strings.ToLower(q.SearchTerm)
	var rooms []*roomserver.AdminRoom
	for _, r := range all {
		if term != "" && !strings.Contains(strings.ToLower(r.RoomID), term) &&
			(r.Name == nil || !strings.Contains(strings.ToLower(*r.Name), term)) &&
			(r.CanonicalAlias == nil || !strings.Contains(strings.ToLower(*r.CanonicalAlias), term)) {
			continue
		}
		if q.PublicRooms != nil && r.Public != *q.PublicRooms {
			continue
		}
		if q.EmptyRooms != nil && (r.JoinedMembers == 0) != *q.EmptyRooms {
			continue
		}
		rooms = append(rooms, r)
	}
	order, ok := RoomOrders[q.OrderBy]
	if !ok {
		order = RoomOrders["name"]
	}
	desc := order.desc != q.Backwards
	// The room ID breaks ties, so that pages never overlap.
	sort.SliceStable(rooms, func(i, j int) bool {
		a, b := rooms[i], rooms[j]
		if desc {
			a, b = b, a
		}
		if order.less(a, b) {
			return true
		}
		if order.less(b, a) {
			return false
		}
		return rooms[i].RoomID < rooms[j].RoomID
	})
	start, end := min(q.From, len(rooms)), min(q.From+q.Limit, len(rooms))
	return rooms[start:end], len(rooms), nil
}

// RoomDetails is GET /_synapse/admin/v1/rooms/{roomId}'s answer.
type RoomDetails struct {
	*roomserver.AdminRoom
	JoinedLocalDevices int  `json:"joined_local_devices"`
	Forgotten          bool `json:"forgotten"`
}

// RoomDetails describes one room, with the devices of its local members.
func (s *Service) RoomDetails(ctx context.Context, roomID string) (*RoomDetails, error) {
	r, err := s.Room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	d := &RoomDetails{AdminRoom: r}
	members, err := s.rooms.RoomMembers(ctx, roomID, "join")
	if err != nil {
		return nil, err
	}
	for _, u := range members {
		if !s.IsLocal(u) {
			continue
		}
		devs, err := s.users.Devices(ctx, u)
		if err != nil {
			return nil, err
		}
		d.JoinedLocalDevices += len(devs)
	}
	return d, nil
}

// Members lists a known room's joined members.
func (s *Service) Members(ctx context.Context, roomID string) ([]string, error) {
	if _, err := s.Room(ctx, roomID); err != nil {
		return nil, err
	}
	m, err := s.rooms.RoomMembers(ctx, roomID, "join")
	if m == nil {
		m = []string{}
	}
	return m, err
}

// State is a known room's current state.
func (s *Service) State(ctx context.Context, roomID string) ([]*roomserver.Event, error) {
	if _, err := s.Room(ctx, roomID); err != nil {
		return nil, err
	}
	return s.rooms.AdminState(ctx, roomID)
}

// ForwardExtremities lists a known room's forward extremities.
func (s *Service) ForwardExtremities(ctx context.Context, roomID string) ([]roomserver.ExtremityInfo, error) {
	if _, err := s.Room(ctx, roomID); err != nil {
		return nil, err
	}
	return s.rooms.ForwardExtremities(ctx, roomID)
}

// DeleteForwardExtremities deletes all but the most recent of a room's
// forward extremities and returns how many went.
// https://element-hq.github.io/synapse/latest/admin_api/rooms.html#deleting-forward-extremities
func (s *Service) DeleteForwardExtremities(ctx context.Context, actor, roomID string) (int64, error) {
	if _, err := s.Room(ctx, roomID); err != nil {
		return 0, err
	}
	n, err := s.rooms.DeleteForwardExtremities(ctx, roomID)
	if err != nil {
		return 0, err
	}
	s.Audit(actor, "delete_forward_extremities", roomID, logrus.Fields{"deleted": n})
	return n, nil
}
