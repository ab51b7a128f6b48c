package roomserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// Event stream positions in a cluster (docs/scaling.md, "Stream positions
// across processes"), as Synapse's multi-writer streams do it:
//
//   - Positions come from the sequence events_stream_pos, which every
//     process shares: transactions of different processes commit in any
//     order, at the same time.
//   - Each process (writer) publishes its persisted-up-to position in
//     event_stream_writers: a bound below which it will never commit an
//     event again. Its commit transaction raises it to the sequence's
//     value as it stands after the transaction took its positions (the
//     process commits one event transaction at a time, so all it took is
//     in that transaction), with a NOTIFY of the new bound.
//   - A reader (this process's catch-up, and through it sync, the
//     application services and everything else that reads "the current
//     position") goes up to the minimum of the live writers' bounds: an
//     event that commits late, below a position another writer has
//     committed, is waited for, never skipped.
//   - A writer that takes positions holds a transaction-level shared
//     advisory lock on its name until its transaction ends. A reader that
//     can take the lock exclusively knows the writer has nothing in
//     flight, and raises its bound to the sequence's value for itself
//     (probe): so an idle writer, or one whose process died (its
//     transaction rolled back with its session), holds nobody back and
//     has nothing to publish.
//   - A process that stops counts itself out (alive = false) so that no
//     one probes it; it checks, under its shared lock, that it is counted
//     in before taking positions, and registers again when it is not.

// writersTable holds each writer's bound. It is created at start rather
// than by a migration: like the sequence, it exists only on PostgreSQL.
const writersTable = "event_stream_writers"

// writerLockClass is the first key of the writers' advisory locks; the
// second is hashtext(instance). A collision of two names only makes a
// writer look busy for longer.
const writerLockClass = 0x7e55

// watchEvery is how often a process publishes what no notification
// announced (watchWriters).
const watchEvery = 500 * time.Millisecond

// errWriterDead fails a transaction of a writer that is counted out (a
// process of the same name stopped); it registers again and the
// transaction is retried.
var errWriterDead = errors.New("this process is counted out of the event writers")

// clusterPositions is a clustered process's view of the writers.
type clusterPositions struct {
	me string

	mu     sync.Mutex
	bounds map[string]int64 // each writer's persisted-up-to position
	dead   map[string]bool  // counted out (stopped)

	// ready holds this process's committed batches that wait for lower
	// positions of other writers; guarded by the Service's applyMu.
	ready []ownBatch

	stop chan struct{}
	done sync.WaitGroup
}

// ownBatch is one of this process's committed transactions.
type ownBatch struct {
	ids  []int64 // ascending; not empty
	reqs []*commitReq
}

// clusterPositionsStart sets up the sequence and the writers' table,
// registers this process as a writer and sets the position published so
// far. Called before anything is committed.
func (s *Service) clusterPositionsStart(ctx context.Context) error {
	cl := s.cfg.Cluster
	cp := &clusterPositions{
		me:     cl.Instance,
		bounds: map[string]int64{}, dead: map[string]bool{},
		stop: make(chan struct{}),
	}
	for _, q := range []string{
		`CREATE SEQUENCE IF NOT EXISTS ` + positionSeq + ` MINVALUE 0 INCREMENT BY ` + strconv.Itoa(positionBlock),
		`CREATE TABLE IF NOT EXISTS ` + writersTable + ` (instance TEXT PRIMARY KEY, pos BIGINT NOT NULL, alive BOOLEAN NOT NULL)`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil && !database.IsConflict(err) && !isDuplicate(err) {
			return fmt.Errorf("create event writers' positions: %w", err)
		}
	}
	if err := s.seqPastStored(ctx); err != nil {
		return err
	}
	s.cpos = cp
	if err := s.registerWriter(ctx); err != nil {
		return err
	}
	if err := s.loadWriters(ctx); err != nil {
		return err
	}
	// Start below anything another writer may still commit.
	c := s.commit
	start := min(c.lastPos, cp.target())
	c.published, c.localPublished = start, start
	s.recent = newRecentEvents(recentPerRoom, recentRooms, start)
	cp.done.Add(1)
	go s.watchWriters()
	return nil
}

// seqPastStored moves the sequence past every stored position (stored by
// one process, or by the advisory lock of earlier releases) and past its
// start, whose first value, 0, would reserve the positions below it. With
// nextval, not setval: another process may be taking positions already,
// and setval could move the sequence back under it.
func (s *Service) seqPastStored(ctx context.Context) error {
	var stored int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&stored); err != nil {
		return fmt.Errorf("read stream position: %w", err)
	}
	for {
		var last int64
		var called bool
		if err := s.db.QueryRowContext(ctx, `SELECT last_value, is_called FROM `+positionSeq).Scan(&last, &called); err != nil {
			return fmt.Errorf("read stream position sequence: %w", err)
		}
		if called && last >= stored {
			return nil
		}
		n := max(stored-last, 0)/positionBlock + 1
		if _, err := s.db.ExecContext(ctx, `SELECT MAX(nextval('`+positionSeq+`')) FROM generate_series(1, $1)`, n); err != nil {
			return fmt.Errorf("move stream position sequence: %w", err)
		}
	}
}

