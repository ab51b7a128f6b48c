package users

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Read receipts and the fully read marker.
// https://spec.matrix.org/v1.19/client-server-api/#receipts
// https://spec.matrix.org/v1.19/client-server-api/#fully-read-markers
//
// Receipts are stored here, with the user, rather than in the room server:
// they are not room events, and /sync serves them from their own stream.
// The fully read marker is room account data (m.fully_read).

// Receipt types a client may send.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// ReceiptRooms is what receipts and read markers need from the room
// server; *roomserver.Service satisfies it.
type ReceiptRooms interface {
	// Membership is the user's current membership of the room ("" if
	// none).
	Membership(ctx context.Context, roomID, userID string) (string, error)
	// VisibleEventPos is the stream position of an event of the room
	// that the user may see; 404 M_NOT_FOUND if the event is not in the
	// room or hidden from the user.
	VisibleEventPos(ctx context.Context, roomID, userID, eventID string) (int64, error)
}

// ReadMarkers is the body of POST /rooms/{roomId}/read_markers: each field
// is an event ID, or "" to leave that marker alone.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidread_markers
type ReadMarkers struct {
	FullyRead   string `json:"m.fully_read"`
	Read        string `json:"m.read"`
	ReadPrivate string `json:"m.read.private"`
}

// marker is one marker to move: a receipt type (or m.fully_read) to an
// event at a stream position.
type marker struct {
	typ, threadID, eventID string
	eventPos               int64
}

// SetReadMarkers moves the fully read marker and the read receipts of a
// user in a room in one transaction. Every event must be one of the room's
// that the user may see (the spec: "The event MUST belong to the room"),
// and the user must be joined to the room.
func (s *Service) SetReadMarkers(ctx context.Context, rooms ReceiptRooms, userID, roomID string, m ReadMarkers) error {
	if err := ValidateRoomID(roomID); err != nil {
		return err
	}
	var ms []marker
	for _, mk := range []struct{ typ, eventID string }{
		{TypeFullyRead, m.FullyRead}, {ReceiptRead, m.Read}, {ReceiptReadPrivate, m.ReadPrivate},
	} {
		if mk.eventID != "" {
			ms = append(ms, marker{typ: mk.typ, eventID: mk.eventID})
		}
	}
	return s.moveMarkers(ctx, rooms, userID, roomID, ms)
}

