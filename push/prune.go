package push

import (
	"context"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// readActionsLifetime is how long the push actions of events a user has
// read are kept: GET /notifications lists read notifications too, and
// clients page back through the recent ones. Unread ones are kept, as the
// counts need them.
const readActionsLifetime = 7 * 24 * time.Hour

// Prune deletes the push actions of events their user read more than
// readActionsLifetime ago (by the event's time), for the housekeeping
// job: without it the table grows by an event times its room's members.
func (s *Service) Prune(ctx context.Context, now time.Time) (int64, error) {
	cutoff := now.Add(-readActionsLifetime).UnixMilli()
	type pair struct{ userID, roomID string }
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT user_id, room_id FROM event_push_actions WHERE ts < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("push actions to prune: %w", err)
	}
	var pairs []pair
	for rows.Next() {
		var p pair
		if err := rows.Scan(&p.userID, &p.roomID); err != nil {
			rows.Close()
			return 0, err
		}
		pairs = append(pairs, p)
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	var total int64
	for _, p := range pairs {
		read, err := s.readPositions(ctx, p.userID, p.roomID)
		if err != nil {
			return total, err
		}
		err = s.db.WithTx(ctx, func(tx *database.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM event_push_actions
				WHERE user_id = $1 AND room_id = $2 AND ts < $3 AND stream_pos <= $4`, p.userID, p.roomID, cutoff, read.unthreaded)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += n
			for thread, pos := range read.threads {
				res, err := tx.ExecContext(ctx, `DELETE FROM event_push_actions
					WHERE user_id = $1 AND room_id = $2 AND thread_id = $3 AND ts < $4 AND stream_pos <= $5`,
					p.userID, p.roomID, thread, cutoff, pos)
				if err != nil {
					return err
				}
				n, _ := res.RowsAffected()
				total += n
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune push actions: %w", err)
		}
	}
	return total, nil
}

// EventsPurged deletes the push actions of events purged from a room's
// history, and drops the room's cached counts.
func (s *Service) EventsPurged(ctx context.Context, roomID string, eventIDs []string) error {
	args := make([]any, 0, len(eventIDs)+1)
	args = append(args, roomID)
	ph := make([]byte, 0, len(eventIDs)*5)
	for i, id := range eventIDs {
		if i > 0 {
			ph = append(ph, ',')
		}
		ph = fmt.Appendf(ph, "$%d", i+2)
		args = append(args, id)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM event_push_actions WHERE room_id = $1 AND event_id IN (`+string(ph)+`)`, args...); err != nil {
		return fmt.Errorf("delete push actions of purged events: %w", err)
	}
	s.counts.invalidateRoom(roomID)
	return nil
}

// PurgeRoom deletes what push holds of a purged room: its push actions
// (notifications and unread counts) and the marks of what its members
// sent, as Synapse's purge_room deletes event_push_actions and
// event_push_summary.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	// The room's last events may be evaluated but not yet written (see
	// flushDelay): wait until they are in the database, so that the
	// deletion finds them instead of a flush writing them after it.
	pos := s.rooms.CurrentPos()
	s.waitProcessed(ctx, pos)
	s.waitFlushed(ctx, pos)
	if err := s.db.DeleteRoomRows(ctx, roomID, "event_push_actions", "push_sent_marks"); err != nil {
		return err
	}
	s.counts.invalidateRoom(roomID)
	return nil
}

// waitFlushed waits, a few seconds at most, until every notification of
// the events up to pos (evaluated: see waitProcessed) is in the database.
func (s *Service) waitFlushed(ctx context.Context, pos int64) {
	deadline := time.Now().Add(maxCountWait)
	for !s.pending.writtenThrough(pos) && time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-time.After(flushDelay / 4):
		case <-s.done:
			return
		case <-ctx.Done():
			return
		}
	}
}
