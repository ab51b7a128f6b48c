package database_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/database/dbtest"
)

// These run on the engine the test run asks for (see package dbtest):
// the helpers whose SQL differs between the engines.

func TestEngineUniqueViolation(t *testing.T) {
	db := dbtest.Open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE u (k TEXT PRIMARY KEY, v TEXT UNIQUE)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO u (k, v) VALUES ($1, $2)`, "a", "x"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]any{{"a", "y"}, {"b", "x"}} {
		_, err := db.ExecContext(ctx, `INSERT INTO u (k, v) VALUES ($1, $2)`, args...)
		if !database.IsUniqueViolation(err) {
			t.Errorf("insert %v: %v is not a unique violation", args, err)
		}
	}
	_, err := db.ExecContext(ctx, `INSERT INTO nope (k) VALUES ($1)`, "a")
	if err == nil || database.IsUniqueViolation(err) || database.IsUniqueViolation(errors.New("x")) {
		t.Errorf("other errors count as unique violations: %v", err)
	}
}

func TestEngineJSONValuesAndBooleans(t *testing.T) {
	db := dbtest.Open(t)
	ctx := context.Background()
	err := db.Migrate(ctx, "t", []database.Migration{{Version: 1, SQL: `
		CREATE TABLE f (id INTEGER PRIMARY KEY, name TEXT NOT NULL, flag INTEGER NOT NULL, big INTEGER NOT NULL);`}})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a", "b", "c"} {
		// 1<<40 overflows a 32-bit INTEGER: the translation must give BIGINT.
		if _, err := db.ExecContext(ctx, `INSERT INTO f (name, flag, big) VALUES ($1, $2, $3)`, name, i%2 == 0, int64(1)<<40+int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT id, name, flag, big FROM f WHERE name IN `+db.JSONValues("$1")+` ORDER BY id`, `["a","c","zz"]`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id, big int64
		var name string
		var flag bool
		if err := rows.Scan(&id, &name, &flag, &big); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d %s %v %d", id, name, flag, big))
	}
	want := fmt.Sprintf("[1 a true %d 3 c true %d]", int64(1)<<40, int64(1)<<40+2)
	if fmt.Sprint(got) != want {
		t.Fatalf("rows = %v, want %v", got, want)
	}
}

