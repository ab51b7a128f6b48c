package testserver

import (
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// usePostgres points cfg at a fresh PostgreSQL database when the tests run
// on PostgreSQL (see package dbtest); the database is dropped when the
// test ends, after the server has stopped.
func usePostgres(t testing.TB, cfg *config.Config) {
	t.Helper()
	if !dbtest.Postgres() {
		return
	}
	cfg.Database.Engine = "postgres"
	cfg.Database.DSN = dbtest.CreatePostgres(t)
	// Many test servers share one PostgreSQL server: small pools.
	cfg.Database.MaxOpenConns = 6
	cfg.Database.MaxIdleConns = 2
}

// SQLite runs the server on SQLite whatever engine the test run asks for,
// for the tests of what only exists on SQLite (the file backup, which
// PostgreSQL deployments do with pg_dump).
func SQLite() Option {
	return func(c *config.Config) {
		c.Database = config.Database{Engine: "sqlite"}
	}
}

// Postgres runs the server on PostgreSQL whatever engine the test run asks
// for, for the tests of what only PostgreSQL does (concurrent writers). It
// skips the test without PostgreSQL, or fails it (see MissingPostgres).
func Postgres(t testing.TB) Option {
	t.Helper()
	MissingPostgres(t)
	return func(c *config.Config) {
		if c.Database.Engine == "postgres" {
			return
		}
		c.Database = config.Database{Engine: "postgres", DSN: dbtest.CreatePostgres(t), MaxOpenConns: 6, MaxIdleConns: 2}
	}
}
