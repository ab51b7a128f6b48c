package syncapi

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// Presence is the presence service and the presence stream of /sync.
// https://spec.matrix.org/v1.19/client-server-api/#presence
//
// It follows Synapse's model. A user is online while a client syncs (with
// set_presence unset or online) or after saying so; each of those is
// activity and sets last_active. The user is currently_active while the
// last activity is under a minute old; unavailable (idle) once it is five
// minutes old; offline, with the status message cleared, half a minute
// after their last sync ended if none is running.
//
// The live state is kept in memory for the users who are not offline (or
// are syncing); each published change is stored by the users domain with
// the next position of the presence stream. Not every change is published:
// a newer last_active alone is not news while the user stays currently
// active (the spec: "the server will not send further updates to the last
// active time until an update is sent to the client with either a)
// currently_active set to false or b) a presence state other than
// online"), so a user who syncs every few seconds costs no writes. The
// in-memory last_active is still what GET /presence and /sync report.
//
// The transitions run on one timer per user (time.AfterFunc) set for the
// next deadline; nothing polls. After a restart the users stored as not
// offline get their timers again, as if their last sync had ended at
// start-up.
type Presence struct {
	users    *users.Service
	rooms    presenceRooms
	notifier *Notifier
	now      func() time.Time
	timing   presenceTiming

	mu      sync.Mutex
	enabled bool
	stopped bool
	live    map[string]*livePresence
	// cluster shares presence with the other processes of a deployment
	// (presence_cluster.go); nil for one process.
	cluster *presenceCluster
	// onPublish, if set, is told of each published change of a local
	// user's presence (presence_remote.go).
	onPublish func(ctx context.Context, userID string)
}

// presenceRooms is what presence needs from the room server; the
// *roomserver.Service satisfies it.
type presenceRooms interface {
	// JoinedRooms lists the rooms a user has joined.
	JoinedRooms(ctx context.Context, userID string) ([]string, error)
}

// presenceTiming holds the durations of the model (variables for tests).
type presenceTiming struct {
	// active is how long after the last activity a user is still
	// currently_active (Synapse's LAST_ACTIVE_GRANULARITY).
	active time.Duration
	// idle is how long after the last activity an online user becomes
	// unavailable (Synapse's IDLE_TIMER).
	idle time.Duration
	// gone is how long after the last sync ended a user who is not
	// syncing becomes offline (Synapse's SYNC_ONLINE_TIMEOUT).
	gone time.Duration
}

var defaultPresenceTiming = presenceTiming{active: time.Minute, idle: 5 * time.Minute, gone: 30 * time.Second}

// livePresence is the live state of one user.
type livePresence struct {
	// pub is what was last published (and stored).
	pub users.PresenceState
	// lastActive is the latest activity, in ms; newer than
	// pub.LastActiveTS when that was not worth publishing.
	lastActive int64
	// syncing counts the user's running syncs that keep them online;
	// lastSync is when the latest of them started or ended, in ms.
	syncing  int
	lastSync int64
	timer    *time.Timer
	deadline int64  // of timer, in ms
	gen      uint64 // bumped on every new timer, so a stale one is ignored
}

// current is the user's live state.
func (e *livePresence) current() users.PresenceState {
	st := e.pub
	st.LastActiveTS = e.lastActive
	return st
}

func newPresenceStream(us *users.Service, rs presenceRooms, n *Notifier) *Presence {
	return &Presence{
		users: us, rooms: rs, notifier: n, now: time.Now, timing: defaultPresenceTiming,
		live: map[string]*livePresence{},
	}
}

// Presence is the server's presence service.
func (s *Service) Presence() *Presence {
	for _, st := range s.streams {
		if p, ok := st.(*Presence); ok {
			return p
		}
	}
	return nil
}

