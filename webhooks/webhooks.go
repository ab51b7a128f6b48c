// Package webhooks is the built-in incoming webhooks: a room admin
// attaches a hook to a room and gets a URL and a secret; GitHub (kind
// "github", signed with X-Hub-Signature-256) or anything speaking
// hookshot's generic shape (kind "generic") posts there, and a bot user
// posts a notice into the room. Hooks are managed through the client API
// (/_tessera/webhooks/v1, clientapi/webhooks.go) or by talking to the bot
// in the room (bot.go). The bot is an internal application service user.
package webhooks

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/appservice"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ratelimit"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// Kinds of hook.
const (
	KindGitHub  = "github"
	KindGeneric = "generic"
)

// HookPath is the path a hook's URL ends with, before its ID.
const HookPath = "/_tessera/webhooks/v1/hook/"

// powerEventType is the state event type whose power level managing hooks
// needs: one the power levels do not name, so state_default.
const powerEventType = "org.tessera.webhook"

// Rooms is what the service needs of the room server.
type Rooms interface {
	Membership(ctx context.Context, roomID, userID string) (string, error)
	Invite(ctx context.Context, sender, roomID, target, reason string, isDirect bool) error
	Join(ctx context.Context, userID, roomIDOrAlias string, content map[string]any) (string, error)
	Send(ctx context.Context, req roomserver.SendRequest) (*roomserver.Event, error)
	CanSendState(ctx context.Context, roomID, userID, eventType string) (bool, error)
	StateEvent(ctx context.Context, roomID, userID, typ, key string) (*roomserver.Event, error)
	Subscribe(l roomserver.Listener)
}

// Users is what the service needs of the accounts.
type Users interface {
	Account(ctx context.Context, userID string) (*users.Account, error)
	CreateAccount(ctx context.Context, na users.NewAccount) (*users.Account, error)
	Profile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	SetProfileField(ctx context.Context, userID, key string, value json.RawMessage) error
}

// Hook is one incoming webhook.
type Hook struct {
	ID        string
	RoomID    string
	Kind      string
	Secret    string
	CreatedBy string
	CreatedTS int64
	// Disabled is set once the bot left the room.
	Disabled bool
}

// Service stores hooks, receives deliveries and runs the bot.
type Service struct {
	db      *database.DB
	rooms   Rooms
	users   Users
	cfg     config.Webhooks
	server  spec.ServerName
	baseURL string
	log     logrus.FieldLogger
	limiter *ratelimit.Limiter

	// The bot's queue of committed events (bot.go).
	events chan *roomserver.Event
	// deliveries writes GitHub delivery IDs (deliveries.go).
	deliveries *database.GroupWriter
	stop       chan struct{}
	wg         sync.WaitGroup
}

// New migrates the tables and creates the bot's account. baseURL is the
// server's public URL (public_baseurl), or empty.
func New(ctx context.Context, db *database.DB, rooms Rooms, us Users, server spec.ServerName, baseURL string,
	cfg config.Webhooks, log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "webhooks", migrations); err != nil {
		return nil, fmt.Errorf("migrate webhooks: %w", err)
	}
	if baseURL == "" {
		baseURL = "https://" + string(server)
	}
	s := &Service{db: db, rooms: rooms, users: us, cfg: cfg, server: server, baseURL: strings.TrimRight(baseURL, "/"),
		log: log, limiter: ratelimit.New(cfg.Rate.PerSecond, cfg.Rate.Burst),
		events: make(chan *roomserver.Event, 4096), deliveries: database.NewGroupWriter(db, maxDeliveryBatch),
		stop: make(chan struct{})}
	if err := s.ensureBot(ctx); err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.pruneDeliveries()
	return s, nil
}

// Registration is the bot's internal application service registration,
// which reserves its user ID.
func Registration(cfg config.Webhooks, serverName string) *appservice.Registration {
	return appservice.Internal("tessera-webhooks", cfg.BotLocalpart, serverName)
}

