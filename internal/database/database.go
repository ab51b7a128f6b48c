// Package database opens the SQLite database every domain stores its tables
// in, and runs each domain's numbered migrations.
//
// SQLite allows one writer at a time, so writes go through a single
// connection (no SQLITE_BUSY between our own writers) while reads use a pool
// of read-only connections that WAL lets proceed alongside the writer.
// Queries are written with PostgreSQL's $1 placeholders; they are rewritten
// to SQLite's numbered ?1 form, which binds by number just as PostgreSQL does
// (the driver would otherwise bind $N by order of first appearance).
package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver
)

// DB is the database: one writer connection and a pool of readers.
type DB struct {
	writer  *sql.DB
	reader  *sql.DB
	path    string
	queries sync.Map // original query -> rewritten query
}

// Options tunes Open.
type Options struct {
	// Readers is the size of the read pool. Zero means 4.
	Readers int
}

// Open opens (creating if needed) the SQLite database at path.
//
// synchronous=FULL makes every commit fsync the WAL, so a transaction that
// has committed survives a crash of the process or of the machine.
func Open(path string, opts Options) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	params := url.Values{}
	params.Set("_journal_mode", "WAL")
	params.Set("_synchronous", "FULL")
	params.Set("_foreign_keys", "on")
	params.Set("_busy_timeout", "10000")
	params.Set("_txlock", "immediate")
	params.Set("_cache_size", "-16000") // 16 MiB page cache per connection
	writer, err := sql.Open("sqlite3", "file:"+path+"?"+params.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	if err := writer.Ping(); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}

	params.Set("mode", "ro")
	params.Del("_txlock")
	params.Del("_journal_mode") // a read-only connection cannot change it
	reader, err := sql.Open("sqlite3", "file:"+path+"?"+params.Encode())
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open database readers %s: %w", path, err)
	}
	n := opts.Readers
	if n <= 0 {
		n = 4
	}
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	reader.SetConnMaxLifetime(0)
	return &DB{writer: writer, reader: reader, path: path}, nil
}

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// Close closes every connection. SQLite checkpoints the WAL when the last
// connection closes, so a cleanly stopped server leaves one database file.
func (db *DB) Close() error {
	return errors.Join(db.reader.Close(), db.writer.Close())
}

// rewrite turns $1 placeholders into ?1, leaving string literals alone.
func (db *DB) rewrite(query string) string {
	if q, ok := db.queries.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	b.Grow(len(query))
	inString := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inString = !inString
		case c == '$' && !inString && i+1 < len(query) && query[i+1] >= '0' && query[i+1] <= '9':
			c = '?'
		}
		b.WriteByte(c)
	}
	q := b.String()
	db.queries.Store(query, q)
	return q
}

// Querier is what both *DB reads and *Tx offer, so a helper can run inside
// or outside a transaction.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ExecContext runs a single write statement on the writer.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.writer.ExecContext(ctx, db.rewrite(query), args...)
}

// QueryContext runs a read on the reader pool.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.reader.QueryContext(ctx, db.rewrite(query), args...)
}

// QueryRowContext runs a single-row read on the reader pool.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.reader.QueryRowContext(ctx, db.rewrite(query), args...)
}

// Tx is a write transaction. Its reads see its own writes.
type Tx struct {
	tx *sql.Tx
	db *DB
}

func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.db.rewrite(query), args...)
}
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.db.rewrite(query), args...)
}
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.db.rewrite(query), args...)
}

// WithTx runs fn in a write transaction on the writer connection, committing
// if fn returns nil and rolling back otherwise.
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(&Tx{tx: sqlTx, db: db}); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// Migration is one numbered schema change of a domain. Released migrations
// are never edited: a change to the schema is a new migration.
type Migration struct {
	Version int
	SQL     string
}

// Migrate brings a domain's tables up to date, each migration in its own
// transaction together with the record that it ran.
func (db *DB) Migrate(ctx context.Context, domain string, migrations []Migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		domain TEXT NOT NULL,
		version INTEGER NOT NULL,
		PRIMARY KEY (domain, version)
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for i, m := range migrations {
		if m.Version != i+1 {
			return fmt.Errorf("%s migration %d is numbered %d: migrations must be numbered 1, 2, 3, ...", domain, i+1, m.Version)
		}
		err := db.WithTx(ctx, func(tx *Tx) error {
			var done int
			err := tx.QueryRowContext(ctx,
				`SELECT COUNT(*) FROM schema_migrations WHERE domain = $1 AND version = $2`,
				domain, m.Version).Scan(&done)
			if err != nil || done > 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (domain, version) VALUES ($1, $2)`, domain, m.Version)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s migration %d: %w", domain, m.Version, err)
		}
	}
	return nil
}
