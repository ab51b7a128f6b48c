package housekeeping

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/roomserver"
)

// Rooms is what housekeeping needs of the room server.
type Rooms interface {
	PurgePoint(ctx context.Context, req roomserver.PurgeRequest) (roomserver.Token, error)
	PurgeHistory(ctx context.Context, req roomserver.PurgeRequest) (int, error)
	RoomIDs(ctx context.Context) ([]string, error)
	// MaxLifetime is the room's effective message lifetime (its policy
	// or the default, bounded by the server's); 0 keeps everything.
	MaxLifetime(ctx context.Context, roomID string) (time.Duration, error)
}

// Pruner deletes what a domain keeps only for a while, as of now, and
// says how many rows went.
type Pruner interface {
	Prune(ctx context.Context, now time.Time) (int64, error)
}

// Media is what housekeeping needs of the media repository.
type Media interface {
	// PurgeRemote deletes cached remote media last accessed before
	// before, and PurgeLocal local media last accessed before before;
	// each returns how many media went.
	PurgeRemote(ctx context.Context, before time.Time) (int, error)
	PurgeLocal(ctx context.Context, before time.Time) (int, error)
}

// Service is the housekeeping domain: admin purges, the periodic job
// (retention, media retention, pruning, table sizes) and backups.
type Service struct {
	cfg     config.Housekeeping
	db      *database.DB
	rooms   Rooms
	media   Media
	pruners map[string]Pruner
	log     logrus.FieldLogger

	purges purges

	// ctx ends at Close: background purges and the job stop.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// runMu lets one run of the job at a time.
	runMu sync.Mutex
}

// New builds the service; Start starts its job.
func New(cfg config.Housekeeping, db *database.DB, rooms Rooms, log logrus.FieldLogger) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg: cfg, db: db, rooms: rooms, log: log,
		pruners: map[string]Pruner{},
		purges:  purges{byID: map[string]*PurgeStatus{}, active: map[string]string{}},
		ctx:     ctx, cancel: cancel,
	}
}

// SetMedia sets the media repository, for media retention and the purge of
// the remote media cache.
func (s *Service) SetMedia(m Media) { s.media = m }

// AddPruner adds a domain's pruning to the job under name. Call before
// Start.
func (s *Service) AddPruner(name string, p Pruner) { s.pruners[name] = p }

// Start runs the job every cfg.Interval (not at all when 0).
func (s *Service) Start() {
	if s.cfg.Interval <= 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.cfg.Interval.Std())
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
				if _, err := s.RunOnce(s.ctx, time.Now()); err != nil && s.ctx.Err() == nil {
					s.log.WithError(err).Error("housekeeping failed")
				}
			}
		}
	}()
}

// Close stops the job and waits for it and for running purges (which stop
// at their next batch).
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Report is what one run of the job did.
type Report struct {
	PurgedEvents int
	MediaDeleted int
	Pruned       map[string]int64
	Stats        DBStats
}

// RunOnce runs the job as of now: the clock is a parameter so that tests
// move time forward.
func (s *Service) RunOnce(ctx context.Context, now time.Time) (Report, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	rep := Report{Pruned: map[string]int64{}}
	var err error
	if rep.PurgedEvents, err = s.applyRetention(ctx, now); err != nil {
		return rep, err
	}
	if rep.MediaDeleted, err = s.applyMediaRetention(ctx, now); err != nil {
		return rep, err
	}
	for name, p := range s.pruners {
		n, err := p.Prune(ctx, now)
		if err != nil {
			return rep, fmt.Errorf("prune %s: %w", name, err)
		}
		rep.Pruned[name] = n
	}
	if rep.Stats, err = Stats(ctx, s.db); err != nil {
		return rep, err
	}
	fields := logrus.Fields{"purged_events": rep.PurgedEvents, "media_deleted": rep.MediaDeleted,
		"db_bytes": rep.Stats.FileBytes, "db_free_bytes": rep.Stats.FreeBytes}
	for name, n := range rep.Pruned {
		fields["pruned_"+name] = n
	}
	// The biggest tables, for the operator watching the disk.
	for i, t := range rep.Stats.Tables {
		if i == 5 {
			break
		}
		fields["rows_"+t.Name] = t.Rows
	}
	s.log.WithFields(fields).Info("housekeeping done")
	return rep, nil
}

// applyRetention purges, in every room with a max lifetime (its own policy
// or the server's default), the messages older than it.
// https://element-hq.github.io/synapse/latest/message_retention_policies.html
func (s *Service) applyRetention(ctx context.Context, now time.Time) (int, error) {
	if !s.cfg.Retention.Enabled {
		return 0, nil
	}
	rooms, err := s.rooms.RoomIDs(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, roomID := range rooms {
		maxLife, err := s.rooms.MaxLifetime(ctx, roomID)
		if err != nil {
			return total, err
		}
		if maxLife <= 0 {
			continue
		}
		n, err := s.rooms.PurgeHistory(ctx, roomserver.PurgeRequest{RoomID: roomID, Before: now.Add(-maxLife), DeleteLocal: true})
		total += n
		if err != nil {
			return total, err
		}
		if n > 0 {
			s.log.WithFields(logrus.Fields{"room_id": roomID, "max_lifetime": maxLife, "purged": n}).Info("retention: purged old messages")
		}
	}
	return total, nil
}

// applyMediaRetention deletes media not accessed within the configured
// lifetimes.
func (s *Service) applyMediaRetention(ctx context.Context, now time.Time) (int, error) {
	if s.media == nil {
		return 0, nil
	}
	total := 0
	if d := s.cfg.RemoteMediaLifetime.Std(); d > 0 {
		n, err := s.media.PurgeRemote(ctx, now.Add(-d))
		total += n
		if err != nil {
			return total, err
		}
	}
	if d := s.cfg.LocalMediaLifetime.Std(); d > 0 {
		n, err := s.media.PurgeLocal(ctx, now.Add(-d))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// PurgeMediaCache deletes the cached remote media last accessed before
// before (POST /_synapse/admin/v1/purge_media_cache).
func (s *Service) PurgeMediaCache(ctx context.Context, before time.Time, by string) (int, error) {
	if s.media == nil {
		return 0, nil
	}
	n, err := s.media.PurgeRemote(ctx, before)
	s.log.WithFields(logrus.Fields{"admin": by, "before": before, "deleted": n}).Info("admin: purged the remote media cache")
	return n, err
}
