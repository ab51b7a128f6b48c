// Package keys is the end-to-end encryption key store: device keys,
// one-time and fallback keys, cross-signing keys and their signatures, and
// the device list stream that tells users whose keys changed.
// https://spec.matrix.org/v1.19/client-server-api/#end-to-end-encryption
package keys

import (
	"context"
	"errors"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/users"
)

// Service is the key store.
type Service struct {
	db       *database.DB
	users    *users.Service
	log      logrus.FieldLogger
	onChange func(ctx context.Context, userID string)
}

var errTODO = errors.New("keys: not implemented yet")

// New runs the keys domain's migrations and builds the service.
func New(ctx context.Context, db *database.DB, us *users.Service, log logrus.FieldLogger) (*Service, error) {
	return &Service{db: db, users: us, log: log}, nil
}

// SetChangeHook installs f, called after the commit of every change to a
// user's device list (device keys uploaded or deleted, cross-signing keys
// or signatures changed), so that sync can wake those who share a room
// with them. Call it once, before serving requests.
func (s *Service) SetChangeHook(f func(ctx context.Context, userID string)) { s.onChange = f }

// StreamPos is the device list stream's latest committed position.
func (s *Service) StreamPos() int64 { return 0 }

// ChangedUsers lists the users whose device list changed at a position in
// (from, to].
func (s *Service) ChangedUsers(ctx context.Context, from, to int64) ([]string, error) {
	return nil, errTODO
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	return nil, errTODO
}

// UnusedFallbackKeyTypes lists the algorithms of a device's fallback keys
// that have not been used.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	return nil, errTODO
}

// DevicesDeleted deletes the keys of deleted devices and records the
// change of their user's device list.
func (s *Service) DevicesDeleted(ctx context.Context, userID string, deviceIDs []string) error {
	return nil
}
