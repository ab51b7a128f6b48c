package push

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Synapse's email throttle (synapse/push/emailpusher.py): each email
// pusher may mail about a room only throttle after its last mail there.
// The throttle starts at the mail delay, is multiplied with each mail up
// to a day, and falls back to the delay when the room had been quiet for
// half a day before the mail's first notification. A conversation thus
// gets a mail after the delay, a second one at least the delay later,
// and then one a day at most, as Synapse sends them.
const (
	// throttleMax is Synapse's THROTTLE_MAX_MS.
	throttleMax = 24 * time.Hour
	// throttleMultiplier is Synapse's THROTTLE_MULTIPLIER: from 10
	// minutes straight to a day.
	throttleMultiplier = 144
	// throttleResetAfter is Synapse's THROTTLE_RESET_AFTER_MS.
	throttleResetAfter = 12 * time.Hour
)

// nextThrottle is a room's throttle after a mail, given the throttle
// before it (0: none yet), the mail delay, and the gap between the mail's
// first notification and the notification before it in the room (0 when
// there was none: as Synapse, an unknown gap does not reset).
func nextThrottle(current, delay, gap time.Duration) time.Duration {
	if gap > throttleResetAfter || current == 0 {
		return delay
	}
	// Multiplying a duration near the cap could overflow; compare first.
	if current > throttleMax/throttleMultiplier {
		return throttleMax
	}
	return min(current*throttleMultiplier, throttleMax)
}

type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// roomReadyAt is when the pusher may next mail about the room (ms; 0:
// at any time).
func roomReadyAt(ctx context.Context, q rowQuerier, k batchKey) (int64, error) {
	var lastSent, throttle int64
	err := q.QueryRowContext(ctx, `SELECT last_sent_ts, throttle_ms FROM push_email_throttle
		WHERE user_id = $1 AND address = $2 AND room_id = $3`, k.userID, k.address, k.roomID).Scan(&lastSent, &throttle)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("email throttle: %w", err)
	}
	return lastSent + throttle, nil
}

// mailed notes that a mail about the room went at now, for a batch whose
// first notification is at firstPos, and raises (or resets) the room's
// throttle.
func (e *emailer) mailed(ctx context.Context, k batchKey, firstPos int64, now time.Time) error {
	var throttle int64
	err := e.s.db.QueryRowContext(ctx, `SELECT throttle_ms FROM push_email_throttle
		WHERE user_id = $1 AND address = $2 AND room_id = $3`, k.userID, k.address, k.roomID).Scan(&throttle)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("email throttle: %w", err)
	}
	gap, err := e.quietBefore(ctx, k, firstPos)
	if err != nil {
		return err
	}
	next := nextThrottle(time.Duration(throttle)*time.Millisecond, e.cfg.Delay, gap)
	_, err = e.s.db.ExecContext(ctx, `INSERT INTO push_email_throttle (user_id, address, room_id, last_sent_ts, throttle_ms)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, address, room_id)
		DO UPDATE SET last_sent_ts = excluded.last_sent_ts, throttle_ms = excluded.throttle_ms`,
		k.userID, k.address, k.roomID, now.UnixMilli(), next.Milliseconds())
	if err != nil {
		return fmt.Errorf("email throttle: %w", err)
	}
	return nil
}

// quietBefore is how long the room had been quiet (no notification for
// the user) before the notification at pos; 0 when pos was the first.
func (e *emailer) quietBefore(ctx context.Context, k batchKey, pos int64) (time.Duration, error) {
	// The notification at pos and the one before it may still be pending
	// (not yet written); the written ones are all older than those.
	flushed, pending, _ := e.s.pending.forUser(k.userID, k.roomID)
	var times []int64 // newest first
	for i := len(pending) - 1; i >= 0 && len(times) < 2; i-- {
		if p := pending[i]; p.pos > flushed && p.pos <= pos && p.outcome.Notify {
			times = append(times, p.ts)
		}
	}
	if len(times) < 2 {
		rows, err := e.s.db.QueryContext(ctx, `SELECT ts FROM event_push_actions
			WHERE user_id = $1 AND room_id = $2 AND notify = 1 AND stream_pos <= $3 AND stream_pos <= $4
			ORDER BY stream_pos DESC LIMIT 2`, k.userID, k.roomID, pos, flushed)
		if err != nil {
			return 0, fmt.Errorf("email throttle: %w", err)
		}
		for rows.Next() {
			var ts int64
			if err := rows.Scan(&ts); err != nil {
				rows.Close()
				return 0, err
			}
			times = append(times, ts)
		}
		if err := rows.Close(); err != nil {
			return 0, err
		}
	}
	if len(times) < 2 {
		return 0, nil
	}
	return time.Duration(times[0]-times[1]) * time.Millisecond, nil
}
