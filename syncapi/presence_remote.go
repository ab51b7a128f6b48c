package syncapi

import (
	"context"

	"github.com/tessera-hs/tessera/users"
)

// SetPublishHook sets what is told of every presence change of our users
// that is published (the federation edge sends it to the servers that
// share a room with them). Set it before serving.
func (p *Presence) SetPublishHook(f func(ctx context.Context, userID string)) { p.onPublish = f }

// SetRemote stores the presence of a user of another server, as their
// server sent it (an m.presence EDU), and wakes the syncs that see it. No
// timers run for it: the user's server sends the next change.
// https://spec.matrix.org/v1.19/server-server-api/#presence
func (p *Presence) SetRemote(ctx context.Context, st users.PresenceState) error {
	if err := validPresence(st.Presence); err != nil {
		return err
	}
	p.mu.Lock()
	enabled := p.enabled && !p.stopped
	p.mu.Unlock()
	if !enabled {
		return nil
	}
	if _, err := p.users.PutPresence(ctx, st); err != nil {
		return err
	}
	p.wakeRooms(st.UserID)
	return nil
}

// ChangedElsewhere is told that another process of the deployment
// (docs/scaling.md) published a local user's presence: what this process
// keeps live of the user follows the stored state, so that it does not
// publish again from an older one, and the syncs here of those who see
// the user wake. That process told other servers and application
// services.
func (p *Presence) ChangedElsewhere(ctx context.Context, userID string) {
	p.mu.Lock()
	if e, ok := p.live[userID]; ok {
		st, err := p.users.Presence(ctx, userID)
		if err != nil {
			p.notifier.log.WithError(err).WithField("user_id", userID).Error("presence: reading a change made elsewhere")
		} else if st != nil && st.StreamPos > e.pub.StreamPos {
			e.pub = *st
			e.lastActive = max(e.lastActive, st.LastActiveTS)
		}
	}
	p.mu.Unlock()
	p.wakeRooms(userID)
}