// TestEngineConcurrentMigrations: two processes (here two pools) starting
// together run each migration once.
func TestEngineConcurrentMigrations(t *testing.T) {
	if !dbtest.Postgres() {
		t.Skip("SQLite's write lock serialises migrations; this is PostgreSQL's advisory lock")
	}
	dsn := dbtest.CreatePostgres(t)
	ctx := context.Background()
	migs := []database.Migration{
		{Version: 1, SQL: `CREATE TABLE m (x INTEGER); INSERT INTO m VALUES (1);`},
		{Version: 2, SQL: `INSERT INTO m VALUES (2);`},
	}
	dbs := make([]*database.DB, 4)
	for i := range dbs {
		db, err := database.OpenPostgres(ctx, dsn, database.Options{Readers: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, len(dbs))
	for i, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = db.Migrate(ctx, "m", migs)
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	db, err := database.OpenPostgres(ctx, dsn, database.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	xs, err := database.Int64s(ctx, db, `SELECT x FROM m ORDER BY x`)
	if err != nil || fmt.Sprint(xs) != "[1 2]" {
		t.Fatalf("rows = %v, %v; want each migration once", xs, err)
	}
}

func TestEngineJSONText(t *testing.T) {
	db := dbtest.Open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE j (json TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO j (json) VALUES ($1)`,
		`{"content":{"membership":"join","m.relates_to":{"rel_type":"m.thread"}}}`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		keys []string
		want sql.NullString
	}{
		{[]string{"content", "membership"}, sql.NullString{String: "join", Valid: true}},
		{[]string{"content", "m.relates_to", "rel_type"}, sql.NullString{String: "m.thread", Valid: true}},
		{[]string{"content", "nope"}, sql.NullString{}},
	} {
		var got sql.NullString
		if err := db.QueryRowContext(ctx, `SELECT `+db.JSONText("json", tt.keys...)+` FROM j`).Scan(&got); err != nil || got != tt.want {
			t.Errorf("JSONText %v = %v, %v; want %v", tt.keys, got, err, tt.want)
		}
	}
}

// ExecLater's writes are seen by the transaction's next statement, in
// order, and are committed with it; a failing one fails the commit and
// rolls back the writes before it.
func TestEngineExecLater(t *testing.T) {
	db := dbtest.Open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE l (k TEXT PRIMARY KEY, n INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	err := db.WithTx(ctx, func(tx *database.Tx) error {
		for i := range 5 {
			if err := tx.ExecLater(ctx, `INSERT INTO l (k, n) VALUES ($1, $2)`, fmt.Sprint("k", i), i); err != nil {
				return err
			}
		}
		if err := tx.ExecLater(ctx, `UPDATE l SET n = n + 10 WHERE k = $1`, "k4"); err != nil {
			return err
		}
		var sum int64
		if err := tx.QueryRowContext(ctx, `SELECT SUM(n) FROM l`).Scan(&sum); err != nil {
			return err
		}
		if sum != 20 {
			t.Errorf("inside the transaction: sum %d, want 20", sum)
		}
		return tx.ExecLater(ctx, `INSERT INTO l (k, n) VALUES ($1, $2)`, "last", true)
	})
	if err != nil {
		t.Fatal(err)
	}
	var n, sum int64
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(n) FROM l`).Scan(&n, &sum); err != nil || n != 6 || sum != 21 {
		t.Fatalf("after commit: %d rows, sum %d, %v; want 6 rows, sum 21", n, sum, err)
	}

	err = db.WithTx(ctx, func(tx *database.Tx) error {
		if err := tx.ExecLater(ctx, `INSERT INTO l (k, n) VALUES ($1, $2)`, "new", 1); err != nil {
			return err
		}
		// A duplicate key: on PostgreSQL it fails only when sent, at
		// the commit.
		return tx.ExecLater(ctx, `INSERT INTO l (k, n) VALUES ($1, $2)`, "k0", 1)
	})
	if !database.IsUniqueViolation(err) {
		t.Fatalf("duplicate queued write: %v, want a unique violation", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM l`).Scan(&n); err != nil || n != 6 {
		t.Fatalf("after the failed transaction: %d rows, %v; want the 6 from before", n, err)
	}
}

// TestEngineConcurrentTx: on PostgreSQL two WithConcurrentTx transactions
// run at once (the first commits only after the second has), alongside
// WithTx's writer; on SQLite there is one writer, so they take turns.
func TestEngineConcurrentTx(t *testing.T) {
	db := dbtest.Open(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE c (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if db.Engine() == database.SQLite {
		if n := db.ConcurrentWriters(); n != 1 {
			t.Fatalf("SQLite has %d concurrent writers, want 1", n)
		}
	} else if n := db.ConcurrentWriters(); n < 2 {
		t.Fatalf("PostgreSQL has %d concurrent writers, want at least 2", n)
	}
	second := make(chan error, 1)
	err := db.WithConcurrentTx(ctx, func(tx *database.Tx) error {
		if err := tx.ExecLater(ctx, `INSERT INTO c (k) VALUES ($1)`, "first"); err != nil {
			return err
		}
		if db.ConcurrentWriters() == 1 {
			return nil
		}
		go func() {
			second <- db.WithConcurrentTx(ctx, func(tx *database.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO c (k) VALUES ($1)`, "second")
				return err
			})
		}()
		// The second commits while this one is open; WithTx's writer
		// is free too.
		if err := <-second; err != nil {
			return fmt.Errorf("second transaction: %w", err)
		}
		return db.WithTx(ctx, func(tx *database.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO c (k) VALUES ($1)`, "third")
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first"}
	if db.ConcurrentWriters() > 1 {
		want = []string{"first", "second", "third"}
	}
	got, err := database.Strings(ctx, db, `SELECT k FROM c ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
}

// TestEngineTxEnds: whichever way a transaction ends (its function fails
// before or after a statement was sent, a statement fails and the
// function carries on, a queued write fails at the commit), nothing of it
// is kept and its connection goes back to the pool outside any
// transaction: the transactions after it, more than the pools have
// connections, are each atomic and see only committed rows.
func TestEngineTxEnds(t *testing.T) {
	db := dbtest.Open(t)
	// A connection left inside a transaction holds its locks: the next
	// writer would wait for ever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE TABLE e (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO e (k) VALUES ('kept')`); err != nil {
		t.Fatal(err)
	}
	errFn := errors.New("fn failed")
	ends := []struct {
		name string
		fn   func(tx *database.Tx, k string) error
		want func(error) bool
	}{
		{"fails before any statement", func(tx *database.Tx, k string) error {
			return errFn
		}, func(err error) bool { return errors.Is(err, errFn) }},
		{"fails with writes queued", func(tx *database.Tx, k string) error {
			if err := tx.ExecLater(ctx, `INSERT INTO e (k) VALUES ($1)`, k); err != nil {
				return err
			}
			return errFn
		}, func(err error) bool { return errors.Is(err, errFn) }},
		{"fails after a statement", func(tx *database.Tx, k string) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO e (k) VALUES ($1)`, k); err != nil {
				return err
			}
			return errFn
		}, func(err error) bool { return errors.Is(err, errFn) }},
		{"carries on after a failed statement", func(tx *database.Tx, k string) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO e (k) VALUES ($1)`, k); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO e (k) VALUES ('kept')`); err == nil {
				return errors.New("duplicate key accepted")
			}
			if db.Engine() == database.SQLite {
				return errFn // SQLite's transaction goes on; end it here
			}
			return tx.ExecLater(ctx, `INSERT INTO e (k) VALUES ($1)`, k+"-after")
		}, func(err error) bool { return err != nil }},
		{"queued write fails at commit", func(tx *database.Tx, k string) error {
			if err := tx.ExecLater(ctx, `INSERT INTO e (k) VALUES ($1)`, k); err != nil {
				return err
			}
			return tx.ExecLater(ctx, `INSERT INTO e (k) VALUES ('kept')`)
		}, database.IsUniqueViolation},
	}
	rounds := 2 * (db.ConcurrentWriters() + 1)
	for i := range rounds {
		for _, end := range ends {
			k := fmt.Sprintf("%d %s", i, end.name)
			for _, with := range []func(context.Context, func(*database.Tx) error) error{db.WithTx, db.WithConcurrentTx} {
				if err := with(ctx, func(tx *database.Tx) error { return end.fn(tx, k) }); !end.want(err) {
					t.Fatalf("%s: %v", end.name, err)
				}
			}
		}
		// A transaction after them commits alone, on a connection that
		// is not inside an earlier transaction.
		ok := fmt.Sprint(i, " ok")
		err := db.WithConcurrentTx(ctx, func(tx *database.Tx) error {
			var n int64
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM e`).Scan(&n); err != nil {
				return err
			}
			if want := int64(1 + i); n != want {
				return fmt.Errorf("%d rows seen, want %d", n, want)
			}
			return tx.ExecLater(ctx, `INSERT INTO e (k) VALUES ($1)`, ok)
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	got, err := database.Strings(ctx, db, `SELECT k FROM e ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1+rounds || got[len(got)-1] != "kept" {
		t.Fatalf("rows %q, want 'kept' and one 'N ok' per round", got)
	}
}
