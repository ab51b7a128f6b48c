// Package database opens the database every domain stores its tables in
// (SQLite, the default, or PostgreSQL; see postgres.go), and runs each
// domain's numbered migrations.
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
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver
)

// DB is the database: one writer connection and a pool of readers, and on
// PostgreSQL a pool of concurrent writers (WithConcurrentTx).
type DB struct {
	writer *sql.DB
	reader *sql.DB
	// writers is PostgreSQL's pool of concurrent writers; nil on SQLite.
	writers *sql.DB
	path    string
	queries sync.Map // original query -> rewritten query

	// engine is SQLite or Postgres (see OpenPostgres).
	engine Engine

	// Prepared statements, per query, on the reader pool and on the
	// writer: SQLite then parses and plans each query once per
	// connection rather than on every call.
	readStmts, writeStmts stmtCache
}

// maxCachedStmts bounds each statement cache. Queries are mostly constant
// strings, but some are built with a variable number of placeholders; past
// the bound a new query runs unprepared rather than grow the cache.
const maxCachedStmts = 512

type stmtCache struct {
	mu     sync.RWMutex
	stmts  map[string]*sql.Stmt
	closed bool
	// pending: queries being prepared in the background.
	pending map[string]bool
	// background counts the preparations running in the background, which
	// close waits for: one finishing after the pools closed would keep
	// its connection open.
	background sync.WaitGroup
}

// lookup returns query's statement if it is prepared.
func (c *stmtCache) lookup(query string) (*sql.Stmt, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	st, ok := c.stmts[query]
	return st, ok
}

// preparing marks query as being prepared in the background, and reports
// whether the caller should (no one else is, and it may be cached).
func (c *stmtCache) preparing(query string) bool {
	if strings.Contains(query, ";") {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.pending[query] || len(c.stmts)+len(c.pending) >= maxCachedStmts {
		return false
	}
	if c.pending == nil {
		c.pending = map[string]bool{}
	}
	c.pending[query] = true
	c.background.Add(1)
	return true
}

// prepareInBackground prepares query, which preparing reported the caller
// should, on pool.
func (c *stmtCache) prepareInBackground(pool *sql.DB, query string) {
	defer c.background.Done()
	c.get(context.Background(), pool, query)
}

// get returns the prepared statement of query (already rewritten) on pool,
// preparing it the first time; nil when the cache is full or closed, the
// query may hold several statements, or it does not prepare (the caller
// then runs the query unprepared and gets the error, if any, from that).
func (c *stmtCache) get(ctx context.Context, pool *sql.DB, query string) *sql.Stmt {
	if strings.Contains(query, ";") {
		// Possibly several statements (a migration): a prepared
		// statement would run only the first.
		return nil
	}
	c.mu.RLock()
	st, ok := c.stmts[query]
	full := c.closed || len(c.stmts) >= maxCachedStmts
	c.mu.RUnlock()
	if ok || full {
		return st
	}
	st, err := pool.PrepareContext(ctx, query)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, query)
	if err != nil {
		return nil
	}
	if prev, ok := c.stmts[query]; ok || c.closed || len(c.stmts) >= maxCachedStmts {
		st.Close()
		return prev
	}
	if c.stmts == nil {
		c.stmts = map[string]*sql.Stmt{}
	}
	c.stmts[query] = st
	return st
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.background.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	c.stmts, c.closed = nil, true
	return errors.Join(errs...)
}

