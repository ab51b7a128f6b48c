package roomserver

import (
	"bytes"
	"context"
	"fmt"
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
// transactions of all processes commit one at a time under an advisory
// lock, each taking the stream positions after the last one committed, and
// announce themselves with NOTIFY; every process applies the events others
// committed, in stream order, to its caches and its syncing clients.

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
// group IDs modulo this.
const maxInstances = 1024

// eventsLockKey is the advisory lock that serialises event transactions
// across processes ("tessera events" in no particular encoding).
const eventsLockKey = 0x7e55e7a0_e0e47

// eventsChannel is the NOTIFY channel of committed event transactions; the
// payload is "INSTANCE FROM TO": the positions FROM < pos <= TO.
const eventsChannel = "tessera_events"

// clusterStart prepares a clustered service: state group IDs partitioned
// between the instances.
func (s *Service) clusterStart() error {
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
	// congruent to its index: no other process can hand it out.
	s.groupStride = maxInstances
	s.lastGroupID = s.lastGroupID - s.lastGroupID%maxInstances + int64(cl.Index)
	return nil
}

// lockPositions, the first statement of a clustered event transaction,
// waits for the other processes' event transactions to end and returns the
// last stream position and outlier position they committed.
func lockPositions(ctx context.Context, tx *database.Tx) (last, lastOutlier int64, err error) {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(eventsLockKey)); err != nil {
		return 0, 0, fmt.Errorf("lock event positions: %w", err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0), LEAST(COALESCE(MIN(stream_pos), 0), 0) FROM events`).
		Scan(&last, &lastOutlier); err != nil {
		return 0, 0, fmt.Errorf("read event positions: %w", err)
	}
	return last, lastOutlier, nil
}

// announce tells the other processes, when tx commits, of the positions
// from < pos <= to.
func (s *Service) announce(ctx context.Context, tx *database.Tx, from, to int64) error {
	if to <= from {
		return nil
	}
	payload := fmt.Sprintf("%s %d %d", s.cfg.Cluster.Instance, from, to)
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, eventsChannel, payload); err != nil {
		return fmt.Errorf("announce events: %w", err)
	}
	return nil
}

// catchUp applies the events other processes committed up to position to,
// in stream order. The caller holds s.applyMu.
func (s *Service) catchUp(ctx context.Context, to int64) error {
	from := atomic.LoadInt64(&s.commit.published)
	if to <= from {
		return nil
	}
	evs, err := s.queryEvents(ctx, `SELECT event_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos`, from, to)
	if err != nil {
		return fmt.Errorf("read events %d to %d: %w", from, to, err)
	}
	var targets []string
	members := false
	rooms := map[string]bool{}
	for _, ev := range evs {
		if bytes.Contains(ev.Content(), []byte(`"m.relates_to"`)) {
			if rel, ok := RelationOf(ev.Content()); ok {
				targets = append(targets, rel.EventID)
			}
		}
		if ev.Type() == spec.MRoomRedaction {
			// The cached copy of the target is not redacted yet.
			s.cache.forget(redactsOf(ev))
		}
		if ev.StateKey() != nil {
			if ev.Type() == spec.MRoomMember {
				s.commit.lastMember.Store(max(s.commit.lastMember.Load(), ev.StreamPos))
			}
			// State written elsewhere may be a resolution this process
			// cannot see from the event: the room's facts load again.
			// Memberships likewise.
			members = true
		}
		s.facts.observe(ev, ev.StateKey() != nil)
		rooms[ev.RoomID] = true
	}
	s.noRels.related(targets)
	if members {
		s.memberships.Invalidate()
		s.membership.Invalidate()
	}
	s.recent.add(from, evs)
	atomic.StoreInt64(&s.commit.published, to)
	// A sequencer here for one of these rooms holds state another
	// process has moved past: it loads the room again before its next
	// event. Not waited for: the sequencer may be busy.
	for roomID := range rooms {
		go s.resetRoom(roomID)
	}
	s.mu.Lock()
	ls := s.allListeners
	s.mu.Unlock()
	for _, l := range ls {
		l(evs)
	}
	return nil
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
	if len(f) != 3 {
		return fmt.Errorf("bad %s payload %q", eventsChannel, n.Payload)
	}
	to, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return fmt.Errorf("bad %s payload %q", eventsChannel, n.Payload)
	}
	h.s.applyMu.Lock()
	defer h.s.applyMu.Unlock()
	return h.s.catchUp(ctx, to)
}

// HandleBacklog applies what was committed while the listener was not
// listening (it is listening already, so nothing falls between).
func (h clusterHandler) HandleBacklog(ctx context.Context, _ string, conn *pgx.Conn) error {
	var last int64
	if err := conn.QueryRow(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&last); err != nil {
		return fmt.Errorf("read last event position: %w", err)
	}
	h.s.applyMu.Lock()
	defer h.s.applyMu.Unlock()
	return h.s.catchUp(ctx, last)
}
