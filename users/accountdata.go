package users

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/streampos"
)

// Account data: JSON objects a user's clients keep on the server, global or
// scoped to a room, which /sync delivers to every device of the user.
// https://spec.matrix.org/v1.19/client-server-api/#client-config
//
// Each change takes the next position of the account_data stream, so that
// /sync can ask for what changed after a position (AccountDataSince).

// Names of the users domain's streams in users_stream_positions.
const (
	streamAccountData = "account_data"
	streamReceipts    = "receipts"
)

// Account data types with a meaning of their own.
const (
	// TypeFullyRead is the room account data holding the fully read marker.
	// https://spec.matrix.org/v1.19/client-server-api/#mfully_read
	TypeFullyRead = "m.fully_read"
	// TypePushRules is the global account data holding the push rules.
	TypePushRules = "m.push_rules"
	// TypeTag is the room account data holding the room's tags.
	// https://spec.matrix.org/v1.19/client-server-api/#mtag
	TypeTag = "m.tag"
)

// nextStreamPos takes the next position of a stream inside tx. The single
// writer connection serialises transactions, so positions become visible
// in order: no reader sees position N+1 before N. With several processes
// on one PostgreSQL database, the counter row's lock, held until tx ends,
// does the same across them; the position is announced to them in tx
// (streams.go). The position is published to streamPos's in-memory copy
// once tx commits.
func (s *Service) nextStreamPos(ctx context.Context, tx *database.Tx, stream string) (int64, error) {
	var pos int64
	err := tx.QueryRowContext(ctx, `UPDATE users_stream_positions SET pos = pos + 1 WHERE stream = $1 RETURNING pos`,
		stream).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("next %s position: %w", stream, err)
	}
	if s.announce != nil {
		if err := s.announce(ctx, tx, stream, pos); err != nil {
			return 0, err
		}
	}
	tx.AfterCommit(func() { s.positions[stream].Advance(pos) })
	return pos, nil
}

// streamPos is the latest committed position of a stream. It is read on
// every sync, so it comes from memory: loaded at start-up, then advanced
// as each transaction that takes a position commits.
func (s *Service) streamPos(_ context.Context, stream string) (int64, error) {
	p, ok := s.positions[stream]
	if !ok {
		return 0, fmt.Errorf("unknown stream %q", stream)
	}
	return p.Load(), nil
}

// streamPositions holds the committed position of each of the users
// domain's streams.
type streamPositions map[string]*streampos.Position

func loadStreamPositions(ctx context.Context, db *database.DB) (streamPositions, error) {
	rows, err := db.QueryContext(ctx, `SELECT stream, pos FROM users_stream_positions`)
	if err != nil {
		return nil, fmt.Errorf("load stream positions: %w", err)
	}
	defer rows.Close()
	p := streamPositions{}
	for rows.Next() {
		var stream string
		var pos int64
		if err := rows.Scan(&stream, &pos); err != nil {
			return nil, fmt.Errorf("load stream positions: %w", err)
		}
		p[stream] = &streampos.Position{}
		p[stream].Advance(pos)
	}
	return p, rows.Err()
}

// AccountDataPos is the latest position of the account data stream: a
// sync token taken now covers every change up to it.
func (s *Service) AccountDataPos(ctx context.Context) (int64, error) {
	return s.streamPos(ctx, streamAccountData)
}

// ValidateRoomID checks the syntax of a room ID in a request path; the
// account data endpoints answer 400 M_INVALID_PARAM for a malformed one.
// They do not ask whether the server knows the room (neither does
// Synapse): account data for a room is the user's business.
// https://spec.matrix.org/v1.19/appendices/#room-ids
func ValidateRoomID(roomID string) error {
	if len(roomID) < 2 || roomID[0] != '!' || len(roomID) > 255 {
		return mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	return nil
}

// CheckClientSettable refuses the account data types the server manages:
// the spec says "Servers MUST reject setting account data for event types
// that the server manages by using a 405 error response", for global and
// room account data alike, and account-data.yaml gives it M_BAD_JSON.
// Reading them is allowed as normal.
// https://spec.matrix.org/v1.19/client-server-api/#client-config
func CheckClientSettable(typ string) error {
	switch typ {
	case TypeFullyRead:
		return &mxerr.Error{Status: 405, Code: "M_BAD_JSON",
			Message: "Cannot set m.fully_read through this API: use /rooms/{roomId}/read_markers"}
	case TypePushRules:
		return &mxerr.Error{Status: 405, Code: "M_BAD_JSON",
			Message: "Cannot set m.push_rules through this API: use /pushrules"}
	}
	return nil
}

// parseObject checks that raw is a JSON object (M_NOT_JSON or M_BAD_JSON
// otherwise, as account-data.yaml says) and returns it compacted.
func parseObject(raw []byte) (map[string]json.RawMessage, json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := httpx.Unmarshal(raw, &obj); err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, nil, mxerr.NotJSON("Content is not valid JSON")
	}
	return obj, buf.Bytes(), nil
}

