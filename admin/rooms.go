package admin

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// CheckJoin is the room server's join guard: no local user joins a room
// an admin blocked.
func (s *Service) CheckJoin(ctx context.Context, roomID, _ string) error {
	blocked, _, err := s.BlockStatus(ctx, roomID)
	if err != nil {
		return err
	}
	if blocked {
		return mxerr.Forbidden("This room has been blocked on this server")
	}
	return nil
}

// BlockStatus reports whether a room is blocked, and by whom.
func (s *Service) BlockStatus(ctx context.Context, roomID string) (bool, string, error) {
	var by string
	err := s.db.QueryRowContext(ctx, `SELECT user_id FROM admin_blocked_rooms WHERE room_id = $1`, roomID).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("room block status: %w", err)
	}
	return true, by, nil
}

// SetBlocked blocks or unblocks a room, which need not be known here.
func (s *Service) SetBlocked(ctx context.Context, actor, roomID string, block bool) error {
	var err error
	if block {
		_, err = s.db.ExecContext(ctx, `INSERT INTO admin_blocked_rooms (room_id, user_id, blocked_ts) VALUES ($1, $2, $3)
			ON CONFLICT (room_id) DO NOTHING`, roomID, actor, time.Now().UnixMilli())
	} else {
		_, err = s.db.ExecContext(ctx, `DELETE FROM admin_blocked_rooms WHERE room_id = $1`, roomID)
	}
	if err != nil {
		return fmt.Errorf("block room %s: %w", roomID, err)
	}
	s.Audit(actor, "block_room", roomID, logrus.Fields{"block": block})
	return nil
}

// Room describes one room; M_NOT_FOUND if the server holds no state of it.
func (s *Service) Room(ctx context.Context, roomID string) (*roomserver.AdminRoom, error) {
	rooms, err := s.rooms.AdminRooms(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return rooms[0], nil
}

// MakeRoomAdmin gives userID the highest power level in a room, sent by
// the local member who has it, and joins them first if needed (the admin
// who has the power invites them). As Synapse, it needs a local member
// with power to change the power levels.
// https://element-hq.github.io/synapse/latest/admin_api/rooms.html#make-room-admin-api
func (s *Service) MakeRoomAdmin(ctx context.Context, actor, roomIDOrAlias, userID string) error {
	roomID, err := s.rooms.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return err
	}
	if !s.IsLocal(userID) {
		return mxerr.InvalidParam("%s is not a local user", userID)
	}
	pl, plContent, err := s.rooms.AdminPowerLevels(ctx, roomID)
	if err != nil {
		return err
	}
	joined, err := s.rooms.RoomMembers(ctx, roomID, "join")
	if err != nil {
		return err
	}
	// The local member with the highest power: the one to act.
	var granter string
	best := int64(-1 << 62)
	for _, u := range joined {
		if lvl := pl.UserLevel(spec.SenderID(u)); s.IsLocal(u) && lvl > best && lvl >= pl.EventLevel(spec.MRoomPowerLevels, true) {
			granter, best = u, lvl
		}
	}
	if granter == "" {
		return mxerr.Unknown(http.StatusBadRequest, "No local admin user in room with power to update power levels.")
	}
	// A v12 creator's level is not one a users entry can hold: grant
	// the highest ordinary level instead.
	if best >= gomatrixserverlib.CreatorPowerLevel {
		best = 100
		for _, lvl := range pl.Users {
			if lvl > best && lvl < gomatrixserverlib.CreatorPowerLevel {
				best = lvl
			}
		}
	}
	if m, err := s.rooms.Membership(ctx, roomID, userID); err != nil {
		return err
	} else if m != "join" {
		if m != "invite" {
			if err := s.rooms.Invite(ctx, granter, roomID, userID, "", false); err != nil {
				return fmt.Errorf("invite %s: %w", userID, err)
			}
		}
		if _, err := s.rooms.Join(ctx, userID, roomID, nil); err != nil {
			return fmt.Errorf("join %s: %w", userID, err)
		}
	}
	var content map[string]any
	if err := json.Unmarshal(plContent, &content); err != nil {
		return fmt.Errorf("power levels of %s: %w", roomID, err)
	}
	usersMap, _ := content["users"].(map[string]any)
	if usersMap == nil {
		usersMap = map[string]any{}
	}
	usersMap[userID] = best
	content["users"] = usersMap
	raw, _ := json.Marshal(content)
	empty := ""
	if _, err := s.rooms.Send(ctx, roomserver.SendRequest{
		RoomID: roomID, Sender: granter, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: raw,
	}); err != nil {
		return fmt.Errorf("power levels: %w", err)
	}
	s.Audit(actor, "make_room_admin", roomID, logrus.Fields{"user_id": userID, "granted_by": granter})
	return nil
}

