package roomserver

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// PurgeRequest says which of a room's history to delete: the events
// topologically before EventID, or before the first event sent at or after
// Before (exactly one of the two).
type PurgeRequest struct {
	RoomID  string
	EventID string
	Before  time.Time
	// DeleteLocal deletes events our users sent too; without it only
	// other servers' events go, which they can serve again (Synapse's
	// delete_local_events).
	DeleteLocal bool
}

// PurgeListener is told which events a purge deleted, after each batch
// commits, so that domains keeping per-event rows (push actions) drop them.
type PurgeListener func(ctx context.Context, roomID string, eventIDs []string)

// SetPurgeListener sets the listener of purges. Call before serving.
func (s *Service) SetPurgeListener(l PurgeListener) { s.purgeListener = l }

// purgeBatch bounds the events one purge transaction deletes, so that the
// committer, which shares the database's one writer, waits only briefly.
const purgeBatch = 1000

// PurgeHistory deletes a room's history before a point while keeping the
// room whole:
//   - state events are never deleted: they are the current state, the
//     state at every event kept and the auth events of everything; a room's
//     state events are few beside its messages;
//   - forward extremities are kept, so the next event has its prev_events;
//   - the deepest purged position is remembered, and /messages does not
//     backfill from other servers below it (it would fetch back what was
//     purged); other servers asking us to backfill it get the events we
//     still have.
//
// Events that cite deleted ones keep their prev_events; the deleted events
// are simply not found, as for a room joined over federation.
// https://element-hq.github.io/synapse/latest/admin_api/purge_history_api.html
func (s *Service) PurgeHistory(ctx context.Context, req PurgeRequest) (int, error) {
	point, err := s.PurgePoint(ctx, req)
	if err != nil {
		return 0, err
	}
	total := 0
	for {
		n, err := s.purgeBatch(ctx, req, point)
		if n > 0 && total == 0 {
			// Marked only when something went: a purge that deleted
			// nothing (a room joined over federation whose events are
			// all newer than the cut-off) leaves /messages free to
			// backfill the history before the join.
			if err := s.markPurged(ctx, req.RoomID, point); err != nil {
				return n, err
			}
		}
		total += n
		if err != nil {
			return total, err
		}
		if n < purgeBatch {
			break
		}
	}
	if total > 0 {
		if _, err := s.pruneStateGroups(ctx, req.RoomID); err != nil {
			return total, err
		}
	}
	return total, nil
}

// PurgePoint checks a purge request and turns it into a topological
// position: events before it are purged. An unknown room or event is 404
// M_NOT_FOUND.
func (s *Service) PurgePoint(ctx context.Context, req PurgeRequest) (Token, error) {
	if (req.EventID == "") == req.Before.IsZero() {
		return Token{}, mxerr.InvalidParam("give either an event or a timestamp to purge up to")
	}
	if _, err := s.RoomVersion(ctx, req.RoomID); err != nil {
		return Token{}, err
	}
	if req.EventID != "" {
		ev, err := s.event(ctx, req.EventID)
		if err != nil || ev.RoomID != req.RoomID {
			return Token{}, mxerr.NotFound("Event not found in this room")
		}
		return Token{Depth: ev.Depth(), Stream: ev.StreamPos}, nil
	}
	// The first event in topological order sent at or after the cut-off:
	// an event whose sender claims a timestamp too early is skipped, and
	// one claiming a timestamp too late stops the purge early, which is
	// the safe way to err.
	var t Token
	err := s.db.QueryRowContext(ctx, `SELECT e.depth, e.stream_pos FROM events e
		WHERE e.room_id = $1 AND `+HistorySQL+` AND e.origin_ts >= $2
		ORDER BY e.depth, e.stream_pos LIMIT 1`, req.RoomID, req.Before.UnixMilli()).Scan(&t.Depth, &t.Stream)
	if isNoRows(err) {
		return Token{Depth: math.MaxInt64, Stream: math.MaxInt64}, nil
	}
	if err != nil {
		return Token{}, fmt.Errorf("purge point: %w", err)
	}
	return t, nil
}

