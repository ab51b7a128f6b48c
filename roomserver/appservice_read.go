package roomserver

import (
	"context"
	"fmt"
	"sync/atomic"
)

// EventsAfter returns the committed events with stream positions in
// (from, CurrentPos], oldest first, at most limit: what the application
// service senders read from their cursors, so that nothing needs queueing
// per event (a cursor is enough to survive a restart).
func (s *Service) EventsAfter(ctx context.Context, from int64, limit int) ([]*Event, error) {
	to := atomic.LoadInt64(&s.commit.published)
	if from >= to {
		return nil, nil
	}
	evs, err := s.queryEvents(ctx, `SELECT event_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2
		ORDER BY stream_pos LIMIT $3`, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", from, err)
	}
	return evs, nil
}
