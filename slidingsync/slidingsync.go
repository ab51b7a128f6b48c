// Package slidingsync serves simplified sliding sync (MSC4186), the sync
// Element X and the newest Element Web use: lists of the user's rooms
// sorted by recency, of which the client asks for ranges, and room
// subscriptions, each sent once and then as deltas, on connections whose
// state the database keeps. It is a second engine on /sync's stream
// positions, notifier, timelines and visibility rules (syncapi), not a
// copy of them.
// https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md
package slidingsync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
)

// Service is the sliding sync engine.
type Service struct {
	db    *database.DB
	log   logrus.FieldLogger
	rooms *roomserver.Service
	users *users.Service
	sync  *syncapi.Service
	// writer commits the records of many responses in one transaction:
	// fifty clients woken by one message share one fsync.
	writer *database.GroupWriter
	locks  connLocks
	kicks  kickCache
	dms    dmCache
	memo   memo
	// inflight: answers whose records are still being written.
	inflight inflight

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New runs the domain's migrations and starts the engine.
func New(ctx context.Context, db *database.DB, log logrus.FieldLogger, rooms *roomserver.Service, us *users.Service, ss *syncapi.Service) (*Service, error) {
	if err := db.Migrate(ctx, "slidingsync", migrations); err != nil {
		return nil, err
	}
	s := &Service{db: db, log: log, rooms: rooms, users: us, sync: ss, writer: database.NewGroupWriter(db, 256), stop: make(chan struct{})}
	s.wg.Add(1)
	go s.expireLoop()
	return s, nil
}

// Close stops the engine; call it after the HTTP server has stopped.
func (s *Service) Close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.writer.Close()
	})
}

func (s *Service) expireLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := s.expire(context.Background()); err != nil {
			s.log.WithError(err).Warn("sliding sync: dropping expired connections")
		}
		select {
		case <-t.C:
		case <-s.stop:
			return
		}
	}
}

// Response is a sliding sync response.
type Response struct {
	Pos        string                    `json:"pos"`
	Lists      map[string]ListResult     `json:"lists"`
	Rooms      map[string]map[string]any `json:"rooms"`
	Extensions map[string]any            `json:"extensions"`
}

// ListResult is a list's entry: how many rooms pass its filters.
type ListResult struct {
	Count int `json:"count"`
}

// Sync answers a request: at once when there is anything to send (or on
// a connection's first request, or without a timeout), else when there
// is, or when the timeout ends.
func (s *Service) Sync(ctx context.Context, req *Request) (*Response, error) {
	unlock := s.locks.lock(req.UserID + "\x00" + req.DeviceID + "\x00" + req.ConnID)
	defer func() { unlock() }()
	c, err := s.openConn(ctx, req)
	if err != nil {
		return nil, err
	}
	if c.reset {
		if err := s.sync.EnsurePushRules(ctx, req.UserID); err != nil {
			return nil, fmt.Errorf("push rules account data: %w", err)
		}
	}
	// The subscriptions stick to the connection.
	state := connState{Subs: maps.Clone(c.state.Subs), Counts: c.state.Counts}
	if state.Subs == nil {
		state.Subs = map[string]*RoomConfig{}
	}
	maps.Copy(state.Subs, req.Subscribe)
	for _, id := range req.Unsubscribe {
		delete(state.Subs, id)
	}
	if len(state.Subs) > maxSubscriptions {
		return nil, tooManySubscriptions()
	}
	var deadline <-chan time.Time
	if c.since != nil && req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	notifier := s.sync.Notifier()
	last := false
	for {
		changed := notifier.Changed(req.UserID)
		resp, rec, news, err := s.compute(ctx, c, req, state)
		if err != nil {
			return nil, err
		}
		if news || last || c.since == nil || req.Timeout <= 0 {
			pos, err := s.save(ctx, c, rec)
			if err != nil {
				return nil, err
			}
			known := c.known
			if c.reset || known == nil {
				known = map[string]*roomState{}
			}
			s.memo.put(c.key, pos, maps.Clone(known), rec.rooms)
			resp.Pos = fmt.Sprintf("%d/%s", pos, rec.token)
			return resp, nil
		}
		unlock()
		if err := s.wait(ctx, req.UserID, changed, deadline, rec.token); errors.Is(err, errLast) {
			last = true
		} else if err != nil {
			unlock = func() {}
			return nil, err
		}
		unlock = s.locks.lock(req.UserID + "\x00" + req.DeviceID + "\x00" + req.ConnID)
	}
}

// errLast: the long-poll ends (its timeout, or the server stopping); the
// request answers with what it has.
var errLast = errors.New("last")

