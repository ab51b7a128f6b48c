package migratedb

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// verifyCounts compares every table's row count on both sides.
func verifyCounts(ctx context.Context, src *source, tx pgx.Tx, copied []TableReport) error {
	for _, t := range copied {
		var in, out int64
		if err := src.tx.QueryRowContext(ctx, `SELECT count(*) FROM `+quote(t.Name)).Scan(&in); err != nil {
			return fmt.Errorf("count SQLite %s: %w", t.Name, err)
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+quote(t.Name)).Scan(&out); err != nil {
			return fmt.Errorf("count PostgreSQL %s: %w", t.Name, err)
		}
		if in != out || out != t.Rows {
			return fmt.Errorf("table %s: %d rows in SQLite, %d in PostgreSQL", t.Name, in, out)
		}
	}
	return nil
}

// verifyEvents compares the JSON of every event, in every table that holds
// events (an event_id and its json), by SHA-256, event by event in event
// ID order (byte order on both engines: COLLATE "C" on PostgreSQL).
func verifyEvents(ctx context.Context, src *source, tx pgx.Tx, order []table) (int64, error) {
	var total int64
	for _, t := range order {
		if !slices.ContainsFunc(t.cols, func(c column) bool { return c.name == "event_id" }) ||
			!slices.ContainsFunc(t.cols, func(c column) bool { return c.name == "json" }) {
			continue
		}
		n, err := verifyEventTable(ctx, src, tx, t.name)
		if err != nil {
			return total, fmt.Errorf("table %s: %w", t.name, err)
		}
		total += n
	}
	return total, nil
}

func verifyEventTable(ctx context.Context, src *source, tx pgx.Tx, name string) (int64, error) {
	in, err := src.tx.QueryContext(ctx, `SELECT event_id, json FROM `+quote(name)+` ORDER BY event_id`)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := tx.Query(ctx, `SELECT event_id, json FROM `+quote(name)+` ORDER BY event_id COLLATE "C"`)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	var n int64
	for {
		moreIn, moreOut := in.Next(), out.Next()
		if !moreIn || !moreOut {
			if moreIn || moreOut {
				return n, fmt.Errorf("the two databases have different numbers of events")
			}
			break
		}
		var idIn, idOut string
		var jsonIn, jsonOut []byte
		if err := in.Scan(&idIn, &jsonIn); err != nil {
			return n, err
		}
		if err := out.Scan(&idOut, &jsonOut); err != nil {
			return n, err
		}
		if idIn != idOut {
			return n, fmt.Errorf("event %s in SQLite, %s in PostgreSQL at the same place", idIn, idOut)
		}
		if a, b := sha256.Sum256(jsonIn), sha256.Sum256(jsonOut); !bytes.Equal(a[:], b[:]) {
			return n, fmt.Errorf("event %s: its JSON differs (SHA-256 %x in SQLite, %x in PostgreSQL)", idIn, a, b)
		}
		n++
	}
	if err := in.Err(); err != nil {
		return n, err
	}
	return n, out.Err()
}
