package admin

import (
	"context"
	"strconv"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// ReportDetails is one event report with what an admin judges it by.
type ReportDetails struct {
	*roomserver.ReportDetails
	// Room is the reported room, if the server still holds it.
	Room *roomserver.AdminRoom
}

// parseReportID reads a report ID from a path.
func parseReportID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 0 {
		return 0, mxerr.InvalidParam("The report_id parameter must be a string representing a positive integer.")
	}
	return id, nil
}

// Report returns one report with its event and room.
func (s *Service) Report(ctx context.Context, reportID string) (*ReportDetails, error) {
	id, err := parseReportID(reportID)
	if err != nil {
		return nil, err
	}
	d, err := s.rooms.ReportByID(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &ReportDetails{ReportDetails: d}
	if rooms, err := s.rooms.AdminRooms(ctx, d.RoomID); err == nil {
		out.Room = rooms[0]
	}
	return out, nil
}

// DeleteReport deletes one report.
func (s *Service) DeleteReport(ctx context.Context, actor, reportID string) error {
	id, err := parseReportID(reportID)
	if err != nil {
		return err
	}
	if err := s.rooms.DeleteReport(ctx, id); err != nil {
		return err
	}
	s.Audit(actor, "delete_event_report", reportID, nil)
	return nil
}

// RoomSizes estimates the largest rooms' share of the database.
func (s *Service) RoomSizes(ctx context.Context) ([]roomserver.RoomSize, error) {
	return s.rooms.RoomSizes(ctx, 10)
}