// BotUserID is the bot's user.
func (s *Service) BotUserID() string { return "@" + s.cfg.BotLocalpart + ":" + string(s.server) }

// URL is the hook's URL below base (the request's public base URL), or
// below the configured one when base is empty.
func (s *Service) URL(base, hookID string) string {
	if base == "" {
		base = s.baseURL
	}
	return strings.TrimRight(base, "/") + HookPath + hookID
}

// ensureBot creates the bot's account, without a password so that nobody
// can log in as it, and sets its display name.
func (s *Service) ensureBot(ctx context.Context) error {
	id := s.BotUserID()
	if _, err := s.users.Account(ctx, id); err != nil {
		if e, ok := mxerr.As(err); !ok || e.Code != "M_NOT_FOUND" {
			return fmt.Errorf("look up the webhooks bot: %w", err)
		}
		if _, err := s.users.CreateAccount(ctx, users.NewAccount{Localpart: s.cfg.BotLocalpart}); err != nil {
			if e, ok := mxerr.As(err); !ok || e.Code != "M_USER_IN_USE" {
				return fmt.Errorf("create the webhooks bot: %w", err)
			}
		}
		s.log.WithField("user_id", id).Info("created the webhooks bot")
	}
	if s.cfg.BotDisplayName == "" {
		return nil
	}
	profile, err := s.users.Profile(ctx, id)
	if err != nil {
		return fmt.Errorf("read the webhooks bot's profile: %w", err)
	}
	raw, _ := json.Marshal(s.cfg.BotDisplayName)
	if string(profile["displayname"]) == string(raw) {
		return nil
	}
	if err := s.users.SetProfileField(ctx, id, "displayname", raw); err != nil {
		return fmt.Errorf("set the webhooks bot's display name: %w", err)
	}
	return nil
}

// checkPower requires userID to have the power to send state in the room.
func (s *Service) checkPower(ctx context.Context, roomID, userID string) error {
	ok, err := s.rooms.CanSendState(ctx, roomID, userID, powerEventType)
	if err != nil {
		if e, isMx := mxerr.As(err); isMx && e.Code == "M_NOT_FOUND" {
			return mxerr.Forbidden("You are not in this room")
		}
		return err
	}
	if !ok {
		return mxerr.Forbidden("Managing webhooks needs the power level to send state events in the room")
	}
	return nil
}

// Create attaches a new hook of kind to the room, for a user with the power
// to send state there. The bot is invited (by the user) and joins if it is
// not in the room yet.
func (s *Service) Create(ctx context.Context, userID, roomID, kind string) (*Hook, error) {
	if kind != KindGitHub && kind != KindGeneric {
		return nil, mxerr.InvalidParam("kind must be %q or %q", KindGitHub, KindGeneric)
	}
	if err := s.checkPower(ctx, roomID, userID); err != nil {
		return nil, err
	}
	if err := s.ensureBotJoined(ctx, roomID, userID); err != nil {
		return nil, err
	}
	return s.create(ctx, userID, roomID, kind)
}

