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
