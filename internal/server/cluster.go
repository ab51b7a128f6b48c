package server

import (
	"context"
	"net/http"

	"github.com/jackc/pgx/v5"

	"github.com/tessera-hs/tessera/internal/cluster"
	"github.com/tessera-hs/tessera/push"
	"github.com/tessera-hs/tessera/roomserver"
)

// roomCluster is the room server's view of the instance map; nil for one
// process.
func roomCluster(m *cluster.Map) *roomserver.Cluster {
	if m == nil {
		return nil
	}
	return &roomserver.Cluster{Instance: m.Self(), Index: m.Index(), Size: m.Size()}
}

// startCluster starts applying the events the other processes commit.
func (s *Server) startCluster() {
	if s.cluster == nil {
		return
	}
	dsn := s.cfg.Database.DSN
	s.Rooms.ListenCluster(func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) })
}

// clusterHandler forwards room writes to their owners.
func (s *Server) clusterHandler(h http.Handler) http.Handler {
	if s.cluster == nil {
		return h
	}
	return s.cluster.Forward(s.log, h)
}

// localRooms is the room server as push sees it in a cluster: push
// evaluates the events this process commits (each event once in the
// deployment), so the position it keeps up with is this process's last
// commit, not the last of the deployment.
type localRooms struct{ *roomserver.Service }

func (r localRooms) CurrentPos() int64 { return r.LocalPos() }

// pushRooms is the room server push gets.
func (s *Server) pushRooms() push.Rooms {
	if s.cluster == nil {
		return s.Rooms
	}
	return localRooms{s.Rooms}
}