// Start turns presence on or off (the presence.enabled setting) and, when
// on, sets the timers of the users stored as not offline. Call it once,
// before serving. Until then, and when off, presence is as Synapse's with
// presence disabled: setting it is accepted and ignored, everyone reads as
// offline and /sync carries no presence.
func (p *Presence) Start(ctx context.Context, enabled bool) error {
	if !enabled {
		return nil
	}
	states, err := p.users.PresenceNotOffline(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enabled = true
	now := p.nowMS()
	suffix := ":" + string(p.users.ServerName())
	for _, st := range states {
		if !strings.HasSuffix(st.UserID, suffix) {
			continue // another server's user: their server tells us of changes
		}
		e := &livePresence{pub: st, lastActive: st.LastActiveTS, lastSync: now}
		p.live[st.UserID] = e
		p.scheduleLocked(st.UserID, e, now)
	}
	return nil
}

// Stop cancels every timer; later calls change nothing. For shutdown,
// before the database closes: a timer that is running holds the lock, so
// once Stop returns none writes again.
func (p *Presence) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for _, e := range p.live {
		if e.timer != nil {
			e.timer.Stop()
		}
	}
}

func (p *Presence) nowMS() int64 { return p.now().UnixMilli() }

func (p *Presence) isEnabled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.enabled && !p.stopped
}

// validPresence checks a presence state from a client.
func validPresence(presence string) error {
	switch presence {
	case users.PresenceOnline, users.PresenceUnavailable, users.PresenceOffline:
		return nil
	}
	return mxerr.InvalidParam("presence must be one of online, unavailable, offline")
}

// Set is PUT /presence/{userId}/status: the user sets their presence and
// status message ("" for none). Setting online is activity. Going offline
// clears the status message, as in Synapse.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3presenceuseridstatus
func (p *Presence) Set(ctx context.Context, userID, presence, statusMsg string) error {
	if err := validPresence(presence); err != nil {
		return err
	}
	if p.elsewhere(userID) {
		return p.delegate(ctx, PresenceCall{Op: "set", UserID: userID, Presence: presence, StatusMsg: statusMsg})
	}
	return p.change(ctx, userID, func(st *users.PresenceState, now int64) {
		st.Presence = presence
		st.StatusMsg = statusMsg
		if presence == users.PresenceOffline {
			st.StatusMsg = ""
		}
		if presence == users.PresenceOnline {
			st.LastActiveTS = now
		}
	})
}

// Active records activity of the user other than a sync or a presence
// change (typing, say): last_active moves to now, and an idle user is
// online again. An offline user stays offline, as in Synapse.
func (p *Presence) Active(ctx context.Context, userID string) error {
	if p.elsewhere(userID) {
		if !p.isEnabled() {
			return nil
		}
		return p.delegate(ctx, PresenceCall{Op: "active", UserID: userID})
	}
	return p.change(ctx, userID, func(st *users.PresenceState, now int64) {
		st.LastActiveTS = now
		if st.Presence == users.PresenceUnavailable {
			st.Presence = users.PresenceOnline
		}
	})
}

// change applies fn to the user's live state, publishes the result if it
// is news and wakes whom it concerns.
func (p *Presence) change(ctx context.Context, userID string, fn func(st *users.PresenceState, now int64)) error {
	p.mu.Lock()
	if !p.enabled || p.stopped {
		p.mu.Unlock()
		return nil
	}
	e, err := p.entryLocked(ctx, userID)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	now := p.nowMS()
	next := e.current()
	fn(&next, now)
	published, err := p.applyLocked(ctx, e, next, now)
	p.scheduleLocked(userID, e, now)
	p.mu.Unlock()
	if published {
		p.wake(userID)
	}
	return err
}

