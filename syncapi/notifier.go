// Package syncapi serves /sync: the stream positions and tokens, the
// notifier that wakes waiting clients, and the computation of sync
// responses. (It is "syncapi" rather than "sync" so that it does not shadow
// the standard library's sync package.)
package syncapi

import (
	"context"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/roomserver"
)

// Notifier wakes the long-polling requests of exactly the users a change
// concerns. Nothing polls: a waiting request sleeps on its user's channel
// until that channel is closed by a change, its timeout, or its client
// going away.
type Notifier struct {
	log    logrus.FieldLogger
	joined func(ctx context.Context, roomID string) ([]string, error)

	mu      sync.Mutex
	waiters map[string]chan struct{} // user -> closed on the next change
	// members caches each room's joined users; member events keep it
	// current, a miss is loaded from the room server.
	members map[string]map[string]bool

	events chan []*roomserver.Event
}

// NewNotifier starts a notifier. joined lists a room's joined users.
func NewNotifier(log logrus.FieldLogger, joined func(ctx context.Context, roomID string) ([]string, error)) *Notifier {
	n := &Notifier{
		log: log, joined: joined,
		waiters: map[string]chan struct{}{},
		members: map[string]map[string]bool{},
		events:  make(chan []*roomserver.Event, 1024),
	}
	go n.loop()
	return n
}

// OnEvents is the room server's listener. It runs on the committer's
// goroutine, so it only hands the events over.
func (n *Notifier) OnEvents(evs []*roomserver.Event) { n.events <- evs }

// Close stops the notifier's goroutine.
func (n *Notifier) Close() { close(n.events) }

func (n *Notifier) loop() {
	for evs := range n.events {
		users := map[string]bool{}
		for _, ev := range evs {
			for _, u := range n.concerned(ev) {
				users[u] = true
			}
		}
		for u := range users {
			n.Wake(u)
		}
	}
}

// concerned lists the users an event is news to: the room's joined members
// and, for a member event, its target (an invitee, say) before and after.
func (n *Notifier) concerned(ev *roomserver.Event) []string {
	n.mu.Lock()
	members, ok := n.members[ev.RoomID]
	n.mu.Unlock()
	if !ok {
		list, err := n.joined(context.Background(), ev.RoomID)
		if err != nil {
			n.log.WithError(err).WithField("room_id", ev.RoomID).Error("notifier: loading room members")
			return nil
		}
		members = make(map[string]bool, len(list))
		for _, u := range list {
			members[u] = true
		}
		n.mu.Lock()
		n.members[ev.RoomID] = members
		n.mu.Unlock()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(members)+1)
	for u := range members {
		out = append(out, u)
	}
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
		target := *ev.StateKey()
		out = append(out, target)
		// The event list already reflects this member event (the cache was
		// either loaded after the commit or is updated here).
		if m, _ := ev.Membership(); m == "join" {
			members[target] = true
		} else {
			delete(members, target)
		}
	}
	return out
}

// Wake tells a user's waiting requests that something changed.
func (n *Notifier) Wake(userID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiters[userID]; ok {
		close(ch)
		delete(n.waiters, userID)
	}
}

// WakeRoom wakes the joined members of a room (for ephemeral changes such
// as receipts and typing).
func (n *Notifier) WakeRoom(roomID string) {
	members, err := n.roomMembers(roomID)
	if err != nil {
		n.log.WithError(err).WithField("room_id", roomID).Error("notifier: loading room members")
		return
	}
	for _, u := range members {
		n.Wake(u)
	}
}

// roomMembers lists a room's joined users from the cache, loading it on a
// miss.
func (n *Notifier) roomMembers(roomID string) ([]string, error) {
	n.mu.Lock()
	members, ok := n.members[roomID]
	if ok {
		out := make([]string, 0, len(members))
		for u := range members {
			out = append(out, u)
		}
		n.mu.Unlock()
		return out, nil
	}
	n.mu.Unlock()
	list, err := n.joined(context.Background(), roomID)
	if err != nil {
		return nil, err
	}
	return list, nil
}

// Changed returns a channel that is closed on the user's next change. Take
// it before checking for news, so a change between the check and the wait
// is not missed.
func (n *Notifier) Changed(userID string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.waiters[userID]
	if !ok {
		ch = make(chan struct{})
		n.waiters[userID] = ch
	}
	return ch
}
