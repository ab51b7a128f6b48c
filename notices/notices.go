// Package notices sends Synapse-style server notices: messages from the
// server's admins to one local user, in a room the user shares with a
// system user. Each user has one notices room, created on demand by the
// system user, tagged m.server_notice in the user's account data, with
// power levels that let the user read but not send. A user who left is
// invited again by the next notice.
//
// https://element-hq.github.io/synapse/latest/server_notices.html
// https://element-hq.github.io/synapse/latest/admin_api/server_notices.html
package notices

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// RoomTag is the tag a notices room carries in its user's account data.
const RoomTag = "m.server_notice"

// Rooms is what the service needs of the room server.
type Rooms interface {
	CreateRoom(ctx context.Context, creator string, req roomserver.CreateRoomRequest) (string, error)
	Membership(ctx context.Context, roomID, userID string) (string, error)
	Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error
	Join(ctx context.Context, userID, roomIDOrAlias string, content map[string]any) (string, error)
	Send(ctx context.Context, req roomserver.SendRequest) (*roomserver.Event, error)
}

// Users is what the service needs of the accounts.
type Users interface {
	Account(ctx context.Context, userID string) (*users.Account, error)
	CreateAccount(ctx context.Context, na users.NewAccount) (*users.Account, error)
	Profile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error
	SetTag(ctx context.Context, userID, roomID, tag string, raw []byte) error
}

// Notice is one notice to send.
type Notice struct {
	// UserID is the recipient, a local user.
	UserID string
	// Type is the event type; empty means m.room.message.
	Type string
	// StateKey, if set, makes the notice a state event.
	StateKey *string
	Content  json.RawMessage
	// Txn, if set, makes the request idempotent: a retry with the same
	// key gets the first notice's event back.
	Txn *roomserver.TxnKey
}

// Service sends server notices.
type Service struct {
	db     *database.DB
	rooms  Rooms
	users  Users
	cfg    config.ServerNotices
	server spec.ServerName
	log    logrus.FieldLogger

	// mu serialises notices so that two concurrent notices to one user
	// cannot create two rooms. Notices are rare admin actions.
	mu sync.Mutex
	// systemReady is set once the system user's account and profile exist.
	systemReady bool
}

