// Package migratedb moves a deployment from SQLite to PostgreSQL: it copies
// a stopped server's SQLite database into an empty PostgreSQL database,
// table by table, and checks the copy before committing it.
//
// The target's schema is made by Tessera's own PostgreSQL migrations (the
// caller runs them), not translated from the SQLite file, so the copy is
// exactly the database a server started on PostgreSQL would have made.
// The rows then go in with COPY, in one transaction, parents before the
// tables whose foreign keys name them; identity columns continue after the
// largest value copied; the row count of every table and a checksum of
// every event's JSON are compared with the source before the commit.
package migratedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/mattn/go-sqlite3"
)

// ErrSourceInUse is returned when another process has the SQLite database
// open: a running server would go on writing what is being copied.
var ErrSourceInUse = errors.New("the SQLite database is in use: stop Tessera before migrating it")

// ErrTargetNotEmpty is returned when the PostgreSQL database has tables.
var ErrTargetNotEmpty = errors.New("the PostgreSQL database is not empty: migrate into a new, empty database")

// Options are what Copy needs beyond the two databases.
type Options struct {
	// Migrate creates Tessera's schema in the (empty) PostgreSQL database,
	// by running every domain's migrations there. Rows that starting the
	// domains writes (reserved users, say) are removed before the copy:
	// the source has its own.
	Migrate func(ctx context.Context) error
	// Progress, when set, is told about each table copied.
	Progress func(table string, rows int64)
}

// Report is what was copied and checked.
type Report struct {
	Tables []TableReport
	// Events is the number of events (rows with an event_id and its JSON)
	// whose JSON was compared, byte for byte through SHA-256.
	Events int64
}

// TableReport is one table's copy.
type TableReport struct {
	Name string
	Rows int64
}

// Copy copies the SQLite database at path into the empty PostgreSQL
// database at dsn. It holds an exclusive lock on the SQLite file from
// start to end, so that no server starts on it meanwhile, and it refuses a
// file that a running server has open.
func Copy(ctx context.Context, path, dsn string, opts Options) (*Report, error) {
	src, err := openSource(ctx, path)
	if err != nil {
		return nil, err
	}
	defer src.close()

	dst, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer dst.Close(context.Background())
	var tables int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`).Scan(&tables); err != nil {
		return nil, fmt.Errorf("list PostgreSQL tables: %w", err)
	}
	if tables > 0 {
		return nil, fmt.Errorf("%w (it has %d tables)", ErrTargetNotEmpty, tables)
	}
	if err := opts.Migrate(ctx); err != nil {
		return nil, fmt.Errorf("create the schema on PostgreSQL: %w", err)
	}
	if err := sameMigrations(ctx, src, dst); err != nil {
		return nil, err
	}

	order, err := targetTables(ctx, dst)
	if err != nil {
		return nil, err
	}
	if err := src.checkTables(ctx, order); err != nil {
		return nil, err
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	var names []string
	for _, t := range order {
		names = append(names, pgx.Identifier{t.name}.Sanitize())
	}
	if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")+` RESTART IDENTITY CASCADE`); err != nil {
		return nil, fmt.Errorf("empty the tables made by the migrations: %w", err)
	}
	rep := &Report{}
	for _, t := range order {
		n, err := copyTable(ctx, src, tx, t)
		if err != nil {
			return nil, fmt.Errorf("copy table %s: %w", t.name, err)
		}
		rep.Tables = append(rep.Tables, TableReport{Name: t.name, Rows: n})
		if opts.Progress != nil {
			opts.Progress(t.name, n)
		}
	}
	if err := continueIdentities(ctx, src, tx, order); err != nil {
		return nil, err
	}
	if err := verifyCounts(ctx, src, tx, rep.Tables); err != nil {
		return nil, err
	}
	if rep.Events, err = verifyEvents(ctx, src, tx, order); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit the copy: %w", err)
	}
	return rep, nil
}

// source is the SQLite database, on one connection holding an exclusive
// lock and a read transaction for the whole copy.
type source struct {
	db   *sql.DB
	conn *sql.Conn
	tx   *sql.Tx
}

func openSource(ctx context.Context, path string) (*source, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("SQLite database: %w", err)
	}
	// Exclusive locking mode: the first read takes the database file's
	// exclusive lock and keeps it until the connection closes. A running
	// server's connections hold shared locks, so the read fails at once
	// (no busy timeout) instead of copying a database still being written.
	params := url.Values{}
	params.Set("_locking_mode", "EXCLUSIVE")
	params.Set("_busy_timeout", "0")
	db, err := sql.Open("sqlite3", "file:"+path+"?"+params.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &source{db: db}
	s.conn, err = db.Conn(ctx)
	if err == nil {
		s.tx, err = s.conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	}
	if err == nil {
		var n int
		err = s.tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master`).Scan(&n)
	}
	if err != nil {
		s.close()
		var se sqlite3.Error
		if errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked) {
			return nil, ErrSourceInUse
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return s, nil
}

func (s *source) close() {
	if s.tx != nil {
		s.tx.Rollback()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	s.db.Close()
}

// checkTables makes sure that every SQLite table has its place in the
// target, so that nothing is left behind. FTS5's shadow tables are the
// search index's storage; on PostgreSQL the index is event_search itself.
func (s *source) checkTables(ctx context.Context, target []table) error {
	rows, err := s.tx.QueryContext(ctx, `SELECT name FROM pragma_table_list
		WHERE schema = 'main' AND type IN ('table', 'virtual') AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		return fmt.Errorf("list SQLite tables: %w", err)
	}
	defer rows.Close()
	var missing []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return err
		}
		if name == "schema_migrations" {
			continue
		}
		if !slices.ContainsFunc(target, func(t table) bool { return t.name == name }) {
			missing = append(missing, name)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("SQLite tables %v have no PostgreSQL table to go to", missing)
	}
	return nil
}

// sameMigrations checks that the source has run exactly the migrations
// this binary ran on the target: the tables then have the same columns.
func sameMigrations(ctx context.Context, src *source, dst *pgx.Conn) error {
	const q = `SELECT domain, version FROM schema_migrations ORDER BY domain, version`
	rows, err := src.tx.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("read SQLite migrations: %w", err)
	}
	want, err := migrationList(rows)
	rows.Close()
	if err != nil {
		return fmt.Errorf("read SQLite migrations: %w", err)
	}
	prows, err := dst.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("read PostgreSQL migrations: %w", err)
	}
	got, err := migrationList(prows)
	prows.Close()
	if err != nil {
		return fmt.Errorf("read PostgreSQL migrations: %w", err)
	}
	if !slices.Equal(want, got) {
		return fmt.Errorf("the SQLite database's schema is not this version's: start this version of Tessera " +
			"on it once (and stop it) before migrating, or use the version that made it")
	}
	return nil
}

// scanner is what database/sql's and pgx's rows share.
type scanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// migrationList reads schema_migrations rows as "domain version".
func migrationList(rows scanner) ([]string, error) {
	var out []string
	for rows.Next() {
		var d string
		var v int64
		if err := rows.Scan(&d, &v); err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%s %d", d, v))
	}
	return out, rows.Err()
}