// isDuplicate reports a CREATE ... IF NOT EXISTS that lost a race with
// another process creating the same object.
func isDuplicate(err error) bool {
	var code interface{ SQLState() string }
	return errors.As(err, &code) && (code.SQLState() == "23505" || code.SQLState() == "42P07")
}

// registerWriter counts this process in as a writer, with a bound no
// position it takes from now on can be below, and tells the others.
func (s *Service) registerWriter(ctx context.Context) error {
	me := s.cpos.me
	err := s.db.WithConcurrentTx(ctx, func(tx *database.Tx) error {
		// Exclusively: a transaction of ours in flight (taken before we
		// were counted out, and about to fail) is waited for.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, writerLockClass, me); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `WITH u AS (
			INSERT INTO `+writersTable+` (instance, pos, alive) VALUES ($1, (SELECT last_value FROM `+positionSeq+`), TRUE)
			ON CONFLICT (instance) DO UPDATE SET alive = TRUE, pos = GREATEST(`+writersTable+`.pos, excluded.pos)
			RETURNING pos)
			SELECT pg_notify($2, $1::text || ' alive ' || pos) FROM u`, me, eventsChannel)
		return err
	})
	if err != nil {
		return fmt.Errorf("register as an event writer: %w", err)
	}
	return nil
}

// loadWriters reads every writer's bound (at start, and after the
// listener reconnects: notifications may have been lost).
func (s *Service) loadWriters(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT instance, pos, alive FROM `+writersTable)
	if err != nil {
		return fmt.Errorf("read event writers: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var pos int64
		var alive bool
		if err := rows.Scan(&name, &pos, &alive); err != nil {
			return fmt.Errorf("read event writers: %w", err)
		}
		s.cpos.heard(name, pos, alive)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read event writers: %w", err)
	}
	return nil
}

// heard records a writer's bound and state. Notifications arrive in
// commit order, so a later one about a writer is newer.
func (cp *clusterPositions) heard(name string, pos int64, alive bool) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.bounds[name] = max(cp.bounds[name], pos)
	cp.dead[name] = !alive
}

// lagging returns the live writers other than this one whose bound is
// below the highest: the ones to probe.
func (cp *clusterPositions) lagging() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	top := cp.maxLocked()
	var out []string
	for name, b := range cp.bounds {
		if name != cp.me && !cp.dead[name] && b < top {
			out = append(out, name)
		}
	}
	return out
}

// maxLocked is the highest bound any writer has published.
func (cp *clusterPositions) maxLocked() int64 {
	var m int64
	for _, b := range cp.bounds {
		m = max(m, b)
	}
	return m
}

// target is the position this process may read up to: the lowest bound
// of the other live writers (it has nothing in flight itself when it
// reads: its one event transaction at a time runs under applyMu), and at
// most the highest bound published.
func (cp *clusterPositions) target() int64 {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	t := int64(math.MaxInt64)
	for name, b := range cp.bounds {
		if name != cp.me && !cp.dead[name] {
			t = min(t, b)
		}
	}
	return min(t, cp.maxLocked())
}

