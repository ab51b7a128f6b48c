package push

import (
	"context"
	"fmt"
	"slices"

	"github.com/tessera-hs/tessera/internal/database"
)

// Unread counts across the processes of a deployment that runs several on
// one PostgreSQL database (docs/scaling.md). Each event is evaluated by the
// process that commits it, which keeps its notifications pending in memory
// for a moment and then writes them (flush). The other processes count
// from the database: every row, not only those up to their own flushed
// position, and they drop their cached counts of the rooms a flush
// elsewhere wrote to, told by the flush's transaction.

// FlushAnnouncer tells the other processes, inside tx, that tx writes
// notifications in rooms; it must reach them only if tx commits (NOTIFY).
type FlushAnnouncer func(ctx context.Context, tx *database.Tx, rooms []string) error

// SetFlushAnnouncer makes the service announce its flushes with f and
// count the other processes' notifications. Call it once, before the
// first event.
func (s *Service) SetFlushAnnouncer(f FlushAnnouncer) { s.elsewhere = f }

// CountsChangedElsewhere drops the cached counts in rooms, where another
// process wrote notifications (nil: everywhere, after notifications may
// have been missed), and wakes their members' syncs here.
func (s *Service) CountsChangedElsewhere(rooms []string) {
	if rooms == nil {
		s.counts.invalidateAll()
		return
	}
	for _, roomID := range rooms {
		s.counts.invalidateRoom(roomID)
	}
}

// unwritten returns the pending rows (of a user in a room, after flushed)
// that are not in the database yet: a flush may have written some of them
// since they were read, and the database is read in full.
func (s *Service) unwritten(ctx context.Context, userID, roomID string, flushed int64, pending []actionRow) ([]actionRow, error) {
	if len(pending) == 0 {
		return nil, nil
	}
	written, err := database.Int64s(ctx, s.db, `SELECT stream_pos FROM event_push_actions
		WHERE user_id = $1 AND room_id = $2 AND stream_pos > $3`, userID, roomID, flushed)
	if err != nil {
		return nil, fmt.Errorf("unread counts: %w", err)
	}
	if len(written) == 0 {
		return pending, nil
	}
	out := make([]actionRow, 0, len(pending))
	for _, r := range pending {
		if !slices.Contains(written, r.pos) {
			out = append(out, r)
		}
	}
	return out, nil
}

// flushedRooms lists the rooms of rows and marks (a user's own event
// marks their thread read), once each.
func flushedRooms(rows []actionRow, marks []sentMark) []string {
	var out []string
	for _, r := range rows {
		if !slices.Contains(out, r.roomID) {
			out = append(out, r.roomID)
		}
	}
	for _, m := range marks {
		if !slices.Contains(out, m.roomID) {
			out = append(out, m.roomID)
		}
	}
	return out
}
