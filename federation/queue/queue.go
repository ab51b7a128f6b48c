// Package queue holds what this server has to send other servers: one queue
// per destination of the PDUs and EDUs it is owed, kept in the database so
// that a restart loses nothing, delivered in transactions
// (PUT /_matrix/federation/v1/send/{txnId}) and retried with backoff while
// the destination is unreachable.
// https://spec.matrix.org/v1.19/server-server-api/#transactions
//
// A destination with something queued has one worker goroutine, which sends
// it one transaction at a time, as the spec requires ("The sending server
// must wait and retry for a 200 OK response before sending a transaction
// with a different txnId"). The worker exits once the queue is empty, so an
// idle destination costs nothing, and it reads its batches from the
// database, so a long outage costs disk rather than memory.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
)

// SendFunc delivers one transaction to t.Destination
// (PUT /_matrix/federation/v1/send/{txnId}). An error means "not delivered,
// retry later"; the retry carries the same transaction ID and content.
// The exception is an error that is (or wraps) a gomatrix.HTTPError with
// a 400 or 413: the destination refused the content for good, and sending
// it again cannot help (see Refused).
type SendFunc func(ctx context.Context, t gomatrixserverlib.Transaction) error

// Refused reports whether err is a destination's refusal of a transaction
// for good: 400 (say, JSON it will not parse) or 413 (too large). Retried
// as it is, such a transaction would block everything queued after it for
// ever. Other answers (401, 403, 404, 429, 5xx, no answer) may change, and
// are retried.
func Refused(err error) bool {
	var he gomatrix.HTTPError
	if !errors.As(err, &he) {
		return false
	}
	return he.Code == http.StatusBadRequest || he.Code == http.StatusRequestEntityTooLarge
}

// Config tunes a Queue.
type Config struct {
	// Origin is this server's name: the origin of every transaction, and a
	// destination we never send to.
	Origin spec.ServerName
	// MinBackoff is the wait after a destination's first failed send; it
	// doubles with each further failure up to MaxBackoff. Zero means
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Owns, in a deployment of several processes (docs/scaling.md),
	// reports whether this process sends to a destination: each
	// destination's queue has one sender, so that a PDU goes out once.
	// nil: every destination.
	Owns func(dest spec.ServerName) bool
	// Elsewhere is told, inside the transaction that queues something
	// for a destination another process sends to, to tell that process
	// to look (Kick) once the transaction commits (a NOTIFY). nil with
	// Owns nil.
	Elsewhere func(ctx context.Context, tx *database.Tx, dest spec.ServerName) error
}

// The default backoff: quick enough that a server that restarts is caught
// up within seconds, slow enough at the top that a server gone for good
// costs us a request an hour.
const (
	DefaultMinBackoff = 2 * time.Second
	DefaultMaxBackoff = time.Hour
)

// Queue is the set of outbound per-destination queues.
type Queue struct {
	db   *database.DB
	cfg  Config
	send SendFunc
	log  logrus.FieldLogger

	// ctx is what the workers run under; Close cancels it, which also
	// cancels an in-flight send.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	workers map[spec.ServerName]*worker // destinations with a running worker
	// health is what each destination's sends came to (destinations.go).
	health map[spec.ServerName]*Health
}

// worker is the state of one destination's worker goroutine.
type worker struct {
	// queued is set (under Queue.mu) when something is queued for the
	// destination after the worker last looked, so that the worker does
	// not exit on an empty read that raced with the new item's commit.
	queued bool
	// wake is signalled by Wake to cut a backoff short.
	wake chan struct{}
}

