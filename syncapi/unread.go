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

// unread returns a joined room's unread_notifications, the notifications
// and highlights after where the user has read up to, and, when the
// filter asks for per-thread counts, its unread_thread_notifications.
// https://spec.matrix.org/v1.19/client-server-api/#receiving-notifications
//
// With per-thread counts, unread_notifications counts the main timeline
// only and each thread (keyed by its root's event ID) is counted apart;
// threads without notifications are left out, and the object is nil (so
// omitted) when none has any.
func (s *Service) unread(ctx context.Context, userID, roomID string, threads bool) (map[string]int, map[string]map[string]int, error) {
	c := s.unreadCounter
	if c == nil {
		return map[string]int{}, nil, nil
	}
	// Push evaluates every event of the deployment in each process (for
	// the users it owns, docs/scaling.md): wait for all of them.
	total, byThread, err := c.UnreadCounts(ctx, userID, roomID, s.rooms.CurrentPos())
	if err != nil {
		return nil, nil, err
	}
	if !threads {
		return countsJSON(total), nil, nil
	}
	var perThread map[string]map[string]int
	for t, n := range byThread {
		if t == push.MainThread {
			continue
		}
		if perThread == nil {
			perThread = map[string]map[string]int{}
		}
		perThread[t] = countsJSON(n)
	}
	return countsJSON(byThread[push.MainThread]), perThread, nil
}

func countsJSON(c push.Counts) map[string]int {
	return map[string]int{"notification_count": c.Notifications, "highlight_count": c.Highlights}
}
