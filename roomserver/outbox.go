package roomserver

import (
	"context"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
)

// Outbox queues a committed event for other servers, inside the database
// transaction that stores the event: an event is queued if and only if it
// is stored, whatever happens to the process between the two.
type Outbox func(ctx context.Context, tx *database.Tx, dests []spec.ServerName, pdu []byte) error

// SetOutbox makes the room server queue events for the servers of their
// rooms (federation's outbound queue).
func (s *Service) SetOutbox(o Outbox) { s.outbox.Store(&o) }

// maxServerCache bounds the committer's cache of each room's servers.
const maxServerCache = 10_000

// queueOut queues pe for the servers that must receive it, in the commit's
// transaction. Our own events, and those we accepted as the resident
// server (Forward), go to every other server with a member in the room,
// and a membership change also to the server of the member it is about (a
// kick or ban of its last user there). Events from a transaction are not
// sent on: their origin sends them to everyone itself.
func (c *committer) queueOut(ctx context.Context, tx *database.Tx, roomID string, pe *pendingEvent) error {
	ob := c.s.outbox.Load()
	if ob == nil || pe.outlier || (pe.ev.Origin != "" && !pe.ev.Forward) {
		return nil
	}
	ev := pe.ev
	isMember := ev.Type() == spec.MRoomMember && ev.StateKey() != nil
	c.serversMu.Lock()
	if isMember || pe.currentState != nil {
		delete(c.servers, roomID) // read again, this change included
	}
	servers, ok := c.servers[roomID]
	c.serversMu.Unlock()
	if !ok {
		rows, err := tx.QueryContext(ctx, `SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'`, roomID)
		if err != nil {
			return fmt.Errorf("servers in room: %w", err)
		}
		for rows.Next() {
			var uid string
			if err := rows.Scan(&uid); err != nil {
				rows.Close()
				return err
			}
			if u, err := spec.NewUserID(uid, true); err == nil && !slices.Contains(servers, u.Domain()) {
				servers = append(servers, u.Domain())
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		c.serversMu.Lock()
		if c.servers == nil || len(c.servers) >= maxServerCache {
			c.servers = map[string][]spec.ServerName{}
		}
		c.servers[roomID] = servers
		c.serversMu.Unlock()
	}
	dests := slices.Clone(servers)
	if isMember {
		if u, err := spec.NewUserID(*ev.StateKey(), true); err == nil && !slices.Contains(dests, u.Domain()) {
			dests = append(dests, u.Domain())
		}
	}
	dests = slices.DeleteFunc(dests, func(d spec.ServerName) bool { return d == c.s.cfg.ServerName || d == ev.Origin })
	if len(dests) == 0 {
		return nil
	}
	return (*ob)(ctx, tx, dests, ev.JSON())
}