// New opens the queues in db, creating their tables if needed, and starts a
// worker for every destination that still has something queued from before
// a restart. ctx bounds the start-up; the workers run until Close.
func New(ctx context.Context, db *database.DB, cfg Config, send SendFunc, log logrus.FieldLogger) (*Queue, error) {
	if cfg.Origin == "" {
		return nil, errors.New("federation queue: Config.Origin is empty")
	}
	if send == nil {
		return nil, errors.New("federation queue: no SendFunc")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if err := db.Migrate(ctx, "federation_queue", migrations); err != nil {
		return nil, fmt.Errorf("federation queue: %w", err)
	}
	dests, err := queuedDestinations(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("federation queue: %w", err)
	}
	// The workers keep ctx's values (loggers, tracing) but not its
	// cancellation: they outlive the start-up.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	q := &Queue{
		db:      db,
		cfg:     cfg,
		send:    send,
		log:     log,
		ctx:     runCtx,
		cancel:  cancel,
		workers: map[spec.ServerName]*worker{},
		health:  map[spec.ServerName]*Health{},
	}
	for _, dest := range dests {
		if dest != cfg.Origin {
			q.kick(dest)
		}
	}
	return q, nil
}

// owns reports whether this process sends to dest.
func (q *Queue) owns(dest spec.ServerName) bool {
	return q.cfg.Owns == nil || q.cfg.Owns(dest)
}

// tellOwners tells the processes that send to dests, within tx, that
// something is queued for them.
func (q *Queue) tellOwners(ctx context.Context, tx *database.Tx, dests []spec.ServerName) error {
	if q.cfg.Elsewhere == nil {
		return nil
	}
	for _, d := range dests {
		if !q.owns(d) {
			if err := q.cfg.Elsewhere(ctx, tx, d); err != nil {
				return fmt.Errorf("tell the sender to %s: %w", d, err)
			}
		}
	}
	return nil
}

// Kick tells the queue that something may have been queued for dest by
// another process: if this process sends to dest, its worker looks. With
// dest "", every destination with something queued is looked at (after
// kicks may have been missed).
func (q *Queue) Kick(ctx context.Context, dest spec.ServerName) error {
	if dest != "" {
		q.kick(dest)
		return nil
	}
	dests, err := queuedDestinations(ctx, q.db)
	if err != nil {
		return fmt.Errorf("federation queue: %w", err)
	}
	for _, d := range dests {
		if d != q.cfg.Origin {
			q.kick(d)
		}
	}
	return nil
}

// SendPDU queues pdu, an event in its room version's federation format, for
// every destination in dests. It is in the database when SendPDU returns,
// and each destination receives the PDUs queued for it in the order they
// were queued. After Close it still stores them, for the next New to send.
func (q *Queue) SendPDU(ctx context.Context, dests []spec.ServerName, pdu json.RawMessage) error {
	// Invalid JSON would make every transaction it is put in fail to
	// marshal, wedging its destinations: refuse it here.
	if !json.Valid(pdu) {
		return errors.New("queue PDU: not valid JSON")
	}
	if err := q.enqueue(ctx, pduTable, dests, pdu); err != nil {
		return fmt.Errorf("queue PDU: %w", err)
	}
	return nil
}

// SendPDUTx queues pdu inside the caller's database transaction: it is
// queued if and only if that transaction commits (the room server queues
// each event in the transaction that stores it, so that no committed
// event can miss its destinations, whatever happens to the process).
func (q *Queue) SendPDUTx(ctx context.Context, tx *database.Tx, dests []spec.ServerName, pdu json.RawMessage) error {
	if !json.Valid(pdu) {
		return errors.New("queue PDU: not valid JSON")
	}
	dests = q.destinations(dests)
	if len(dests) == 0 {
		return nil
	}
	err := enqueueTx(ctx, tx, pduTable, dests, pdu, func() {
		for _, dest := range dests {
			q.kick(dest)
		}
	})
	if err == nil {
		err = q.tellOwners(ctx, tx, dests)
	}
	if err != nil {
		return fmt.Errorf("queue PDU: %w", err)
	}
	return nil
}

