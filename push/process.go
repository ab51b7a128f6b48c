package push

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/roomserver"
)

// Evaluation of committed events.
// https://spec.matrix.org/v1.19/client-server-api/#server-behaviour-11

// OnEvents is the room server's listener. It runs on the committer's
// goroutine, so it only hands the events over.
func (s *Service) OnEvents(evs []*roomserver.Event) {
	s.inMu.RLock()
	defer s.inMu.RUnlock()
	if !s.closed {
		s.events <- evs
	}
}

// maxBatchEvents bounds the events evaluated in one step.
const maxBatchEvents = 4096

// Evaluated notifications are kept in memory (pending) and written to the
// database in the background: at most flushDelay after the first of them,
// or at once when maxPendingRows build up, and on Close. Reads combine the
// two (see pendingStore). Writing every evaluation at once would take one
// write transaction, and one fsync, for each of the room server's commits,
// and halved how many events a busy server could take in (measured with
// tessera-load send); written this way, one flush covers many commits. The
// price: a crash loses the notifications evaluated in its last flushDelay
// (the events themselves are safe; only their counts are missed).
const (
	flushDelay     = 100 * time.Millisecond
	maxPendingRows = 20_000
)

// loop evaluates events in stream order, taking every batch waiting when
// it starts, and flushes what it evaluated.
func (s *Service) loop() {
	defer close(s.done)
	timer := time.NewTimer(flushDelay)
	timer.Stop()
	armed := false
	for {
		var evs []*roomserver.Event
		select {
		case batch, ok := <-s.events:
			if !ok {
				s.flush()
				return
			}
			evs = batch
		case <-timer.C:
			armed = false
			s.flush()
			continue
		}
	drain:
		for len(evs) < maxBatchEvents {
			select {
			case more, ok := <-s.events:
				if !ok {
					break drain // flushed when the loop sees the close
				}
				evs = append(evs[:len(evs):len(evs)], more...)
			default:
				break drain
			}
		}
		if len(evs) == 0 {
			continue
		}
		woken := s.processBatch(evs)
		s.advance(evs[len(evs)-1].StreamPos)
		for u := range woken {
			s.wake(u)
		}
		switch n := s.pending.size(); {
		case n >= maxPendingRows:
			// Since Go 1.23 a stopped timer delivers no stale tick.
			timer.Stop()
			armed = false
			s.flush()
		case (n > 0 || s.pending.hasMarks()) && !armed:
			// Marks alone are written too: in a cluster, the other
			// processes count from the database (cluster.go).
			timer.Reset(flushDelay)
			armed = true
		}
	}
}

// processedPos is the last stream position evaluated.
func (s *Service) processedPos() int64 {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	return s.processed
}

// startPos is where a pusher made or enabled now starts: after every event
// committed so far, evaluated or not. Evaluation runs behind the commits,
// so processedPos alone could be below an event whose send has already
// returned, and the new pusher would deliver it (a mail about a message
// sent before the address was confirmed: CI saw it on PostgreSQL). An
// event at or below it that is evaluated later is skipped, as it should be.
func (s *Service) startPos() int64 {
	return max(s.processedPos(), s.rooms.CurrentPos())
}

// advance records that every event up to pos has been evaluated.
func (s *Service) advance(pos int64) {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	if pos > s.processed {
		s.processed = pos
		close(s.advanced)
		s.advanced = make(chan struct{})
	}
}

// maxCountWait bounds how long a count waits for evaluation to catch up.
const maxCountWait = 3 * time.Second

