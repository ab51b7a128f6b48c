package admin

import (
	"context"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/media"
)

// SetMedia gives the admin domain the content repository; call it once,
// before serving requests. Without it the media actions answer
// 404 M_UNRECOGNIZED.
func (s *Service) SetMedia(m *media.Service) { s.media = m }

func (s *Service) mediaOn() error {
	if s.media == nil {
		return mxerr.Unrecognized("The media repository is not enabled")
	}
	return nil
}

// UserMedia lists a local user's uploads.
func (s *Service) UserMedia(ctx context.Context, userID string, from, limit int, orderBy string, backwards bool) ([]media.LocalMedia, int, error) {
	if err := s.mediaOn(); err != nil {
		return nil, 0, err
	}
	if _, err := s.existing(ctx, userID); err != nil {
		return nil, 0, err
	}
	return s.media.UserMedia(ctx, userID, from, limit, orderBy, backwards)
}

// DeleteUserMedia deletes every upload of a local user.
func (s *Service) DeleteUserMedia(ctx context.Context, actor, userID string) ([]string, error) {
	all, _, err := s.UserMedia(ctx, userID, 0, 1<<30, "", false)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(all))
	for i, m := range all {
		ids[i] = m.MediaID
	}
	return s.deleteMedia(ctx, actor, "delete_user_media", userID, ids)
}

// DeleteMedia deletes one local media ID (404 if unknown).
func (s *Service) DeleteMedia(ctx context.Context, actor string, server spec.ServerName, mediaID string) ([]string, error) {
	if err := s.mediaOn(); err != nil {
		return nil, err
	}
	if server != s.name {
		return nil, mxerr.Unknown(http.StatusBadRequest, "Can only delete local media")
	}
	deleted, err := s.deleteMedia(ctx, actor, "delete_media", "mxc://"+string(server)+"/"+mediaID, []string{mediaID})
	if err == nil && len(deleted) == 0 {
		return nil, mxerr.NotFound("Unknown media")
	}
	return deleted, err
}

// DeleteMediaBefore deletes local media created before a time and bigger
// than size bytes.
func (s *Service) DeleteMediaBefore(ctx context.Context, actor string, before time.Time, size int64) ([]string, error) {
	if err := s.mediaOn(); err != nil {
		return nil, err
	}
	ids, err := s.media.LocalBefore(ctx, before, size)
	if err != nil {
		return nil, err
	}
	return s.deleteMedia(ctx, actor, "delete_media_before", string(s.name), ids)
}

func (s *Service) deleteMedia(ctx context.Context, actor, action, target string, ids []string) ([]string, error) {
	deleted, err := s.media.DeleteLocal(ctx, ids)
	if deleted == nil {
		deleted = []string{}
	}
	s.Audit(actor, action, target, logrus.Fields{"deleted": len(deleted)})
	return deleted, err
}

// PurgeRemoteMedia deletes the cached copies of other servers' media
// last accessed before a time (the housekeeping purge, as Synapse's
// purge_media_cache).
func (s *Service) PurgeRemoteMedia(ctx context.Context, actor string, before time.Time) (int, error) {
	if err := s.mediaOn(); err != nil {
		return 0, err
	}
	n, err := s.media.PurgeRemote(ctx, before)
	s.Audit(actor, "purge_remote_media", "", logrus.Fields{"before": before.UTC().Format(time.RFC3339), "deleted": n})
	return n, err
}

// MediaUsage is one user's uploads in total, with their display name.
type MediaUsage struct {
	media.UsageStat
	DisplayName *string `json:"displayname"`
}

// MediaUsageByUser sums each local user's uploads, smallest first.
func (s *Service) MediaUsageByUser(ctx context.Context) ([]MediaUsage, error) {
	if err := s.mediaOn(); err != nil {
		return nil, err
	}
	stats, err := s.media.UsageByUser(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]MediaUsage, 0, len(stats))
	for _, st := range stats {
		u := MediaUsage{UsageStat: st}
		if acc, err := s.users.AdminUser(ctx, st.UserID); err == nil {
			u.DisplayName = acc.DisplayName
		}
		out = append(out, u)
	}
	return out, nil
}
