package database

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "test.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestRewrite(t *testing.T) {
	db := &DB{}
	tests := []struct{ in, want string }{
		{"SELECT $1", "SELECT ?1"},
		{"UPDATE t SET a = $2 WHERE b = $1", "UPDATE t SET a = ?2 WHERE b = ?1"},
		{"SELECT '$1' || $1", "SELECT '$1' || ?1"},
		{"SELECT $12, $3", "SELECT ?12, ?3"},
		{"SELECT 'it''s $1', $1", "SELECT 'it''s $1', ?1"},
		{"SELECT $a", "SELECT $a"},
	}
	for _, tt := range tests {
		if got := db.rewrite(tt.in); got != tt.want {
			t.Errorf("rewrite(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPlaceholdersBindByNumber is why rewrite exists: with $N the driver
// binds by order of appearance, so $2 before $1 would swap the values.
func TestPlaceholdersBindByNumber(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO kv (v, k) VALUES ($2, $1)`, "key", "value"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := db.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = $1`, "key").Scan(&v); err != nil || v != "value" {
		t.Fatalf("v = %q, %v; want \"value\"", v, err)
	}
}

func TestMigrateOnceAndInOrder(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	migs := []Migration{
		{Version: 1, SQL: `CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);`},
		{Version: 2, SQL: `INSERT INTO a VALUES (2);`},
	}
	for i := 0; i < 3; i++ {
		if err := db.Migrate(ctx, "test", migs); err != nil {
			t.Fatalf("migrate run %d: %v", i, err)
		}
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM a`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows = %d, %v; want 2 (each migration once)", n, err)
	}
	bad := append(migs, Migration{Version: 4, SQL: `SELECT 1`})
	if err := db.Migrate(ctx, "test", bad); err == nil {
		t.Fatal("a gap in migration numbers was accepted")
	}
	failing := append(migs, Migration{Version: 3, SQL: `INSERT INTO a VALUES (3); INSERT INTO nope VALUES (1);`})
	if err := db.Migrate(ctx, "test", failing); err == nil {
		t.Fatal("a failing migration reported success")
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM a`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("a failed migration left rows behind: %d, %v", n, err)
	}
}

func TestWithTxRollsBack(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE a (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := db.WithTx(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO a VALUES ($1)`, 1); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM a`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows after rollback = %d, %v", n, err)
	}
}

func TestReadersAreReadOnly(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.QueryContext(ctx, `CREATE TABLE b (x INTEGER)`); err == nil {
		t.Fatal("a write through the reader pool succeeded")
	}
}

// TestDurabilitySettings: an acknowledged write must survive a crash, which
// needs WAL with synchronous=FULL (fsync on every commit) on the writer.
func TestDurabilitySettings(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	var mode string
	var sync, fk int
	err := db.WithTx(ctx, func(tx *Tx) error {
		if err := tx.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk)
	})
	if err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || sync != 2 || fk != 1 {
		t.Fatalf("journal_mode=%s synchronous=%d foreign_keys=%d; want wal, 2 (FULL), 1", mode, sync, fk)
	}
}

// TestPreparedStatements: queries run through cached prepared statements
// give the same results as unprepared ones, inside and outside
// transactions, the cache stays bounded, and multi-statement scripts still
// run every statement.
func TestPreparedStatements(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER); CREATE TABLE other (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO other (x) VALUES (1)`); err != nil {
		t.Fatalf("second statement of the script did not run: %v", err)
	}
	for i := range 20 {
		err := db.WithTx(ctx, func(tx *Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, fmt.Sprint(i), i); err != nil {
				return err
			}
			var n int
			return tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM kv`).Scan(&n)
		})
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := db.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = $1`, fmt.Sprint(i)).Scan(&v); err != nil || v != i {
			t.Fatalf("read %d back: %d, %v", i, v, err)
		}
	}
	// Background preparation of the transaction's statements finishes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := db.writeStmts.lookup(db.rewrite(`INSERT INTO kv (k, v) VALUES ($1, $2)`)); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the transaction's statement was never prepared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A bad query still reports its error.
	if _, err := db.QueryContext(ctx, `SELECT nope FROM kv`); err == nil {
		t.Fatal("a bad query succeeded")
	}
	// Many distinct queries: the cache stops growing, the queries still run.
	for i := range maxCachedStmts + 50 {
		var v int
		if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, i)).Scan(&v); err != nil || v != i {
			t.Fatalf("query %d: %d, %v", i, v, err)
		}
	}
	if n := len(db.readStmts.stmts); n > maxCachedStmts {
		t.Fatalf("%d cached statements, bound %d", n, maxCachedStmts)
	}
}

// TestCloseLeavesOneFile: once Close returns, the database is one file,
// even after a cancelled transaction made database/sql discard the writer
// connection (the readers, read-only, cannot checkpoint the WAL when they
// are the last to close), and with a statement still being prepared in
// the background.
func TestCloseLeavesOneFile(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(filepath.Join(dir, "test.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = db.WithTx(cctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(cctx, `INSERT INTO kv (k, v) VALUES ($1, $2)`, "a", "1"); err != nil {
			return err
		}
		// Cancelled while a statement runs: SQLite is interrupted.
		time.AfterFunc(20*time.Millisecond, cancel)
		var n int64
		return tx.QueryRowContext(cctx, `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c`).Scan(&n)
	})
	if err == nil {
		t.Fatal("a transaction whose context was cancelled committed")
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM kv`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows after the rollback: %d, %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != "test.db" {
		t.Fatalf("after Close the directory holds %v, want [test.db]", names)
	}
}
