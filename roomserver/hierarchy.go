package roomserver

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// HierarchyFetcher asks other servers for the part of a space tree we do
// not hold (GET /_matrix/federation/v1/hierarchy). The federation edge
// implements it.
type HierarchyFetcher interface {
	RemoteHierarchy(ctx context.Context, via []spec.ServerName, roomID string, suggestedOnly bool) (*SpaceHierarchy, error)
}

// SetHierarchyFetcher lets /hierarchy walk into rooms on other servers.
func (s *Service) SetHierarchyFetcher(f HierarchyFetcher) { s.hierarchy = f }

// HierarchyRequest is GET /hierarchy's parameters.
type HierarchyRequest struct {
	RoomID, UserID string
	SuggestedOnly  bool
	// MaxDepth is how deep to go below the root; negative means no limit.
	MaxDepth int
	Limit    int
	// From is the next_batch of a previous page.
	From string
}

// HierarchyResponse is a page of a space tree.
type HierarchyResponse struct {
	Rooms     []HierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// maxHierarchyRooms bounds one walk, whatever the tree.
const maxHierarchyRooms = 1000

// SpaceHierarchy walks a space tree breadth first from req.RoomID, in the
// order of each room's m.space.child events, and returns one page of the
// rooms the user may see: those they could join or peek or already know
// (the rule of the room summary, MSC3266). Children the user may not see
// are left out with everything below them. A child this server does not
// hold is asked of the servers its m.space.child event names.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidhierarchy
//
// next_batch is the number of rooms already returned: the walk is
// deterministic for an unchanged tree, so a page re-walks and skips.
func (s *Service) SpaceHierarchy(ctx context.Context, req HierarchyRequest) (*HierarchyResponse, error) {
	offset := 0
	if req.From != "" {
		n, err := strconv.Atoi(req.From)
		if err != nil || n < 0 {
			return nil, mxerr.InvalidParam("Invalid from token")
		}
		offset = n
	}
	type queued struct {
		roomID string
		depth  int
		via    []spec.ServerName
	}
	queue := []queued{{roomID: req.RoomID}}
	seen := map[string]bool{}
	// remote holds the rooms other servers described, by room ID.
	remote := map[string]HierarchyRoom{}
	resp := &HierarchyResponse{Rooms: []HierarchyRoom{}}
	found := 0
	for len(queue) > 0 && found < maxHierarchyRooms {
		q := queue[0]
		queue = queue[1:]
		if seen[q.roomID] {
			continue
		}
		seen[q.roomID] = true
		hr, ok, err := s.hierarchyRoomFor(ctx, q.roomID, req.UserID, req.SuggestedOnly, q.via, remote)
		if err != nil {
			return nil, err
		}
		if !ok {
			if q.depth == 0 {
				return nil, mxerr.Forbidden("You cannot view or peek on this room")
			}
			continue
		}
		if found >= offset {
			if len(resp.Rooms) == req.Limit {
				resp.NextBatch = strconv.Itoa(found)
				break
			}
			resp.Rooms = append(resp.Rooms, hr)
		}
		found++
		if req.MaxDepth >= 0 && q.depth >= req.MaxDepth {
			continue
		}
		for _, c := range hr.ChildrenState {
			queue = append(queue, queued{roomID: c.StateKey, depth: q.depth + 1, via: childVia(c)})
		}
	}
	return resp, nil
}

// hierarchyRoomFor summarises a room for the user, from our copy or from
// the via servers, and says whether the user may see it.
func (s *Service) hierarchyRoomFor(ctx context.Context, roomID, userID string, suggestedOnly bool,
	via []spec.ServerName, remote map[string]HierarchyRoom) (HierarchyRoom, bool, error) {
	infos, err := s.roomInfos(ctx, `r.room_id = $1`, roomID)
	if err != nil {
		return HierarchyRoom{}, false, err
	}
	var hr HierarchyRoom
	if info := infos[roomID]; info != nil {
		if hr, err = s.hierarchyRoom(ctx, info, suggestedOnly); err != nil {
			return hr, false, err
		}
	} else {
		var ok bool
		if hr, ok = remote[roomID]; !ok {
			if s.hierarchy == nil || len(via) == 0 {
				return hr, false, nil
			}
			h, err := s.hierarchy.RemoteHierarchy(ctx, via, roomID, suggestedOnly)
			if err != nil {
				s.log.WithError(err).WithField("room_id", roomID).Info("space hierarchy from other servers failed")
				return hr, false, nil
			}
			if h.Room.RoomID != roomID {
				return hr, false, nil
			}
			hr = h.Room
			// The children it described save asking again.
			for _, c := range h.Children {
				if _, ok := remote[c.RoomID]; !ok && c.RoomID != "" {
					remote[c.RoomID] = c
				}
			}
		}
		if hr.ChildrenState == nil {
			hr.ChildrenState = []ChildState{}
		}
	}
	m, err := s.Membership(ctx, roomID, userID)
	if err != nil {
		return hr, false, err
	}
	ok, err := s.summaryVisible(ctx, &hr.RoomSummary, userID, m)
	hr.Membership = ""
	return hr, ok, err
}

// childVia reads the servers an m.space.child event names.
func childVia(c ChildState) []spec.ServerName {
	var content struct {
		Via []string `json:"via"`
	}
	_ = json.Unmarshal(c.Content, &content)
	out := make([]spec.ServerName, 0, len(content.Via))
	for _, v := range content.Via {
		out = append(out, spec.ServerName(v))
	}
	return out
}
