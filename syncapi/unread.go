package syncapi

import (
	"context"

	"github.com/tessera-hs/tessera/push"
)

// UnreadCounter computes a user's unread notification counts in a joined
// room; *push.Service satisfies it. pos is the stream position the
// response reaches: the counts must include what its events caused.
type UnreadCounter interface {
	UnreadCounts(ctx context.Context, userID, roomID string, pos int64) (push.Counts, map[string]push.Counts, error)
}

// SetUnreadCounter installs the source of unread counts; call it once,
// before serving requests. Without one, rooms report no counts.
func (s *Service) SetUnreadCounter(c UnreadCounter) { s.unreadCounter = c }

// unread returns a joined room's unread_notifications: the notifications
// and highlights after where the user has read up to.
// https://spec.matrix.org/v1.19/client-server-api/#receiving-notifications
//
// Per-thread counts (unread_thread_notifications, for filters that ask
// for them) are not reported yet: the counts are always the whole room's,
// which is what a client that does not ask for them expects.
func (s *Service) unread(ctx context.Context, userID, roomID string) (map[string]int, error) {
	c := s.unreadCounter
	if c == nil {
		return map[string]int{}, nil
	}
	total, _, err := c.UnreadCounts(ctx, userID, roomID, s.rooms.CurrentPos())
	if err != nil {
		return nil, err
	}
	return map[string]int{"notification_count": total.Notifications, "highlight_count": total.Highlights}, nil
}
