package syncapi

import (
	"context"
	"slices"

	"github.com/tessera-hs/tessera/roomserver"
)

// The device lists stream: which users' devices (or cross-signing keys)
// changed since the token, and which users the client no longer shares a
// room with, so an end-to-end-encrypting client knows whose keys to fetch
// again and whose to stop tracking. Also each response's one-time key
// counts and unused fallback key types of the syncing device.
// https://spec.matrix.org/v1.19/client-server-api/#tracking-the-device-list-for-a-user

// KeyStore is what sync needs of the end-to-end encryption key store;
// *keys.Service satisfies it.
type KeyStore interface {
	// StreamPos is the device list stream's latest committed position.
	StreamPos() int64
	// ChangedUsers lists the users whose device list changed at a
	// position in (from, to].
	ChangedUsers(ctx context.Context, from, to int64) ([]string, error)
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error)
	// CatchUp brings StreamPos up to what the other processes of a
	// deployment committed (docs/scaling.md); a no-op for one process.
	CatchUp(ctx context.Context) error
}

// SetKeyStore installs the key store; call it once, before serving
// requests. Without one, device_lists stays empty.
func (s *Service) SetKeyStore(k KeyStore) { s.keys = k }

// deviceListStream is the device_lists stream's place in the token.
type deviceListStream struct{ s *Service }

func (d deviceListStream) catchUp(ctx context.Context) error {
	if d.s.keys == nil {
		return nil
	}
	return d.s.keys.CatchUp(ctx)
}

func (d deviceListStream) current(context.Context) (int64, error) {
	if d.s.keys == nil {
		return 0, nil
	}
	return d.s.keys.StreamPos(), nil
}

// fill adds device_lists to an incremental sync (an initial sync has none:
// the client fetches every key it needs), and the device's key counts to
// every response.
func (d deviceListStream) fill(ctx context.Context, sc *syncContext, since, now int64) (bool, error) {
	k := d.s.keys
	if k == nil {
		return false, nil
	}
	var err error
	if sc.resp.OTKCounts, err = k.OneTimeKeyCounts(ctx, sc.req.UserID, sc.req.DeviceID); err != nil {
		return false, err
	}
	if sc.resp.FallbackKeyTypes, err = k.UnusedFallbackKeyTypes(ctx, sc.req.UserID, sc.req.DeviceID); err != nil {
		return false, err
	}
	if sc.resp.OTKCounts == nil {
		sc.resp.OTKCounts = map[string]int{}
	}
	if sc.resp.FallbackKeyTypes == nil {
		sc.resp.FallbackKeyTypes = []string{}
	}
	if sc.initial {
		return false, nil
	}
	changed, left, err := d.s.deviceListChanges(ctx, sc.req.UserID, sc.memberships, sc.since, sc.now)
	if err != nil {
		return false, err
	}
	sc.resp.DeviceLists = DeviceLists{Changed: changed, Left: left}
	return len(changed)+len(left) > 0, nil
}

// deviceListChanges computes device_lists between two tokens, given the
// user's memberships:
//   - changed: users sharing a room with the user now (the user included)
//     whose device list changed, and users who came to share a room with
//     them (they joined one of the user's rooms, or the user joined one of
//     theirs);
//   - left: users who shared a room with the user and share none now.
func (s *Service) deviceListChanges(ctx context.Context, userID string, mems []roomserver.MembershipChange, since, now Token) (changed, left []string, err error) {
	k := s.keys
	if k == nil {
		return []string{}, []string{}, nil
	}
	ks, kn := since.pos(deviceListsIndex), now.pos(deviceListsIndex)
	var keyChanged []string
	if ks < kn {
		if keyChanged, err = k.ChangedUsers(ctx, ks, kn); err != nil {
			return nil, nil, err
		}
	}
	es, en := since.pos(0), now.pos(0)
	var rooms, joinedRooms, leftRooms []string
	rejoinable := map[string]bool{} // joined now, and joined at since
	for _, m := range mems {
		if m.StreamPos > en {
			continue
		}
		switch m.Membership {
		case "join":
			rooms = append(rooms, m.RoomID)
			rejoinable[m.RoomID] = m.StreamPos > es
			if m.StreamPos > es && s.membershipAt(ctx, userID, m, es) != "join" {
				joinedRooms = append(joinedRooms, m.RoomID)
			}
		case "leave", "ban":
			if m.StreamPos > es && s.membershipAt(ctx, userID, m, es) == "join" {
				rooms = append(rooms, m.RoomID)
				leftRooms = append(leftRooms, m.RoomID)
			}
		}
	}
	var memberChanges []roomserver.MemberChange
	if es < en {
		if memberChanges, err = s.rooms.MemberChanges(ctx, rooms, es, en); err != nil {
			return nil, nil, err
		}
	}
	// A room the user left and joined again since the token: while apart,
	// its members' device lists may have changed unseen (other servers
	// send no updates to a server that shares no room with them), so it
	// counts as newly joined.
	for _, c := range memberChanges {
		if c.UserID == userID && (c.Membership == "leave" || c.Membership == "ban") &&
			rejoinable[c.RoomID] && !slices.Contains(joinedRooms, c.RoomID) {
			joinedRooms = append(joinedRooms, c.RoomID)
		}
	}
	changed, left = []string{}, []string{}
	if len(keyChanged)+len(memberChanges)+len(joinedRooms)+len(leftRooms) == 0 {
		return changed, left, nil
	}
	shared, err := s.rooms.SharedUsers(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	changedSet, leftSet := map[string]bool{}, map[string]bool{}
	for _, u := range keyChanged {
		if shared[u] {
			changedSet[u] = true
		}
	}
	for _, c := range memberChanges {
		if c.UserID == userID {
			continue
		}
		switch c.Membership {
		case "join":
			changedSet[c.UserID] = true
		case "leave", "ban":
			leftSet[c.UserID] = true
		}
	}
	for _, r := range joinedRooms {
		members, err := s.rooms.JoinedUsers(ctx, r)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range members {
			if u != userID {
				changedSet[u] = true
			}
		}
	}
	for _, r := range leftRooms {
		members, err := s.rooms.JoinedUsers(ctx, r)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range members {
			leftSet[u] = true
		}
	}
	for u := range changedSet {
		if shared[u] {
			changed = append(changed, u)
		}
	}
	for u := range leftSet {
		if !shared[u] {
			left = append(left, u)
		}
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, nil
}

// KeyChanges answers GET /keys/changes: the users whose device lists
// changed between two sync tokens, and those the user stopped sharing a
// room with, exactly as device_lists of an incremental sync from `from`
// would have said.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3keyschanges
func (s *Service) KeyChanges(ctx context.Context, userID string, from, to Token) (changed, left []string, err error) {
	mems, err := s.rooms.Memberships(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	return s.deviceListChanges(ctx, userID, mems, from, to)
}
