package database

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// ExecLater runs a write whose result the caller does not need (no rows
// affected, no returned values). On SQLite, in process, it runs at once.
// On PostgreSQL every statement costs a round trip to the server, so the
// writes are queued and sent together, pipelined in one round trip, just
// before the transaction's next statement or its commit: the transaction
// sees them in order all the same. An error of a queued write is returned
// by that next statement or by the commit, and rolls the transaction back.
func (t *Tx) ExecLater(ctx context.Context, query string, args ...any) error {
	if t.pipe.conn == nil {
		_, err := t.ExecContext(ctx, query, args...)
		return err
	}
	if t.pipe.err != nil {
		return t.pipe.err
	}
	t.pipe.queued = append(t.pipe.queued, queuedWrite{query: t.db.rewrite(query), args: pgArgs(args)})
	return nil
}

// pipeline is a PostgreSQL transaction's queued writes.
type pipeline struct {
	conn   *sql.Conn // nil on SQLite
	queued []queuedWrite
	// err is the first failure of a flush: the transaction is then
	// aborted on the server, and it sticks.
	err error
}

type queuedWrite struct {
	query string
	args  []any
}

// flush sends the queued writes as one pgx batch on the transaction's
// connection.
func (p *pipeline) flush(ctx context.Context) error {
	if p.err != nil || len(p.queued) == 0 {
		return p.err
	}
	queued := p.queued
	p.queued = nil
	p.err = p.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("pipeline: driver connection is a %T, not pgx's", dc)
		}
		b := &pgx.Batch{}
		for _, w := range queued {
			b.Queue(w.query, w.args...)
		}
		return c.Conn().SendBatch(ctx, b).Close()
	})
	if p.err != nil {
		p.err = fmt.Errorf("pipelined write: %w", p.err)
	}
	return p.err
}
