package roomserver

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// RoomSummary is GET /room_summary's answer: the directory entry of a room
// with a little more a client needs to preview it.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1room_summaryroomidoralias
type RoomSummary struct {
	PublicRoom
	RoomVersion    string   `json:"room_version"`
	Encryption     string   `json:"encryption,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	// Membership is the requester's membership ("leave" if none, as in
	// Synapse); absent for an unauthenticated request.
	Membership string `json:"membership,omitempty"`
}

// RoomSummary summarises a room for userID ("" for a request without an
// access token).
//
// A user may see the summary of a room they could join or already know
// (MSC3266, which points at the rules of /hierarchy): its join rule is
// public, knock or knock_restricted, or its history is world readable, or
// the user is joined, invited or knocking, or the room is restricted and
// the user is in one of the rooms its join rule allows. Without an access
// token only the first two count. Anyone else gets 404 M_NOT_FOUND, the
// answer for an unknown room, so that a private room's existence does not
// leak.
func (s *Service) RoomSummary(ctx context.Context, roomIDOrAlias, userID string) (*RoomSummary, error) {
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return nil, err
	}
	infos, err := s.roomInfos(ctx, `r.room_id = $1`, roomID)
	if err != nil {
		return nil, err
	}
	info := infos[roomID]
	if info == nil {
		return nil, mxerr.NotFound("Room not found")
	}
	sum := &RoomSummary{
		PublicRoom:  info.publicRoom(),
		RoomVersion: info.version,
		Encryption:  info.contentString(spec.MRoomEncryption, "algorithm"),
	}
	switch sum.JoinRule {
	case "restricted", "knock_restricted":
		sum.AllowedRoomIDs = allowedRoomIDs(info.state[spec.MRoomJoinRules])
	}
	var membership string
	if userID != "" {
		if membership, err = s.Membership(ctx, roomID, userID); err != nil {
			return nil, err
		}
	}
	ok, err := s.summaryVisible(ctx, sum, userID, membership)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.NotFound("Room not found or not visible to you")
	}
	if userID != "" {
		sum.Membership = membership
		if sum.Membership == "" {
			sum.Membership = "leave"
		}
	}
	return sum, nil
}

func (s *Service) summaryVisible(ctx context.Context, sum *RoomSummary, userID, membership string) (bool, error) {
	switch sum.JoinRule {
	case spec.Public, "knock", "knock_restricted":
		return true, nil
	}
	if sum.WorldReadable {
		return true, nil
	}
	if userID == "" {
		return false, nil
	}
	switch membership {
	case "join", "invite", "knock":
		return true, nil
	}
	if sum.JoinRule == "restricted" {
		for _, id := range sum.AllowedRoomIDs {
			m, err := s.Membership(ctx, id, userID)
			if err != nil {
				return false, err
			}
			if m == "join" {
				return true, nil
			}
		}
	}
	return false, nil
}

// allowedRoomIDs lists the rooms whose members the join rule of a
// restricted room lets in.
// https://spec.matrix.org/v1.19/client-server-api/#restricted-rooms
func allowedRoomIDs(joinRules *Event) []string {
	if joinRules == nil {
		return nil
	}
	var c struct {
		Allow []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(joinRules.Content(), &c) != nil {
		return nil
	}
	var ids []string
	for _, a := range c.Allow {
		if a.Type == spec.MRoomMembership && a.RoomID != "" {
			ids = append(ids, a.RoomID)
		}
	}
	return ids
}