// New opens the service and migrates its tables. Notices are off unless
// cfg.SystemMXIDLocalpart is set.
func New(ctx context.Context, db *database.DB, rooms Rooms, us Users, server spec.ServerName,
	cfg config.ServerNotices, log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "notices", migrations); err != nil {
		return nil, fmt.Errorf("migrate server notices: %w", err)
	}
	s := &Service{db: db, rooms: rooms, users: us, cfg: cfg, server: server, log: log}
	if s.Enabled() {
		// Claim the system user's ID now, before anyone can register it
		// and so own every notices room.
		if err := s.ensureSystemUser(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// CheckLeave refuses to let a user reject the invite to their notices room,
// as Synapse does (403 M_CANNOT_LEAVE_SERVER_NOTICE_ROOM). Once joined, they
// may leave; the next notice invites them again.
func (s *Service) CheckLeave(ctx context.Context, roomID, userID string) error {
	if !s.Enabled() {
		return nil
	}
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM server_notice_rooms WHERE user_id = $1 AND room_id = $2`,
		userID, roomID).Scan(&n)
	if err != nil {
		return fmt.Errorf("look up the server notices room of %s: %w", userID, err)
	}
	if n == 0 {
		return nil
	}
	m, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m == spec.Invite {
		return &mxerr.Error{Status: http.StatusForbidden, Code: "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
			Message: "You cannot reject this invite"}
	}
	return nil
}

// Enabled reports whether server notices are configured.
func (s *Service) Enabled() bool { return s.cfg.Enabled() }

// SystemUserID is the user notices come from.
func (s *Service) SystemUserID() string {
	return "@" + s.cfg.SystemMXIDLocalpart + ":" + string(s.server)
}

// Send sends a notice to a local user and returns its event ID, with
// Synapse's answers for a server without notices (400 M_UNKNOWN), a
// remote user (400 M_UNKNOWN) and an unknown user (404 M_NOT_FOUND).
func (s *Service) Send(ctx context.Context, n Notice) (string, error) {
	if !s.Enabled() {
		return "", mxerr.Unknown(http.StatusBadRequest, "Server notices are not enabled on this server")
	}
	uid, err := spec.NewUserID(n.UserID, true)
	if err != nil {
		return "", mxerr.InvalidParam("Invalid user ID %q", n.UserID)
	}
	if uid.Domain() != s.server {
		return "", mxerr.Unknown(http.StatusBadRequest, "Server notices can only be sent to local users")
	}
	if _, err := s.users.Account(ctx, n.UserID); err != nil {
		if e, ok := mxerr.As(err); ok && e.Code == "M_NOT_FOUND" {
			return "", mxerr.NotFound("User not found")
		}
		return "", err
	}
	if n.UserID == s.SystemUserID() {
		return "", mxerr.InvalidParam("Cannot send a server notice to the server notices user")
	}
	if n.Type == "" {
		n.Type = "m.room.message"
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ensureSystemUser(ctx); err != nil {
		return "", err
	}
	roomID, err := s.roomFor(ctx, n.UserID)
	if err != nil {
		return "", err
	}
	if err := s.ensureMember(ctx, roomID, n.UserID); err != nil {
		return "", err
	}
	ev, err := s.rooms.Send(ctx, roomserver.SendRequest{
		RoomID: roomID, Sender: s.SystemUserID(), Type: n.Type, StateKey: n.StateKey, Content: n.Content, Txn: n.Txn,
	})
	if err != nil {
		return "", fmt.Errorf("send server notice to %s: %w", n.UserID, err)
	}
	return ev.EventID(), nil
}

// ensureSystemUser creates the system user's account, without a password
// so that nobody can log in as it, and sets its profile from the config.
func (s *Service) ensureSystemUser(ctx context.Context) error {
	if s.systemReady {
		return nil
	}
	id := s.SystemUserID()
	if _, err := s.users.Account(ctx, id); err != nil {
		if e, ok := mxerr.As(err); !ok || e.Code != "M_NOT_FOUND" {
			return fmt.Errorf("look up the server notices user: %w", err)
		}
		if _, err := s.users.CreateAccount(ctx, users.NewAccount{Localpart: s.cfg.SystemMXIDLocalpart}); err != nil {
			if e, ok := mxerr.As(err); !ok || e.Code != "M_USER_IN_USE" {
				return fmt.Errorf("create the server notices user: %w", err)
			}
		}
		s.log.WithField("user_id", id).Info("created the server notices user")
	}
	profile, err := s.users.Profile(ctx, id)
	if err != nil {
		return fmt.Errorf("read the server notices user's profile: %w", err)
	}
	// Only changed fields are written: a write updates the system user's
	// membership in every notices room.
	set := func(key, value string) error {
		raw, _ := json.Marshal(value)
		if value == "" || string(profile[key]) == string(raw) {
			return nil
		}
		if err := s.users.SetProfileField(ctx, id, key, raw); err != nil {
			return fmt.Errorf("set the server notices user's %s: %w", key, err)
		}
		return nil
	}
	if err := set("displayname", s.cfg.SystemMXIDDisplayName); err != nil {
		return err
	}
	if err := set("avatar_url", s.cfg.SystemMXIDAvatarURL); err != nil {
		return err
	}
	s.systemReady = true
	return nil
}

// roomFor returns the user's notices room, creating it if the user has none
// or the system user is no longer in it.
func (s *Service) roomFor(ctx context.Context, userID string) (string, error) {
	var roomID string
	err := s.db.QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&roomID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("look up the server notices room of %s: %w", userID, err)
	}
	if roomID != "" {
		m, err := s.rooms.Membership(ctx, roomID, s.SystemUserID())
		if err != nil {
			return "", err
		}
		if m == spec.Join {
			return roomID, nil
		}
	}
	return s.createRoom(ctx, userID)
}

// createRoom makes a notices room as Synapse does: a private chat in which
// everyone but the system user has power level -10, so the user can read
// but not send; then tags it for the user.
func (s *Service) createRoom(ctx context.Context, userID string) (string, error) {
	req := roomserver.CreateRoomRequest{
		Preset:                    "private_chat",
		PowerLevelContentOverride: map[string]any{"users_default": -10},
	}
	if s.cfg.RoomName != "" {
		req.Name = &s.cfg.RoomName
	}
	if s.cfg.RoomTopic != "" {
		req.Topic = &s.cfg.RoomTopic
	}
	if s.cfg.RoomAvatarURL != "" {
		content, _ := json.Marshal(map[string]string{"url": s.cfg.RoomAvatarURL})
		req.InitialState = append(req.InitialState, roomserver.StateEvent{Type: "m.room.avatar", Content: content})
	}
	roomID, err := s.rooms.CreateRoom(ctx, s.SystemUserID(), req)
	if err != nil {
		return "", fmt.Errorf("create the server notices room of %s: %w", userID, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO server_notice_rooms (user_id, room_id, created_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id, created_ts = excluded.created_ts`,
		userID, roomID, time.Now().UnixMilli()); err != nil {
		return "", fmt.Errorf("store the server notices room of %s: %w", userID, err)
	}
	if err := s.users.SetTag(ctx, userID, roomID, RoomTag, []byte(`{}`)); err != nil {
		return "", fmt.Errorf("tag the server notices room of %s: %w", userID, err)
	}
	s.log.WithFields(logrus.Fields{"user_id": userID, "room_id": roomID}).Info("created a server notices room")
	return roomID, nil
}

// ensureMember invites the user (or, with auto_join, joins them) unless
// they are already invited or joined.
func (s *Service) ensureMember(ctx context.Context, roomID, userID string) error {
	m, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m == spec.Join || (m == spec.Invite && !s.cfg.AutoJoin) {
		return nil
	}
	if m != spec.Invite {
		if err := s.rooms.Invite(ctx, s.SystemUserID(), roomID, userID, "", false); err != nil {
			return fmt.Errorf("invite %s to the server notices room: %w", userID, err)
		}
	}
	if s.cfg.AutoJoin {
		if _, err := s.rooms.Join(ctx, userID, roomID, nil); err != nil {
			return fmt.Errorf("join %s to the server notices room: %w", userID, err)
		}
	}
	return nil
}

// PurgeRoom forgets a purged room as a user's server notices room: their
// next notice makes a new one.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	return s.db.DeleteRoomRows(ctx, roomID, "server_notice_rooms")
}
