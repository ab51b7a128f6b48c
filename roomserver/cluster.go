package roomserver

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/internal/database"
)

// Several processes on one PostgreSQL database (docs/scaling.md): event
// transactions of all processes commit at once, taking their stream
// positions from one sequence, and each process publishes with NOTIFY the
// position below which it will not commit again (clusterpos.go); every
// process applies the events others committed, in stream order, to its
// caches and its syncing clients.

// Cluster is this process's place in a deployment of several.
type Cluster struct {
	// Instance is this process's name.
	Instance string
	// Index is its place among the Size instances (0 <= Index < Size);
	// it keeps the state group IDs each process allocates apart.
	Index, Size int
	// Owns reports whether this process owns a room: runs its sequencer
	// (a hash of the room ID). The rooms this process creates are chosen
	// so that it owns them. nil: every room.
	Owns func(roomID string) bool
	// Delegate asks the owner of roomID to run one of the writes below
	// for userID there, for the writes a process makes of its own accord
	// (not a client's request the forwarder sends on): DelegateProfile,
	// DelegateLeave.
	Delegate func(ctx context.Context, roomID, op, userID string) error
}

// The writes Cluster.Delegate asks the owner to run.
const (
	// DelegateProfile updates the user's member event (UpdateMemberProfileIn).
	DelegateProfile = "member_profile"
	// DelegateLeave makes the user leave (a deactivation).
	DelegateLeave = "leave"
)

// owns reports whether this process runs roomID's sequencer.
func (s *Service) owns(roomID string) bool {
	cl := s.cfg.Cluster
	return cl == nil || cl.Owns == nil || cl.Owns(roomID)
}

// elsewhere runs op for userID in roomID on the room's owner and reports
// true, or reports false when this process is the owner (the caller runs
// it).
func (s *Service) elsewhere(ctx context.Context, roomID, op, userID string) (bool, error) {
	if s.owns(roomID) || s.cfg.Cluster.Delegate == nil {
		return false, nil
	}
	return true, s.cfg.Cluster.Delegate(ctx, roomID, op, userID)
}

// maxInstances bounds the instances, whose indexes partition the state
// group IDs and the outliers' positions modulo this.
const maxInstances = 1024

// eventsChannel is the NOTIFY channel of the event writers' bounds; the
// payload is "INSTANCE alive|dead POS" (clusterpos.go).
const eventsChannel = "tessera_events"

// clusterStart prepares a clustered service: state group IDs and outlier
// positions partitioned between the instances, and the multi-writer
// stream positions (clusterpos.go).
func (s *Service) clusterStart(ctx context.Context) error {
	cl := s.cfg.Cluster
	if cl == nil {
		s.groupStride = 1
		return nil
	}
	if cl.Size < 1 || cl.Size > maxInstances || cl.Index < 0 || cl.Index >= cl.Size {
		return fmt.Errorf("cluster: instance index %d of %d (at most %d instances)", cl.Index, cl.Size, maxInstances)
	}
	if s.db.Engine() != database.Postgres {
		return fmt.Errorf("cluster: several processes need PostgreSQL")
	}
	// The first ID this process hands out is above every stored one and
	// congruent to its index: no other process can hand it out. Both are
	// taken before commit (state groups by the sequencers), without a
	// round trip.
	s.groupStride = maxInstances
	s.lastGroupID = s.lastGroupID - s.lastGroupID%maxInstances + int64(cl.Index)
	c := s.commit
	low := -c.lastOutlier.Load()
	c.lastOutlier.Store(-(low - low%maxInstances + int64(cl.Index)))
	c.outlierStride = maxInstances
	return s.clusterPositionsStart(ctx)
}

