package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// ExecLater runs a write whose result the caller does not need (no rows
// affected, no returned values). On SQLite, in process, it runs at once.
// On PostgreSQL every statement costs a round trip to the server, so the
// writes are queued and sent together, pipelined in one round trip, just
// before the transaction's next statement or with its commit: the
// transaction sees them in order all the same. An error of a queued write
// is returned by that next statement or by the commit, and rolls the
// transaction back.
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

// pipeline is a PostgreSQL transaction on its connection. The transaction
// begins lazily: its BEGIN is sent with the first statement that needs an
// answer, or with the queued writes and the COMMIT, so that a transaction
// of writes only (an event's commit, most often) costs one round trip
// rather than three.
type pipeline struct {
	conn   *sql.Conn // nil on SQLite
	begun  bool      // BEGIN has been sent
	queued []queuedWrite
	// err is the first failure of a flush: the transaction is then
	// aborted on the server, and it sticks.
	err error
}

type queuedWrite struct {
	query string
	args  []any
}

// flush begins the transaction if it has not begun and sends the queued
// writes, as one pgx batch on the transaction's connection.
func (p *pipeline) flush(ctx context.Context) error {
	if p.conn == nil {
		return nil // SQLite: nothing is queued
	}
	if p.err != nil || (p.begun && len(p.queued) == 0) {
		return p.err
	}
	return p.send(ctx, false)
}

// commit sends what flush would and the COMMIT, in one round trip. A
// transaction that never began has nothing to commit.
func (p *pipeline) commit(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	if !p.begun && len(p.queued) == 0 {
		return nil
	}
	return p.send(ctx, true)
}

func (p *pipeline) send(ctx context.Context, commit bool) error {
	queued := p.queued
	p.queued = nil
	begin := !p.begun
	p.begun = true
	p.err = p.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("pipeline: driver connection is a %T, not pgx's", dc)
		}
		b := &pgx.Batch{}
		if begin {
			b.Queue("BEGIN")
		}
		for _, w := range queued {
			b.Queue(w.query, w.args...)
		}
		if commit {
			b.Queue("COMMIT")
		}
		br := c.Conn().SendBatch(ctx, b)
		for range b.Len() - 1 {
			if _, err := br.Exec(); err != nil {
				_ = br.Close()
				return err
			}
		}
		tag, err := br.Exec()
		if err == nil && commit && tag.String() == "ROLLBACK" {
			// COMMIT of a transaction a failed statement aborted.
			err = errors.New("transaction was rolled back: a statement in it failed")
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if p.err != nil {
		if commit {
			p.err = fmt.Errorf("commit transaction: %w", p.err)
		} else {
			p.err = fmt.Errorf("pipelined write: %w", p.err)
		}
	}
	return p.err
}

// rollback ends a transaction that will not commit. When the connection's
// state cannot be made idle again, the connection is closed, so that the
// pool drops it instead of handing out a session inside a transaction.
func (p *pipeline) rollback(ctx context.Context) {
	p.queued = nil
	if !p.begun {
		return
	}
	_ = p.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return errors.New("not pgx")
		}
		pc := c.Conn()
		if pc.PgConn().TxStatus() != 'I' {
			if _, err := pc.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil || pc.PgConn().TxStatus() != 'I' {
				_ = pc.Close(context.WithoutCancel(ctx))
			}
		}
		return nil
	})
}
