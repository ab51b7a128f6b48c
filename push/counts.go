package push

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// Unread counts and the notifications list.
// https://spec.matrix.org/v1.19/client-server-api/#receiving-notifications
// https://spec.matrix.org/v1.19/client-server-api/#marking-notifications-as-read

// readUpTo is where a user has read a room up to: the unthreaded
// position, and each thread's ("main" for the main timeline). A
// notification is read when its event is at or before the later of the
// unthreaded position and its thread's.
type readUpTo struct {
	unthreaded int64
	threads    map[string]int64
}

func (r readUpTo) isRead(threadID string, pos int64) bool {
	return pos <= r.unthreaded || pos <= r.threads[threadID]
}

// readPositions combines the user's read receipts (m.read and
// m.read.private, whichever is further: "the receipt which is more
// recent/ahead must be used") with the events they sent themselves, which
// mark their thread read.
func (s *Service) readPositions(ctx context.Context, userID, roomID string) (readUpTo, error) {
	pendingMarks := s.pending.marksFor(userID, roomID)
	unthreaded, threads, err := s.users.ReadPositions(ctx, userID, roomID)
	if err != nil {
		return readUpTo{}, err
	}
	r := readUpTo{unthreaded: unthreaded, threads: map[string]int64{}}
	for t, p := range threads {
		r.threads[t] = p
	}
	for t, p := range pendingMarks {
		r.threads[t] = max(r.threads[t], p)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT thread_id, stream_pos FROM push_sent_marks WHERE user_id = $1 AND room_id = $2`,
		userID, roomID)
	if err != nil {
		return readUpTo{}, fmt.Errorf("sent marks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var p int64
		if err := rows.Scan(&t, &p); err != nil {
			return readUpTo{}, err
		}
		r.threads[t] = max(r.threads[t], p)
	}
	return r, rows.Err()
}

// Counts are a room's (or a thread's) unread notification counts.
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
	// calls are the notifications that ring (call invitations): unread,
	// they are the missed calls push gateways are told of.
	calls int
}

// ringSQL counts the rows of event_push_actions whose actions ring: the
// sound tweak "ring" of .m.rule.call and of MatrixRTC ring notifications.
const ringSQL = `SUM(CASE WHEN notify = 1 AND actions LIKE '%"ring"%' THEN 1 ELSE 0 END)`

// rings reports whether a notification's actions ring.
func rings(actions []json.RawMessage) bool { return tweaks(actions)["sound"] == "ring" }

// UnreadCounts returns a user's unread notification counts in a joined
// room: the whole room's, and each thread's (the main timeline under
// "main"). It first waits, briefly, for events up to stream position pos
// to be evaluated, so that a sync response that carries an event carries
// the count it caused.
func (s *Service) UnreadCounts(ctx context.Context, userID, roomID string, pos int64) (Counts, map[string]Counts, error) {
	s.waitProcessed(ctx, pos)
	byThread, ok := s.counts.lookup(userID, roomID)
	if !ok {
		e := s.counts.begin(userID, roomID)
		var read readUpTo
		var err error
		byThread, read, err = s.countUnread(ctx, userID, roomID)
		s.counts.finish(userID, roomID, e, read, byThread)
		if err != nil {
			return Counts{}, nil, err
		}
	}
	var total Counts
	for t, c := range byThread {
		if c.Notifications == 0 && c.Highlights == 0 {
			delete(byThread, t)
			continue
		}
		total.Notifications += c.Notifications
		total.Highlights += c.Highlights
		total.calls += c.calls
	}
	return total, byThread, nil
}

// countUnread counts a user's unread notifications in a room by thread,
// from the database up to the flushed position and the pending rows after
// it, and returns the read positions it counted from.
func (s *Service) countUnread(ctx context.Context, userID, roomID string) (map[string]Counts, readUpTo, error) {
	flushed, pending, _ := s.pending.forUser(userID, roomID)
	read, err := s.readPositions(ctx, userID, roomID)
	if err != nil {
		return nil, readUpTo{}, err
	}
	if s.elsewhere != nil {
		// Other processes evaluate (and write) the events they commit,
		// beyond this process's flushed position: read every row, and
		// leave out the pending rows a flush here wrote meanwhile.
		if pending, err = s.unwritten(ctx, userID, roomID, flushed, pending); err != nil {
			return nil, readUpTo{}, err
		}
		flushed = math.MaxInt64
	}
	byThread := map[string]Counts{}
	// The rows after the unthreaded receipt, and the summaries of the rows
	// folded out of them (see Prune), in one statement so that a fold
	// running meanwhile is seen whole or not at all.
	type summary struct {
		Counts
		pos int64
	}
	summaries := map[string]summary{}
	rows, err := s.db.QueryContext(ctx, `SELECT 0, thread_id, SUM(notify), SUM(highlight), `+ringSQL+`, 0 FROM event_push_actions
		WHERE user_id = $1 AND room_id = $2 AND stream_pos > $3 AND stream_pos <= $4 GROUP BY thread_id
		UNION ALL
		SELECT 1, thread_id, notif_count, highlight_count, ring_count, stream_pos FROM event_push_summary
		WHERE user_id = $1 AND room_id = $2`,
		userID, roomID, read.unthreaded, flushed)
	if err != nil {
		return nil, readUpTo{}, fmt.Errorf("unread counts: %w", err)
	}
	for rows.Next() {
		var folded int
		var t string
		var c summary
		if err := rows.Scan(&folded, &t, &c.Notifications, &c.Highlights, &c.calls, &c.pos); err != nil {
			rows.Close()
			return nil, readUpTo{}, err
		}
		if folded == 1 {
			summaries[t] = c
		} else {
			byThread[t] = c.Counts
		}
	}
	if err := rows.Close(); err != nil {
		return nil, readUpTo{}, err
	}
	// Threads read further than the unthreaded receipt count from there.
	for t := range byThread {
		p := read.threads[t]
		if p <= read.unthreaded {
			continue
		}
		var c Counts
		err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(notify), 0), COALESCE(SUM(highlight), 0),
			COALESCE(`+ringSQL+`, 0) FROM event_push_actions
			WHERE user_id = $1 AND room_id = $2 AND thread_id = $3 AND stream_pos > $4 AND stream_pos <= $5`,
			userID, roomID, t, p, flushed).Scan(&c.Notifications, &c.Highlights, &c.calls)
		if err != nil {
			return nil, readUpTo{}, fmt.Errorf("unread thread counts: %w", err)
		}
		byThread[t] = c
	}
	// A summary is unread unless the thread is read up to its newest
	// notification. (A receipt that lands among the folded notifications,
	// rather than after them, leaves them all unread: the summary does not
	// know where each was. Receipts go forward, and the folded ones are
	// older than a week, so it is the rare receipt for an old event.)
	for t, sum := range summaries {
		if read.isRead(t, sum.pos) {
			continue
		}
		c := byThread[t]
		c.Notifications += sum.Notifications
		c.Highlights += sum.Highlights
		c.calls += sum.calls
		byThread[t] = c
	}
	for _, r := range pending {
		if read.isRead(r.threadID, r.pos) {
			continue
		}
		c := byThread[r.threadID]
		if r.outcome.Notify {
			c.Notifications++
			if rings(r.actions) {
				c.calls++
			}
		}
		if r.outcome.Highlight {
			c.Highlights++
		}
		byThread[r.threadID] = c
	}
	return byThread, read, nil
}

