package server

import (
	"context"
	"net/url"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
)

// OpenDatabase opens the database the config names, on its engine.
func OpenDatabase(ctx context.Context, cfg config.Database) (*database.DB, error) {
	opts := database.Options{Readers: cfg.MaxOpenConns, Idle: cfg.MaxIdleConns, Writers: cfg.WriterConns}
	if database.Engine(cfg.Engine) == database.Postgres {
		return database.OpenPostgres(ctx, cfg.DSN, opts)
	}
	return database.Open(cfg.Path, opts)
}

// describeDatabase names the database for the log: the SQLite file, or
// PostgreSQL's host and database without the DSN's password.
func describeDatabase(cfg config.Database) string {
	if database.Engine(cfg.Engine) != database.Postgres {
		return cfg.Path
	}
	if u, err := url.Parse(cfg.DSN); err == nil && u.Scheme != "" {
		return "postgres://" + u.Host + u.Path
	}
	return "postgres"
}