// SetAccountData stores the content of one account data type for a user,
// globally when roomID is "", else for that room. It refuses a malformed
// room ID, the server-managed types and content that is not a JSON object,
// checked in that order (the order Synapse checks them in).
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridaccount_datatype
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridroomsroomidaccount_datatype
func (s *Service) SetAccountData(ctx context.Context, userID, roomID, typ string, raw []byte) error {
	if roomID != "" {
		if err := ValidateRoomID(roomID); err != nil {
			return err
		}
	}
	if err := CheckClientSettable(typ); err != nil {
		return err
	}
	_, content, err := parseObject(raw)
	if err != nil {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error {
		return s.putAccountData(ctx, tx, userID, roomID, typ, content)
	})
	if err == nil {
		s.accountDataChanged(ctx, userID)
	}
	return err
}

// putAccountData writes one account data entry at the next stream
// position. It bypasses CheckClientSettable: read markers and tags use it.
func (s *Service) putAccountData(ctx context.Context, tx *database.Tx, userID, roomID, typ string, content json.RawMessage) error {
	pos, err := s.nextStreamPos(ctx, tx, streamAccountData)
	if err != nil {
		return err
	}
	if typ == TypeIgnoredUserList && roomID == "" {
		tx.AfterCommit(s.ignored.Invalidate)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, typ, string(content), pos)
	if err != nil {
		return fmt.Errorf("store account data: %w", err)
	}
	return nil
}

// getAccountData reads one entry; nil if there is none.
func getAccountData(ctx context.Context, q database.Querier, userID, roomID, typ string) (json.RawMessage, error) {
	var content string
	err := q.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, typ).Scan(&content)
	if isNoRowsErr(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read account data: %w", err)
	}
	return json.RawMessage(content), nil
}

// AccountData returns the content of one account data type (global when
// roomID is ""); 404 M_NOT_FOUND if the user has not set it. Room account
// data does not fall back to global account data of the same type.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridaccount_datatype
func (s *Service) AccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error) {
	if roomID != "" {
		if err := ValidateRoomID(roomID); err != nil {
			return nil, err
		}
	}
	content, err := getAccountData(ctx, s.db, userID, roomID, typ)
	if err != nil {
		return nil, err
	}
	if content == nil {
		if roomID != "" {
			return nil, mxerr.NotFound("Room account data not found")
		}
		return nil, mxerr.NotFound("Account data not found")
	}
	return content, nil
}

