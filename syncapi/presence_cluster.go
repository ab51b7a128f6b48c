package syncapi

import (
	"context"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Presence across the processes of a deployment that runs several on one
// PostgreSQL database (docs/scaling.md). A local user's live presence (the
// syncing count, the idle and offline timers) is kept by the process that
// owns the user (a hash of the user ID), so that each timer runs once:
// the other processes delegate what changes it to the owner. As Synapse's
// workers do, a process tells the owner only when the user starts syncing
// through it (none of the user's syncs was running here) and when they
// stopped, presenceSyncLinger after their last sync here ended, so that a
// client's back-to-back long-polls cost nothing. What the owner publishes
// is stored and reaches every process's syncs like any stream
// (users.StreamMovedElsewhere, ChangedElsewhere).

// PresenceCluster is what presence needs from the deployment.
type PresenceCluster struct {
	// Owns reports whether this process owns a user.
	Owns func(userID string) bool
	// Delegate runs a call on the user's owner (RunDelegated there).
	Delegate func(ctx context.Context, call PresenceCall) error
}

// PresenceCall is a change of a user's presence delegated to their owner.
type PresenceCall struct {
	// Op is "set" (Presence and StatusMsg), "active", "sync_start"
	// (Presence is the sync's set_presence) or "sync_end".
	Op        string `json:"op"`
	UserID    string `json:"user_id"`
	Presence  string `json:"presence,omitempty"`
	StatusMsg string `json:"status_msg,omitempty"`
}

// presenceSyncLinger is how long after a user's last sync through a
// process ends it tells the owner they stopped syncing there; a sync in
// the meantime continues the same registration.
const presenceSyncLinger = 10 * time.Second

type presenceCluster struct {
	PresenceCluster

	mu sync.Mutex
	// here counts the syncs of users owned elsewhere running here.
	here map[string]*syncingHere
	// remote holds, on the owner, the done functions of the syncs other
	// processes registered, by user.
	remote map[string][]func()
}

type syncingHere struct {
	n          int
	registered bool
	end        *time.Timer
}

// SetCluster makes presence shared with the other processes. Call it once,
// after Start and before serving requests: it drops the timers Start set
// for users this process does not own.
func (p *Presence) SetCluster(c PresenceCluster) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cluster = &presenceCluster{PresenceCluster: c, here: map[string]*syncingHere{}, remote: map[string][]func(){}}
	for userID, e := range p.live {
		if !c.Owns(userID) {
			if e.timer != nil {
				e.timer.Stop()
			}
			delete(p.live, userID)
		}
	}
}

// elsewhere reports whether another process owns userID's presence.
func (p *Presence) elsewhere(userID string) bool {
	return p.cluster != nil && !p.cluster.Owns(userID)
}

// delegate runs call on the user's owner. A sync waits for it, so it is
// bounded well below a long-poll (an owner that is down refuses at once;
// one that hangs costs a sync through another process this wait).
func (p *Presence) delegate(ctx context.Context, call PresenceCall) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), delegateTimeout/2)
	defer cancel()
	return p.cluster.Delegate(ctx, call)
}

// syncingElsewhere is Syncing for a user another process owns.
func (p *Presence) syncingElsewhere(ctx context.Context, userID, setPresence string) (done func()) {
	c := p.cluster
	c.mu.Lock()
	h := c.here[userID]
	if h == nil {
		h = &syncingHere{}
		c.here[userID] = h
	}
	h.n++
	if h.end != nil {
		h.end.Stop()
		h.end = nil
	}
	register := !h.registered
	h.registered = true
	c.mu.Unlock()
	if register {
		if err := p.delegate(ctx, PresenceCall{Op: "sync_start", UserID: userID, Presence: setPresence}); err != nil {
			p.notifier.log.WithError(err).WithField("user_id", userID).Warn("presence: telling the user's owner of a sync")
			c.mu.Lock()
			h.registered = false
			c.mu.Unlock()
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			h.n--
			if h.n > 0 {
				return
			}
			h.end = time.AfterFunc(presenceSyncLinger, func() {
				c.mu.Lock()
				if h.n > 0 || c.here[userID] != h {
					c.mu.Unlock()
					return
				}
				delete(c.here, userID)
				registered := h.registered
				c.mu.Unlock()
				if !registered {
					return
				}
				if err := p.delegate(context.Background(), PresenceCall{Op: "sync_end", UserID: userID}); err != nil {
					p.notifier.log.WithError(err).WithField("user_id", userID).Warn("presence: telling the user's owner a sync ended")
				}
			})
		})
	}
}

// RunDelegated runs, on the user's owner, a change another process
// delegated.
func (p *Presence) RunDelegated(ctx context.Context, call PresenceCall) error {
	switch call.Op {
	case "set":
		return p.Set(ctx, call.UserID, call.Presence, call.StatusMsg)
	case "active":
		return p.Active(ctx, call.UserID)
	case "sync_start":
		// Not tied to the request: the sync runs on the other process.
		done := p.Syncing(context.WithoutCancel(ctx), call.UserID, call.Presence)
		p.cluster.mu.Lock()
		p.cluster.remote[call.UserID] = append(p.cluster.remote[call.UserID], done)
		p.cluster.mu.Unlock()
		return nil
	case "sync_end":
		p.cluster.mu.Lock()
		dones := p.cluster.remote[call.UserID]
		var done func()
		if n := len(dones); n > 0 {
			done = dones[n-1]
			if n == 1 {
				delete(p.cluster.remote, call.UserID)
			} else {
				p.cluster.remote[call.UserID] = dones[:n-1]
			}
		}
		p.cluster.mu.Unlock()
		if done != nil {
			done()
		}
		return nil
	}
	return mxerr.InvalidParam("Unknown presence call %q", call.Op)
}
