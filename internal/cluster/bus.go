package cluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
)

// invalidateChannel is the NOTIFY channel of cache invalidations; the
// payload is "INSTANCE KIND KEY".
const invalidateChannel = "tessera_invalidate"

// Bus tells the other processes that something they may cache changed
// (tokens revoked, ...), over PostgreSQL's LISTEN/NOTIFY: nothing else to
// run.
type Bus struct {
	m        *Map
	db       *database.DB
	log      logrus.FieldLogger
	handlers map[string]func(key string)
	stop     func()
}

// NewBus returns the map's bus on db. Register handlers with Handle, then
// Start it.
func (m *Map) NewBus(db *database.DB, log logrus.FieldLogger) *Bus {
	return &Bus{m: m, db: db, log: log, handlers: map[string]func(string){}}
}

// Handle runs f for each invalidation of kind another process publishes,
// with its key, and with key "" (everything) after the listening
// connection was lost, when invalidations may have been missed.
func (b *Bus) Handle(kind string, f func(key string)) { b.handlers[kind] = f }

// Publish tells the other processes of an invalidation. Call it after the
// change has committed, so that what they read again is the new state.
func (b *Bus) Publish(ctx context.Context, kind, key string) error {
	if _, err := b.db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, invalidateChannel, b.m.self+" "+kind+" "+key); err != nil {
		return fmt.Errorf("publish %s invalidation: %w", kind, err)
	}
	return nil
}

// PublishTx tells the other processes of an invalidation when tx
// commits (PostgreSQL delivers a NOTIFY only then): what they read again
// is the new state, and nothing is said of a change rolled back.
func (b *Bus) PublishTx(ctx context.Context, tx *database.Tx, kind, key string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, invalidateChannel, b.m.self+" "+kind+" "+key); err != nil {
		return fmt.Errorf("publish %s invalidation: %w", kind, err)
	}
	return nil
}

// Start listens until Stop, on a connection of its own from connect.
func (b *Bus) Start(connect func(context.Context) (*pgx.Conn, error)) {
	b.stop = Listen(connect, invalidateChannel, busHandler{b}, b.log.WithField("channel", invalidateChannel))
}

// Listen handles the notifications of channel (and, with a
// pgxlisten.BacklogHandler, what may have been missed, on every
// connection) on a connection of its own from connect, opened again a
// second after a failure, until the returned stop is called.
func Listen(connect func(context.Context) (*pgx.Conn, error), channel string, h pgxlisten.Handler, log logrus.FieldLogger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &pgxlisten.Listener{
		Connect:        connect,
		ReconnectDelay: time.Second,
		LogError: func(_ context.Context, err error) {
			if ctx.Err() == nil {
				log.WithError(err).Warn("listening for other processes' notifications")
			}
		},
	}
	l.Handle(channel, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Listen(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Stop stops listening.
func (b *Bus) Stop() {
	if b.stop != nil {
		b.stop()
	}
}

type busHandler struct{ b *Bus }

func (h busHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	from, rest, _ := strings.Cut(n.Payload, " ")
	kind, key, _ := strings.Cut(rest, " ")
	if from == h.b.m.self {
		return nil // done here when it happened
	}
	if f := h.b.handlers[kind]; f != nil {
		f(key)
	}
	return nil
}

// HandleBacklog runs on every (re)connection: invalidations may have been
// missed while not listening, so everything goes.
func (h busHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	for _, f := range h.b.handlers {
		f("")
	}
	return nil
}
