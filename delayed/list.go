package delayed

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
)

// Scheduled is a delayed event that has not fired, in the shape
// GET /delayed_events lists it.
type Scheduled struct {
	DelayID  string  `json:"delay_id"`
	RoomID   string  `json:"room_id"`
	Type     string  `json:"type"`
	StateKey *string `json:"state_key,omitempty"`
	Delay    int64   `json:"delay"`
	// RunningSince is when the timer last (re)started, in ms since the
	// epoch: it fires at running_since + delay.
	RunningSince int64           `json:"running_since"`
	Content      json.RawMessage `json:"content"`
}

// Finalised is a delayed event that was sent or cancelled.
type Finalised struct {
	DelayedEvent Scheduled `json:"delayed_event"`
	Outcome      string    `json:"outcome"` // "send" or "cancel"
	Reason       string    `json:"reason"`  // "action", "delay" or "error"
	// Error is the Matrix error the send got, when it failed.
	Error   json.RawMessage `json:"error,omitempty"`
	EventID string          `json:"event_id,omitempty"`
	// OriginServerTS is when the event was finalised.
	OriginServerTS int64 `json:"origin_server_ts"`
}

// ListFilter narrows List.
type ListFilter struct {
	DelayIDs []string // only these, when not empty
}

const listColumns = `delay_id, room_id, type, state_key, delay_ms, send_ts, content`

// Scheduled lists a user's scheduled events, the next to fire first.
func (s *Service) Scheduled(ctx context.Context, userID string, f ListFilter) ([]Scheduled, error) {
	where, args := filterSQL(userID, f)
	rows, err := s.db.QueryContext(ctx, `SELECT `+listColumns+` FROM delayed_events
		WHERE finalised_ts IS NULL AND `+where+` ORDER BY send_ts`, args...)
	if err != nil {
		return nil, fmt.Errorf("delayed events: list scheduled: %w", err)
	}
	defer rows.Close()
	out := []Scheduled{}
	for rows.Next() {
		var ev Scheduled
		if err := scanScheduled(rows, &ev); err != nil {
			return nil, fmt.Errorf("delayed events: list scheduled: %w", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("delayed events: list scheduled: %w", err)
	}
	return out, nil
}

// Finalised lists a user's sent and cancelled events still retained, the
// oldest outcome first.
func (s *Service) Finalised(ctx context.Context, userID string, f ListFilter) ([]Finalised, error) {
	where, args := filterSQL(userID, f)
	rows, err := s.db.QueryContext(ctx, `SELECT `+listColumns+`, outcome, reason, event_id, error, finalised_ts
		FROM delayed_events WHERE finalised_ts IS NOT NULL AND `+where+` ORDER BY finalised_ts`, args...)
	if err != nil {
		return nil, fmt.Errorf("delayed events: list finalised: %w", err)
	}
	defer rows.Close()
	out := []Finalised{}
	for rows.Next() {
		var (
			fe                Finalised
			stateKey, evID, e sql.NullString
			content           string
		)
		if err := rows.Scan(&fe.DelayedEvent.DelayID, &fe.DelayedEvent.RoomID, &fe.DelayedEvent.Type, &stateKey,
			&fe.DelayedEvent.Delay, &fe.DelayedEvent.RunningSince, &content,
			&fe.Outcome, &fe.Reason, &evID, &e, &fe.OriginServerTS); err != nil {
			return nil, fmt.Errorf("delayed events: list finalised: %w", err)
		}
		fe.DelayedEvent.RunningSince -= fe.DelayedEvent.Delay
		fe.DelayedEvent.Content = json.RawMessage(content)
		if stateKey.Valid {
			fe.DelayedEvent.StateKey = &stateKey.String
		}
		fe.EventID = evID.String
		if e.Valid {
			fe.Error = json.RawMessage(e.String)
		}
		out = append(out, fe)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("delayed events: list finalised: %w", err)
	}
	return out, nil
}

func filterSQL(userID string, f ListFilter) (string, []any) {
	args := []any{userID}
	where := "user_id = $1"
	if len(f.DelayIDs) > 0 {
		ph := make([]string, len(f.DelayIDs))
		for i, id := range f.DelayIDs {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		where += " AND delay_id IN (" + strings.Join(ph, ", ") + ")"
	}
	return where, args
}

func scanScheduled(rows *sql.Rows, ev *Scheduled) error {
	var (
		stateKey sql.NullString
		content  string
	)
	if err := rows.Scan(&ev.DelayID, &ev.RoomID, &ev.Type, &stateKey, &ev.Delay, &ev.RunningSince, &content); err != nil {
		return err
	}
	ev.RunningSince -= ev.Delay // send_ts - delay: when the timer (re)started
	ev.Content = json.RawMessage(content)
	if stateKey.Valid {
		ev.StateKey = &stateKey.String
	}
	return nil
}

// PurgeRoom deletes a purged room's delayed events: the pending ones are
// cancelled (there is no room to send them to) and the finalised ones go
// with the room's history.
func (s *Service) PurgeRoom(ctx context.Context, roomID string) error {
	return s.db.DeleteRoomRows(ctx, roomID, "delayed_events")
}
