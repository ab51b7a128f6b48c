package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tessera-hs/tessera/internal/database"
)

// RetentionPolicy is a room's m.room.retention content: how long its
// messages are kept. Zero is no bound.
// https://github.com/matrix-org/matrix-spec-proposals/pull/1763
type RetentionPolicy struct {
	MinLifetime, MaxLifetime time.Duration
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
