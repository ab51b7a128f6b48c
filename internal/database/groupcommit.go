package database

import (
	"context"
	"errors"
	"sync"
)

// GroupWriter commits the writes queued to it in shared transactions
// (group commit), as the room server commits events: under load, many
// small writes that arrive together share one transaction and one fsync
// rather than queueing for one each. A write that fails is retried alone,
// so that it does not fail the others of its group.
type GroupWriter struct {
	db       *DB
	reqs     chan *groupReq
	stop     chan struct{}
	done     chan struct{}
	maxBatch int

	// mu guards closed: a write is queued under the read lock, so that
	// none is queued once Close has begun (it would wait forever).
	mu     sync.RWMutex
	closed bool
}

type groupReq struct {
	fn   func(tx *Tx) error
	done chan error
	// then, when set, is told the outcome (a write nobody waits for).
	then func(error)
}

// ErrWriterClosed is the outcome of a write queued after Close.
var ErrWriterClosed = errors.New("database: the group writer is closed")

// NewGroupWriter starts a writer whose transactions hold at most maxBatch
// writes. Close stops it.
func NewGroupWriter(db *DB, maxBatch int) *GroupWriter {
	w := &GroupWriter{db: db, reqs: make(chan *groupReq, maxBatch), stop: make(chan struct{}),
		done: make(chan struct{}), maxBatch: maxBatch}
	go w.loop()
	return w
}

// Do runs fn in the next shared transaction and returns once that has
// committed: fn's error, the commit's, or ctx's if it ends before fn is
// queued. fn may run twice (alone after its group failed): it must not
// keep state across calls other than what it assigns afresh.
func (w *GroupWriter) Do(ctx context.Context, fn func(tx *Tx) error) error {
	req := &groupReq{fn: fn, done: make(chan error, 1)}
	if err := w.enqueue(ctx, req); err != nil {
		return err
	}
	return <-req.done
}

func (w *GroupWriter) enqueue(ctx context.Context, req *groupReq) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrWriterClosed
	}
	select {
	case w.reqs <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Later queues fn without waiting; then is called with its outcome once
// it committed (or failed).
func (w *GroupWriter) Later(fn func(tx *Tx) error, then func(error)) {
	req := &groupReq{fn: fn, done: make(chan error, 1), then: then}
	if err := w.enqueue(context.Background(), req); err != nil {
		then(err)
	}
}

// Close commits what is queued and stops the writer.
func (w *GroupWriter) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
}

func (w *GroupWriter) loop() {
	defer close(w.done)
	for {
		var first *groupReq
		select {
		case first = <-w.reqs:
		case <-w.stop:
			// Finish what was queued.
			for {
				select {
				case r := <-w.reqs:
					w.commit([]*groupReq{r})
				default:
					return
				}
			}
		}
		batch := []*groupReq{first}
	drain:
		for len(batch) < w.maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		w.commit(batch)
	}
}

func (w *GroupWriter) commit(batch []*groupReq) {
	err := w.db.WithTx(context.Background(), func(tx *Tx) error {
		for _, r := range batch {
			if err := r.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		// One failing write must not fail the others.
		for _, r := range batch {
			w.commit([]*groupReq{r})
		}
		return
	}
	for _, r := range batch {
		r.done <- err
		if r.then != nil {
			r.then(err)
		}
	}
}
