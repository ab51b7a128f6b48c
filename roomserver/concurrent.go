package roomserver

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// Concurrent event commits, on PostgreSQL in one process: several batches
// commit at once on the database's concurrent writers, instead of queueing
// for one connection's round trips and WAL flush.
//
//   - A room has at most one batch in flight, and its batches start in the
//     order they were submitted: its events commit in order, each batch on
//     the extremities and state the one before it left.
//   - Stream positions come from the sequence events_stream_pos, taken at
//     the start of the batch's transaction (streampos.Writers registers
//     them in the order they were taken). The sequence hands out blocks
//     of positionBlock, so that most transactions take theirs from memory
//     rather than with a round trip. Transactions may commit out of
//     position order, so a committed batch is published (caches, the
//     readers' position, its senders' answers, the listeners) only once
//     every lower position has committed or been abandoned: readers and
//     sync wake-ups never pass an event that commits late. Positions of a
//     transaction that failed are abandoned: a gap in the stream, which
//     readers do not need filled.

// positionSeq is the PostgreSQL sequence of event stream positions. It is
// created, and set after the largest stored position, at start: one process
// writes events outside a cluster, and clusters take their positions under
// a lock instead (cluster.go).
const positionSeq = "events_stream_pos"

// positionBlock is the sequence's increment: each nextval reserves the
// positions (v-positionBlock, v].
const positionBlock = 64

// maxConflictRetries bounds the runs of a transaction that PostgreSQL
// ended for a conflict with a concurrent one (a deadlock).
const maxConflictRetries = 5

type concurrentCommits struct {
	c         *committer
	positions *streampos.Writers
	// slots holds a token per transaction running.
	slots   chan struct{}
	running sync.WaitGroup

	mu       sync.Mutex
	cond     *sync.Cond
	inFlight map[string]bool // rooms with a batch being committed

	// ready holds committed batches waiting for lower positions to
	// finish; guarded by the Service's applyMu.
	ready []readyBatch

	// next to end: the positions of the reserved block not handed out
	// yet; used only by take, under the lock of positions.Allocate.
	next, end int64
}

type readyBatch struct {
	last int64 // the batch's highest position; 0 when it has none
	reqs []*commitReq
}

func newConcurrentCommits(ctx context.Context, c *committer) (*concurrentCommits, error) {
	db := c.s.db
	if _, err := db.ExecContext(ctx, `CREATE SEQUENCE IF NOT EXISTS `+positionSeq+` MINVALUE 0 INCREMENT BY `+strconv.Itoa(positionBlock)); err != nil {
		return nil, fmt.Errorf("create stream position sequence: %w", err)
	}
	// After the largest position stored (by a cluster, say, or migrate-db).
	// Positions the sequence handed out above it were never committed.
	if _, err := db.ExecContext(ctx, `SELECT setval('`+positionSeq+`', $1)`, c.lastPos); err != nil {
		return nil, fmt.Errorf("set stream position sequence: %w", err)
	}
	cc := &concurrentCommits{
		c:         c,
		next:      1,
		positions: streampos.NewWriters(c.lastPos),
		slots:     make(chan struct{}, db.ConcurrentWriters()),
		inFlight:  map[string]bool{},
	}
	cc.cond = sync.NewCond(&cc.mu)
	return cc, nil
}

// dispatch starts committing batch once none of its rooms has a batch in
// flight and a writer is free. Called by the committer's loop only, in
// submission order.
func (cc *concurrentCommits) dispatch(batch []*commitReq) {
	cc.mu.Lock()
	for slices.ContainsFunc(batch, func(r *commitReq) bool { return cc.inFlight[r.roomID] }) {
		cc.cond.Wait()
	}
	for _, r := range batch {
		cc.inFlight[r.roomID] = true
	}
	cc.mu.Unlock()
	cc.slots <- struct{}{}
	cc.running.Add(1)
	go func() {
		defer cc.running.Done()
		cc.commit(batch)
		<-cc.slots
		cc.mu.Lock()
		for _, r := range batch {
			delete(cc.inFlight, r.roomID)
		}
		cc.cond.Broadcast()
		cc.mu.Unlock()
	}()
}

// wait waits for the transactions running to end.
func (cc *concurrentCommits) wait() { cc.running.Wait() }

func (cc *concurrentCommits) commit(batch []*commitReq) {
	ctx := context.Background()
	n := 0
	for _, req := range batch {
		for _, pe := range req.events {
			if !pe.outlier {
				n++
			}
		}
	}
	var ids []int64
	var err error
	for attempt := 0; ; attempt++ {
		ids = nil
		err = cc.c.s.db.WithConcurrentTx(ctx, func(tx *database.Tx) error {
			var err error
			ids, err = cc.positions.Allocate(n, func(n int) ([]int64, error) { return cc.take(ctx, tx, n) })
			if err != nil {
				return fmt.Errorf("take stream positions: %w", err)
			}
			i := 0
			next := func() int64 { i++; return ids[i-1] }
			for _, req := range batch {
				if err := cc.c.writeRoomBatch(ctx, tx, req, next); err != nil {
					return fmt.Errorf("room %s: %w", req.roomID, err)
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		cc.finish(nil, ids) // abandoned
		cc.c.dropServers()  // it may hold what the failed transaction read
		if !database.IsConflict(err) || attempt == maxConflictRetries {
			break
		}
	}
	if err != nil {
		// One bad batch must not fail the others: retry each on its own.
		if len(batch) > 1 {
			for _, req := range batch {
				cc.commit([]*commitReq{req})
			}
			return
		}
		batch[0].done <- err
		return
	}
	cc.finish(batch, ids)
}

// take hands out n positions from the reserved block, reserving more from
// the sequence when it runs out. Called under the lock of
// positions.Allocate, which orders them.
func (cc *concurrentCommits) take(ctx context.Context, tx *database.Tx, n int) ([]int64, error) {
	ids := make([]int64, 0, n)
	for len(ids) < n {
		if cc.next > cc.end {
			var v int64
			if err := tx.QueryRowContext(ctx, `SELECT nextval('`+positionSeq+`')`).Scan(&v); err != nil {
				return nil, err
			}
			cc.next, cc.end = v-positionBlock+1, v
		}
		ids = append(ids, cc.next)
		cc.next++
	}
	return ids, nil
}

// finish marks ids finished (committed with batch, or abandoned when batch
// is nil) and publishes, in position order, every committed batch whose
// positions are now all below the persisted position.
func (cc *concurrentCommits) finish(batch []*commitReq, ids []int64) {
	if batch == nil && len(ids) == 0 {
		return
	}
	s := cc.c.s
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if batch != nil {
		var last int64
		if len(ids) > 0 {
			last = ids[len(ids)-1]
		}
		cc.ready = append(cc.ready, readyBatch{last: last, reqs: batch})
	}
	from, to := cc.positions.Finish(ids)
	slices.SortFunc(cc.ready, func(a, b readyBatch) int { return cmp.Compare(a.last, b.last) })
	k := 0
	var out []*commitReq
	for k < len(cc.ready) && cc.ready[k].last <= to {
		out = append(out, cc.ready[k].reqs...)
		k++
	}
	cc.ready = slices.Delete(cc.ready, 0, k)
	if len(out) > 0 || to > from {
		cc.c.apply(out, from, to)
	}
}