// Syncing is called as a sync of the user starts, with the sync's
// set_presence; the returned function must be called when it ends. Unset
// or online marks the user online and active, unavailable marks them
// idle, offline leaves their presence alone ("the client is not marked as
// being online when it uses this API").
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
func (p *Presence) Syncing(ctx context.Context, userID, setPresence string) (done func()) {
	if setPresence == "" {
		setPresence = users.PresenceOnline
	}
	p.mu.Lock()
	if !p.enabled || p.stopped || setPresence == users.PresenceOffline || validPresence(setPresence) != nil {
		p.mu.Unlock()
		return func() {}
	}
	if p.elsewhere(userID) {
		p.mu.Unlock()
		return p.syncingElsewhere(ctx, userID, setPresence)
	}
	e, err := p.entryLocked(ctx, userID)
	if err != nil {
		p.mu.Unlock()
		p.notifier.log.WithError(err).WithField("user_id", userID).Error("presence: reading state")
		return func() {}
	}
	now := p.nowMS()
	e.syncing++
	e.lastSync = now
	// As in Synapse, a sync is not activity. It brings an offline user
	// online (and active) and can set unavailable, but leaves an online or
	// idle user as they are: were every poll to renew last_active, an idle
	// client's own poll would turn currently_active back on each minute and
	// wake itself, for ever. Real activity (sending, typing, PUT presence)
	// renews it.
	next := e.current()
	switch {
	case setPresence == users.PresenceUnavailable:
		next.Presence = users.PresenceUnavailable
	case next.Presence == users.PresenceOffline:
		next.Presence, next.LastActiveTS = users.PresenceOnline, now
	}
	published, err := p.applyLocked(ctx, e, next, now)
	p.scheduleLocked(userID, e, now)
	p.mu.Unlock()
	if err != nil {
		p.notifier.log.WithError(err).WithField("user_id", userID).Error("presence: storing a change")
	}
	if published {
		p.wake(userID)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.live[userID] != e {
				return // stopped and dropped meanwhile (cannot happen while syncing > 0)
			}
			now := p.nowMS()
			e.syncing--
			e.lastSync = now
			if !p.stopped {
				p.scheduleLocked(userID, e, now)
			}
		})
	}
}

// entryLocked returns the user's live state, loading it if needed.
func (p *Presence) entryLocked(ctx context.Context, userID string) (*livePresence, error) {
	if e, ok := p.live[userID]; ok {
		return e, nil
	}
	st, err := p.users.Presence(ctx, userID)
	if err != nil {
		return nil, err
	}
	if st == nil {
		st = &users.PresenceState{UserID: userID, Presence: users.PresenceOffline}
	}
	e := &livePresence{pub: *st, lastActive: st.LastActiveTS}
	p.live[userID] = e
	return e, nil
}

// currentlyActive is whether a state counts as currently active at now.
func (p *Presence) currentlyActive(st users.PresenceState, now int64) bool {
	return st.Presence == users.PresenceOnline && st.LastActiveTS > 0 &&
		now-st.LastActiveTS < p.timing.active.Milliseconds()
}

// newsworthy is whether next differs from what was published in a way
// clients must hear of (Synapse's should_notify).
func (p *Presence) newsworthy(pub, next users.PresenceState, now int64) bool {
	if next.Presence != pub.Presence || next.StatusMsg != pub.StatusMsg {
		return true
	}
	active := p.currentlyActive(next, now)
	bumped := next.LastActiveTS-pub.LastActiveTS > p.timing.active.Milliseconds()
	if next.Presence == users.PresenceOnline {
		return active != pub.CurrentlyActive || (bumped && !active)
	}
	return bumped
}

// applyLocked makes next the user's live state and publishes it if it is
// news. It reports whether it published.
func (p *Presence) applyLocked(ctx context.Context, e *livePresence, next users.PresenceState, now int64) (bool, error) {
	e.lastActive = next.LastActiveTS
	if !p.newsworthy(e.pub, next, now) {
		return false, nil
	}
	next.CurrentlyActive = p.currentlyActive(next, now)
	pos, err := p.users.PutPresence(context.WithoutCancel(ctx), next)
	if err != nil {
		return false, err
	}
	next.StreamPos = pos
	e.pub = next
	return true, nil
}

// scheduleLocked sets the user's timer for their next transition, or drops
// their live state when there is none to come (offline and not syncing:
// the stored state says it all).
func (p *Presence) scheduleLocked(userID string, e *livePresence, now int64) {
	st := e.current()
	var deadline int64
	at := func(t int64) {
		if deadline == 0 || t < deadline {
			deadline = t
		}
	}
	if st.Presence == users.PresenceOnline {
		if e.pub.CurrentlyActive {
			at(st.LastActiveTS + p.timing.active.Milliseconds())
		}
		at(st.LastActiveTS + p.timing.idle.Milliseconds())
	}
	if st.Presence != users.PresenceOffline && e.syncing == 0 {
		at(max(e.lastSync, st.LastActiveTS) + p.timing.gone.Milliseconds())
	}
	if deadline == e.deadline && e.timer != nil {
		return
	}
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.deadline = deadline
	if deadline == 0 {
		if st.Presence == users.PresenceOffline && e.syncing == 0 {
			delete(p.live, userID)
		}
		return
	}
	e.gen++
	gen := e.gen
	// A deadline already past (after a restart, or when storing failed)
	// fires after a second rather than at once, so that a failing write
	// is not retried in a tight loop.
	delay := max(time.Duration(deadline-now)*time.Millisecond, 0)
	if deadline <= now {
		delay = time.Second
	}
	e.timer = time.AfterFunc(delay, func() { p.timeout(userID, gen) })
}

