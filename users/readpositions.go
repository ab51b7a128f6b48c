package users

import (
	"context"
	"fmt"
)

// ReadPositions is where a user's read receipts in a room are, for
// counting unread notifications: the room-server stream position of the
// furthest unthreaded receipt, and of the furthest receipt of each thread
// ("main" for the main timeline). m.read and m.read.private both count,
// whichever is further ("the receipt which is more recent/ahead must be
// used").
// https://spec.matrix.org/v1.19/client-server-api/#marking-notifications-as-read
func (s *Service) ReadPositions(ctx context.Context, userID, roomID string) (int64, map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT thread_id, MAX(event_pos) FROM receipts
		WHERE room_id = $1 AND user_id = $2 AND receipt_type IN ($3, $4) GROUP BY thread_id`,
		roomID, userID, ReceiptRead, ReceiptReadPrivate)
	if err != nil {
		return 0, nil, fmt.Errorf("read positions: %w", err)
	}
	defer rows.Close()
	var unthreaded int64
	threads := map[string]int64{}
	for rows.Next() {
		var thread string
		var pos int64
		if err := rows.Scan(&thread, &pos); err != nil {
			return 0, nil, fmt.Errorf("read positions: %w", err)
		}
		if thread == "" {
			unthreaded = pos
		} else {
			threads[thread] = pos
		}
	}
	return unthreaded, threads, rows.Err()
}
