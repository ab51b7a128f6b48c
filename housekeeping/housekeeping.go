package housekeeping

import (
	"context"
	"fmt"
	"slices"
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
	// runMu lets one run of the job at a time, and guards sched.
	runMu sync.Mutex
	// jobs are the retention purge jobs; sched says when each, and the
	// rest of the job, is next due.
	jobs  []purgeJob
	sched struct {
		jobDue  []time.Time
		restDue time.Time
	}
}

// New builds the service; Start starts its job.
func New(cfg config.Housekeeping, db *database.DB, rooms Rooms, log logrus.FieldLogger) *Service {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, db: db, rooms: rooms, log: log,
		pruners: map[string]Pruner{},
		purges:  purges{byID: map[string]*PurgeStatus{}, active: map[string]string{}},
		ctx:     ctx, cancel: cancel,
		jobs: purgeJobs(cfg),
	}
	// Zero times: everything is due at the first RunDue (Start moves them
	// an interval on).
	s.sched.jobDue = make([]time.Time, len(s.jobs))
	return s
}

// SetMedia sets the media repository, for media retention and the purge of
// the remote media cache.
func (s *Service) SetMedia(m Media) { s.media = m }

// AddPruner adds a domain's pruning to the job under name. Call before
// Start.
func (s *Service) AddPruner(name string, p Pruner) { s.pruners[name] = p }

// Start runs the job: the retention purge jobs each at its interval, the
// rest (media retention, pruning, table sizes) every cfg.Interval; nothing
// when cfg.Interval is 0.
func (s *Service) Start() {
	if s.cfg.Interval <= 0 {
		return
	}
	s.runMu.Lock()
	now := time.Now()
	// The first run is an interval after the start, as with a ticker.
	s.sched.restDue = now.Add(s.cfg.Interval.Std())
	for i, j := range s.jobs {
		s.sched.jobDue[i] = now.Add(j.interval)
	}
	s.runMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(time.Until(s.nextDue()))
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
				if _, err := s.RunDue(s.ctx, time.Now()); err != nil && s.ctx.Err() == nil {
					s.log.WithError(err).Error("housekeeping failed")
				}
				t.Reset(time.Until(s.nextDue()))
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

// RunOnce runs the whole job as of now, every purge job included: the
// clock is a parameter so that tests move time forward.
func (s *Service) RunOnce(ctx context.Context, now time.Time) (Report, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	return s.run(ctx, now, s.jobs, true)
}

// RunDue runs, as of now, the purge jobs whose interval has passed since
// they last ran (or that never ran) and the rest of the job if its
// interval has; Start calls it when the next of them is due.
func (s *Service) RunDue(ctx context.Context, now time.Time) (Report, error) {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	var due []purgeJob
	for i, j := range s.jobs {
		if !now.Before(s.sched.jobDue[i]) {
			due = append(due, j)
			s.sched.jobDue[i] = now.Add(j.interval)
		}
	}
	rest := !now.Before(s.sched.restDue)
	if rest {
		s.sched.restDue = now.Add(s.cfg.Interval.Std())
	}
	return s.run(ctx, now, due, rest)
}

// nextDue is when the next purge job or the rest of the job is due.
func (s *Service) nextDue() time.Time {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	next := s.sched.restDue
	for _, t := range s.sched.jobDue {
		if t.Before(next) {
			next = t
		}
	}
	return next
}

// run runs the given purge jobs and, with rest, media retention, the
// pruners and the table sizes. The caller holds runMu.
func (s *Service) run(ctx context.Context, now time.Time, jobs []purgeJob, rest bool) (Report, error) {
	rep := Report{Pruned: map[string]int64{}}
	var err error
	if rep.PurgedEvents, err = s.applyRetention(ctx, now, jobs); err != nil {
		return rep, err
	}
	if !rest {
		return rep, nil
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

// purgeJob is one retention purge job: the rooms whose lifetime is above
// shortest and at most longest (0: no bound), every interval.
type purgeJob struct {
	shortest, longest, interval time.Duration
}

// covers says whether the job purges rooms of lifetime d. As in Synapse,
// the shortest bound is exclusive and the longest inclusive, so that
// jobs split at one value cover each room once.
func (j purgeJob) covers(d time.Duration) bool {
	return d > j.shortest && (j.longest <= 0 || d <= j.longest)
}

// purgeJobs are the configured purge jobs, or one job for every room at
// the housekeeping interval.
func purgeJobs(cfg config.Housekeeping) []purgeJob {
	if len(cfg.Retention.PurgeJobs) == 0 {
		return []purgeJob{{interval: cfg.Interval.Std()}}
	}
	jobs := make([]purgeJob, 0, len(cfg.Retention.PurgeJobs))
	for _, j := range cfg.Retention.PurgeJobs {
		iv := j.Interval.Std()
		if iv <= 0 {
			iv = cfg.Interval.Std()
		}
		jobs = append(jobs, purgeJob{shortest: j.ShortestMaxLifetime.Std(), longest: j.LongestMaxLifetime.Std(), interval: iv})
	}
	return jobs
}

// applyRetention purges, in every room with a max lifetime (its own policy
// or the server's default) that one of jobs covers, the messages older
// than it.
// https://element-hq.github.io/synapse/latest/message_retention_policies.html
func (s *Service) applyRetention(ctx context.Context, now time.Time, jobs []purgeJob) (int, error) {
	if !s.cfg.Retention.Enabled || len(jobs) == 0 {
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
		if maxLife <= 0 || !slices.ContainsFunc(jobs, func(j purgeJob) bool { return j.covers(maxLife) }) {
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