// SendEDU queues edu for every destination in dests. It is in the database
// when SendEDU returns.
func (q *Queue) SendEDU(ctx context.Context, dests []spec.ServerName, edu gomatrixserverlib.EDU) error {
	js, err := json.Marshal(edu)
	if err != nil {
		return fmt.Errorf("queue %s EDU: %w", edu.Type, err)
	}
	if err := q.enqueue(ctx, eduTable, dests, js); err != nil {
		return fmt.Errorf("queue %s EDU: %w", edu.Type, err)
	}
	return nil
}

func (q *Queue) enqueue(ctx context.Context, t table, dests []spec.ServerName, js []byte) error {
	dests = q.destinations(dests)
	if len(dests) == 0 {
		return nil
	}
	return q.db.WithTx(ctx, func(tx *database.Tx) error {
		if err := enqueueTx(ctx, tx, t, dests, js, func() {
			for _, dest := range dests {
				q.kick(dest)
			}
		}); err != nil {
			return err
		}
		return q.tellOwners(ctx, tx, dests)
	})
}

// destinations returns dests without duplicates, empty names or ourselves.
func (q *Queue) destinations(dests []spec.ServerName) []spec.ServerName {
	out := make([]spec.ServerName, 0, len(dests))
	seen := make(map[spec.ServerName]bool, len(dests))
	for _, d := range dests {
		if d == "" || d == q.cfg.Origin || seen[d] {
			continue
		}
		seen[d] = true
		out = append(out, d)
	}
	return out
}

// Wake tells the queue that dest is alive (it sent us something): a send
// waiting out a backoff is retried now, and the backoff starts over.
func (q *Queue) Wake(dest spec.ServerName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w, ok := q.workers[dest]; ok {
		select {
		case w.wake <- struct{}{}:
		default: // already woken
		}
	}
}

// Pending counts the PDUs and EDUs queued for dest, including those of a
// transaction being sent. It reads the database, and reports 0, 0 (and
// logs) if that fails.
func (q *Queue) Pending(dest spec.ServerName) (pdus, edus int) {
	pdus, edus, err := pending(context.Background(), q.db, dest)
	if err != nil {
		q.log.WithError(err).WithField("destination", dest).Warn("Failed to count the federation queue")
	}
	return pdus, edus
}

// Close stops the workers and waits for them, cancelling any send in
// flight. What was queued stays in the database for the next New.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
}

