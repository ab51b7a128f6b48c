package crashtest

import (
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// testDatabase is the database a crash-tested server runs on: the SQLite
// file in its data directory, or with TESSERA_TEST_DATABASE=postgres a
// fresh PostgreSQL database (see package dbtest). Only Tessera is killed:
// PostgreSQL keeps running, so what Tessera acknowledged must be committed
// there.
type testDatabase struct {
	path string // SQLite
	dsn  string // PostgreSQL
}

var (
	engineLine = regexp.MustCompile(`(?m)^  engine: sqlite$`)
	dsnLine    = regexp.MustCompile(`(?m)^  dsn: ""$`)
)

// useTestDatabase points a generated config at the test run's engine.
func useTestDatabase(t *testing.T, cfg, dataDir string) (string, testDatabase) {
	t.Helper()
	if !dbtest.Postgres() {
		return cfg, testDatabase{path: filepath.Join(dataDir, "tessera.db")}
	}
	if !engineLine.MatchString(cfg) || !dsnLine.MatchString(cfg) {
		t.Fatalf("generated config has no database engine and dsn to set")
	}
	dsn := dbtest.CreatePostgres(t)
	cfg = engineLine.ReplaceAllLiteralString(cfg, "  engine: postgres")
	cfg = dsnLine.ReplaceAllLiteralString(cfg, "  dsn: "+strconv.Quote(dsn))
	return cfg, testDatabase{dsn: dsn}
}

// open opens the database to check what the server left in it.
func (d testDatabase) open(t *testing.T) *database.DB {
	t.Helper()
	var db *database.DB
	var err error
	if d.dsn != "" {
		db, err = database.OpenPostgres(context.Background(), d.dsn, database.Options{Readers: 1})
	} else {
		db, err = database.Open(d.path, database.Options{Readers: 1})
	}
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	return db
}
