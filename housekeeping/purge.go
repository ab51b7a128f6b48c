package housekeeping

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// PurgeStatus is the state of one history purge, as Synapse's
// purge_history_status reports it.
type PurgeStatus struct {
	Status  string // "active", "complete" or "failed"
	Error   string // when failed
	RoomID  string
	Deleted int
	done    time.Time
}

// purgeStatusLifetime is how long a finished purge's status is kept (as
// Synapse: a day).
const purgeStatusLifetime = 24 * time.Hour

// purges tracks the purges an admin started, in memory as in Synapse: a
// restart forgets them (a purge cut short by a restart can be run again:
// it deletes what is left).
type purges struct {
	mu     sync.Mutex
	byID   map[string]*PurgeStatus
	active map[string]string // room ID -> purge ID
}

// StartPurge checks a purge request and starts it in the background,
// returning its purge ID. A room has one purge at a time.
// https://element-hq.github.io/synapse/latest/admin_api/purge_history_api.html
func (s *Service) StartPurge(ctx context.Context, req roomserver.PurgeRequest, by string) (string, error) {
	if _, err := s.rooms.PurgePoint(ctx, req); err != nil {
		return "", err
	}
	p := &s.purges
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, busy := p.active[req.RoomID]; busy {
		return "", mxerr.Unknown(400, "History purge already in progress for %s", req.RoomID)
	}
	now := time.Now()
	for id, st := range p.byID {
		if !st.done.IsZero() && now.Sub(st.done) > purgeStatusLifetime {
			delete(p.byID, id)
		}
	}
	id := randomID()
	st := &PurgeStatus{Status: "active", RoomID: req.RoomID}
	p.byID[id] = st
	p.active[req.RoomID] = id
	s.log.WithField("admin", by).WithField("room_id", req.RoomID).WithField("purge_id", id).
		WithField("event_id", req.EventID).WithField("before", req.Before).WithField("delete_local", req.DeleteLocal).
		Info("admin: purging room history")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		n, err := s.rooms.PurgeHistory(s.ctx, req)
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.active, req.RoomID)
		st.Deleted, st.done = n, time.Now()
		log := s.log.WithField("room_id", req.RoomID).WithField("purge_id", id).WithField("deleted", n)
		if err != nil {
			st.Status, st.Error = "failed", err.Error()
			log.WithError(err).Error("purging room history failed")
			return
		}
		st.Status = "complete"
		log.Info("purged room history")
	}()
	return id, nil
}

// Purge returns the status of a purge, false when it is unknown.
func (s *Service) Purge(id string) (PurgeStatus, bool) {
	s.purges.mu.Lock()
	defer s.purges.mu.Unlock()
	st, ok := s.purges.byID[id]
	if !ok {
		return PurgeStatus{}, false
	}
	return *st, true
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