// applyMerged brings the in-memory state up to the positions from < p <=
// to: this process's committed batches own and the events other
// processes committed, others, in stream order. It makes those positions
// readable, answers own's senders and tells the listeners: the ones that
// hear only this process's commits of own's events, the others of all.
func (s *Service) applyMerged(own []*commitReq, others []*Event, from, to int64) {
	c := s.commit
	var targets []string
	members := false
	var mine []*Event
	for _, req := range own {
		for _, pe := range req.events {
			if pe.outlier {
				continue
			}
			if rel, ok := relationIn(pe.ev); ok {
				targets = append(targets, rel)
			}
			mine = append(mine, pe.ev)
		}
	}
	rooms := map[string]bool{}
	for _, ev := range others {
		if rel, ok := relationIn(ev); ok {
			targets = append(targets, rel)
		}
		rooms[ev.RoomID] = true
	}
	// Before the events are published: a reader woken by them must not
	// trust an old "no relations".
	s.noRels.related(targets)
	for _, req := range own {
		for _, pe := range req.events {
			if pe.outlier {
				continue
			}
			if pe.currentState != nil || pe.ev.Type() == spec.MRoomMember && pe.ev.StateKey() != nil {
				c.lastMember.Store(max(c.lastMember.Load(), pe.ev.StreamPos))
				members = true
			}
			s.cache.put(pe.ev)
			s.facts.observe(pe.ev, pe.currentState != nil)
			if pe.redaction != nil {
				s.cache.forget(pe.redaction.targetID)
			}
		}
	}
	for _, ev := range others {
		if ev.Type() == spec.MRoomRedaction {
			// The cached copy of the target is not redacted yet.
			s.cache.forget(redactsOf(ev))
		}
		if ev.StateKey() != nil {
			if ev.Type() == spec.MRoomMember {
				c.lastMember.Store(max(c.lastMember.Load(), ev.StreamPos))
			}
			// State written elsewhere may be a resolution this process
			// cannot see from the event: the room's facts load again.
			// Memberships likewise.
			members = true
		}
		s.facts.observe(ev, ev.StateKey() != nil)
	}
	if members {
		s.memberships.Invalidate()
		s.membership.Invalidate()
	}
	all := make([]*Event, 0, len(mine)+len(others))
	all = append(append(all, mine...), others...)
	slices.SortFunc(all, func(a, b *Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	s.recent.add(from, all)
	atomic.StoreInt64(&c.published, to)
	if len(mine) > 0 {
		atomic.StoreInt64(&c.localPublished, max(atomic.LoadInt64(&c.localPublished), mine[len(mine)-1].StreamPos))
	}
	for _, req := range own {
		req.done <- nil
	}
	// A sequencer here for one of the others' rooms holds state another
	// process has moved past: it loads the room again before its next
	// event. Not waited for: the sequencer may be busy.
	for roomID := range rooms {
		go s.resetRoom(roomID)
	}
	s.mu.Lock()
	ls, all2 := s.listeners, s.allListeners
	s.mu.Unlock()
	if len(mine) > 0 {
		for _, l := range ls {
			l(mine)
		}
	}
	if len(all) > 0 {
		for _, l := range all2 {
			l(all)
		}
	}
}

// relationIn returns the event an event relates to, if any.
func relationIn(ev *Event) (string, bool) {
	if !bytes.Contains(ev.Content(), []byte(`"m.relates_to"`)) {
		return "", false
	}
	rel, ok := RelationOf(ev.Content())
	if !ok {
		return "", false
	}
	return rel.EventID, true
}

// SubscribeAll registers a listener for every committed event, including
// those other processes of the deployment commit (the sync notifier, which
// wakes this process's clients). Listeners registered with Subscribe hear
// only this process's commits, so that what they do (push, federation,
// application services) happens once in the deployment.
func (s *Service) SubscribeAll(l Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allListeners = append(s.allListeners, l)
}

// ListenCluster applies the events other processes commit, as they
// announce them, until Close. connect opens the dedicated connection the
// listener holds (it is reopened after a failure, and what was committed
// meanwhile is applied then).
func (s *Service) ListenCluster(connect func(context.Context) (*pgx.Conn, error)) {
	s.stopListening = cluster.Listen(connect, eventsChannel, clusterHandler{s}, s.log.WithField("channel", eventsChannel))
}

type clusterHandler struct{ s *Service }

func (h clusterHandler) HandleNotification(ctx context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	f := strings.Fields(n.Payload)
	if len(f) != 3 || f[1] != "alive" && f[1] != "dead" {
		return fmt.Errorf("bad %s payload %q", eventsChannel, n.Payload)
	}
	pos, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return fmt.Errorf("bad %s payload %q", eventsChannel, n.Payload)
	}
	h.s.cpos.heard(f[0], pos, f[1] == "alive")
	h.s.applyMu.Lock()
	defer h.s.applyMu.Unlock()
	return h.s.advance(ctx)
}

// HandleBacklog reads every writer's bound again, as notifications may
// have been lost while the listener was not listening (it is listening
// already, so nothing falls between), and publishes what it can.
func (h clusterHandler) HandleBacklog(ctx context.Context, _ string, _ *pgx.Conn) error {
	if err := h.s.loadWriters(ctx); err != nil {
		return err
	}
	h.s.applyMu.Lock()
	defer h.s.applyMu.Unlock()
	return h.s.advance(ctx)
}