// Options tunes Open.
type Options struct {
	// Readers is the size of the read pool. Zero means 4 on SQLite and 16
	// on PostgreSQL.
	Readers int
	// Idle is how many pooled connections stay open when unused. Zero
	// means all of them.
	Idle int
	// Writers is how many WithConcurrentTx transactions PostgreSQL runs
	// at once. Zero means 4. SQLite has one writer, whatever this says.
	Writers int
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
	// Server-side search is an FTS5 index, which mattn/go-sqlite3 compiles
	// in only with its sqlite_fts5 build tag.
	var fts5 bool
	if err := writer.QueryRow(`SELECT sqlite_compileoption_used('ENABLE_FTS5')`).Scan(&fts5); err != nil || !fts5 {
		writer.Close()
		return nil, errors.New("this binary's SQLite has no FTS5 (full-text search): build Tessera with `-tags sqlite_fts5`")
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
	reader.SetMaxIdleConns(idleConns(opts, n))
	reader.SetConnMaxLifetime(0)
	return &DB{writer: writer, reader: reader, path: path, engine: SQLite}, nil
}

func idleConns(opts Options, open int) int {
	if opts.Idle > 0 && opts.Idle < open {
		return opts.Idle
	}
	return open
}

// Path is the database file's path (empty on PostgreSQL).
func (db *DB) Path() string { return db.path }

// Engine is the database's engine.
func (db *DB) Engine() Engine { return db.engine }

// Close closes every connection. SQLite checkpoints the WAL when the last
// connection closes, so a cleanly stopped server leaves one database file.
func (db *DB) Close() error {
	// The writer closes last: a read-only connection cannot checkpoint,
	// so when one is the last to close, the WAL stays behind. The writer
	// may have no connection open (a cancelled transaction discards its
	// connection), so it gets one first.
	if db.engine == SQLite {
		_ = db.writer.Ping()
	}
	err := errors.Join(db.readStmts.close(), db.writeStmts.close(), db.reader.Close(), waitClosed(db.reader))
	if db.writers != nil {
		err = errors.Join(err, db.writers.Close(), waitClosed(db.writers))
	}
	return errors.Join(err, db.writer.Close(), waitClosed(db.writer))
}

// waitClosed waits for pool's connections to close. sql.DB.Close leaves a
// connection still in use open until it is released: a transaction whose
// context was cancelled is rolled back by a goroutine of database/sql,
// after its caller has returned. Closing means closed, so that the files
// can be copied or removed once Close returns.
func waitClosed(pool *sql.DB) error {
	deadline := time.Now().Add(closeWait)
	for pool.Stats().OpenConnections > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("close database: connections still in use after %s", closeWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// closeWait bounds how long Close waits for connections in use; SQLite's
// busy timeout is the longest a statement waits for a lock.
const closeWait = 15 * time.Second

// rewrite turns $1 placeholders into ?1, leaving string literals alone.
// PostgreSQL takes the query as written.
func (db *DB) rewrite(query string) string {
	if db.engine == Postgres {
		return query
	}
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
	if db.engine == Postgres {
		return db.writer.ExecContext(ctx, query, pgArgs(args)...)
	}
	q := db.rewrite(query)
	if st := db.writeStmts.get(ctx, db.writer, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return db.writer.ExecContext(ctx, q, args...)
}

// QueryContext runs a read on the reader pool.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if db.engine == Postgres {
		return db.reader.QueryContext(ctx, query, pgArgs(args)...)
	}
	q := db.rewrite(query)
	if st := db.readStmts.get(ctx, db.reader, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return db.reader.QueryContext(ctx, q, args...)
}

// QueryRowContext runs a single-row read on the reader pool.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if db.engine == Postgres {
		return db.reader.QueryRowContext(ctx, query, pgArgs(args)...)
	}
	q := db.rewrite(query)
	if st := db.readStmts.get(ctx, db.reader, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.reader.QueryRowContext(ctx, q, args...)
}

// Tx is a write transaction. Its reads see its own writes.
type Tx struct {
	tx          *sql.Tx // SQLite's; on PostgreSQL the transaction is pipe's
	db          *DB
	afterCommit []func()
	// pipe holds the writes queued by ExecLater on PostgreSQL (see
	// pipeline.go).
	pipe pipeline
}

// AfterCommit runs f once the transaction has committed (not if it rolls
// back), before WithTx returns: for in-memory state that must change only
// with the data it mirrors.
func (t *Tx) AfterCommit(f func()) { t.afterCommit = append(t.afterCommit, f) }

// stmt returns the transaction's use of the writer's prepared statement
// of query (database/sql reuses the one already prepared on the writer
// connection), or nil to run the query unprepared. A query not prepared
// yet cannot be prepared here: the transaction holds the only writer
// connection. It runs unprepared, and is prepared in the background once
// the connection is free.
func (t *Tx) stmt(ctx context.Context, query string) *sql.Stmt {
	if t.db.engine == Postgres {
		// pgx prepares and caches each query per connection itself.
		return nil
	}
	if st, ok := t.db.writeStmts.lookup(query); ok {
		return t.tx.StmtContext(ctx, st)
	}
	if t.db.writeStmts.preparing(query) {
		go t.db.writeStmts.prepareInBackground(t.db.writer, query)
	}
	return nil
}

func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := t.pipe.flush(ctx); err != nil {
		return nil, err
	}
	q := t.db.rewrite(query)
	if st := t.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	if t.pipe.conn != nil {
		return t.pipe.conn.ExecContext(ctx, q, t.db.args(args)...)
	}
	return t.tx.ExecContext(ctx, q, t.db.args(args)...)
}
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := t.pipe.flush(ctx); err != nil {
		return nil, err
	}
	q := t.db.rewrite(query)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	if t.pipe.conn != nil {
		return t.pipe.conn.QueryContext(ctx, q, t.db.args(args)...)
	}
	return t.tx.QueryContext(ctx, q, t.db.args(args)...)
}
func (t *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	// A failed flush aborts the PostgreSQL transaction: the query then
	// fails too, and the commit returns the flush's error.
	_ = t.pipe.flush(ctx)
	q := t.db.rewrite(query)
	if st := t.stmt(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	if t.pipe.conn != nil {
		return t.pipe.conn.QueryRowContext(ctx, q, t.db.args(args)...)
	}
	return t.tx.QueryRowContext(ctx, q, t.db.args(args)...)
}

// WithTx runs fn in a write transaction on the writer connection, committing
// if fn returns nil and rolling back otherwise. Transactions of WithTx run
// one at a time, so they commit in the order they began.
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	return db.withTx(ctx, db.writer, fn)
}

