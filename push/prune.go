package push

import (
	"context"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// actionsLifetime is how long push actions are kept: GET /notifications
// lists the notifications of that time, read or not, and clients page
// back through the recent ones. Then the rows of events their user read
// are deleted and the unread ones folded into event_push_summary (Synapse
// folds after a day, and deletes the read ones then; a week keeps
// /notifications whole for longer, and is well past the day a pusher
// retries a notification or the minutes an email batch waits, both of
// which read the rows).
const actionsLifetime = 7 * 24 * time.Hour

// Prune bounds the push actions, for the housekeeping job: without it
// the table grows by an event times its room's members. The rows older
// than actionsLifetime (by the event's time) go: the read ones are
// deleted and the unread ones folded into the summary, which keeps the
// counts (see countUnread). Summaries their user has since read are
// deleted too.
func (s *Service) Prune(ctx context.Context, now time.Time) (int64, error) {
	cutoff := now.Add(-actionsLifetime).UnixMilli()
	pairs, err := s.pairs(ctx, `SELECT DISTINCT user_id, room_id FROM event_push_actions WHERE ts < $1
		UNION SELECT user_id, room_id FROM event_push_summary`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("push actions to prune: %w", err)
	}
	var total int64
	for _, p := range pairs {
		read, err := s.readPositions(ctx, p.userID, p.roomID)
		if err != nil {
			return total, err
		}
		n, err := s.fold(ctx, p.userID, p.roomID, read, cutoff)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune push actions of %s in %s: %w", p.userID, p.roomID, err)
		}
		// The rows moved between the tables: counts being computed
		// meanwhile may have missed or doubled them.
		s.counts.invalidate(p.userID, p.roomID)
	}
	return total, nil
}

type userRoom struct{ userID, roomID string }

// pairs runs a query for (user_id, room_id) pairs.
func (s *Service) pairs(ctx context.Context, query string, args ...any) ([]userRoom, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var pairs []userRoom
	for rows.Next() {
		var p userRoom
		if err := rows.Scan(&p.userID, &p.roomID); err != nil {
			return nil, err
		}
		pairs = append(pairs, p)
	}
	return pairs, rows.Err()
}

// fold, in one transaction for a user in a room: deletes the summaries
// read is past and the rows older than cutoff that read covers, and folds
// the remaining older rows (unread) into the summary. It returns how many
// rows of event_push_actions went.
func (s *Service) fold(ctx context.Context, userID, roomID string, read readUpTo, cutoff int64) (int64, error) {
	var total int64
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		total = 0
		exec := func(q string, args ...any) (int64, error) {
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		}
		// Read up to the unthreaded receipt, and each thread up to its own.
		if _, err := exec(`DELETE FROM event_push_summary WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3`,
			userID, roomID, read.unthreaded); err != nil {
			return err
		}
		n, err := exec(`DELETE FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND ts < $3 AND stream_pos <= $4`,
			userID, roomID, cutoff, read.unthreaded)
		if err != nil {
			return err
		}
		total += n
		for thread, pos := range read.threads {
			if _, err := exec(`DELETE FROM event_push_summary WHERE user_id = $1 AND room_id = $2 AND thread_id = $3 AND stream_pos <= $4`,
				userID, roomID, thread, pos); err != nil {
				return err
			}
			n, err := exec(`DELETE FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND thread_id = $3 AND ts < $4 AND stream_pos <= $5`,
				userID, roomID, thread, cutoff, pos)
			if err != nil {
				return err
			}
			total += n
		}
		// What is left before the cut-off is unread: add it to the
		// summary of its thread, which the reads above left only if it is
		// unread too.
		if _, err := exec(`INSERT INTO event_push_summary
				(user_id, room_id, thread_id, notif_count, highlight_count, ring_count, stream_pos)
			SELECT user_id, room_id, thread_id, SUM(notify), SUM(highlight), `+ringSQL+`, MAX(stream_pos)
			FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND ts < $3
			GROUP BY user_id, room_id, thread_id
			ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET
				notif_count = event_push_summary.notif_count + excluded.notif_count,
				highlight_count = event_push_summary.highlight_count + excluded.highlight_count,
				ring_count = event_push_summary.ring_count + excluded.ring_count,
				stream_pos = CASE WHEN excluded.stream_pos > event_push_summary.stream_pos
					THEN excluded.stream_pos ELSE event_push_summary.stream_pos END`,
			userID, roomID, cutoff); err != nil {
			return fmt.Errorf("fold into the summary: %w", err)
		}
		n, err = exec(`DELETE FROM event_push_actions WHERE user_id = $1 AND room_id = $2 AND ts < $3`, userID, roomID, cutoff)
		total += n
		return err
	})
	return total, err
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
// (notifications and unread counts), their summaries and the marks of what
// its members sent, as Synapse's purge_room deletes event_push_actions and
// event_push_summary.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	// The room's last events may be evaluated but not yet written (see
	// flushDelay): wait until they are in the database, so that the
	// deletion finds them instead of a flush writing them after it.
	pos := s.rooms.CurrentPos()
	s.waitProcessed(ctx, pos)
	s.waitFlushed(ctx, pos)
	if err := s.db.DeleteRoomRows(ctx, roomID, "event_push_actions", "event_push_summary", "push_sent_marks"); err != nil {
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
