package roomserver

import "context"

// VisibleEventPos returns the stream position of an event of roomID that
// userID may see, with the same refusals as Event (404 M_NOT_FOUND for an
// event that is missing, in another room, or hidden from the user). The
// users domain orders read receipts by it: a receipt only moves forward.
func (s *Service) VisibleEventPos(ctx context.Context, roomID, userID, eventID string) (int64, error) {
	ev, err := s.Event(ctx, roomID, userID, eventID)
	if err != nil {
		return 0, err
	}
	return ev.StreamPos, nil
}