// AccountDataEntry is one account data event as /sync reports it.
type AccountDataEntry struct {
	RoomID    string // "" for global account data
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// AccountDataSince lists the user's account data entries changed after
// stream position since (all of them for since 0), oldest change first.
// Each entry appears once, with its current content.
func (s *Service) AccountDataSince(ctx context.Context, userID string, since int64) ([]AccountDataEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 ORDER BY stream_pos`, userID, since)
	if err != nil {
		return nil, fmt.Errorf("account data since %d: %w", since, err)
	}
	defer rows.Close()
	var out []AccountDataEntry
	for rows.Next() {
		var e AccountDataEntry
		var content string
		if err := rows.Scan(&e.RoomID, &e.Type, &content, &e.StreamPos); err != nil {
			return nil, fmt.Errorf("account data since %d: %w", since, err)
		}
		e.Content = json.RawMessage(content)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Room tags live in the room account data event m.tag, {"tags": {tag:
// {"order": ...}}}, so /sync delivers them like any room account data.
// https://spec.matrix.org/v1.19/client-server-api/#room-tagging

// maxTagBytes is the spec's limit: "The name of a tag MUST NOT exceed 255
// bytes."
const maxTagBytes = 255

// tagContent splits m.tag content into its tags and its other fields (kept
// as they are). Content a client wrote badly through the account data API
// reads as no tags rather than an error.
func tagContent(raw json.RawMessage) (tags map[string]json.RawMessage, rest map[string]json.RawMessage) {
	rest = map[string]json.RawMessage{}
	tags = map[string]json.RawMessage{}
	if raw == nil || json.Unmarshal(raw, &rest) != nil {
		rest = map[string]json.RawMessage{}
		return tags, rest
	}
	var t map[string]json.RawMessage
	if json.Unmarshal(rest["tags"], &t) == nil && t != nil {
		for k, v := range t {
			// Each tag's data is an object; anything else is dropped.
			if bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) {
				tags[k] = v
			}
		}
	}
	return tags, rest
}

// Tags returns the tags a user has set on a room, {} if none.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3useruseridroomsroomidtags
func (s *Service) Tags(ctx context.Context, userID, roomID string) (map[string]json.RawMessage, error) {
	if err := ValidateRoomID(roomID); err != nil {
		return nil, err
	}
	raw, err := getAccountData(ctx, s.db, userID, roomID, TypeTag)
	if err != nil {
		return nil, err
	}
	tags, _ := tagContent(raw)
	return tags, nil
}

// validateTag checks a tag name and its data: a JSON object whose order,
// if present, is a number in [0, 1] (definitions/tag.yaml). It returns the
// data compacted, with order written as a plain JSON number.
func validateTag(tag string, raw []byte) (json.RawMessage, error) {
	if tag == "" || len(tag) > maxTagBytes {
		return nil, mxerr.InvalidParam("A tag name must be 1 to %d bytes long", maxTagBytes)
	}
	obj, compact, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	o, ok := obj["order"]
	if !ok {
		return compact, nil
	}
	var order float64
	if bytes.Equal(bytes.TrimSpace(o), []byte("null")) || json.Unmarshal(o, &order) != nil {
		return nil, mxerr.BadJSON("order must be a number")
	}
	if math.IsNaN(order) || order < 0 || order > 1 {
		return nil, mxerr.InvalidParam("order must be a number between 0 and 1")
	}
	// Clients write the same number in different forms (mautrix-go sends
	// 2.5e-01); store it as Go writes it, e.g. 0.25.
	obj["order"], _ = json.Marshal(order)
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode tag: %w", err)
	}
	return out, nil
}

// SetTag adds a tag to a room, or replaces its data.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3useruseridroomsroomidtagstag
func (s *Service) SetTag(ctx context.Context, userID, roomID, tag string, raw []byte) error {
	if err := ValidateRoomID(roomID); err != nil {
		return err
	}
	data, err := validateTag(tag, raw)
	if err != nil {
		return err
	}
	return s.updateTags(ctx, userID, roomID, func(tags map[string]json.RawMessage) bool {
		if old, ok := tags[tag]; ok && bytes.Equal(old, data) {
			return false
		}
		tags[tag] = data
		return true
	})
}

// DeleteTag removes a tag from a room. Removing a tag the room does not
// have succeeds and changes nothing, as in Synapse.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3useruseridroomsroomidtagstag
func (s *Service) DeleteTag(ctx context.Context, userID, roomID, tag string) error {
	if err := ValidateRoomID(roomID); err != nil {
		return err
	}
	return s.updateTags(ctx, userID, roomID, func(tags map[string]json.RawMessage) bool {
		if _, ok := tags[tag]; !ok {
			return false
		}
		delete(tags, tag)
		return true
	})
}

// updateTags rewrites m.tag in one transaction with change applied; when
// change reports no change nothing is written, so /sync sees nothing new.
func (s *Service) updateTags(ctx context.Context, userID, roomID string, change func(map[string]json.RawMessage) bool) error {
	defer s.accountDataChanged(ctx, userID)
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		raw, err := getAccountData(ctx, tx, userID, roomID, TypeTag)
		if err != nil {
			return err
		}
		tags, rest := tagContent(raw)
		if !change(tags) {
			return nil
		}
		t, err := json.Marshal(tags)
		if err != nil {
			return fmt.Errorf("encode tags: %w", err)
		}
		rest["tags"] = t
		content, err := json.Marshal(rest)
		if err != nil {
			return fmt.Errorf("encode tags: %w", err)
		}
		return s.putAccountData(ctx, tx, userID, roomID, TypeTag, content)
	})
}
