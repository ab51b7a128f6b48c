package server

import (
	"context"

	"github.com/tessera-hs/tessera/clientapi"
	"github.com/tessera-hs/tessera/housekeeping"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/media"
	"github.com/tessera-hs/tessera/notices"
	"github.com/tessera-hs/tessera/roomserver"
)

// initHousekeeping builds the housekeeping domain: the room server's
// purges tell push to drop the purged events' actions, and the job prunes
// each domain's short-lived rows.
func (s *Server) initHousekeeping(api *clientapi.API, ms *media.Service) {
	hk := housekeeping.New(s.cfg.Housekeeping, s.db, s.Rooms, s.log.WithField("component", "housekeeping"))
	s.Rooms.SetPurgeListener(func(ctx context.Context, roomID string, eventIDs []string) {
		if err := s.Push.EventsPurged(ctx, roomID, eventIDs); err != nil {
			s.log.WithError(err).WithField("room_id", roomID).Error("dropping the push actions of purged events")
		}
	})
	hk.SetMedia(ms)
	hk.AddPruner("txn_ids", s.Rooms.TxnPruner(s.cfg.Housekeeping.TxnIDLifetime.Std()))
	hk.AddPruner("push_actions", s.Push)
	hk.AddPruner("tokens", s.Users)
	hk.AddPruner("stale_devices", s.Users.StaleDevicePruner(s.cfg.Housekeeping.DeleteStaleDevicesAfter.Std()))
	hk.AddPruner("to_device_orphans", s.Sync.ToDevice())
	hk.AddPruner("rejected_events", s.Rooms.RejectedPruner())
	api.SetHousekeeping(hk)
	s.Housekeeping = hk
	if s.cluster == nil || s.cluster.Index() == 0 {
		// One job for the deployment (its work is the shared
		// database's): the first instance by name runs it. The admin
		// API's runs still happen where they are asked for.
		hk.Start()
	}
}

// addRoomPurgers gives the admin's room purge every domain that keeps
// rows about rooms, so that a purged room leaves nothing behind. After
// the domains are built.
func (s *Server) addRoomPurgers(ns *notices.Service) {
	s.Admin.AddRoomPurger("users", s.Users)
	s.Admin.AddRoomPurger("push", s.Push)
	s.Admin.AddRoomPurger("keybackup", s.keyBackup)
	s.Admin.AddRoomPurger("delayed", s.delayed)
	s.Admin.AddRoomPurger("slidingsync", s.sliding)
	s.Admin.AddRoomPurger("notices", ns)
	if s.webhooks != nil {
		s.Admin.AddRoomPurger("webhooks", s.webhooks)
	}
}

// retentionConfig is the room server's view of the retention settings:
// reads hide what the housekeeping job will purge.
func retentionConfig(r config.Retention) roomserver.RetentionConfig {
	return roomserver.RetentionConfig{
		Enabled:            r.Enabled,
		DefaultMinLifetime: r.DefaultMinLifetime.Std(),
		DefaultMaxLifetime: r.DefaultMaxLifetime.Std(),
		AllowedLifetimeMin: r.AllowedLifetimeMin.Std(),
		AllowedLifetimeMax: r.AllowedLifetimeMax.Std(),
	}
}
