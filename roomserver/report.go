package roomserver

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Reporting content: users report events and rooms to the server's admins.
// https://spec.matrix.org/v1.19/client-server-api/#reporting-content

// Report is a stored report.
type Report struct {
	ID         int64
	RoomID     string
	EventID    string // "" for a report of the whole room
	Reporter   string
	Reason     *string
	Score      *int64
	ReceivedTS int64
}

// ReportEvent stores a report of an event. Since v1.8 the reporter must be
// joined to the room; like Synapse we also require that they can see the
// event, and that it is not redacted. Every refusal is the same 404
// M_NOT_FOUND, so a report cannot probe for events one may not see.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreporteventid
func (s *Service) ReportEvent(ctx context.Context, roomID, eventID, reporter string, reason *string, score *int64) error {
	notFound := mxerr.NotFound("Unable to report event: it does not exist or you are not able to see it")
	m, err := s.Membership(ctx, roomID, reporter)
	if err != nil {
		return err
	}
	if m != "join" {
		return notFound
	}
	ev, err := s.Event(ctx, roomID, reporter, eventID)
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return notFound
		}
		return err
	}
	if ev.Redacted() {
		return notFound
	}
	return s.addReport(ctx, roomID, &eventID, reporter, reason, score)
}

// ReportRoom stores a report of a room. The reporter need not be in it:
// people meet harmful rooms in the directory and in invites. Only an
// unknown room is refused, with 404 M_NOT_FOUND.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3roomsroomidreport
func (s *Service) ReportRoom(ctx context.Context, roomID, reporter, reason string) error {
	if _, err := s.RoomVersion(ctx, roomID); err != nil {
		return err
	}
	return s.addReport(ctx, roomID, nil, reporter, &reason, nil)
}

func (s *Service) addReport(ctx context.Context, roomID string, eventID *string, reporter string, reason *string, score *int64) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO reports (room_id, event_id, reporter, reason, score, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`, roomID, eventID, reporter, reason, score, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store report: %w", err)
	}
	s.log.WithFields(logrus.Fields{"room_id": roomID, "reporter": reporter}).Info("content reported")
	return nil
}

// ReportPage is a page of reports, newest first.
type ReportPage struct {
	Reports []Report
	// Next is the offset of the next page; 0 when this is the last.
	Next  int
	Total int
}

// Reports lists the stored reports for the server's admins, newest first,
// from the offset from. The caller checks that the requester is an admin.
func (s *Service) Reports(ctx context.Context, limit, from int) (*ReportPage, error) {
	if limit < 0 || from < 0 {
		return nil, mxerr.InvalidParam("limit and from must not be negative")
	}
	page := &ReportPage{Reports: []Report{}}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM reports`).Scan(&page.Total); err != nil {
		return nil, fmt.Errorf("count reports: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, room_id, event_id, reporter, reason, score, received_ts
		FROM reports ORDER BY received_ts DESC, id DESC LIMIT $1 OFFSET $2`, limit, from)
	if err != nil {
		return nil, fmt.Errorf("list reports: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Report
		var eventID, reason sql.NullString
		var score sql.NullInt64
		if err := rows.Scan(&r.ID, &r.RoomID, &eventID, &r.Reporter, &reason, &score, &r.ReceivedTS); err != nil {
			return nil, err
		}
		r.EventID = eventID.String
		if reason.Valid {
			r.Reason = &reason.String
		}
		if score.Valid {
			r.Score = &score.Int64
		}
		page.Reports = append(page.Reports, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if n := from + len(page.Reports); n < page.Total {
		page.Next = n
	}
	return page, nil
}
