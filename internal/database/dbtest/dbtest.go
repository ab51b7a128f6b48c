// Package dbtest gives tests a fresh, empty database on the engine the
// test run asks for: SQLite by default, PostgreSQL with
// TESSERA_TEST_DATABASE=postgres and TESSERA_TEST_POSTGRES_DSN (a database
// of a PostgreSQL server, as a URL or "host=... user=..." settings, for a
// user that may create databases). Each caller gets a database of its own,
// dropped when the test ends.
package dbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/tessera-hs/tessera/internal/database"
)

const (
	EnvDatabase    = "TESSERA_TEST_DATABASE"
	EnvPostgresDSN = "TESSERA_TEST_POSTGRES_DSN"
)

// Postgres reports whether tests run on PostgreSQL.
func Postgres() bool { return os.Getenv(EnvDatabase) == "postgres" }

// Open opens a fresh database on the test run's engine, closed when the
// test ends. On SQLite it is a file in t.TempDir().
func Open(t testing.TB) *database.DB {
	t.Helper()
	return New(t).Open(t)
}

// Store is one fresh test database that a test may open more than once,
// to restart what runs on it.
type Store struct {
	path string // SQLite
	dsn  string // PostgreSQL
}

// New creates a fresh, empty database on the test run's engine.
func New(t testing.TB) *Store {
	t.Helper()
	if Postgres() {
		return &Store{dsn: CreatePostgres(t)}
	}
	return &Store{path: filepath.Join(t.TempDir(), "tessera.db")}
}

// Open opens the store's database; it is closed when the test ends (a
// test may close it sooner).
func (s *Store) Open(t testing.TB) *database.DB {
	t.Helper()
	var db *database.DB
	var err error
	if s.dsn != "" {
		db, err = database.OpenPostgres(context.Background(), s.dsn, database.Options{Readers: 6, Idle: 2})
	} else {
		db, err = database.Open(s.path, database.Options{})
	}
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// CreatePostgres creates a fresh PostgreSQL database and returns its DSN.
// The database is dropped when the test ends, after the cleanups
// registered later (a server using it stops first).
func CreatePostgres(t testing.TB) string {
	t.Helper()
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
	return withDatabase(dsn, name)
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