// timeout runs the transitions that are due for a user.
func (p *Presence) timeout(userID string, gen uint64) {
	p.mu.Lock()
	e := p.live[userID]
	if p.stopped || e == nil || e.gen != gen {
		p.mu.Unlock()
		return
	}
	e.timer, e.deadline = nil, 0
	now := p.nowMS()
	next := e.current()
	if next.Presence == users.PresenceOnline && now-next.LastActiveTS >= p.timing.idle.Milliseconds() {
		next.Presence = users.PresenceUnavailable
	}
	if next.Presence != users.PresenceOffline && e.syncing == 0 &&
		now-max(e.lastSync, next.LastActiveTS) >= p.timing.gone.Milliseconds() {
		next.Presence = users.PresenceOffline
		next.StatusMsg = ""
	}
	published, err := p.applyLocked(context.Background(), e, next, now)
	p.scheduleLocked(userID, e, now)
	p.mu.Unlock()
	if err != nil {
		p.notifier.log.WithError(err).WithField("user_id", userID).Error("presence: storing a timed change")
	}
	if published {
		p.wake(userID)
	}
}

// wake wakes the syncs of the user and of everyone who shares a room with
// them.
func (p *Presence) wake(userID string) {
	if p.onPublish != nil {
		p.onPublish(context.Background(), userID)
	}
	p.wakeRooms(userID)
}

// wakeRooms wakes the syncs of the user and of everyone who shares a room
// with them.
func (p *Presence) wakeRooms(userID string) {
	p.notifier.Wake(userID)
	rooms, err := p.rooms.JoinedRooms(context.Background(), userID)
	if err != nil {
		p.notifier.log.WithError(err).WithField("user_id", userID).Error("presence: listing rooms to wake")
		return
	}
	for _, roomID := range rooms {
		p.notifier.WakeRoom(roomID)
	}
}

// presenceContent is the content of an m.presence event, and the body of
// GET /presence/{userId}/status, as Synapse formats them: last_active_ago
// when the user was ever active, status_msg when set and not offline,
// currently_active when online.
func (p *Presence) presenceContent(st users.PresenceState, now int64) map[string]any {
	c := map[string]any{"presence": st.Presence}
	if st.LastActiveTS > 0 {
		c["last_active_ago"] = max(now-st.LastActiveTS, 0)
	}
	if st.StatusMsg != "" && st.Presence != users.PresenceOffline {
		c["status_msg"] = st.StatusMsg
	}
	if st.Presence == users.PresenceOnline {
		c["currently_active"] = p.currentlyActive(st, now)
	}
	return c
}

// liveLocked overlays the live state of the users that have one on stored
// states.
func (p *Presence) liveLocked(states []users.PresenceState) {
	for i, st := range states {
		if e, ok := p.live[st.UserID]; ok {
			states[i] = e.current()
		}
	}
}

