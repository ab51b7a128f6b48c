package database

import (
	"context"
	"fmt"
)

// DeleteRoomRows deletes, in one transaction, the rows of each table whose
// room_id column is roomID: a domain's part of purging a room. The table
// names are the caller's constants, never input.
func (db *DB) DeleteRoomRows(ctx context.Context, roomID string, tables ...string) error {
	return db.WithTx(ctx, func(tx *Tx) error {
		for _, t := range tables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE room_id = $1`, roomID); err != nil {
				return fmt.Errorf("purge %s of room %s: %w", t, roomID, err)
			}
		}
		return nil
	})
}

// GroupedStrings runs a query whose rows are two text columns, ordered by
// the first, and returns the distinct first values in order with, for
// each, its second values (user IDs and their device IDs, say).
func GroupedStrings(ctx context.Context, q Querier, query string, args ...any) ([]string, map[string][]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var keys []string
	groups := map[string][]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, nil, err
		}
		if _, seen := groups[k]; !seen {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], v)
	}
	return keys, groups, rows.Err()
}
