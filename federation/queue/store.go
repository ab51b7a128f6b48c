package queue

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
)

// The most a transaction may carry.
// https://spec.matrix.org/v1.19/server-server-api/#transactions
const (
	maxPDUsPerTxn = 50
	maxEDUsPerTxn = 100
)

// table is the SQL for one of the two per-destination tables, which differ
// only in their name and in how many of their rows fit in a transaction.
// The strings are built once so that each stays one prepared statement.
type table struct {
	insert    string
	claimable string
	claim     string
	inTxn     string
	deleteTxn string
	release   string
	limit     int // the most rows of this table one transaction may carry
}

func newTable(name string, limit int) table {
	return table{
		insert: `INSERT INTO ` + name + ` (destination, json_nid) VALUES ($1, $2)`,
		claimable: `SELECT q.id, q.json_nid, j.json FROM ` + name + ` q
			JOIN federation_queue_json j ON j.nid = q.json_nid
			WHERE q.destination = $1 AND q.txn_id IS NULL ORDER BY q.id LIMIT $2`,
		limit: limit,
		claim: `UPDATE ` + name + ` SET txn_id = $1
			WHERE destination = $2 AND txn_id IS NULL AND id <= $3`,
		inTxn: `SELECT q.id, q.json_nid, j.json FROM ` + name + ` q
			JOIN federation_queue_json j ON j.nid = q.json_nid
			WHERE q.destination = $1 AND q.txn_id = $2 ORDER BY q.id`,
		deleteTxn: `DELETE FROM ` + name + ` WHERE destination = $1 AND txn_id = $2`,
		release:   `UPDATE ` + name + ` SET txn_id = NULL WHERE destination = $1 AND txn_id = $2`,
	}
}

var (
	pduTable = newTable("federation_queue_pdus", maxPDUsPerTxn)
	eduTable = newTable("federation_queue_edus", maxEDUsPerTxn)
)

// batch is the content of one transaction to one destination, as stored.
type batch struct {
	txnID gomatrixserverlib.TransactionID
	pdus  [][]byte
	edus  [][]byte
	// nids are the JSON rows the batch uses, for deleting those no other
	// destination still needs once the batch is delivered.
	nids []int64
}

func (b *batch) empty() bool { return len(b.pdus) == 0 && len(b.edus) == 0 }

func (b *batch) size() int { return len(b.pdus) + len(b.edus) }

// maxItemsPerTxn is the most PDUs and EDUs one transaction carries.
const maxItemsPerTxn = maxPDUsPerTxn + maxEDUsPerTxn

// enqueueTx stores js once and queues it for every destination in dests,
// in the caller's transaction. onCommit runs only if it committed.
func enqueueTx(ctx context.Context, tx *database.Tx, t table, dests []spec.ServerName, js []byte, onCommit func()) error {
	var nid int64
	err := tx.QueryRowContext(ctx,
		`INSERT INTO federation_queue_json (json) VALUES ($1) RETURNING nid`, string(js)).Scan(&nid)
	if err != nil {
		return fmt.Errorf("store queued JSON: %w", err)
	}
	for _, dest := range dests {
		if _, err := tx.ExecContext(ctx, t.insert, string(dest), nid); err != nil {
			return fmt.Errorf("queue for %s: %w", dest, err)
		}
	}
	tx.AfterCommit(onCommit)
	return nil
}