// purgeBatch deletes up to purgeBatch events before point in one
// transaction and returns how many it deleted.
func (s *Service) purgeBatch(ctx context.Context, req PurgeRequest, point Token) (int, error) {
	var ids []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		q := `SELECT e.event_id, e.stream_pos FROM events e
			WHERE e.room_id = $1 AND e.state_key IS NULL
			AND (e.depth < $2 OR (e.depth = $2 AND e.stream_pos < $3))
			AND NOT EXISTS (SELECT 1 FROM forward_extremities f WHERE f.room_id = e.room_id AND f.event_id = e.event_id)`
		args := []any{req.RoomID, point.Depth, point.Stream}
		if !req.DeleteLocal {
			q += ` AND e.sender NOT LIKE $5`
			args = append(args, purgeBatch, "%:"+string(s.cfg.ServerName))
		} else {
			args = append(args, purgeBatch)
		}
		q += ` ORDER BY e.depth, e.stream_pos LIMIT $4`
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		var positions []any
		for rows.Next() {
			var id string
			var pos int64
			if err := rows.Scan(&id, &pos); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			positions = append(positions, pos)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		ph, idArgs := placeholders(ids, 0)
		// The threads the purged events were in, read again below.
		roots, err := database.Strings(ctx, tx, `SELECT DISTINCT relates_to FROM event_relations
			WHERE rel_type = 'm.thread' AND event_id IN (`+ph+`)`, idArgs...)
		if err != nil {
			return fmt.Errorf("purge threads: %w", err)
		}
		for _, del := range []string{
			`DELETE FROM events WHERE event_id IN (` + ph + `)`,
			`DELETE FROM event_edges WHERE event_id IN (` + ph + `)`,
			`DELETE FROM event_relations WHERE event_id IN (` + ph + `)`,
			`DELETE FROM threads WHERE root_id IN (` + ph + `)`,
			`DELETE FROM pending_redactions WHERE redaction_id IN (` + ph + `) OR target_id IN (` + ph + `)`,
			`DELETE FROM backfilled_events WHERE event_id IN (` + ph + `)`,
		} {
			if _, err := tx.ExecContext(ctx, del, idArgs...); err != nil {
				return fmt.Errorf("purge: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE rowid IN (`+ph+`)`, positions...); err != nil {
			return fmt.Errorf("purge search index: %w", err)
		}
		if len(roots) > 0 {
			// A thread that lost events but kept its root: gone when it
			// has no events left, else its count and latest event are
			// read again from the relations left.
			rph, rootArgs := placeholders(roots, 0)
			if _, err := tx.ExecContext(ctx, `DELETE FROM threads WHERE root_id IN (`+rph+`) AND NOT EXISTS
				(SELECT 1 FROM event_relations r WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread')`, rootArgs...); err != nil {
				return fmt.Errorf("purge threads: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE threads SET
				count = (SELECT COUNT(*) FROM event_relations r WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread'),
				(latest_id, latest_depth, latest_stream) = (SELECT r.event_id, r.depth, r.stream_pos FROM event_relations r
					WHERE r.relates_to = threads.root_id AND r.rel_type = 'm.thread' ORDER BY r.depth DESC, r.stream_pos DESC LIMIT 1)
				WHERE root_id IN (`+rph+`)`, rootArgs...); err != nil {
				return fmt.Errorf("purge threads: %w", err)
			}
		}
		tx.AfterCommit(func() {
			for _, id := range ids {
				s.cache.forget(id)
			}
			s.recent.remove(req.RoomID, ids)
		})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purge history of %s: %w", req.RoomID, err)
	}
	if len(ids) > 0 && s.purgeListener != nil {
		s.purgeListener(ctx, req.RoomID, ids)
	}
	return len(ids), nil
}

// markPurged records that the room's history before point is purged (the
// furthest point of all its purges).
func (s *Service) markPurged(ctx context.Context, roomID string, point Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO room_purges (room_id, depth, stream_pos, purged_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id) DO UPDATE SET purged_ts = excluded.purged_ts,
			depth = CASE WHEN `+laterPoint+` THEN excluded.depth ELSE room_purges.depth END,
			stream_pos = CASE WHEN `+laterPoint+` THEN excluded.stream_pos ELSE room_purges.stream_pos END`,
		roomID, point.Depth, point.Stream, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("purge mark of %s: %w", roomID, err)
	}
	return nil
}

const laterPoint = `(excluded.depth > room_purges.depth OR (excluded.depth = room_purges.depth AND excluded.stream_pos > room_purges.stream_pos))`

// purgedBelowOrErr is purgedBelow for /messages, which on a failed read
// does not backfill (and logs why).
func (s *Service) purgedBelowOrErr(ctx context.Context, roomID string, pos Token) bool {
	purged, err := s.purgedBelow(ctx, roomID, pos)
	if err != nil {
		s.log.WithError(err).WithField("room_id", roomID).Warn("reading the purge mark; not backfilling")
		return true
	}
	return purged
}

// purgedBelow reports whether the room's history before pos was purged
// here, so that /messages does not fetch it back from other servers.
func (s *Service) purgedBelow(ctx context.Context, roomID string, pos Token) (bool, error) {
	var depth, stream int64
	err := s.db.QueryRowContext(ctx, `SELECT depth, stream_pos FROM room_purges WHERE room_id = $1`, roomID).Scan(&depth, &stream)
	if isNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("purge mark: %w", err)
	}
	return pos.Depth < depth || (pos.Depth == depth && pos.Stream < stream), nil
}