// waitProcessed waits until events up to pos have been evaluated, the
// wait bound passes, ctx ends or the service closes. "The updated
// notification count from a new event MUST appear in the same /sync
// response as the event itself": a sync that carries an event waits here
// for its evaluation.
func (s *Service) waitProcessed(ctx context.Context, pos int64) {
	var timeout <-chan time.Time
	for {
		s.posMu.Lock()
		p, ch := s.processed, s.advanced
		s.posMu.Unlock()
		if p >= pos {
			return
		}
		if timeout == nil {
			t := time.NewTimer(maxCountWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ch:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

// actionRow is one recorded notification.
type actionRow struct {
	userID, roomID, eventID, threadID string
	pos, ts                           int64
	outcome                           Outcome
	actions                           []json.RawMessage
	actionsJSON                       string
}

// sentMark is a local user's own event: it marks its thread read.
type sentMark struct {
	userID, roomID, threadID string
	pos                      int64
}

// processBatch evaluates a batch of committed events, adds the results
// to the pending notifications and returns the users whose notifications
// changed, to wake.
func (s *Service) processBatch(evs []*roomserver.Event) map[string]bool {
	ctx := context.Background()
	var rows []actionRow
	var marks []sentMark
	for _, ev := range evs {
		r, m, err := s.processEvent(ctx, ev)
		if err != nil {
			s.log.WithError(err).WithFields(logrus.Fields{"event_id": ev.EventID(), "room_id": ev.RoomID}).
				Error("push: evaluating push rules")
			continue
		}
		rows = append(rows, r...)
		marks = append(marks, m...)
	}
	if len(rows) == 0 && len(marks) == 0 {
		return nil
	}
	ts := s.now().UnixMilli()
	for i := range rows {
		rows[i].ts = ts
	}
	s.pending.add(rows, marks)
	s.counts.addRows(rows)
	for _, m := range marks {
		s.counts.invalidate(m.userID, m.roomID)
	}
	// A sender's own event wakes them already, and the sync that carries
	// it waits for this evaluation: marks need no wake of their own.
	woken, notified := wakes(rows)
	for u := range notified {
		s.delivery.wakeUser(u, false)
		s.email.wake(u)
	}
	// Invites count in the badge (Synapse's get_badge_count): a local
	// user's membership leaving invite (accepted, rejected, withdrawn)
	// sends a badge update, which goes only if the count changed.
	for u := range membershipsLeftInvite(evs, s.evaluates) {
		s.delivery.wakeUser(u, true)
	}
	// (A user's own event marks what came before it read, but sends no
	// badge update, as in Synapse: counting a user's badge reads every
	// room they are in, too much for every message they send; the read
	// receipt their client sends does it.)
	return woken
}

// insertChunk is how many rows one INSERT writes (9 parameters each; SQLite
// allows 32766 per statement, PostgreSQL 65535), and txRows about how many
// one transaction writes: a flush of many rows is split so that it never
// holds the database's one writer (which the room server's commits need)
// for long.
const (
	insertChunk = 200
	txRows      = 1000
)

// flush writes the pending notifications, in stream order, in
// transactions of about txRows rows. Only the evaluation goroutine calls
// it, so nothing is added meanwhile.
func (s *Service) flush() {
	rows, marks, upTo := s.pending.snapshot(s.processedPos())
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].pos < rows[j].pos })
	ctx := context.Background()
	for len(rows) > 0 || len(marks) > 0 {
		// A transaction ends between two events, never inside one: the
		// pending store is cut at a stream position.
		n := min(txRows, len(rows))
		for n < len(rows) && n > 0 && rows[n].pos == rows[n-1].pos {
			n++
		}
		chunk, rest := rows[:n], rows[n:]
		var chunkMarks []sentMark
		if len(rest) == 0 {
			chunkMarks = marks
		}
		if err := s.db.WithTx(ctx, func(tx *database.Tx) error {
			return writeRows(ctx, tx, chunk, chunkMarks)
		}); err != nil {
			// Kept pending: the next flush tries again.
			s.log.WithError(err).Error("push: recording notifications")
			return
		}
		if len(rest) > 0 {
			s.pending.flushedThrough(chunk[len(chunk)-1].pos)
		}
		rows, marks = rest, marks[len(chunkMarks):]
	}
	s.pending.flushed(upTo)
}

// writeRows inserts notification rows and sent marks.
func writeRows(ctx context.Context, tx *database.Tx, rows []actionRow, marks []sentMark) error {
	// Many rows per statement: one statement each would spend more time
	// preparing than inserting.
	for start := 0; start < len(rows); start += insertChunk {
		chunk := rows[start:min(start+insertChunk, len(rows))]
		var q strings.Builder
		q.WriteString(`INSERT INTO event_push_actions
			(user_id, room_id, event_id, stream_pos, notify, highlight, thread_id, actions, ts) VALUES `)
		args := make([]any, 0, len(chunk)*9)
		for i, r := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
			args = append(args, r.userID, r.roomID, r.eventID, r.pos, r.outcome.Notify, r.outcome.Highlight,
				r.threadID, r.actionsJSON, r.ts)
		}
		q.WriteString(` ON CONFLICT (user_id, stream_pos) DO NOTHING`)
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	for _, m := range marks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO push_sent_marks (user_id, room_id, thread_id, stream_pos)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE
			SET stream_pos = CASE WHEN excluded.stream_pos > push_sent_marks.stream_pos
				THEN excluded.stream_pos ELSE push_sent_marks.stream_pos END`,
			m.userID, m.roomID, m.threadID, m.pos); err != nil {
			return err
		}
	}
	return nil
}

// processEvent evaluates one event for each local member of its room other
// than its sender ("When receiving a new event homeservers process push
// rules for each of the local users in the room (excluding the sender)"),
// and for a local user it invites.
func (s *Service) processEvent(ctx context.Context, ev *roomserver.Event) ([]actionRow, []sentMark, error) {
	sender := string(ev.SenderID())
	rc, err := s.roomContext(ctx, ev)
	if err != nil {
		return nil, nil, err
	}
	candidates := make([]string, 0, len(rc.members))
	for u := range rc.members {
		if u != sender && s.evaluates(u) {
			candidates = append(candidates, u)
		}
	}
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
		target := *ev.StateKey()
		if m, _ := ev.Membership(); m == spec.Invite && target != sender && s.evaluates(target) {
			candidates = append(candidates, target)
		}
	}
	threadID := ""
	thread := func() string {
		if threadID == "" {
			threadID = s.threadOf(ctx, ev)
		}
		return threadID
	}
	var marks []sentMark
	if s.evaluates(sender) {
		marks = append(marks, sentMark{userID: sender, roomID: ev.RoomID, threadID: thread(), pos: ev.StreamPos})
	}
	if len(candidates) == 0 {
		return nil, marks, nil
	}
	evMap, err := DecodeEvent(ev.JSON())
	if err != nil {
		return nil, nil, err
	}
	evMap["room_id"] = ev.RoomID
	ec := &EvalContext{
		Event: evMap, RoomID: ev.RoomID, Sender: sender, MemberCount: len(rc.members),
		SenderLevel: rc.pl.UserLevel(spec.SenderID(sender)), NotificationLevel: rc.pl.NotificationLevel,
	}
	var rows []actionRow
	for _, u := range candidates {
		// No notification from someone the user ignores (as Synapse).
		ignored, err := s.users.IgnoredUsers(ctx, u)
		if err != nil {
			return nil, nil, err
		}
		if ignored[sender] {
			continue
		}
		rs, err := s.ruleset(ctx, u)
		if err != nil {
			return nil, nil, err
		}
		ec.DisplayName = rc.members[u]
		rule := rs.Match(ec)
		if rule == nil {
			continue
		}
		o := rule.outcome
		if !o.Notify && !o.Highlight {
			continue
		}
		rows = append(rows, actionRow{userID: u, roomID: ev.RoomID, eventID: ev.EventID(), threadID: thread(),
			pos: ev.StreamPos, outcome: o, actions: rule.Actions, actionsJSON: rule.actionsJSON})
	}
	if len(rows) > 0 {
		// What push gateways are told of the event, from the state in
		// hand: delivery then need not load the room's state again.
		s.delivery.events.prime(&eventInfo{eventID: ev.EventID(), roomID: ev.RoomID, typ: ev.Type(), sender: sender,
			stateKey: ev.StateKey(), content: ev.Content(), senderDisplayName: rc.members[sender],
			roomName: rc.name, roomAlias: rc.alias})
	}
	return rows, marks, nil
}

// stateString is a string field of a state event's content ("" if
// absent).
func stateString(st map[roomserver.StateKey]*roomserver.Event, typ, field string) string {
	ev, ok := st[roomserver.StateKey{Type: typ}]
	if !ok {
		return ""
	}
	var c map[string]any
	_ = json.Unmarshal(ev.Content(), &c)
	v, _ := c[field].(string)
	return v
}

// roomContext is what evaluation needs of a room's state.
type roomContext struct {
	members map[string]string // joined user -> display name in the room
	pl      *gomatrixserverlib.PowerLevelContent
	// The room's name and canonical alias, for push gateways.
	name, alias string
}

// maxRoomContexts bounds the cache of room contexts; it is emptied when
// full. Events that change no state share their predecessor's state group,
// so a run of messages loads the state once.
const maxRoomContexts = 256

// roomContext returns the state after ev, as evaluation needs it. Only the
// evaluation goroutine calls it.
func (s *Service) roomContext(ctx context.Context, ev *roomserver.Event) (*roomContext, error) {
	if rc, ok := s.roomCtxs[ev.StateGroup]; ok && ev.StateGroup != 0 {
		s.roomLast[ev.RoomID] = lastEvent{ev.EventID(), ev.StateGroup}
		return rc, nil
	}
	if rc := s.memberChange(ev); rc != nil {
		return rc, nil
	}
	rc, err := s.loadRoomContext(ctx, ev)
	if err != nil {
		return nil, err
	}
	if ev.StateGroup != 0 {
		if len(s.roomCtxs) >= maxRoomContexts {
			s.roomCtxs, s.roomLast = map[int64]*roomContext{}, map[string]lastEvent{}
		}
		s.roomCtxs[ev.StateGroup] = rc
		s.roomLast[ev.RoomID] = lastEvent{ev.EventID(), ev.StateGroup}
	}
	return rc, nil
}

// lastEvent is the last event evaluated in a room and its state group.
type lastEvent struct {
	eventID string
	group   int64
}

// memberChange derives the context after a membership event from the one
// before it, when that is the context after its only prev event, the last
// evaluated in the room (a room that grows one join at a time, as every
// local room does): loading the room's whole state again for each join
// would make a room's n joins cost n² (each member's event decoded for
// each join). The context moves to the new state group (the old one's
// entry is dropped, to be loaded again should an event on a fork need
// it). nil when it does not apply.
func (s *Service) memberChange(ev *roomserver.Event) *roomContext {
	if ev.Type() != spec.MRoomMember || ev.StateKey() == nil || ev.StateGroup == 0 {
		return nil
	}
	prev := ev.PrevEventIDs()
	last, ok := s.roomLast[ev.RoomID]
	if len(prev) != 1 || !ok || last.eventID != prev[0] || last.group == ev.StateGroup {
		return nil
	}
	rc, ok := s.roomCtxs[last.group]
	if !ok {
		return nil
	}
	user := *ev.StateKey()
	if m, _ := ev.Membership(); m == spec.Join {
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		rc.members[user] = c.DisplayName
	} else {
		delete(rc.members, user)
	}
	delete(s.roomCtxs, last.group)
	s.roomCtxs[ev.StateGroup] = rc
	s.roomLast[ev.RoomID] = lastEvent{ev.EventID(), ev.StateGroup}
	return rc
}

// loadRoomContext reads the context after ev from the room's state.
func (s *Service) loadRoomContext(ctx context.Context, ev *roomserver.Event) (*roomContext, error) {
	st, err := s.rooms.StateAt(ctx, ev.RoomID, ev.StreamPos)
	if err != nil {
		return nil, err
	}
	rc := &roomContext{members: map[string]string{}}
	for k, sev := range st {
		if k.Type != spec.MRoomMember {
			continue
		}
		if m, _ := sev.Membership(); m != spec.Join {
			continue
		}
		var c struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(sev.Content(), &c)
		rc.members[k.StateKey] = c.DisplayName
	}
	rc.pl = powerLevels(st)
	rc.name = stateString(st, "m.room.name", "name")
	rc.alias = stateString(st, "m.room.canonical_alias", "alias")
	return rc, nil
}

// powerLevels reads the power levels from a room's state, with the room
// creators' unlimited level in room versions that have privileged
// creators (v12), and the defaults when the room has no power levels.
func powerLevels(st map[roomserver.StateKey]*roomserver.Event) *gomatrixserverlib.PowerLevelContent {
	var pl *gomatrixserverlib.PowerLevelContent
	if ev, ok := st[roomserver.StateKey{Type: spec.MRoomPowerLevels}]; ok {
		if p, err := ev.PowerLevels(); err == nil {
			pl = p
		}
	}
	create := st[roomserver.StateKey{Type: spec.MRoomCreate}]
	if pl == nil {
		pl = &gomatrixserverlib.PowerLevelContent{}
		pl.Defaults()
		if create != nil {
			pl.Users = map[string]int64{string(create.SenderID()): 100}
		}
	}
	if create == nil {
		return pl
	}
	var c struct {
		RoomVersion        string   `json:"room_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	_ = json.Unmarshal(create.Content(), &c)
	if c.RoomVersion == "" {
		c.RoomVersion = "1"
	}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(c.RoomVersion))
	if err != nil || !v.PrivilegedCreators() {
		return pl
	}
	users := make(map[string]int64, len(pl.Users)+1+len(c.AdditionalCreators))
	for k, lvl := range pl.Users {
		users[k] = lvl
	}
	users[string(create.SenderID())] = gomatrixserverlib.CreatorPowerLevel
	for _, u := range c.AdditionalCreators {
		users[u] = gomatrixserverlib.CreatorPowerLevel
	}
	cp := *pl
	cp.Users = users
	return &cp
}

