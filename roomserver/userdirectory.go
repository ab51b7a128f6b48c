package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// VisibleUsers lists the users the user directory may show searcher: the
// users who share a joined room with them, and the joined members of every
// room whose join rule is public or whose history is world readable. That
// is the minimum the spec asks for (and what Synapse shows by default,
// with search_all_users off); the users domain then matches the search
// term against their profiles.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3user_directorysearch
//
// As in Synapse, searcher appears in the list only through an open room:
// sharing a private room with oneself does not count.
//
// It reads the open rooms' current join rules and history visibility on
// every call: O(rooms) events from the cache plus O(visible users) rows.
func (s *Service) VisibleUsers(ctx context.Context, searcher string) ([]string, error) {
	seen := map[string]bool{}
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT other.user_id FROM memberships me
		JOIN memberships other ON other.room_id = me.room_id
		WHERE me.user_id = $1 AND me.membership = 'join' AND other.membership = 'join' AND other.user_id != $1`,
		searcher)
	if err != nil {
		return nil, fmt.Errorf("users sharing a room: %w", err)
	}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return nil, fmt.Errorf("users sharing a room: %w", err)
		}
		seen[u] = true
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}

	open, err := s.openRooms(ctx)
	if err != nil {
		return nil, err
	}
	for start := 0; start < len(open); start += 500 {
		chunk := open[start:min(start+500, len(open))]
		args := make([]any, len(chunk))
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args[i] = id
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT user_id FROM memberships
			WHERE membership = 'join' AND room_id IN (`+strings.Join(ph, ",")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("members of open rooms: %w", err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, fmt.Errorf("members of open rooms: %w", err)
			}
			seen[u] = true
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}

	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}

// openRooms lists the rooms whose current join rule is public or whose
// current history visibility is world_readable.
func (s *Service) openRooms(ctx context.Context) ([]string, error) {
	evs, err := s.queryEvents(ctx, `SELECT event_id FROM current_state
		WHERE state_key = '' AND type IN ($1, $2)`, spec.MRoomJoinRules, spec.MRoomHistoryVisibility)
	if err != nil {
		return nil, fmt.Errorf("open rooms: %w", err)
	}
	open := map[string]bool{}
	for _, ev := range evs {
		switch ev.Type() {
		case spec.MRoomJoinRules:
			var c struct {
				JoinRule string `json:"join_rule"`
			}
			if json.Unmarshal(ev.Content(), &c) == nil && c.JoinRule == spec.Public {
				open[ev.RoomID] = true
			}
		case spec.MRoomHistoryVisibility:
			if historyVisibility(ev.Content()) == "world_readable" {
				open[ev.RoomID] = true
			}
		}
	}
	out := make([]string, 0, len(open))
	for id := range open {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}
