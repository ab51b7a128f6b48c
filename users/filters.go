package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Filter is the spec's sync filter.
// https://spec.matrix.org/v1.19/client-server-api/#filtering
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender.
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	Types      []string `json:"types,omitempty"`
}

// RoomEventFilter is an EventFilter with room-specific options.
type RoomEventFilter struct {
	EventFilter
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	Rooms                     []string `json:"rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter selects what sync returns per room.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms,omitempty"`
	Rooms        []string         `json:"rooms,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// ParseFilter decodes and validates a filter definition.
func ParseFilter(raw []byte) (*Filter, error) {
	var f Filter
	if err := httpx.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, mxerr.BadJSON("event_format must be \"client\" or \"federation\"")
	}
	limits := []*EventFilter{f.Presence, f.AccountData}
	if f.Room != nil {
		for _, rf := range []*RoomEventFilter{f.Room.Ephemeral, f.Room.State, f.Room.Timeline, f.Room.AccountData} {
			if rf != nil {
				limits = append(limits, &rf.EventFilter)
			}
		}
	}
	for _, ef := range limits {
		if err := checkLimit(ef); err != nil {
			return nil, err
		}
	}
	return &f, nil
}

// checkLimit refuses a negative limit. The spec asks for "an integer
// greater than 0", but clients send 0 to get no timeline events (only the
// state and a prev_batch) and Synapse serves it, so 0 is allowed.
func checkLimit(ef *EventFilter) error {
	if ef != nil && ef.Limit != nil && *ef.Limit < 0 {
		return mxerr.BadJSON("limit must be a non-negative integer")
	}
	return nil
}

// ParseRoomEventFilter parses and validates a RoomEventFilter, as the
// filter parameter of /messages and /context carries it.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidmessages
func ParseRoomEventFilter(raw []byte) (*RoomEventFilter, error) {
	var f RoomEventFilter
	if err := httpx.Unmarshal(raw, &f); err != nil {
		return nil, err
	}
	if err := checkLimit(&f.EventFilter); err != nil {
		return nil, err
	}
	return &f, nil
}

// maxFilterBytes bounds a stored filter.
const maxFilterBytes = 64 * 1024

// CreateFilter validates and stores a filter; the ID is unique per user.
func (s *Service) CreateFilter(ctx context.Context, userID string, raw []byte) (string, error) {
	if len(raw) > maxFilterBytes {
		return "", mxerr.TooLarge("Filter is larger than %d bytes", maxFilterBytes)
	}
	if _, err := ParseFilter(raw); err != nil {
		return "", err
	}
	var id int64
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO filters (user_id, filter_id, filter_json)
			VALUES ($1, (SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1), $2)
			RETURNING filter_id`, userID, string(raw)).Scan(&id)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store filter: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}

// Filter returns a stored filter as it was uploaded; M_NOT_FOUND if none.
func (s *Service) Filter(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, mxerr.NotFound("No such filter")
	}
	var raw string
	err = s.db.QueryRowContext(ctx, `SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, id).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mxerr.NotFound("No such filter")
	}
	if err != nil {
		return nil, fmt.Errorf("get filter: %w", err)
	}
	return json.RawMessage(raw), nil
}
