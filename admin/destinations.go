package admin

import (
	"context"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/federation/queue"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// Destinations is what the admin domain needs of the federation sender.
type Destinations interface {
	Destinations(ctx context.Context) ([]queue.Health, error)
	ResetBackoff(dest spec.ServerName) bool
}

// SetDestinations gives the admin domain the federation sender; without
// it (federation off) the destination actions answer 404 M_UNRECOGNIZED.
func (s *Service) SetDestinations(d Destinations) { s.dests = d }

func (s *Service) destsOn() error {
	if s.dests == nil {
		return mxerr.Unrecognized("Federation is not enabled on this server")
	}
	return nil
}

// ListDestinations lists the destinations whose name contains filter.
func (s *Service) ListDestinations(ctx context.Context, filter string) ([]queue.Health, error) {
	if err := s.destsOn(); err != nil {
		return nil, err
	}
	all, err := s.dests.Destinations(ctx)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, d := range all {
		if strings.Contains(string(d.Destination), filter) {
			out = append(out, d)
		}
	}
	return out, nil
}

// Destination returns one destination; M_NOT_FOUND if never sent to.
func (s *Service) Destination(ctx context.Context, name string) (*queue.Health, error) {
	all, err := s.ListDestinations(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, d := range all {
		if string(d.Destination) == name {
			return &d, nil
		}
	}
	return nil, mxerr.NotFound("Unknown destination")
}

// DestinationRooms lists the rooms a destination has a joined member in,
// by room ID, with the stream position of each room's latest event.
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/federation.html#destination-rooms
func (s *Service) DestinationRooms(ctx context.Context, name string) ([]roomserver.RoomPosition, error) {
	if _, err := s.Destination(ctx, name); err != nil {
		return nil, err
	}
	return s.rooms.RoomsWithServer(ctx, spec.ServerName(name))
}

// ResetConnection ends a destination's backoff so that what is queued for
// it goes now.
func (s *Service) ResetConnection(ctx context.Context, actor, name string) error {
	if _, err := s.Destination(ctx, name); err != nil {
		return err
	}
	if !s.dests.ResetBackoff(spec.ServerName(name)) {
		return mxerr.Unknown(http.StatusBadRequest, "The retry timing does not need to be reset for this destination.")
	}
	s.Audit(actor, "reset_connection", name, nil)
	return nil
}
