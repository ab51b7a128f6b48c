// Package admin is the server admin domain behind Synapse's admin API
// (/_synapse/admin): what an operator does to accounts and rooms that no
// user could do alone (create and deactivate accounts, shut rooms down,
// block them, force joins), built on the users and room server domains.
// Every action is logged with who did what to what.
//
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/index.html
package admin

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// Service is the admin domain.
type Service struct {
	db    *database.DB
	users *users.Service
	rooms *roomserver.Service
	media *media.Service // nil until SetMedia
	dests Destinations   // nil until SetDestinations (federation off)
	// purgers delete what the other domains hold of a purged room.
	purgers []namedPurger
	log     logrus.FieldLogger
	name    spec.ServerName

	// deletes tracks room deletions (DELETE /v2/rooms/{id}); they run in
	// the background and are kept in memory, as Synapse keeps them.
	mu      sync.Mutex
	deletes map[string]*DeleteStatus
	byRoom  map[string][]string
	wg      sync.WaitGroup
}

// New runs the domain's migrations and returns the service.
func New(ctx context.Context, db *database.DB, us *users.Service, rs *roomserver.Service, log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "admin", migrations); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return &Service{
		db: db, users: us, rooms: rs, log: log, name: us.ServerName(),
		deletes: map[string]*DeleteStatus{}, byRoom: map[string][]string{},
	}, nil
}

// RoomPurger is a domain that keeps rows about rooms (receipts, push
// actions, account data, ...): when a room is purged, it deletes them.
type RoomPurger interface {
	PurgeRoom(ctx context.Context, roomID string) error
}

type namedPurger struct {
	name string
	p    RoomPurger
}

// AddRoomPurger adds a domain to those a room purge clears, under name
// (for errors). Call before serving.
func (s *Service) AddRoomPurger(name string, p RoomPurger) {
	s.purgers = append(s.purgers, namedPurger{name, p})
}

// Close waits for room deletions in progress.
func (s *Service) Close() { s.wg.Wait() }

// ServerName is this server's name.
func (s *Service) ServerName() spec.ServerName { return s.name }

// Audit logs an admin action: who did it, what it was, and what it was
// done to. Never pass secrets (passwords, tokens) in fields.
func (s *Service) Audit(actor, action, target string, fields logrus.Fields) {
	e := s.log.WithFields(logrus.Fields{"admin": actor, "action": action, "target": target})
	if fields != nil {
		e = e.WithFields(fields)
	}
	e.Info("admin action")
}

// IsLocal reports whether a user ID belongs to this server.
func (s *Service) IsLocal(userID string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == s.name
}

// Version is the server's version for GET /_synapse/admin/v1/server_version:
// the module version it was built as, or "dev".
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