// SendReceipt handles POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
// body is the request body, which may carry a thread_id; an empty body is
// taken as {} (clients from before v1.4 of the spec send none). A receipt
// type of m.fully_read moves the fully read marker, as /read_markers does.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid
func (s *Service) SendReceipt(ctx context.Context, rooms ReceiptRooms, userID, roomID, receiptType, eventID string, body []byte) error {
	if err := ValidateRoomID(roomID); err != nil {
		return err
	}
	if !strings.HasPrefix(eventID, "$") {
		return mxerr.InvalidParam("%q is not a valid event ID", eventID)
	}
	switch receiptType {
	case ReceiptRead, ReceiptReadPrivate, TypeFullyRead:
	default:
		return mxerr.InvalidParam("Receipt type must be %s, %s or %s", ReceiptRead, ReceiptReadPrivate, TypeFullyRead)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	var b map[string]json.RawMessage
	if err := httpx.Unmarshal(body, &b); err != nil {
		return err
	}
	threadID := ""
	if raw, ok := b["thread_id"]; ok {
		// receipts.yaml: 400 M_INVALID_PARAM when thread_id is not a
		// string, is empty, or comes with a receipt type it does not
		// fit.
		if json.Unmarshal(raw, &threadID) != nil || threadID == "" {
			return mxerr.InvalidParam("thread_id must be a non-empty string")
		}
		if receiptType == TypeFullyRead {
			return mxerr.InvalidParam("thread_id cannot be used with %s", TypeFullyRead)
		}
		// A thread ID is "main" or the event ID of the thread root.
		// https://spec.matrix.org/v1.19/client-server-api/#threaded-read-receipts
		if threadID != "main" && !strings.HasPrefix(threadID, "$") {
			return mxerr.InvalidParam("thread_id must be \"main\" or the event ID of a thread root")
		}
	}
	return s.moveMarkers(ctx, rooms, userID, roomID, []marker{{typ: receiptType, threadID: threadID, eventID: eventID}})
}

// moveMarkers checks that the user is joined and may see every event, then
// stores the markers in one transaction.
func (s *Service) moveMarkers(ctx context.Context, rooms ReceiptRooms, userID, roomID string, ms []marker) error {
	if len(ms) == 0 {
		return nil
	}
	membership, err := rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if membership != "join" {
		return mxerr.Forbidden("You are not joined to this room")
	}
	for i := range ms {
		if ms[i].eventPos, err = rooms.VisibleEventPos(ctx, roomID, userID, ms[i].eventID); err != nil {
			return err
		}
	}
	ts := s.nowMS()
	defer func() {
		s.accountDataChanged(ctx, userID)
		if s.hooks.ReceiptsChanged != nil {
			s.hooks.ReceiptsChanged(ctx, roomID)
		}
	}()
	return s.db.WithTx(ctx, func(tx *database.Tx) error {
		for _, m := range ms {
			var err error
			if m.typ == TypeFullyRead {
				err = s.setFullyRead(ctx, tx, userID, roomID, m.eventID)
			} else {
				err = s.putReceipt(ctx, tx, roomID, userID, m, ts)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// setFullyRead stores the fully read marker as the room account data
// m.fully_read {"event_id": ...}. Unlike a receipt it may move backwards,
// as in Synapse: a user who marked too much as read can undo it. Setting
// it to where it already is writes nothing.
// https://spec.matrix.org/v1.19/client-server-api/#mfully_read
func (s *Service) setFullyRead(ctx context.Context, tx *database.Tx, userID, roomID, eventID string) error {
	cur, err := getAccountData(ctx, tx, userID, roomID, TypeFullyRead)
	if err != nil {
		return err
	}
	var c struct {
		EventID string `json:"event_id"`
	}
	if cur != nil && json.Unmarshal(cur, &c) == nil && c.EventID == eventID {
		return nil
	}
	content, err := json.Marshal(map[string]string{"event_id": eventID})
	if err != nil {
		return err
	}
	return s.putAccountData(ctx, tx, userID, roomID, TypeFullyRead, content)
}

// putReceipt stores a receipt unless the user already has one of the same
// type and thread at this event or a later one: receipts mean "read up to
// here" and only move forward (Synapse ignores older ones the same way).
func (s *Service) putReceipt(ctx context.Context, tx *database.Tx, roomID, userID string, m marker, ts int64) error {
	var curPos int64
	err := tx.QueryRowContext(ctx, `SELECT event_pos FROM receipts
		WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4`,
		roomID, userID, m.typ, m.threadID).Scan(&curPos)
	switch {
	case err == nil && curPos >= m.eventPos:
		return nil
	case err != nil && !isNoRowsErr(err):
		return fmt.Errorf("read receipt: %w", err)
	}
	pos, err := s.nextStreamPos(ctx, tx, streamReceipts)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO receipts
		(room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET
			event_id = excluded.event_id, event_pos = excluded.event_pos, ts = excluded.ts,
			stream_pos = excluded.stream_pos`,
		roomID, userID, m.typ, m.threadID, m.eventID, m.eventPos, ts, pos)
	if err != nil {
		return fmt.Errorf("store receipt: %w", err)
	}
	return nil
}

// Receipt is one stored receipt.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string // m.read or m.read.private
	ThreadID string // "" for an unthreaded receipt
	EventID  string
	TS       int64
	// StreamPos is the receipts stream position of the change.
	StreamPos int64
}

// ReceiptsPos is the latest position of the receipts stream.
func (s *Service) ReceiptsPos(ctx context.Context) (int64, error) {
	return s.streamPos(ctx, streamReceipts)
}

// maxInArgs bounds the placeholders of one IN (...) list; SQLite allows
// 32766 variables per statement, PostgreSQL 65535.
const maxInArgs = 500

// ReceiptsSince lists the receipts in roomIDs that changed after stream
// position since (all of them for since 0), as viewer may see them: the
// spec says "Servers MUST NOT send the m.read.private receipt to any other
// user than the one which originally sent it", so other users' private
// receipts are left out here, where no caller can forget to.
func (s *Service) ReceiptsSince(ctx context.Context, viewer string, roomIDs []string, since int64) ([]Receipt, error) {
	var out []Receipt
	for start := 0; start < len(roomIDs); start += maxInArgs {
		chunk := roomIDs[start:min(start+maxInArgs, len(roomIDs))]
		args := []any{since, viewer, ReceiptReadPrivate}
		ph := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		rows, err := s.db.QueryContext(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos
			FROM receipts WHERE stream_pos > $1 AND (receipt_type != $3 OR user_id = $2)
			AND room_id IN (`+strings.Join(ph, ", ")+`) ORDER BY stream_pos`, args...)
		if err != nil {
			return nil, fmt.Errorf("receipts since %d: %w", since, err)
		}
		for rows.Next() {
			var r Receipt
			if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("receipts since %d: %w", since, err)
			}
			out = append(out, r)
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ReceiptContent builds the content of one room's m.receipt event from its
// receipts: event ID -> receipt type -> user ID -> {ts, thread_id}. A
// user's unthreaded and threaded receipts on the same event share one slot
// in that format; the later in the list wins, as receipts are deltas the
// client merges.
// https://spec.matrix.org/v1.19/client-server-api/#mreceipt
func ReceiptContent(receipts []Receipt) map[string]map[string]map[string]any {
	out := map[string]map[string]map[string]any{}
	for _, r := range receipts {
		byType := out[r.EventID]
		if byType == nil {
			byType = map[string]map[string]any{}
			out[r.EventID] = byType
		}
		byUser := byType[r.Type]
		if byUser == nil {
			byUser = map[string]any{}
			byType[r.Type] = byUser
		}
		data := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			data["thread_id"] = r.ThreadID
		}
		byUser[r.UserID] = data
	}
	return out
}

// ReceiveRemoteReceipt stores the public read receipt of a user of
// another server (an m.receipt EDU): the user must be joined and able to
// see the event; ts is the time the receipt was made.
func (s *Service) ReceiveRemoteReceipt(ctx context.Context, rooms ReceiptRooms, roomID, userID, eventID, threadID string, ts int64) error {
	if threadID != "" && threadID != "main" && !strings.HasPrefix(threadID, "$") {
		return mxerr.InvalidParam("bad thread_id")
	}
	membership, err := rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if membership != "join" {
		return mxerr.Forbidden("not joined")
	}
	m := marker{typ: ReceiptRead, threadID: threadID, eventID: eventID}
	if m.eventPos, err = rooms.VisibleEventPos(ctx, roomID, userID, eventID); err != nil {
		return err
	}
	if ts <= 0 {
		ts = s.nowMS()
	}
	err = s.db.WithTx(ctx, func(tx *database.Tx) error { return s.putReceipt(ctx, tx, roomID, userID, m, ts) })
	if err == nil && s.hooks.ReceiptsChanged != nil {
		s.hooks.ReceiptsChanged(ctx, roomID)
	}
	return err
}