func (s *Service) create(ctx context.Context, userID, roomID, kind string) (*Hook, error) {
	h := &Hook{ID: randomHex(12), RoomID: roomID, Kind: kind, Secret: randomHex(32), CreatedBy: userID,
		CreatedTS: time.Now().UnixMilli()}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhooks (hook_id, room_id, kind, secret, created_by, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`, h.ID, h.RoomID, h.Kind, h.Secret, h.CreatedBy, h.CreatedTS); err != nil {
		return nil, fmt.Errorf("store webhook: %w", err)
	}
	s.log.WithFields(logrus.Fields{"hook_id": h.ID, "room_id": roomID, "kind": kind, "user_id": userID}).Info("webhook created")
	return h, nil
}

// ensureBotJoined invites the bot (as inviter) unless it is invited or
// joined already, and joins it.
func (s *Service) ensureBotJoined(ctx context.Context, roomID, inviter string) error {
	bot := s.BotUserID()
	m, err := s.rooms.Membership(ctx, roomID, bot)
	if err != nil {
		return err
	}
	if m == spec.Join {
		return nil
	}
	if m != spec.Invite {
		if err := s.rooms.Invite(ctx, inviter, roomID, bot, "", false); err != nil {
			return err
		}
	}
	if _, err := s.rooms.Join(ctx, bot, roomID, nil); err != nil {
		return fmt.Errorf("join the webhooks bot to %s: %w", roomID, err)
	}
	return nil
}

// List lists the room's hooks, for a user with the power to send state.
func (s *Service) List(ctx context.Context, userID, roomID string) ([]Hook, error) {
	if err := s.checkPower(ctx, roomID, userID); err != nil {
		return nil, err
	}
	return s.list(ctx, roomID)
}

func (s *Service) list(ctx context.Context, roomID string) ([]Hook, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT hook_id, room_id, kind, secret, created_by, created_ts, disabled_ts
		FROM webhooks WHERE room_id = $1 ORDER BY created_ts, hook_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	defer rows.Close()
	out := []Hook{}
	for rows.Next() {
		h, err := scanHook(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *h)
	}
	return out, rows.Err()
}

// Remove deletes a hook, for a user with the power to send state in its
// room. An unknown hook is 404 M_NOT_FOUND.
func (s *Service) Remove(ctx context.Context, userID, hookID string) error {
	h, err := s.Get(ctx, hookID)
	if err != nil {
		return err
	}
	if err := s.checkPower(ctx, h.RoomID, userID); err != nil {
		return err
	}
	return s.remove(ctx, h)
}

func (s *Service) remove(ctx context.Context, h *Hook) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM webhooks WHERE hook_id = $1`, h.ID); err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE hook_id = $1`, h.ID); err != nil {
		return fmt.Errorf("delete webhook deliveries: %w", err)
	}
	s.log.WithFields(logrus.Fields{"hook_id": h.ID, "room_id": h.RoomID}).Info("webhook removed")
	return nil
}

// Get finds a hook; unknown: 404 M_NOT_FOUND.
func (s *Service) Get(ctx context.Context, hookID string) (*Hook, error) {
	row := s.db.QueryRowContext(ctx, `SELECT hook_id, room_id, kind, secret, created_by, created_ts, disabled_ts
		FROM webhooks WHERE hook_id = $1`, hookID)
	h, err := scanHook(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("Unknown webhook")
	}
	return h, err
}

// disableRoom disables the room's hooks created at or before the time
// given (ms): the bot is no longer there.
func (s *Service) disableRoom(ctx context.Context, roomID string, before int64) error {
	res, err := s.db.ExecContext(ctx, `UPDATE webhooks SET disabled_ts = $1
		WHERE room_id = $2 AND disabled_ts IS NULL AND created_ts <= $3`, time.Now().UnixMilli(), roomID, before)
	if err != nil {
		return fmt.Errorf("disable the webhooks of %s: %w", roomID, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.log.WithFields(logrus.Fields{"room_id": roomID, "hooks": n}).Info("webhooks disabled: the bot left the room")
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

func scanHook(r scanner) (*Hook, error) {
	var h Hook
	var disabled sql.NullInt64
	if err := r.Scan(&h.ID, &h.RoomID, &h.Kind, &h.Secret, &h.CreatedBy, &h.CreatedTS, &disabled); err != nil {
		return nil, err
	}
	h.Disabled = disabled.Valid
	return &h, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// PurgeRoom deletes a purged room's hooks and the delivery IDs they saw:
// their URLs answer 404 from then on.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, q := range []string{
			`DELETE FROM webhook_deliveries WHERE hook_id IN (SELECT hook_id FROM webhooks WHERE room_id = $1)`,
			`DELETE FROM webhooks WHERE room_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, roomID); err != nil {
				return fmt.Errorf("purge the webhooks of %s: %w", roomID, err)
			}
		}
		return nil
	})
}
