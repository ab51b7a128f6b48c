package admin

import (
	"context"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/media"
)

// Media quarantine and protection. Quarantined media is served to nobody;
// protected local media is never quarantined.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html

// RoomMedia is the media a room's events refer to, split by origin.
type RoomMedia struct {
	Local  []string `json:"local"`
	Remote []string `json:"remote"`
}

// MediaInRoom lists the mxc:// URIs a room's events refer to.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#list-all-media-in-a-room
func (s *Service) MediaInRoom(ctx context.Context, roomID string) (*RoomMedia, error) {
	if _, err := s.Room(ctx, roomID); err != nil {
		return nil, err
	}
	uris, err := s.rooms.MediaURIs(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := &RoomMedia{Local: []string{}, Remote: []string{}}
	for _, u := range uris {
		m, ok := media.ParseMXC(u)
		switch {
		case !ok:
		case m.Origin == s.name:
			out.Local = append(out.Local, u)
		default:
			out.Remote = append(out.Remote, u)
		}
	}
	return out, nil
}

// QuarantineRoomMedia quarantines the media a room's events refer to and
// returns how many were newly quarantined.
func (s *Service) QuarantineRoomMedia(ctx context.Context, actor, roomID string) (int, error) {
	if err := s.mediaOn(); err != nil {
		return 0, err
	}
	rm, err := s.MediaInRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	var all []media.MXC
	for _, u := range append(rm.Local, rm.Remote...) {
		m, _ := media.ParseMXC(u)
		all = append(all, m)
	}
	return s.quarantine(ctx, actor, "quarantine_room_media", roomID, all)
}

// QuarantineUserMedia quarantines a local user's uploads and returns how
// many were newly quarantined.
func (s *Service) QuarantineUserMedia(ctx context.Context, actor, userID string) (int, error) {
	if err := s.mediaOn(); err != nil {
		return 0, err
	}
	if _, err := s.existing(ctx, userID); err != nil {
		return 0, err
	}
	all, err := s.media.UploadsOf(ctx, userID)
	if err != nil {
		return 0, err
	}
	return s.quarantine(ctx, actor, "quarantine_user_media", userID, all)
}

// QuarantineMedia quarantines one media (local or remote; protected local
// media is left alone) or lifts its quarantine.
func (s *Service) QuarantineMedia(ctx context.Context, actor string, origin spec.ServerName, mediaID string, quarantine bool) error {
	if err := s.mediaOn(); err != nil {
		return err
	}
	m := media.MXC{Origin: origin, MediaID: mediaID}
	if _, ok := media.ParseMXC(m.String()); !ok {
		return mxerr.InvalidParam("Invalid media: %s", m)
	}
	if quarantine {
		_, err := s.quarantine(ctx, actor, "quarantine_media", m.String(), []media.MXC{m})
		return err
	}
	if err := s.media.Unquarantine(ctx, m); err != nil {
		return err
	}
	s.Audit(actor, "unquarantine_media", m.String(), nil)
	return nil
}

func (s *Service) quarantine(ctx context.Context, actor, action, target string, all []media.MXC) (int, error) {
	n, err := s.media.Quarantine(ctx, actor, all)
	if err != nil {
		return 0, err
	}
	s.Audit(actor, action, target, logrus.Fields{"quarantined": n})
	return n, nil
}

// ProtectMedia protects local media from quarantine, or lifts the
// protection.
func (s *Service) ProtectMedia(ctx context.Context, actor, mediaID string, protect bool) error {
	if err := s.mediaOn(); err != nil {
		return err
	}
	if !media.ValidMediaID(mediaID) {
		return mxerr.Unknown(http.StatusBadRequest, "Invalid media ID")
	}
	if err := s.media.Protect(ctx, mediaID, protect); err != nil {
		return err
	}
	action := "protect_media"
	if !protect {
		action = "unprotect_media"
	}
	s.Audit(actor, action, "mxc://"+string(s.name)+"/"+mediaID, nil)
	return nil
}
