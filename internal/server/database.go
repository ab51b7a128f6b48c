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
	if opts.Writers == 0 {
		// One: the committer then puts every room's waiting batch in
		// one transaction (group commit), which on a 2-core machine gave
		// 1.3 to 1.4 times the events per second of 4 connections, each
		// committing one room's batch, at 60% of the CPU per event
		// (docs/benchmarks.md). More help only when commits wait on I/O
		// that a single connection cannot overlap.
		opts.Writers = 1
	}
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