// ForceJoin joins a local user to a room: a room they may join as is, or
// one the acting admin is in and invites them to first.
// https://element-hq.github.io/synapse/latest/admin_api/room_membership.html
func (s *Service) ForceJoin(ctx context.Context, actor, roomIDOrAlias, userID string) (string, error) {
	if !s.IsLocal(userID) {
		return "", mxerr.Unknown(http.StatusBadRequest, "This endpoint can only be used with local users")
	}
	if _, err := s.users.Account(ctx, userID); err != nil {
		return "", err
	}
	roomID, err := s.rooms.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	if _, err := s.rooms.Join(ctx, userID, roomID, nil); err != nil {
		me, ok := mxerr.As(err)
		if !ok || me.Code != "M_FORBIDDEN" {
			return "", err
		}
		if m, merr := s.rooms.Membership(ctx, roomID, actor); merr != nil || m != "join" {
			return "", err
		}
		if m, _ := s.rooms.Membership(ctx, roomID, userID); m != "invite" {
			if err := s.rooms.Invite(ctx, actor, roomID, userID, "", false); err != nil {
				return "", err
			}
		}
		if _, err := s.rooms.Join(ctx, userID, roomID, nil); err != nil {
			return "", err
		}
	}
	s.Audit(actor, "join_user", roomID, logrus.Fields{"user_id": userID})
	return roomID, nil
}

// DeleteRequest is DELETE /_synapse/admin/v2/rooms/{roomId}'s body.
type DeleteRequest struct {
	NewRoomUserID string `json:"new_room_user_id"`
	RoomName      string `json:"room_name"`
	Message       string `json:"message"`
	Block         bool   `json:"block"`
	Purge         *bool  `json:"purge"`
	ForcePurge    bool   `json:"force_purge"`
}

// The defaults Synapse's room shutdown uses.
const (
	defaultShutdownRoomName = "Content Violation Notification"
	defaultShutdownMessage  = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)

// Delete statuses, as Synapse names them.
const (
	StatusShuttingDown = "shutting_down"
	StatusPurging      = "purging"
	StatusComplete     = "complete"
	StatusFailed       = "failed"
)

// ShutdownResult is what a room shutdown did.
type ShutdownResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

// DeleteStatus is the state of one room deletion.
type DeleteStatus struct {
	DeleteID     string         `json:"delete_id"`
	RoomID       string         `json:"-"`
	Status       string         `json:"status"`
	Error        string         `json:"error,omitempty"`
	ShutdownRoom ShutdownResult `json:"shutdown_room"`
	// done is closed when the deletion ends.
	done chan struct{}
}

// StartDelete begins deleting a room in the background and returns the
// deletion's ID, for DeleteStatus. One deletion per room at a time.
func (s *Service) StartDelete(ctx context.Context, actor, roomID string, req DeleteRequest) (string, error) {
	if req.NewRoomUserID != "" {
		if !s.IsLocal(req.NewRoomUserID) {
			return "", mxerr.Unknown(http.StatusBadRequest, "User must be our own: %s", req.NewRoomUserID)
		}
		if _, err := s.users.Account(ctx, req.NewRoomUserID); err != nil {
			return "", err
		}
	}
	known := true
	if _, err := s.rooms.RoomVersion(ctx, roomID); err != nil {
		if me, ok := mxerr.As(err); !ok || me.Status != http.StatusNotFound {
			return "", err
		}
		known = false
	}
	if !known && !req.Block {
		return "", mxerr.NotFound("Unknown room")
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	st := &DeleteStatus{DeleteID: hex.EncodeToString(b), RoomID: roomID, Status: StatusShuttingDown, done: make(chan struct{}),
		ShutdownRoom: ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}}
	s.mu.Lock()
	for _, id := range s.byRoom[roomID] {
		if d := s.deletes[id]; d.Status == StatusShuttingDown || d.Status == StatusPurging {
			s.mu.Unlock()
			return "", mxerr.Unknown(http.StatusBadRequest, "History purge already in progress for %s", roomID)
		}
	}
	s.deletes[st.DeleteID] = st
	s.byRoom[roomID] = append(s.byRoom[roomID], st.DeleteID)
	s.mu.Unlock()
	s.Audit(actor, "delete_room", roomID, logrus.Fields{"delete_id": st.DeleteID, "block": req.Block,
		"purge": req.Purge == nil || *req.Purge, "new_room_user_id": req.NewRoomUserID})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// The deletion outlives the request that started it.
		err := s.deleteRoom(context.WithoutCancel(ctx), actor, roomID, known, req, st)
		s.mu.Lock()
		if err != nil {
			st.Status, st.Error = StatusFailed, err.Error()
		} else {
			st.Status = StatusComplete
		}
		s.mu.Unlock()
		close(st.done)
		if err != nil {
			s.log.WithError(err).WithField("room_id", roomID).Error("room deletion failed")
		}
	}()
	return st.DeleteID, nil
}