// ConcurrentWriters is how many WithConcurrentTx transactions can run at
// once: Options.Writers on PostgreSQL, 1 on SQLite.
func (db *DB) ConcurrentWriters() int {
	if db.writers == nil {
		return 1
	}
	return db.writers.Stats().MaxOpenConnections
}

// WithConcurrentTx is WithTx for writers that do not need transactions to
// commit one at a time: on PostgreSQL it runs on a pool of connections, so
// that several commit at once, alongside WithTx's writer. Its caller keeps
// its own order (the room server: one transaction per room at a time, and
// stream positions from a sequence, published in order by
// streampos.Writers), and retries a transaction that fails with
// IsConflict. On SQLite, which has one writer, it is WithTx.
func (db *DB) WithConcurrentTx(ctx context.Context, fn func(tx *Tx) error) error {
	if db.writers == nil {
		return db.WithTx(ctx, fn)
	}
	return db.withTx(ctx, db.writers, fn)
}

func (db *DB) withTx(ctx context.Context, pool *sql.DB, fn func(tx *Tx) error) error {
	tx, err := db.runTx(ctx, pool, fn)
	if err != nil {
		return err
	}
	for _, f := range tx.afterCommit {
		f()
	}
	return nil
}

// runTx runs fn in a transaction on pool, committing if fn returns nil and
// rolling back otherwise.
func (db *DB) runTx(ctx context.Context, pool *sql.DB, fn func(tx *Tx) error) (*Tx, error) {
	if db.engine == Postgres {
		// The transaction holds its connection, and begins on it lazily
		// (pipeline.go).
		conn, err := pool.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("begin transaction: %w", err)
		}
		defer conn.Close()
		tx := &Tx{db: db, pipe: pipeline{conn: conn}}
		if err := fn(tx); err != nil {
			tx.pipe.rollback(ctx)
			return nil, err
		}
		if err := tx.pipe.commit(ctx); err != nil {
			tx.pipe.rollback(ctx)
			return nil, err
		}
		return tx, nil
	}
	sqlTx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{tx: sqlTx, db: db}
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback()
		return nil, err
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, fmt.Errorf("commit transaction: %w", err)
	}
	return tx, nil
}

// Migration is one numbered schema change of a domain. Released migrations
// are never edited: a change to the schema is a new migration.
type Migration struct {
	Version int
	SQL     string
	// Postgres, when set, replaces SQL on PostgreSQL, for the few
	// migrations whose meaning cannot be kept by translating the text
	// (see translateDDL): SQLite's FTS5, json_extract.
	Postgres string
}

// Migrate brings a domain's tables up to date, each migration in its own
// transaction together with the record that it ran. On PostgreSQL each
// transaction first takes an advisory lock, so that two processes starting
// together run each migration once (SQLite's write lock does the same).
func (db *DB) Migrate(ctx context.Context, domain string, migrations []Migration) error {
	err := db.WithTx(ctx, func(tx *Tx) error {
		if err := db.lockMigrations(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			domain TEXT NOT NULL,
			version INTEGER NOT NULL,
			PRIMARY KEY (domain, version)
		)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for i, m := range migrations {
		if m.Version != i+1 {
			return fmt.Errorf("%s migration %d is numbered %d: migrations must be numbered 1, 2, 3, ...", domain, i+1, m.Version)
		}
		err := db.WithTx(ctx, func(tx *Tx) error {
			if err := db.lockMigrations(ctx, tx); err != nil {
				return err
			}
			var done int
			err := tx.QueryRowContext(ctx,
				`SELECT COUNT(*) FROM schema_migrations WHERE domain = $1 AND version = $2`,
				domain, m.Version).Scan(&done)
			if err != nil || done > 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, db.migrationSQL(m)); err != nil {
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

// Strings runs a query whose rows are one text column and returns them in
// order (an empty, non-nil slice when there are none).
func Strings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Int64s runs a query whose rows are one integer column and returns them
// in order (an empty, non-nil slice when there are none).
func Int64s(ctx context.Context, q Querier, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []int64{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
