// Package roomserver owns rooms: the DAG of signed events, their state, the
// auth rules, and the reads clients make of them.
//
// Each active room has one sequencer goroutine that builds, signs and
// auth-checks its events in order on top of the room's current state, held
// in memory. Sequencers hand finished batches to one committer, which
// writes everything pending, from every room, in one transaction: many
// events share one fsync (group commit), so sends are both durable and
// fast. A send returns only after its transaction has committed.
package roomserver

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/gencache"
)

// Config is what the room server needs from the configuration.
type Config struct {
	ServerName         spec.ServerName
	KeyID              gomatrixserverlib.KeyID
	PrivateKey         ed25519.PrivateKey
	DefaultRoomVersion gomatrixserverlib.RoomVersion
	// Retention is the message retention policy reads apply.
	Retention RetentionConfig
	// Cluster, when set, is this process's place in a deployment of
	// several on one PostgreSQL database (cluster.go).
	Cluster *Cluster
}

// Profiles looks up the display name and avatar of local users, which
// membership events carry.
type Profiles interface {
	MemberProfile(ctx context.Context, userID string) (displayName, avatarURL string, err error)
	// Exists reports whether a local account exists and is active.
	Exists(ctx context.Context, userID string) (bool, error)
}

// Listener is told about events once they are committed, in stream order.
type Listener func(events []*Event)

// Service is the room server.
type Service struct {
	// clock is the time retention is judged by (retention.go).
	clock clock
	// aliasGuard checks new local aliases (SetAliasGuard); nil: none.
	aliasGuard AliasGuard
	db         *database.DB
	cfg        Config
	log        logrus.FieldLogger
	profiles   Profiles
	commit     *committer
	cache      *eventCache
	// groupCache holds recently read state snapshots.
	groupCache *stateGroupCache
	// lastGroupID is the last state group ID handed out (atomic), and
	// groupStride the step to the next one (1, or in a cluster the
	// number of ID classes, so that processes take different IDs).
	lastGroupID int64
	groupStride int64
	// applyMu orders the publishing of committed events: this process's
	// commits and, in a cluster, the others' (cluster.go).
	applyMu sync.Mutex
	// cpos holds the event writers' positions in a cluster; nil outside
	// one (clusterpos.go).
	cpos *clusterPositions
	// stopListening stops the cluster listener; nil outside a cluster.
	stopListening func()
	// inviter has other servers sign our invites of their users; nil
	// without federation.
	inviter RemoteInviter
	// history, when set, fetches a room's history from other servers
	// when /messages runs out of it (fedread.go).
	history HistoryFetcher
	// hierarchy, when set, asks other servers for the rooms of a space
	// we do not hold (hierarchy.go).
	hierarchy HierarchyFetcher
	// outbox, when set, queues committed events for other servers.
	outbox atomic.Pointer[Outbox]
	// aliasQuery, when set, asks the application services about unknown
	// local aliases (aliasquery.go).
	aliasQuery AliasQuery
	// acls caches compiled m.room.server_acl contents.
	acls aclCache
	// recent holds each active room's newest event IDs for sync.
	recent *recentEvents
	// facts caches what room lists are sorted and filtered by.
	facts *roomFacts
	// versions caches room versions (roomID -> gomatrixserverlib.RoomVersion),
	// which never change: every send asks. A deleted room's entry goes
	// with it.
	versions sync.Map
	// noRels remembers events without child relations (aggregate.go).
	noRels *noRelations
	// memberships and membership cache a user's room list and one
	// membership; any membership commit invalidates both.
	memberships *gencache.Cache[string, []MembershipChange]
	membership  *gencache.Cache[[2]string, string]
	// purgeListener is told of purged events (purge.go); nil: none.
	purgeListener PurgeListener
	// lastCreateMS is the origin_server_ts of the last create event built
	// (see createTime).
	lastCreateMS atomic.Int64

	// joinGuard refuses joins to blocked rooms (SetJoinGuard); nil: none.
	joinGuard JoinGuard

	mu    sync.Mutex
	rooms map[string]*room
	// idleTimeout, if set (by tests), replaces roomIdleTimeout.
	idleTimeout time.Duration
	listeners   []Listener
	// allListeners hear other processes' commits too (SubscribeAll).
	allListeners []Listener
	closed       bool
	wg           sync.WaitGroup
}

// New runs migrations, starts the committer and returns the service.
func New(ctx context.Context, db *database.DB, cfg Config, profiles Profiles, log logrus.FieldLogger) (*Service, error) {
	if cfg.DefaultRoomVersion == "" {
		cfg.DefaultRoomVersion = gomatrixserverlib.RoomVersionV12
	}
	if _, err := gomatrixserverlib.GetRoomVersion(cfg.DefaultRoomVersion); err != nil {
		return nil, fmt.Errorf("default room version: %w", err)
	}
	if err := db.Migrate(ctx, "roomserver", migrations); err != nil {
		return nil, err
	}
	s := &Service{
		db: db, cfg: cfg, log: log, profiles: profiles,
		cache:      newEventCache(50_000),
		groupCache: &stateGroupCache{max: 1024, groups: map[int64]stateIDs{}},
		rooms:      map[string]*room{},
		facts:      newRoomFacts(),
		noRels:     newNoRelations(),

		memberships: gencache.New[string, []MembershipChange](20_000),
		membership:  gencache.New[[2]string, string](100_000),
	}
	c, err := newCommitter(ctx, s)
	if err != nil {
		return nil, err
	}
	s.commit = c
	if err := s.clusterStart(ctx); err != nil {
		c.close()
		return nil, err
	}
	return s, nil
}

// Subscribe registers a listener for committed events (the sync notifier,
// the federation sender).
func (s *Service) Subscribe(l Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, l)
}

func (s *Service) publish(events []*Event) {
	s.mu.Lock()
	ls, all := s.listeners, s.allListeners
	s.mu.Unlock()
	for _, l := range ls {
		l(events)
	}
	for _, l := range all {
		l(events)
	}
}

// Close stops the sequencers and the committer after they finish what is
// queued.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, r := range s.rooms {
		close(r.reqs)
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.commit.close()
	// In a cluster, the last batches wait for the other processes'
	// positions, which the listener hears: it stops after them.
	if s.stopListening != nil {
		s.stopListening()
	}
	s.clusterStop()
}

// DefaultRoomVersion is the version new rooms get unless they ask.
func (s *Service) DefaultRoomVersion() gomatrixserverlib.RoomVersion { return s.cfg.DefaultRoomVersion }

// ServerName is this homeserver's name.
func (s *Service) ServerName() spec.ServerName { return s.cfg.ServerName }

// UserIDForSender maps a sender to a user ID. Rooms of the versions we
// serve use user IDs as sender IDs.
func UserIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// SetHistoryFetcher lets /messages backfill from other servers.
func (s *Service) SetHistoryFetcher(f HistoryFetcher) { s.history = f }