// Get is GET /presence/{userId}/status. Another user's presence is for
// those who share a room with them (403 otherwise, as in Synapse); an
// unknown user is 404. A user who never had any presence is offline.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3presenceuseridstatus
func (p *Presence) Get(ctx context.Context, viewer, userID string) (map[string]any, error) {
	if !p.isEnabled() {
		return map[string]any{"presence": users.PresenceOffline}, nil
	}
	if userID != viewer {
		// Our users must exist; another server's are known by the rooms
		// we share with them.
		if strings.HasSuffix(userID, ":"+string(p.users.ServerName())) {
			if _, err := p.users.Account(ctx, userID); err != nil {
				return nil, err
			}
		}
		share, err := p.shareRoom(ctx, viewer, userID)
		if err != nil {
			return nil, err
		}
		if !share {
			return nil, mxerr.Forbidden("You are not allowed to see their presence")
		}
	}
	st, err := p.users.Presence(ctx, userID)
	if err != nil {
		return nil, err
	}
	if st == nil {
		st = &users.PresenceState{UserID: userID, Presence: users.PresenceOffline}
	}
	states := []users.PresenceState{*st}
	p.mu.Lock()
	p.liveLocked(states)
	p.mu.Unlock()
	return p.presenceContent(states[0], p.nowMS()), nil
}

func (p *Presence) shareRoom(ctx context.Context, a, b string) (bool, error) {
	ra, err := p.rooms.JoinedRooms(ctx, a)
	if err != nil {
		return false, err
	}
	rb, err := p.rooms.JoinedRooms(ctx, b)
	if err != nil {
		return false, err
	}
	for _, r := range ra {
		if slices.Contains(rb, r) {
			return true, nil
		}
	}
	return false, nil
}

func (p *Presence) current(ctx context.Context) (int64, error) { return p.users.PresencePos(ctx) }

func (p *Presence) catchUp(ctx context.Context) error {
	return p.users.CatchUp(ctx, users.StreamPresence)
}

// fewChanges is how many changed users fill checks one by one (their
// rooms against the syncing user's) before it lists the members of all the
// syncing user's rooms instead.
const fewChanges = 16

// fill adds the m.presence events of the syncing user and of the users who
// share a joined room with them: on an initial sync everyone's who is not
// offline, after that the users whose presence changed since the token,
// and, as Synapse does, the presence of users newly met in this response
// (who joined a room of the user's, or are in a room the user joined).
// Each event carries the user's presence as it is now.
func (p *Presence) fill(ctx context.Context, sc *syncContext, since, now int64) (bool, error) {
	if !p.isEnabled() {
		return false, nil
	}
	var pf *users.EventFilter
	if sc.req.Filter != nil {
		pf = sc.req.Filter.Presence
	}
	if !filterTypeWanted(pf, "m.presence") {
		return false, nil
	}
	self := sc.req.UserID
	var states []users.PresenceState
	if sc.initial {
		members := p.sharing(sc)
		ids := make([]string, 0, len(members))
		for u := range members {
			ids = append(ids, u)
		}
		all, err := p.users.PresenceOf(ctx, ids)
		if err != nil {
			return false, err
		}
		p.mu.Lock()
		p.liveLocked(all)
		p.mu.Unlock()
		for _, st := range all {
			if st.Presence != users.PresenceOffline {
				states = append(states, st)
			}
		}
	} else {
		_, met := joinsInResponse(sc)
		if since >= now && len(met) == 0 {
			return false, nil
		}
		var changed []users.PresenceState
		if since < now {
			all, err := p.users.PresenceSince(ctx, since)
			if err != nil {
				return false, err
			}
			for _, st := range all {
				if st.StreamPos <= now {
					changed = append(changed, st)
				}
			}
		}
		seen := map[string]bool{}
		if len(changed) > 0 {
			visible, err := p.visibleFilter(ctx, sc, changed)
			if err != nil {
				return false, err
			}
			for _, st := range changed {
				if visible(st.UserID) {
					states = append(states, st)
					seen[st.UserID] = true
				}
			}
		}
		var newly []string
		for u := range met {
			if !seen[u] && u != self {
				newly = append(newly, u)
			}
		}
		if len(newly) > 0 {
			more, err := p.users.PresenceOf(ctx, newly)
			if err != nil {
				return false, err
			}
			for _, st := range more {
				if st.Presence != users.PresenceOffline {
					states = append(states, st)
				}
			}
		}
		p.mu.Lock()
		p.liveLocked(states)
		p.mu.Unlock()
	}
	nowMS := p.nowMS()
	n := 0
	for _, st := range states {
		if !filterSenderWanted(pf, st.UserID) {
			continue
		}
		if pf != nil && pf.Limit != nil && n >= *pf.Limit {
			break
		}
		sc.resp.Presence.Events = append(sc.resp.Presence.Events, map[string]any{
			"type": "m.presence", "sender": st.UserID, "content": p.presenceContent(st, nowMS),
		})
		n++
	}
	return n > 0, nil
}