// Notification is one entry of GET /notifications.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3notifications
type Notification struct {
	Actions    []json.RawMessage `json:"actions"`
	Event      json.RawMessage   `json:"event"`
	ProfileTag string            `json:"profile_tag,omitempty"`
	Read       bool              `json:"read"`
	RoomID     string            `json:"room_id"`
	TS         int64             `json:"ts"`
}

// NotificationsPage is the response of GET /notifications.
type NotificationsPage struct {
	NextToken     string         `json:"next_token,omitempty"`
	Notifications []Notification `json:"notifications"`
}

// Limits of GET /notifications.
const (
	defaultNotificationsLimit = 50
	maxNotificationsLimit     = 1000
)

// Notifications lists the events that notified a user, newest first.
// from is the next_token of an earlier page ("" for the newest), limit
// the page size (0 for the default), and onlyHighlight keeps only those
// that highlighted. Events the user can no longer see are left out. Like
// the counts, it first waits briefly for the evaluation of every event
// committed so far.
func (s *Service) Notifications(ctx context.Context, userID, from string, limit int, onlyHighlight bool) (*NotificationsPage, error) {
	before := int64(-1)
	if from != "" {
		v, err := strconv.ParseInt(from, 10, 64)
		if err != nil || v < 0 {
			return nil, mxerr.InvalidParam("Invalid from token %q", from)
		}
		before = v
	}
	if limit <= 0 {
		limit = defaultNotificationsLimit
	}
	limit = min(limit, maxNotificationsLimit)
	s.waitProcessed(ctx, s.rooms.CurrentPos())
	type row struct {
		roomID, eventID, threadID string
		actions                   []json.RawMessage
		pos, ts                   int64
	}
	// The pending rows come first: they are newer than any written one.
	flushed, pending, _ := s.pending.forUser(userID, "")
	var list []row
	for i := len(pending) - 1; i >= 0 && len(list) <= limit; i-- {
		r := pending[i]
		if !r.outcome.Notify || (onlyHighlight && !r.outcome.Highlight) || (before >= 0 && r.pos >= before) {
			continue
		}
		list = append(list, row{roomID: r.roomID, eventID: r.eventID, threadID: r.threadID, actions: r.actions, pos: r.pos, ts: r.ts})
	}
	dbLimit := limit + 1 - len(list)
	if s.elsewhere != nil {
		// Other processes' notifications can be newer than the pending
		// ones (cluster.go): read a whole page and merge below.
		flushed, dbLimit = math.MaxInt64, limit+1
	}
	if dbLimit > 0 {
		q := `SELECT room_id, event_id, stream_pos, thread_id, actions, ts FROM event_push_actions
			WHERE user_id = $1 AND notify = 1 AND stream_pos <= $2 AND ($3 < 0 OR stream_pos < $3)`
		if onlyHighlight {
			q += ` AND highlight = 1`
		}
		q += ` ORDER BY stream_pos DESC LIMIT $4`
		rows, err := s.db.QueryContext(ctx, q, userID, flushed, before, dbLimit)
		if err != nil {
			return nil, fmt.Errorf("notifications: %w", err)
		}
		for rows.Next() {
			var r row
			var actions string
			if err := rows.Scan(&r.roomID, &r.eventID, &r.pos, &r.threadID, &actions, &r.ts); err != nil {
				rows.Close()
				return nil, err
			}
			if err := json.Unmarshal([]byte(actions), &r.actions); err != nil || r.actions == nil {
				r.actions = []json.RawMessage{}
			}
			list = append(list, r)
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	if s.elsewhere != nil {
		// Newest first, once each: a flush here may have written a
		// pending row since it was read.
		slices.SortStableFunc(list, func(a, b row) int { return cmp.Compare(b.pos, a.pos) })
		list = slices.CompactFunc(list, func(a, b row) bool { return a.pos == b.pos })
	}
	page := &NotificationsPage{Notifications: []Notification{}}
	if len(list) > limit {
		list = list[:limit]
		page.NextToken = strconv.FormatInt(list[len(list)-1].pos, 10)
	}
	reads := map[string]readUpTo{}
	for _, r := range list {
		ev, err := s.rooms.Event(ctx, r.roomID, userID, r.eventID)
		if err != nil {
			if _, ok := mxerr.As(err); ok {
				continue // no longer visible to the user
			}
			return nil, err
		}
		read, ok := reads[r.roomID]
		if !ok {
			if read, err = s.readPositions(ctx, userID, r.roomID); err != nil {
				return nil, err
			}
			reads[r.roomID] = read
		}
		evJSON, err := eventWithoutRoomID(ev.ToClient(roomserver.Viewer{UserID: userID}, s.rooms.Redaction(ctx, ev)))
		if err != nil {
			return nil, err
		}
		page.Notifications = append(page.Notifications, Notification{
			Actions: r.actions, Event: evJSON, Read: read.isRead(r.threadID, r.pos), RoomID: r.roomID, TS: r.ts,
		})
	}
	return page, nil
}

// eventWithoutRoomID formats an event as the spec's
// ClientEventWithoutRoomID: the notification carries room_id itself.
func eventWithoutRoomID(ce roomserver.ClientEvent) (json.RawMessage, error) {
	raw, err := json.Marshal(ce)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, "room_id")
	return json.Marshal(m)
}