// wait sleeps until the user's next change that sliding sync may care
// about. Presence wakes /sync's clients but sliding sync serves no
// presence: a wake that moved no other stream (a user going idle, say)
// is slept through rather than answered by a recomputation, which for a
// thousand idle connections is a burst of work and garbage for nothing.
func (s *Service) wait(ctx context.Context, userID string, changed <-chan struct{}, deadline <-chan time.Time, seen syncapi.Token) error {
	notifier := s.sync.Notifier()
	for {
		select {
		case <-changed:
		case <-deadline:
			return errLast
		case <-s.sync.Stopping():
			return errLast
		case <-ctx.Done():
			return ctx.Err()
		}
		next := notifier.Changed(userID)
		now, err := s.sync.Now(ctx)
		if err != nil {
			return err
		}
		if !syncapi.OnlyPresenceMoved(seen, now) {
			return nil
		}
		changed = next
	}
}

// compute builds the response to a request: the lists, the rooms with
// news, the extensions; and the record of what it sends.
func (s *Service) compute(ctx context.Context, c *conn, req *Request, state connState) (*Response, *record, bool, error) {
	now, err := s.sync.Now(ctx)
	if err != nil {
		return nil, nil, false, err
	}
	ignored, err := s.users.IgnoredUsers(ctx, req.UserID)
	if err != nil {
		return nil, nil, false, err
	}
	rl, err := s.listRooms(ctx, req.UserID, ignored, now.Pos(syncapi.AccountDataStream), func(ids []string) (map[string]bool, error) {
		prev, err := s.roomStates(ctx, c, ids)
		if err != nil {
			return nil, err
		}
		out := make(map[string]bool, len(prev))
		for id := range prev {
			out[id] = true
		}
		return out, nil
	})
	if err != nil {
		return nil, nil, false, err
	}
	resp := &Response{Lists: map[string]ListResult{}, Rooms: map[string]map[string]any{}, Extensions: map[string]any{}}
	rec := &record{token: now, state: connState{Subs: state.Subs, Counts: map[string]int{}}, rooms: map[string]*roomState{}}
	news := false

	// The rooms of the lists' ranges, then the subscriptions.
	wanted := map[string]*roomReq{}
	var order []string
	add := func(cand *candidate, cfg *RoomConfig, list string) {
		rr := wanted[cand.m.RoomID]
		if rr == nil {
			rr = &roomReq{c: cand}
			wanted[cand.m.RoomID] = rr
			order = append(order, cand.m.RoomID)
		}
		rr.rules.add(cfg)
		if list != "" {
			rr.lists = append(rr.lists, list)
		}
	}
	listRooms := map[string][]string{}
	for _, name := range sortedKeys(req.Lists) {
		l := req.Lists[name]
		rooms, err := rl.filter(ctx, l.Filters)
		if err != nil {
			return nil, nil, false, err
		}
		resp.Lists[name] = ListResult{Count: len(rooms)}
		rec.state.Counts[name] = len(rooms)
		if old, ok := state.Counts[name]; !ok || old != len(rooms) {
			news = true
		}
		for i, cand := range rooms {
			if l.inRange(i) {
				add(cand, &l.RoomConfig, name)
				listRooms[name] = append(listRooms[name], cand.m.RoomID)
			}
		}
	}
	var subRooms []string
	for _, id := range sortedKeys(state.Subs) {
		cand := rl.byID[id]
		if cand == nil {
			if cand = rl.elsewhere(id); cand == nil {
				continue // not a room the user may see: ignored
			}
		}
		add(cand, state.Subs[id], "")
		subRooms = append(subRooms, id)
	}

	prevs, err := s.roomStates(ctx, c, order)
	if err != nil {
		return nil, nil, false, err
	}
	rc := &roomCtx{userID: req.UserID, deviceID: req.DeviceID, now: now[0], ignored: ignored, dms: rl.dms, rl: rl}
	rc.receiptsMoved = true
	if c.since != nil {
		rc.since = (*c.since)[0]
		rc.receiptsMoved = now.Pos(syncapi.ReceiptsStream) > c.since.Pos(syncapi.ReceiptsStream)
	}
	var fresh []string
	for _, id := range order {
		rr := wanted[id]
		rr.prev = prevs[id]
		room, next, err := s.room(ctx, rc, rr)
		if err != nil {
			return nil, nil, false, fmt.Errorf("room %s: %w", id, err)
		}
		if room == nil {
			if next != nil {
				rec.rooms[id] = next
			}
			continue
		}
		resp.Rooms[id] = room
		rec.rooms[id] = next
		news = true
		if room["initial"] == true && rr.c.m.Membership == spec.Join {
			fresh = append(fresh, id)
		}
	}

	extNews, err := s.extensions(ctx, c, req, now, resp, extensionRooms{lists: listRooms, subs: subRooms, byID: rl.byID, fresh: fresh})
	if err != nil {
		return nil, nil, false, err
	}
	return resp, rec, news || extNews, nil
}

// elsewhere is the candidate for a subscribed room outside the room list:
// one the user left themselves (the list shows those only once sent). Nil
// for a room the user was never in.
func (rl *roomList) elsewhere(roomID string) *candidate {
	for _, m := range rl.all {
		if m.RoomID == roomID && (m.Membership == spec.Leave || m.Membership == spec.Ban) {
			return &candidate{m: m, bump: m.StreamPos}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