// sharing is the syncing user and every user who shares a joined room
// with them, from the notifier's cache of room members.
func (p *Presence) sharing(sc *syncContext) map[string]bool {
	out := map[string]bool{sc.req.UserID: true}
	for _, roomID := range sc.joined {
		members, err := p.notifier.roomMembers(roomID)
		if err != nil {
			p.notifier.log.WithError(err).WithField("room_id", roomID).Error("presence: listing room members")
			continue
		}
		for _, u := range members {
			out[u] = true
		}
	}
	return out
}

// visibleFilter returns whether the syncing user may see the presence of
// each of the changed users: for a few, their rooms are checked against
// the user's; for more, the members of all the user's rooms are listed
// once.
func (p *Presence) visibleFilter(ctx context.Context, sc *syncContext, changed []users.PresenceState) (func(string) bool, error) {
	if len(changed) > fewChanges {
		members := p.sharing(sc)
		return func(u string) bool { return members[u] }, nil
	}
	mine := make(map[string]bool, len(sc.joined))
	for _, r := range sc.joined {
		mine[r] = true
	}
	ok := map[string]bool{sc.req.UserID: true}
	for _, st := range changed {
		if st.UserID == sc.req.UserID {
			continue
		}
		theirs, err := p.rooms.JoinedRooms(ctx, st.UserID)
		if err != nil {
			return nil, err
		}
		for _, r := range theirs {
			if mine[r] {
				ok[st.UserID] = true
				break
			}
		}
	}
	return func(u string) bool { return ok[u] }, nil
}

// joinsInResponse scans the joined rooms of a response for member events
// that are joins (not a joined member's profile change). It returns the
// rooms the syncing user joined, and the users newly met: those who
// joined, and every member of a room the syncing user joined.
func joinsInResponse(sc *syncContext) (rooms, met map[string]bool) {
	rooms, met = map[string]bool{}, map[string]bool{}
	self := sc.req.UserID
	for roomID, jr := range sc.resp.Rooms.Join {
		for _, list := range [][]roomserver.ClientEvent{jr.Timeline.Events, jr.State.Events} {
			for _, ev := range list {
				if ev.Type != "m.room.member" || ev.StateKey == nil || !isNewJoin(ev) {
					continue
				}
				if *ev.StateKey == self {
					rooms[roomID] = true
				} else {
					met[*ev.StateKey] = true
				}
			}
		}
	}
	for roomID := range rooms {
		if !sc.isJoined(roomID) {
			delete(rooms, roomID)
		}
	}
	return rooms, met
}

// isNewJoin is whether a member event is a join by someone who was not
// joined before it.
func isNewJoin(ev roomserver.ClientEvent) bool {
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(ev.Content, &c) != nil || c.Membership != "join" {
		return false
	}
	if prev, ok := ev.Unsigned["prev_content"].(json.RawMessage); ok {
		var pc struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(prev, &pc) == nil && pc.Membership == "join" {
			return false
		}
	}
	return true
}

// filterTypeWanted applies a filter's types and not_types to an event
// type. A '*' matches any run of characters; an absent list lets
// everything through, an empty types list nothing.
// https://spec.matrix.org/v1.19/client-server-api/#filtering
func filterTypeWanted(f *users.EventFilter, typ string) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !slices.ContainsFunc(f.Types, func(p string) bool { return globMatch(p, typ) }) {
		return false
	}
	return !slices.ContainsFunc(f.NotTypes, func(p string) bool { return globMatch(p, typ) })
}

// filterSenderWanted applies a filter's senders and not_senders.
func filterSenderWanted(f *users.EventFilter, sender string) bool {
	if f == nil {
		return true
	}
	if f.Senders != nil && !slices.Contains(f.Senders, sender) {
		return false
	}
	return !slices.Contains(f.NotSenders, sender)
}

// globMatch matches s against a pattern in which '*' stands for any run
// of characters.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}