// maxThreadHops bounds the walk up relations to a thread root: "it is not
// recommended that the server traverse infinitely. Instead,
// implementations are encouraged to do a maximum of 3 hops".
const maxThreadHops = 3

// MainThread is the thread ID of the main timeline.
const MainThread = "main"

// threadOf returns the thread an event belongs to: the root of an
// m.thread relation, found by following relations (a reaction to a
// threaded message is in the thread), else "main".
// https://spec.matrix.org/v1.19/client-server-api/#threaded-read-receipts
func (s *Service) threadOf(ctx context.Context, ev *roomserver.Event) string {
	content := ev.Content()
	for hop := 0; hop <= maxThreadHops; hop++ {
		var c struct {
			RelatesTo struct {
				RelType string `json:"rel_type"`
				EventID string `json:"event_id"`
			} `json:"m.relates_to"`
		}
		if json.Unmarshal(content, &c) != nil || c.RelatesTo.EventID == "" || c.RelatesTo.RelType == "" {
			return MainThread
		}
		if c.RelatesTo.RelType == "m.thread" {
			return c.RelatesTo.EventID
		}
		if hop == maxThreadHops {
			break
		}
		parent, err := s.rooms.Event(ctx, ev.RoomID, string(ev.SenderID()), c.RelatesTo.EventID)
		if err != nil {
			return MainThread
		}
		content = parent.Content()
	}
	return MainThread
}

// membershipsLeftInvite are the local users whose membership events in
// evs are not invites: those that may end an invite. (Which did is not
// known here without reading the state before; the badge update is sent
// only if the count moved, so a join that ended no invite costs a count
// but sends nothing.)
func membershipsLeftInvite(evs []*roomserver.Event, isLocal func(string) bool) map[string]bool {
	out := map[string]bool{}
	for _, ev := range evs {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil || !isLocal(*ev.StateKey()) {
			continue
		}
		if m, _ := ev.Membership(); m != spec.Invite {
			out[*ev.StateKey()] = true
		}
	}
	return out
}

// wakes returns the users whose notifications changed (their syncs are
// woken) and, among them, those with a new notification (their pushers
// are woken): a user's rows of a batch may start with one that does not
// notify, so the second set is not the first row's outcome.
func wakes(rows []actionRow) (changed, notified map[string]bool) {
	changed, notified = map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		changed[r.userID] = true
		if r.outcome.Notify {
			notified[r.userID] = true
		}
	}
	return changed, notified
}
