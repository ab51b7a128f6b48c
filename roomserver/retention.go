package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// RetentionPolicy is a room's m.room.retention content: how long its
// messages are kept. Zero is no bound.
// https://github.com/matrix-org/matrix-spec-proposals/pull/1763
type RetentionPolicy struct {
	MinLifetime, MaxLifetime time.Duration
}

// RetentionConfig is the server's message retention (Synapse's
// retention section): off by default; a default policy for rooms without
// one; and bounds on the lifetime any room's policy may ask for.
// https://element-hq.github.io/synapse/latest/message_retention_policies.html
type RetentionConfig struct {
	Enabled                                bool
	DefaultMinLifetime, DefaultMaxLifetime time.Duration
	AllowedLifetimeMin, AllowedLifetimeMax time.Duration
}

// clock is what time the retention filter reads: time.Now, unless a test
// moved it (SetClock).
type clock struct {
	f atomic.Pointer[func() time.Time]
}

func (c *clock) now() time.Time {
	if f := c.f.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// SetClock makes the retention filter read now instead of time.Now, so
// that tests can move time forward as they do with the housekeeping job's
// clock.
func (s *Service) SetClock(now func() time.Time) { s.clock.f.Store(&now) }

// MaxLifetime is how long the room's messages live: its m.room.retention
// max_lifetime, or the server default's for a room without one or whose
// policy has none; never less than the min_lifetime (the room's, else the
// default's); then bounded by the server's allowed range. Zero (kept
// forever) when retention is off or neither policy has a max_lifetime.
// The housekeeping job purges by it, and reads hide what is past it.
func (s *Service) MaxLifetime(ctx context.Context, roomID string) (time.Duration, error) {
	r := s.cfg.Retention
	if !r.Enabled {
		return 0, nil
	}
	p, _, err := s.RoomRetention(ctx, roomID)
	if err != nil {
		return 0, err
	}
	maxLife, minLife := p.MaxLifetime, p.MinLifetime
	if maxLife == 0 {
		maxLife = r.DefaultMaxLifetime
	}
	if maxLife <= 0 {
		return 0, nil
	}
	if minLife == 0 {
		minLife = r.DefaultMinLifetime
	}
	maxLife = max(maxLife, minLife)
	if r.AllowedLifetimeMin > 0 {
		maxLife = max(maxLife, r.AllowedLifetimeMin)
	}
	if r.AllowedLifetimeMax > 0 {
		maxLife = min(maxLife, r.AllowedLifetimeMax)
	}
	return maxLife, nil
}

// expiredBefore is the origin_server_ts (ms) before which the room's
// messages are past their lifetime and no longer served, as Synapse
// filters them at read time between two runs of the purge job; 0 for
// none.
func (s *Service) expiredBefore(ctx context.Context, roomID string) (int64, error) {
	d, err := s.MaxLifetime(ctx, roomID)
	if err != nil || d <= 0 {
		return 0, err
	}
	return s.clock.now().Add(-d).UnixMilli(), nil
}

// RoomRetention returns the room's m.room.retention policy and whether it
// has one. Values that are not non-negative integers are ignored, as in
// Synapse.
func (s *Service) RoomRetention(ctx context.Context, roomID string) (RetentionPolicy, bool, error) {
	var p RetentionPolicy
	var eventID string
	err := s.db.QueryRowContext(ctx, `SELECT event_id FROM current_state
		WHERE room_id = $1 AND type = 'm.room.retention' AND state_key = ''`, roomID).Scan(&eventID)
	if isNoRows(err) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("retention policy of %s: %w", roomID, err)
	}
	ev, err := s.event(ctx, eventID)
	if err != nil {
		return p, false, err
	}
	var c struct {
		Min json.RawMessage `json:"min_lifetime"`
		Max json.RawMessage `json:"max_lifetime"`
	}
	if err := json.Unmarshal(ev.Content(), &c); err != nil {
		return p, true, nil // a redacted or malformed policy: none
	}
	p.MinLifetime, p.MaxLifetime = lifetime(c.Min), lifetime(c.Max)
	return p, true, nil
}

// lifetime reads a lifetime in milliseconds; 0 when absent or invalid.
func lifetime(raw json.RawMessage) time.Duration {
	var ms int64
	if len(raw) == 0 || json.Unmarshal(raw, &ms) != nil || ms <= 0 {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// RoomIDs lists every room the server knows, for jobs that visit them
// all.
func (s *Service) RoomIDs(ctx context.Context) ([]string, error) {
	ids, err := database.Strings(ctx, s.db, `SELECT room_id FROM rooms ORDER BY room_id`)
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	return ids, nil
}

// TxnPruner prunes the client transaction IDs recorded more than lifetime
// ago, for the housekeeping job.
func (s *Service) TxnPruner(lifetime time.Duration) txnPruner {
	return txnPruner{s: s, lifetime: lifetime}
}

type txnPruner struct {
	s        *Service
	lifetime time.Duration
}

func (p txnPruner) Prune(ctx context.Context, now time.Time) (int64, error) {
	if p.lifetime <= 0 {
		return 0, nil
	}
	res, err := p.s.db.ExecContext(ctx, `DELETE FROM txn_ids WHERE created_ts < $1`, now.Add(-p.lifetime).UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("prune transaction IDs: %w", err)
	}
	return res.RowsAffected()
}

// rejectedJSONLifetime is how long a rejected event's JSON is kept, for
// an operator to look at why it was rejected.
const rejectedJSONLifetime = 30 * 24 * time.Hour

// RejectedPruner is the housekeeping job's pruning of rejected events: a
// month after its arrival, a rejected event's JSON (its bulk, never read
// by the server) is dropped. The row stays: the DAG needs to know the ID
// was rejected, so that an event citing it is not taken for a gap to
// backfill, and a copy sent again is refused without a new check.
func (s *Service) RejectedPruner() rejectedPruner { return rejectedPruner{s} }

type rejectedPruner struct{ s *Service }

func (p rejectedPruner) Prune(ctx context.Context, now time.Time) (int64, error) {
	res, err := p.s.db.ExecContext(ctx, `UPDATE rejected_events SET json = '' WHERE received_ts < $1 AND json != ''`,
		now.Add(-rejectedJSONLifetime).UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("prune rejected events: %w", err)
	}
	return res.RowsAffected()
}
