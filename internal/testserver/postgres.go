package testserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/tessera-hs/tessera/internal/config"
)

// Environment variables that run the test servers on PostgreSQL instead of
// SQLite: TESSERA_TEST_DATABASE=postgres, and TESSERA_TEST_POSTGRES_DSN a
// database of a PostgreSQL server (a URL, or "host=... user=..." settings)
// as a user that may create databases. Each test server gets a fresh
// database of its own there, dropped when the test ends.
const (
	EnvDatabase    = "TESSERA_TEST_DATABASE"
	EnvPostgresDSN = "TESSERA_TEST_POSTGRES_DSN"
)

// Postgres reports whether tests run on PostgreSQL (see EnvDatabase).
func Postgres() bool { return os.Getenv(EnvDatabase) == "postgres" }

// usePostgres points cfg at a fresh PostgreSQL database when the tests run
// on PostgreSQL, and drops the database when the test ends (after the
// server has stopped: cleanups run last-registered first).
func usePostgres(t testing.TB, cfg *config.Config) {
	t.Helper()
	if !Postgres() {
		return
	}
	dsn := os.Getenv(EnvPostgresDSN)
	if dsn == "" {
		t.Fatalf("%s=postgres needs %s, a PostgreSQL database to create test databases from", EnvDatabase, EnvPostgresDSN)
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", EnvPostgresDSN, err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := "tessera_test_" + hex.EncodeToString(b[:])
	// C collation, as docs/postgresql.md asks of a real deployment.
	if _, err := admin.ExecContext(context.Background(),
		`CREATE DATABASE `+name+` TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`); err != nil {
		admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.ExecContext(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	cfg.Database.Engine = "postgres"
	cfg.Database.DSN = withDatabase(dsn, name)
	// Many test servers share one PostgreSQL server: small pools.
	cfg.Database.MaxOpenConns = 6
	cfg.Database.MaxIdleConns = 2
}

// withDatabase is dsn naming database name instead of its own.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	// Keyword/value settings: a later dbname overrides an earlier one.
	return dsn + " dbname=" + name
}
