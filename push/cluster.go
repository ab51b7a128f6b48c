package push

import (
	"context"
	"fmt"
	"math"

	"github.com/tessera-hs/tessera/internal/database"
)

// Several processes on one database (docs/scaling.md): each local user's
// notifications are evaluated and delivered by one process, the user's
// owner (a hash of the user ID), for every event of the deployment
// whichever process committed it. Evaluating where the event commits
// instead would leave the owner's pushers reading rows that several
// processes write, each flushing when it will: a cursor over them would
// skip a row flushed late below it, unless every process published how
// far it has flushed. Evaluated by the owner, a user's rows are written in
// stream order by one process, as in a single one, so that the pushers'
// cursors, the pending rows and the count cache work unchanged.

// Cluster is the push domain's share of a deployment of several
// processes. The Rooms it is given must hand it every event the
// deployment commits (roomserver.Service.SubscribeAll), in stream order.
type Cluster struct {
	// Owns reports whether this process evaluates and delivers a local
	// user's notifications.
	Owns func(userID string) bool
	// PushersChanged tells the owner of userID, after the change has
	// committed, that the user's pushers changed (set, deleted, an email
	// address confirmed or unsubscribed): it runs them.
	PushersChanged func(userID string)
	// ReadChanged tells the owner of userID that what the user has read
	// may have moved, for their pushers' badges.
	ReadChanged func(userID string)
}

// owns reports whether this process evaluates and delivers userID's
// notifications: always in one process.
func (s *Service) owns(userID string) bool {
	cl := s.cfg.Cluster
	return cl == nil || cl.Owns == nil || cl.Owns(userID)
}

// evaluates reports whether this process evaluates push rules for userID.
func (s *Service) evaluates(userID string) bool { return s.isLocal(userID) && s.owns(userID) }

// pendingFor is pendingStore.forUser for a user this process evaluates.
// Another process's user has nothing pending here, and every row of theirs
// that is anywhere is in the database (flushed by their owner), with no
// bound from this process's flushes.
func (s *Service) pendingFor(userID, roomID string) (int64, []actionRow, map[string]int64) {
	if !s.owns(userID) {
		return math.MaxInt64, nil, map[string]int64{}
	}
	return s.pending.forUser(userID, roomID)
}

// pushersChanged runs a user's pushers as stored after a change: here if
// this process owns the user, else on the owner.
func (s *Service) pushersChanged(ctx context.Context, userID string) error {
	if !s.owns(userID) {
		s.cfg.Cluster.PushersChanged(userID)
		return nil
	}
	if err := s.email.reload(ctx, userID); err != nil {
		return err
	}
	return s.delivery.resync(ctx, func(k pusherKey) bool { return k.userID == userID }, "user_id = $1", userID)
}

// PushersChangedElsewhere runs the pushers of a user this process owns
// after another process changed them; userID "" (notifications may have
// been missed) reloads every pusher this process owns.
func (s *Service) PushersChangedElsewhere(userID string) {
	ctx := context.Background()
	var err error
	switch {
	case userID == "":
		err = s.reloadAll(ctx)
	case s.owns(userID):
		err = s.pushersChanged(ctx, userID)
	default:
		return
	}
	if err != nil {
		s.log.WithError(err).WithField("user_id", userID).Error("push: loading pushers changed by another process")
	}
}

// ReadChangedElsewhere sends the badge updates of a user this process
// owns after their read position moved through another process.
func (s *Service) ReadChangedElsewhere(userID string) {
	if userID != "" && s.owns(userID) {
		s.delivery.wakeUser(userID, true)
	}
}

// reloadAll brings every pusher this process owns in line with the
// stored ones.
func (s *Service) reloadAll(ctx context.Context) error {
	if err := s.delivery.resync(ctx, func(pusherKey) bool { return true }, "1 = 1"); err != nil {
		return err
	}
	if s.email == nil {
		return nil
	}
	users, err := s.ownedEmailUsers(ctx)
	if err != nil {
		return err
	}
	s.email.mu.Lock()
	for u := range s.email.users {
		users = append(users, u) // deleted meanwhile: reload forgets them
	}
	s.email.mu.Unlock()
	for _, u := range users {
		if err := s.email.reload(ctx, u); err != nil {
			return fmt.Errorf("reload email pushers: %w", err)
		}
	}
	return nil
}

// ownedEmailUsers are the users with enabled email pushers whose
// notifications this process delivers.
func (s *Service) ownedEmailUsers(ctx context.Context) ([]string, error) {
	all, err := database.Strings(ctx, s.db, `SELECT DISTINCT user_id FROM pushers WHERE kind = 'email' AND enabled = 1`)
	if err != nil {
		return nil, fmt.Errorf("load email pushers: %w", err)
	}
	var out []string
	for _, u := range all {
		if s.owns(u) {
			out = append(out, u)
		}
	}
	return out, nil
}