// nextBatch deletes done, a batch dest has acknowledged (nil if none), and
// returns what to send dest next, in the same database transaction to spare
// a commit per batch. That is the batch dest was last sent, if it was never
// acknowledged, so that the retry carries the same items under the same
// transaction ID; otherwise the oldest items not yet sent, up to the limits,
// which it gives a new transaction ID before returning so that a retry after
// a restart reuses it. An empty batch means dest has nothing queued.
// A new batch holds at most limit items (PDUs first): a destination that
// refused a batch is sent smaller ones until the item it refuses is alone.
func nextBatch(ctx context.Context, db *database.DB, dest spec.ServerName, done *batch, limit int) (*batch, error) {
	b := &batch{}
	err := db.WithTx(ctx, func(tx *database.Tx) error {
		*b = batch{}
		if done != nil {
			if err := deleteBatch(ctx, tx, dest, done); err != nil {
				return err
			}
		}
		var pending sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT COALESCE(
			(SELECT txn_id FROM federation_queue_pdus WHERE destination = $1 AND txn_id IS NOT NULL LIMIT 1),
			(SELECT txn_id FROM federation_queue_edus WHERE destination = $1 AND txn_id IS NOT NULL LIMIT 1))`,
			string(dest)).Scan(&pending)
		if err != nil {
			return fmt.Errorf("find unacknowledged transaction: %w", err)
		}
		if pending.Valid {
			b.txnID = gomatrixserverlib.TransactionID(pending.String)
			if _, err := loadRows(ctx, tx, pduTable.inTxn, &b.pdus, &b.nids, string(dest), pending.String); err != nil {
				return fmt.Errorf("load PDUs of transaction %s: %w", b.txnID, err)
			}
			if _, err := loadRows(ctx, tx, eduTable.inTxn, &b.edus, &b.nids, string(dest), pending.String); err != nil {
				return fmt.Errorf("load EDUs of transaction %s: %w", b.txnID, err)
			}
			return nil
		}

		limit = max(limit, 1)
		// Claimed by id range, so a row with a lower id that commits
		// between the read and the claim (several processes queue for
		// one destination, docs/scaling.md) would be claimed unread and
		// deleted unsent: when the claim takes more rows than were read,
		// it is undone and the batch read again.
		for attempt := 0; ; attempt++ {
			*b = batch{}
			claimed, err := claimBatch(ctx, tx, dest, b, limit)
			if err != nil || claimed == int64(b.size()) {
				return err
			}
			if attempt == 10 {
				return fmt.Errorf("claim a batch for %s: rows keep arriving below the last one read", dest)
			}
			for _, t := range []table{pduTable, eduTable} {
				if _, err := tx.ExecContext(ctx, t.release, string(dest), string(b.txnID)); err != nil {
					return fmt.Errorf("release claimed rows: %w", err)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// claimBatch reads up to limit of dest's oldest unclaimed rows into b,
// gives them a new transaction ID and claims every unclaimed row up to the
// last one read; it returns how many rows the claim took.
func claimBatch(ctx context.Context, tx *database.Tx, dest spec.ServerName, b *batch, limit int) (int64, error) {
	lastPDU, err := loadRows(ctx, tx, pduTable.claimable, &b.pdus, &b.nids, string(dest), min(limit, pduTable.limit))
	if err != nil {
		return 0, fmt.Errorf("load queued PDUs: %w", err)
	}
	var lastEDU int64
	if n := min(limit-len(b.pdus), eduTable.limit); n > 0 {
		if lastEDU, err = loadRows(ctx, tx, eduTable.claimable, &b.edus, &b.nids, string(dest), n); err != nil {
			return 0, fmt.Errorf("load queued EDUs: %w", err)
		}
	}
	if b.empty() {
		return 0, nil
	}
	// Random rather than counted: unique across restarts and across
	// servers sharing nothing, with no counter to persist.
	b.txnID = gomatrixserverlib.TransactionID(rand.Text())
	var claimed int64
	for _, c := range []struct {
		t    table
		n    int
		last int64
	}{{pduTable, len(b.pdus), lastPDU}, {eduTable, len(b.edus), lastEDU}} {
		if c.n == 0 {
			continue
		}
		res, err := tx.ExecContext(ctx, c.t.claim, string(b.txnID), string(dest), c.last)
		if err != nil {
			return 0, fmt.Errorf("assign queued rows to transaction: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("assign queued rows to transaction: %w", err)
		}
		claimed += n
	}
	return claimed, nil
}

// loadRows runs query, whose rows are (id, json_nid, json), appending the
// JSON to js and the nids to nids, and returns the last id.
func loadRows(ctx context.Context, tx *database.Tx, query string, js *[][]byte, nids *[]int64, args ...any) (int64, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var last int64
	for rows.Next() {
		var (
			nid int64
			j   []byte
		)
		if err := rows.Scan(&last, &nid, &j); err != nil {
			return 0, err
		}
		*js = append(*js, j)
		*nids = append(*nids, nid)
	}
	return last, rows.Err()
}

// deleteBatch deletes the rows of a transaction dest acknowledged, and the
// JSON no destination needs any more.
func deleteBatch(ctx context.Context, tx *database.Tx, dest spec.ServerName, b *batch) error {
	for _, q := range []string{pduTable.deleteTxn, eduTable.deleteTxn} {
		if _, err := tx.ExecContext(ctx, q, string(dest), string(b.txnID)); err != nil {
			return fmt.Errorf("delete delivered transaction %s: %w", b.txnID, err)
		}
	}
	for _, nid := range b.nids {
		_, err := tx.ExecContext(ctx, `DELETE FROM federation_queue_json WHERE nid = $1
			AND NOT EXISTS (SELECT 1 FROM federation_queue_pdus WHERE json_nid = $1)
			AND NOT EXISTS (SELECT 1 FROM federation_queue_edus WHERE json_nid = $1)`, nid)
		if err != nil {
			return fmt.Errorf("delete delivered JSON: %w", err)
		}
	}
	return nil
}

// releaseBatch returns the items of a transaction dest refused to the
// queue, unclaimed and in their places, to be sent again in smaller ones.
func releaseBatch(ctx context.Context, db *database.DB, dest spec.ServerName, b *batch) error {
	return db.WithTx(ctx, func(tx *database.Tx) error {
		for _, q := range []string{pduTable.release, eduTable.release} {
			if _, err := tx.ExecContext(ctx, q, string(dest), string(b.txnID)); err != nil {
				return fmt.Errorf("release refused transaction %s: %w", b.txnID, err)
			}
		}
		return nil
	})
}

// quarantineBatch moves the one item of a transaction dest refused for
// good out of its queue into federation_queue_quarantine.
func quarantineBatch(ctx context.Context, db *database.DB, dest spec.ServerName, b *batch, reason string, now int64) error {
	kind, js := "pdu", b.pdus
	if len(b.pdus) == 0 {
		kind, js = "edu", b.edus
	}
	return db.WithTx(ctx, func(tx *database.Tx) error {
		for _, j := range js {
			_, err := tx.ExecContext(ctx, `INSERT INTO federation_queue_quarantine
				(destination, kind, json, error, quarantined_ts) VALUES ($1, $2, $3, $4, $5)`,
				string(dest), kind, string(j), reason, now)
			if err != nil {
				return fmt.Errorf("quarantine %s of transaction %s: %w", kind, b.txnID, err)
			}
		}
		return deleteBatch(ctx, tx, dest, b)
	})
}

// quarantined counts what dest refused for good.
func quarantined(ctx context.Context, db *database.DB, dest spec.ServerName) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_queue_quarantine WHERE destination = $1`,
		string(dest)).Scan(&n)
	return n, err
}

// queuedDestinations lists every destination with something queued.
func queuedDestinations(ctx context.Context, db *database.DB) ([]spec.ServerName, error) {
	names, err := database.Strings(ctx, db, `SELECT destination FROM federation_queue_pdus
		UNION SELECT destination FROM federation_queue_edus`)
	if err != nil {
		return nil, fmt.Errorf("list queued destinations: %w", err)
	}
	dests := make([]spec.ServerName, len(names))
	for i, n := range names {
		dests[i] = spec.ServerName(n)
	}
	return dests, nil
}

// pending counts what dest has queued.
func pending(ctx context.Context, db *database.DB, dest spec.ServerName) (pdus, edus int, err error) {
	err = db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM federation_queue_pdus WHERE destination = $1),
		(SELECT COUNT(*) FROM federation_queue_edus WHERE destination = $1)`, string(dest)).Scan(&pdus, &edus)
	return pdus, edus, err
}