// DeleteRoom deletes a room and waits for the deletion to end: for
// DELETE /_synapse/admin/v1/rooms/{roomId} and the command line.
func (s *Service) DeleteRoom(ctx context.Context, actor, roomID string, req DeleteRequest) (*DeleteStatus, error) {
	id, err := s.StartDelete(ctx, actor, roomID, req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	done := s.deletes[id].done
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	st, _ := s.DeleteStatusByID(id)
	return st, nil
}

// deleteRoom runs a deletion: block, replacement room, every local member
// out (and into the new room), aliases moved or removed, then the purge.
func (s *Service) deleteRoom(ctx context.Context, actor, roomID string, known bool, req DeleteRequest, st *DeleteStatus) error {
	if req.Block {
		if err := s.SetBlocked(ctx, actor, roomID, true); err != nil {
			return err
		}
	}
	if !known {
		return nil
	}
	var newRoom string
	if req.NewRoomUserID != "" {
		name, msg := req.RoomName, req.Message
		if name == "" {
			name = defaultShutdownRoomName
		}
		if msg == "" {
			msg = defaultShutdownMessage
		}
		id, err := s.rooms.CreateRoom(ctx, req.NewRoomUserID, roomserver.CreateRoomRequest{
			Preset: "public_chat", Name: &name,
			// Members of the new room can read, not speak.
			PowerLevelContentOverride: map[string]any{"users_default": -10},
		})
		if err != nil {
			return fmt.Errorf("create the new room: %w", err)
		}
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": msg})
		if _, err := s.rooms.Send(ctx, roomserver.SendRequest{RoomID: id, Sender: req.NewRoomUserID,
			Type: "m.room.message", Content: content}); err != nil {
			return fmt.Errorf("message in the new room: %w", err)
		}
		newRoom = id
		s.mu.Lock()
		st.ShutdownRoom.NewRoomID = &newRoom
		s.mu.Unlock()
	}
	members, err := s.rooms.RoomMembers(ctx, roomID, "join")
	if err != nil {
		return err
	}
	for _, u := range members {
		if !s.IsLocal(u) {
			continue
		}
		err := s.rooms.Leave(ctx, u, roomID, "")
		if err == nil {
			err = s.rooms.Forget(ctx, u, roomID)
		}
		if err == nil && newRoom != "" && u != req.NewRoomUserID {
			_, err = s.rooms.Join(ctx, u, newRoom, nil)
		}
		s.mu.Lock()
		if err != nil {
			s.log.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "user_id": u}).Warn("removing a user from a deleted room")
			st.ShutdownRoom.FailedToKickUsers = append(st.ShutdownRoom.FailedToKickUsers, u)
		} else {
			st.ShutdownRoom.KickedUsers = append(st.ShutdownRoom.KickedUsers, u)
		}
		s.mu.Unlock()
	}
	aliases, err := s.rooms.AliasesOf(ctx, roomID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	st.ShutdownRoom.LocalAliases = append(st.ShutdownRoom.LocalAliases, aliases...)
	s.mu.Unlock()
	if newRoom != "" {
		if err := s.rooms.MoveAliases(ctx, roomID, newRoom); err != nil {
			return err
		}
	}
	if err := s.rooms.SetPublished(ctx, roomID, false); err != nil {
		return err
	}
	if req.Purge != nil && !*req.Purge {
		return nil
	}
	s.mu.Lock()
	st.Status = StatusPurging
	s.mu.Unlock()
	return s.purgeRoom(ctx, roomID, req.ForcePurge)
}

// purgeRoom deletes everything the server holds of a room, as Synapse's
// purge_room: the room server's events, state and memberships last, after
// every other domain's rows (so that a failure leaves a room that is still
// known, whose deletion can be run again).
// What stays: the block, if any (it outlives the room), the federation
// queues (they hold the shutdown's leave events on their way to the other
// servers), and media, which Synapse does not delete with a room either.
func (s *Service) purgeRoom(ctx context.Context, roomID string, force bool) error {
	if !force {
		// The room server's own check, before anything is deleted.
		if err := s.rooms.CheckPurgeRoom(ctx, roomID); err != nil {
			return err
		}
	}
	for _, p := range s.purgers {
		if err := p.p.PurgeRoom(ctx, roomID); err != nil {
			return fmt.Errorf("purge room %s from %s: %w", roomID, p.name, err)
		}
	}
	return s.rooms.PurgeRoom(ctx, roomID, force)
}

// DeleteStatusByID returns a copy of one deletion's status.
func (s *Service) DeleteStatusByID(id string) (*DeleteStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.deletes[id]
	if !ok {
		return nil, false
	}
	c := *st
	return &c, true
}

// DeleteStatusesOfRoom returns copies of a room's deletions' statuses.
func (s *Service) DeleteStatusesOfRoom(roomID string) []DeleteStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []DeleteStatus{}
	for _, id := range s.byRoom[roomID] {
		out = append(out, *s.deletes[id])
	}
	return out
}
