package housekeeping_test

import (
	"database/sql"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	_ "github.com/mattn/go-sqlite3"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// openDB opens the test server's database beside the server, on its
// engine, for tests that look at rows or set them up (SQLite: the file;
// PostgreSQL: the server's DSN). The queries must be portable: $1
// placeholders work on both.
func openDB(t *testing.T, s *testserver.Server) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite3", "file:"+s.Config.Database.Path+"?_busy_timeout=5000"
	if s.Config.Database.Engine == "postgres" {
		driver, dsn = "pgx", s.Config.Database.DSN
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// countRows counts a table's rows in the server's database.
func countRows(t *testing.T, s *testserver.Server, table string) int {
	t.Helper()
	var n int
	if err := openDB(t, s).QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