// kick makes sure dest's worker will look at its queue: it starts one, or
// tells the running one that something new is there.
func (q *Queue) kick(dest spec.ServerName) {
	if !q.owns(dest) {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if w, ok := q.workers[dest]; ok {
		w.queued = true
		return
	}
	w := &worker{wake: make(chan struct{}, 1)}
	q.workers[dest] = w
	q.wg.Add(1)
	go q.run(dest, w)
}

// run is dest's worker: it sends dest its queue one transaction at a time
// until the queue is empty or the Queue is closed.
func (q *Queue) run(dest spec.ServerName, w *worker) {
	defer q.wg.Done()
	ctx := q.ctx
	failures := 0
	// done is the batch dest last acknowledged, deleted from the queue
	// together with the reading of the next one. Should we stop before
	// that, the batch is sent again under the same ID after a restart and
	// dest drops it as a duplicate.
	var done *batch
	// limit is how many items the next new transaction may hold: halved
	// after a refusal, until the refused item is alone and quarantined,
	// and doubled back after each success.
	limit := maxItemsPerTxn
	for {
		// Cleared before reading, so that whatever is queued after the
		// read began sets it again.
		q.mu.Lock()
		w.queued = false
		q.mu.Unlock()

		b, err := nextBatch(ctx, q.db, dest, done, limit)
		if err == nil {
			done = nil
		}
		if err == nil && b.empty() {
			q.mu.Lock()
			if !w.queued {
				delete(q.workers, dest)
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			continue
		}
		if err == nil {
			err = q.deliver(ctx, dest, b)
		}
		if err != nil && b != nil && Refused(err) && ctx.Err() == nil {
			err = q.setAside(ctx, dest, b, err)
			if err == nil {
				if b.size() > 1 {
					limit = max(1, b.size()/2)
				} else {
					limit = maxItemsPerTxn
				}
				failures = 0
				continue
			}
		}
		if err == nil {
			done = b
			limit = min(maxItemsPerTxn, limit*2)
			failures = 0
			q.noteSent(dest)
			// A Wake that came while dest was answering is stale.
			select {
			case <-w.wake:
			default:
			}
			continue
		}
		if ctx.Err() != nil {
			return // closed: the batch stays queued
		}

		failures++
		delay := q.backoff(failures)
		q.noteFailed(dest, delay)
		entry := q.log.WithError(err).WithFields(logrus.Fields{
			"destination": dest,
			"failures":    failures,
			"retry_in":    delay.Round(time.Millisecond),
		})
		if b != nil {
			entry = entry.WithField("txn_id", b.txnID)
		}
		entry.Warn("Failed to send a federation transaction")
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-w.wake:
			timer.Stop()
			failures = 0
		case <-timer.C:
		}
	}
}

// deliver sends b to dest.
func (q *Queue) deliver(ctx context.Context, dest spec.ServerName, b *batch) error {
	t := gomatrixserverlib.Transaction{
		TransactionID:  b.txnID,
		Origin:         q.cfg.Origin,
		Destination:    dest,
		OriginServerTS: spec.AsTimestamp(time.Now()),
		// Never nil: "pdus" is a required field, so [] rather than null.
		PDUs: make([]json.RawMessage, len(b.pdus)),
	}
	for i, p := range b.pdus {
		t.PDUs[i] = p
	}
	if len(b.edus) > 0 {
		t.EDUs = make([]gomatrixserverlib.EDU, len(b.edus))
		for i, e := range b.edus {
			if err := json.Unmarshal(e, &t.EDUs[i]); err != nil {
				return fmt.Errorf("decode queued EDU of transaction %s: %w", b.txnID, err)
			}
		}
	}
	if err := q.send(ctx, t); err != nil {
		return fmt.Errorf("send transaction %s: %w", b.txnID, err)
	}
	return nil
}

// setAside deals with a transaction dest refused for good: one or more
// items is put back to be sent in smaller transactions, to find the item
// refused; a lone item is quarantined, with a log line, and the queue goes
// on without it.
func (q *Queue) setAside(ctx context.Context, dest spec.ServerName, b *batch, refusal error) error {
	entry := q.log.WithError(refusal).WithFields(logrus.Fields{
		"destination": dest,
		"txn_id":      b.txnID,
		"pdus":        len(b.pdus),
		"edus":        len(b.edus),
	})
	if b.size() > 1 {
		if err := releaseBatch(ctx, q.db, dest, b); err != nil {
			return err
		}
		entry.Warn("Destination refused a federation transaction: splitting it")
		return nil
	}
	if err := quarantineBatch(ctx, q.db, dest, b, refusal.Error(), time.Now().UnixMilli()); err != nil {
		return err
	}
	entry.Error("Destination refused a PDU or EDU for good: quarantined in federation_queue_quarantine")
	return nil
}

// Quarantined counts what dest refused for good and was set aside. It
// reads the database, and reports 0 (and logs) if that fails.
func (q *Queue) Quarantined(dest spec.ServerName) int {
	n, err := quarantined(context.Background(), q.db, dest)
	if err != nil {
		q.log.WithError(err).WithField("destination", dest).Warn("Failed to count the federation quarantine")
	}
	return n
}

// backoff is how long to wait after the given number of failures in a row:
// MinBackoff doubled for each failure after the first, up to MaxBackoff,
// less up to a fifth at random so that destinations that failed together (our
// own network went away) do not all retry in the same instant.
func (q *Queue) backoff(failures int) time.Duration {
	d := q.cfg.MinBackoff
	for i := 1; i < failures && d < q.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, q.cfg.MaxBackoff)
	return d - rand.N(d/5+1)
}