// takePositions, in a commit transaction, takes n stream positions from
// the sequence, after checking that this process is still counted in as a
// writer. The shared lock on its name, held until the transaction ends,
// keeps the others from counting it out meanwhile.
func (s *Service) takePositions(ctx context.Context, tx *database.Tx, n int) ([]int64, error) {
	me := s.cpos.me
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared($1, hashtext($2))`, writerLockClass, me); err != nil {
		return nil, fmt.Errorf("lock event writer: %w", err)
	}
	blocks := (n + positionBlock - 1) / positionBlock
	rows, err := tx.QueryContext(ctx, `SELECT nextval('`+positionSeq+`') FROM generate_series(1, $1)
		WHERE (SELECT alive FROM `+writersTable+` WHERE instance = $2)`, blocks, me)
	if err != nil {
		return nil, fmt.Errorf("take stream positions: %w", err)
	}
	defer rows.Close()
	var tops []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("take stream positions: %w", err)
		}
		tops = append(tops, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("take stream positions: %w", err)
	}
	if len(tops) == 0 {
		return nil, errWriterDead
	}
	// Each nextval reserves the block (v-positionBlock, v]; what this
	// transaction does not use of it is a gap, which readers skip.
	slices.Sort(tops)
	ids := make([]int64, 0, n)
	for _, v := range tops {
		for p := v - positionBlock + 1; p <= v && len(ids) < n; p++ {
			ids = append(ids, p)
		}
	}
	return ids, nil
}

// publishBound, the last write of a commit transaction that took
// positions, raises this writer's bound to the sequence's value (every
// position it took is in this transaction, which commits with it) and
// tells the others.
func (s *Service) publishBound(ctx context.Context, tx *database.Tx) error {
	return tx.ExecLater(ctx, `WITH u AS (
		UPDATE `+writersTable+` SET pos = GREATEST(pos, (SELECT last_value FROM `+positionSeq+`)) WHERE instance = $1 RETURNING pos)
		SELECT pg_notify($2, $1::text || ' alive ' || pos) FROM u`, s.cpos.me, eventsChannel)
}

// watchWriters publishes, every watchEvery, what no notification
// announced: the positions a writer that died mid-transaction held back
// (its lock is free now), and what a failed catch-up left.
func (s *Service) watchWriters() {
	cp := s.cpos
	defer cp.done.Done()
	ctx := context.Background()
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-cp.stop:
			return
		case <-t.C:
		}
		s.applyMu.Lock()
		if err := s.advance(ctx); err != nil {
			s.log.WithError(err).Error("reading other processes' events")
		}
		s.applyMu.Unlock()
	}
}

// probe raises the bounds of the writers in names that have no
// transaction in flight (their lock is free) to the sequence's value:
// every position they take from now on is above it. One statement, in a
// transaction of its own: the locks it takes end with it. The value is
// read in the same statement, before or after the locks, both of which
// are safe: a transaction a writer started before the lock was taken
// would hold it.
func (s *Service) probe(ctx context.Context, names []string) error {
	rows, err := s.db.QueryContext(ctx, `SELECT w, pg_try_advisory_xact_lock($1, hashtext(w)), (SELECT last_value FROM `+positionSeq+`)
		FROM unnest($2::text[]) AS w`, writerLockClass, names)
	if err != nil {
		return fmt.Errorf("probe event writers: %w", err)
	}
	defer rows.Close()
	cp := s.cpos
	for rows.Next() {
		var name string
		var idle bool
		var last int64
		if err := rows.Scan(&name, &idle, &last); err != nil {
			return fmt.Errorf("probe event writers: %w", err)
		}
		if idle {
			cp.mu.Lock()
			cp.bounds[name] = max(cp.bounds[name], last)
			cp.mu.Unlock()
		}
	}
	return rows.Err()
}

// clusterStop stops the background work and counts this process out, so
// that the others do not wait for it. Called after the committer stopped.
func (s *Service) clusterStop() {
	cp := s.cpos
	if cp == nil {
		return
	}
	close(cp.stop)
	cp.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.db.WithConcurrentTx(ctx, func(tx *database.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, writerLockClass, cp.me); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `WITH u AS (
			UPDATE `+writersTable+` SET alive = FALSE, pos = GREATEST(pos, (SELECT last_value FROM `+positionSeq+`))
			WHERE instance = $1 RETURNING pos)
			SELECT pg_notify($2, $1::text || ' dead ' || pos) FROM u`, cp.me, eventsChannel)
		return err
	})
	if err != nil {
		s.log.WithError(err).Warn("counting this process out of the event writers")
	}
}

// committed publishes this process's committed transaction (its events at
// ids) once every lower position of the other writers has committed. The
// caller holds applyMu.
func (s *Service) committed(ctx context.Context, batch []*commitReq, ids []int64) {
	s.cpos.ready = append(s.cpos.ready, ownBatch{ids: ids, reqs: batch})
	if err := s.advance(ctx); err != nil {
		// Published by a later advance (the watcher retries).
		s.log.WithError(err).Error("reading other processes' events")
	}
}

// advance publishes, in stream order, the events up to the target: the
// other processes' from the database, this process's own committed
// batches from memory. The caller holds applyMu.
func (s *Service) advance(ctx context.Context) error {
	cp := s.cpos
	from := atomic.LoadInt64(&s.commit.published)
	if lag := cp.lagging(); len(lag) > 0 {
		// An idle writer publishes nothing: it is probed instead.
		if err := s.probe(ctx, lag); err != nil {
			return err
		}
	}
	to := cp.target()
	slices.SortFunc(cp.ready, func(a, b ownBatch) int { return cmp.Compare(a.ids[0], b.ids[0]) })
	k := 0
	for k < len(cp.ready) && cp.ready[k].ids[len(cp.ready[k].ids)-1] <= to {
		k++
	}
	if k < len(cp.ready) {
		// A batch is published whole: not past its first position.
		to = min(to, cp.ready[k].ids[0]-1)
	}
	if to <= from {
		return nil
	}
	own := cp.ready[:k]
	mine := map[int64]bool{}
	for _, b := range own {
		for _, id := range b.ids {
			mine[id] = true
		}
	}
	evs, err := s.queryEvents(ctx, `SELECT event_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos`, from, to)
	if err != nil {
		return fmt.Errorf("read events %d to %d: %w", from, to, err)
	}
	others := evs[:0]
	for _, ev := range evs {
		if !mine[ev.StreamPos] {
			others = append(others, ev)
		}
	}
	var reqs []*commitReq
	for _, b := range own {
		reqs = append(reqs, b.reqs...)
	}
	cp.ready = slices.Delete(cp.ready, 0, k)
	s.applyMerged(reqs, others, from, to)
	return nil
}
