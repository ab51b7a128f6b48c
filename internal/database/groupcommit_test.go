package database

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestGroupWriter: concurrent writes all commit, a failing write fails
// alone (its group is retried one by one), Later reports its outcome, and
// Close commits what was queued before it.
func TestGroupWriter(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE g (n INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	w := NewGroupWriter(db, 16)
	insert := func(n int) func(tx *Tx) error {
		return func(tx *Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO g (n) VALUES ($1)`, n)
			return err
		}
	}
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%10 == 7 {
				errs[i] = w.Do(ctx, func(tx *Tx) error {
					if err := insert(1000 + i)(tx); err != nil {
						return err
					}
					return boom // rolls back its own insert
				})
				return
			}
			errs[i] = w.Do(ctx, insert(i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%10 == 7; want != errors.Is(err, boom) || (!want && err != nil) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	later := make(chan error, 1)
	w.Later(insert(500), func(err error) { later <- err })
	w.Later(insert(500), func(err error) { later <- err }) // a duplicate key
	first, second := <-later, <-later
	if (first == nil) == (second == nil) {
		t.Errorf("the two Later writes of one key: %v, %v", first, second)
	}
	w.Close()
	if err := w.Do(ctx, insert(600)); !errors.Is(err, ErrWriterClosed) {
		t.Errorf("Do after Close: %v", err)
	}
	var count, failed int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(CASE WHEN n >= 1000 THEN 1 END) FROM g`).Scan(&count, &failed); err != nil {
		t.Fatal(err)
	}
	if count != 91 || failed != 0 {
		t.Errorf("rows: %d (%d of failed writes), want 91 (0)", count, failed)
	}
}
