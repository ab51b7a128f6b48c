package roomserver

import (
	"context"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// CanSendState reports whether userID is joined to roomID with the power
// to send state events of eventType (state_default for a type the power
// levels do not name). An unknown room is an error (404 M_NOT_FOUND).
func (s *Service) CanSendState(ctx context.Context, roomID, userID, eventType string) (bool, error) {
	err := s.checkStatePower(ctx, roomID, userID, eventType, "forbidden")
	if err == nil {
		return true, nil
	}
	if e, ok := mxerr.As(err); ok && e.Code == "M_FORBIDDEN" {
		return false, nil
	}
	return false, err
}
