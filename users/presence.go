package users

import (
	"context"
	"fmt"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
)

// Presence storage. The rules (what counts as activity, when a user is
// currently active, idle or gone, who is told) live in syncapi's presence
// service, which keeps the live state in memory; this is where each
// published change is stored, with the presence stream position /sync
// reads after.
// https://spec.matrix.org/v1.19/client-server-api/#presence

const streamPresence = "presence"

// The presence states.
// https://spec.matrix.org/v1.19/client-server-api/#mpresence
const (
	PresenceOnline      = "online"
	PresenceUnavailable = "unavailable"
	PresenceOffline     = "offline"
)

// PresenceState is a user's presence as last published.
type PresenceState struct {
	UserID   string
	Presence string // online, unavailable or offline
	// StatusMsg is the user's status message; "" for none.
	StatusMsg string
	// LastActiveTS is when the user was last active, in ms since the
	// epoch; 0 for never.
	LastActiveTS int64
	// CurrentlyActive is the currently_active flag as published.
	CurrentlyActive bool
	// StreamPos is the presence stream position of the change.
	StreamPos int64
}

// PresencePos is the latest position of the presence stream.
func (s *Service) PresencePos(ctx context.Context) (int64, error) {
	return s.streamPos(ctx, streamPresence)
}

// PutPresence stores a user's presence at the next position of the
// presence stream and returns that position.
func (s *Service) PutPresence(ctx context.Context, p PresenceState) (int64, error) {
	var pos int64
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		var err error
		if pos, err = s.nextStreamPos(ctx, tx, streamPresence); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO presence
			(user_id, presence, status_msg, last_active_ts, currently_active, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence,
				status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,
				currently_active = excluded.currently_active, stream_pos = excluded.stream_pos`,
			p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS, p.CurrentlyActive, pos)
		if err != nil {
			return fmt.Errorf("store presence: %w", err)
		}
		return nil
	})
	return pos, err
}

const presenceColumns = `user_id, presence, status_msg, last_active_ts, currently_active, stream_pos`

func (s *Service) queryPresence(ctx context.Context, what, query string, args ...any) ([]PresenceState, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []PresenceState
	for rows.Next() {
		var p PresenceState
		if err := rows.Scan(&p.UserID, &p.Presence, &p.StatusMsg, &p.LastActiveTS, &p.CurrentlyActive, &p.StreamPos); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// Presence returns a user's stored presence, or nil if they never had any.
func (s *Service) Presence(ctx context.Context, userID string) (*PresenceState, error) {
	ps, err := s.queryPresence(ctx, "read presence",
		`SELECT `+presenceColumns+` FROM presence WHERE user_id = $1`, userID)
	if err != nil || len(ps) == 0 {
		return nil, err
	}
	return &ps[0], nil
}

// PresenceOf returns the stored presence of those of userIDs that have
// any.
func (s *Service) PresenceOf(ctx context.Context, userIDs []string) ([]PresenceState, error) {
	var out []PresenceState
	for start := 0; start < len(userIDs); start += maxInArgs {
		chunk := userIDs[start:min(start+maxInArgs, len(userIDs))]
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		ps, err := s.queryPresence(ctx, "read presence",
			`SELECT `+presenceColumns+` FROM presence WHERE user_id IN (`+strings.Join(ph, ", ")+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// PresenceSince lists the users whose presence changed after stream
// position since, in stream order.
func (s *Service) PresenceSince(ctx context.Context, since int64) ([]PresenceState, error) {
	return s.queryPresence(ctx, fmt.Sprintf("presence since %d", since),
		`SELECT `+presenceColumns+` FROM presence WHERE stream_pos > $1 ORDER BY stream_pos`, since)
}

// PresenceNotOffline lists the users whose stored presence is not
// offline: after a restart, their timers must be set again.
func (s *Service) PresenceNotOffline(ctx context.Context) ([]PresenceState, error) {
	return s.queryPresence(ctx, "presence not offline",
		`SELECT `+presenceColumns+` FROM presence WHERE presence != $1`, PresenceOffline)
}
