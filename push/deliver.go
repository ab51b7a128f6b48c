package push

// Delivery of notifications to push gateways, as Synapse's HttpPusher.
// https://spec.matrix.org/v1.19/client-server-api/#push-notifications
//
// The queue is event_push_actions itself (with the rows still pending in
// memory, see pendingStore): each HTTP pusher has a cursor, the stream
// position of the last notification it delivered or gave up on, and
// delivers its user's notifying rows after it, in order, one at a time.
// Pushers run concurrently, each on a goroutine of its own while it has
// work; evaluation only wakes them, so delivery never slows the room
// server's commits nor the evaluation of the next events. A restart
// resumes each pusher from its saved cursor: nothing is lost, and nothing
// delivered is sent again (cursors are saved in batches, cursorSaveDelay
// apart, and on Close; after a crash the last cursorSaveDelay's
// notifications may be sent again, which gateways suppress by event_id as
// the push gateway API requires of them).

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/internal/ssrf"
)

// DeliveryConfig is how notifications reach push gateways (the config's
// push section).
type DeliveryConfig struct {
	// IncludeContent sends the event's content (unless a pusher asks for
	// event_id_only).
	IncludeContent bool
	// GroupUnreadCountByRoom makes the badge the number of rooms with
	// unread notifications instead of the number of notifications.
	GroupUnreadCountByRoom bool
	// Timeout bounds one request to a gateway.
	Timeout time.Duration
	// InitialBackoff doubles after each failure of a notification up to
	// MaxBackoff; the notification is dropped once it has failed for
	// GiveUpAfter, and a pusher that has delivered nothing for
	// DisableAfter while failing is disabled.
	InitialBackoff, MaxBackoff time.Duration
	GiveUpAfter, DisableAfter  time.Duration
	// IPRangeBlacklist and IPRangeWhitelist adjust the SSRF guard (see
	// internal/ssrf): a gateway on this host needs 127.0.0.1/32 allowed.
	IPRangeBlacklist, IPRangeWhitelist []string
}

func (c *DeliveryConfig) setDefaults() {
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.Timeout, 30 * time.Second}, {&c.InitialBackoff, time.Second}, {&c.MaxBackoff, time.Hour},
		{&c.GiveUpAfter, 24 * time.Hour}, {&c.DisableAfter, 72 * time.Hour}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
}

const (
	// maxInFlight bounds the notifications being built and sent at once
	// (and the connections to one gateway).
	maxInFlight = 64
	// cursorSaveDelay is how long delivered cursors wait to be saved
	// together: one write for many deliveries.
	cursorSaveDelay = 100 * time.Millisecond
	// deliverBatch is how many notifications a pusher reads at a time.
	deliverBatch = 50
)

type pusherKey struct{ userID, appID, pushKey string }

// httpPusher is one enabled HTTP pusher.
type httpPusher struct {
	key         pusherKey
	url         string
	data        json.RawMessage // the pusher's data minus url and format
	rawData     string          // as stored, to notice a change
	eventIDOnly bool
	pushKeyTS   int64 // seconds

	cursor atomic.Int64

	// Under deliverer.mu: running while a goroutine delivers for it;
	// dirty when there may be more to deliver; badge when a badge update
	// is wanted; gone once it is deleted, replaced or disabled.
	running, dirty, badge, gone bool

	// Owned by the running goroutine (handed from one to the next
	// through deliverer.mu).
	failingSince int64 // ms since the current notification fails; 0 if not failing
	lastSuccess  int64 // ms of the last delivery, or of the pusher's creation
	backoff      time.Duration
	lastBadge    int // the unread count last sent
}

// deliverer runs the HTTP pushers.
type deliverer struct {
	s      *Service
	cfg    DeliveryConfig
	log    logrus.FieldLogger
	client *http.Client
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	events eventCache

	mu       sync.Mutex
	closed   bool
	byUser   map[string]map[pusherKey]*httpPusher
	toSave   map[pusherKey]savedCursor
	saveTick *time.Timer

	saveMu sync.Mutex // one cursor save at a time
}

type savedCursor struct {
	pos, successTS int64
	badge          int
}

func newDeliverer(s *Service, cfg DeliveryConfig) (*deliverer, error) {
	cfg.setDefaults()
	policy, err := ssrf.NewPolicy(cfg.IPRangeBlacklist, cfg.IPRangeWhitelist)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	d := &deliverer{
		s: s, cfg: cfg, log: s.log.WithField("component", "pusher"),
		client: newGatewayClient(policy, nil, cfg.Timeout),
		sem:    make(chan struct{}, maxInFlight),
		events: eventCache{entries: map[string]*eventEntry{}},
		byUser: map[string]map[pusherKey]*httpPusher{}, toSave: map[pusherKey]savedCursor{},
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// pusherRow is a stored HTTP pusher.
type pusherRow struct {
	key                pusherKey
	data               string
	createdTS          int64
	cursor             sql.NullInt64
	failingSince, okTS int64
	lastBadge          int
}

const pusherRowColumns = `user_id, app_id, pushkey, data, created_ts, last_stream_pos, failing_since, last_success_ts,
	last_badge`

func scanPusherRows(rows *sql.Rows) ([]pusherRow, error) {
	defer rows.Close()
	var out []pusherRow
	for rows.Next() {
		var r pusherRow
		if err := rows.Scan(&r.key.userID, &r.key.appID, &r.key.pushKey, &r.data, &r.createdTS, &r.cursor,
			&r.failingSince, &r.okTS, &r.lastBadge); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// newHTTPPusher makes a pusher from its row; a row without a cursor (set
// before delivery existed) starts at from.
func newHTTPPusher(r pusherRow, from int64) (*httpPusher, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.data), &data); err != nil {
		return nil, fmt.Errorf("pusher data: %w", err)
	}
	var u, format string
	_ = json.Unmarshal(data["url"], &u)
	_ = json.Unmarshal(data["format"], &format)
	// "data ... minus the url key"; format too, as Synapse does.
	delete(data, "url")
	delete(data, "format")
	minus, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	p := &httpPusher{key: r.key, url: u, data: minus, rawData: r.data, eventIDOnly: format == "event_id_only",
		pushKeyTS: r.createdTS / 1000, failingSince: r.failingSince, lastSuccess: r.okTS, lastBadge: r.lastBadge}
	if p.lastSuccess == 0 {
		p.lastSuccess = r.createdTS
	}
	if r.cursor.Valid {
		p.cursor.Store(r.cursor.Int64)
	} else {
		p.cursor.Store(from)
	}
	return p, nil
}

// resync makes the running pushers those stored that match where: new
// ones start, changed ones are replaced (keeping their progress), deleted
// or disabled ones stop. match tells which running pushers where covers.
func (d *deliverer) resync(ctx context.Context, match func(pusherKey) bool, where string, args ...any) error {
	rows, err := d.s.db.QueryContext(ctx, `SELECT `+pusherRowColumns+` FROM pushers
		WHERE kind = 'http' AND enabled = 1 AND `+where, args...)
	if err != nil {
		return fmt.Errorf("load pushers: %w", err)
	}
	stored, err := scanPusherRows(rows)
	if err != nil {
		return fmt.Errorf("load pushers: %w", err)
	}
	from := d.s.startPos()
	want := map[pusherKey]pusherRow{}
	for _, r := range stored {
		if d.s.owns(r.key.userID) { // another process's user: run by its owner
			want[r.key] = r
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	for user, ps := range d.byUser {
		for k, p := range ps {
			if !match(k) {
				continue
			}
			if r, ok := want[k]; ok && r.data == p.rawData {
				delete(want, k) // unchanged: keeps running
				continue
			}
			p.gone = true
			delete(ps, k)
			if r, ok := want[k]; ok && r.cursor.Int64 < p.cursor.Load() {
				r.cursor = sql.NullInt64{Int64: p.cursor.Load(), Valid: true}
				want[k] = r
			}
		}
		if len(ps) == 0 {
			delete(d.byUser, user)
		}
	}
	for k, r := range want {
		p, err := newHTTPPusher(r, from)
		if err != nil {
			d.log.WithError(err).WithFields(logrus.Fields{"user_id": k.userID, "app_id": k.appID}).Error("push: unusable pusher")
			continue
		}
		if d.byUser[k.userID] == nil {
			d.byUser[k.userID] = map[pusherKey]*httpPusher{}
		}
		d.byUser[k.userID][k] = p
		// Whatever arrived after its cursor while it was not running.
		d.wakeLocked(p, false)
	}
	return nil
}

// wakeUser makes the user's pushers look for notifications, and with
// badge, send the unread count if it changed.
func (d *deliverer) wakeUser(userID string, badge bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.byUser[userID] {
		d.wakeLocked(p, badge)
	}
}

// hasPushers reports whether a user has HTTP pushers.
func (d *deliverer) hasPushers(userID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byUser[userID]) > 0
}

func (d *deliverer) wakeLocked(p *httpPusher, badge bool) {
	if d.closed || p.gone {
		return
	}
	p.dirty = true
	p.badge = p.badge || badge
	if !p.running {
		p.running = true
		d.wg.Add(1)
		go d.run(p)
	}
}

// run delivers for one pusher until it has nothing left, then ends.
func (d *deliverer) run(p *httpPusher) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		if !p.dirty || p.gone || d.closed {
			p.running = false
			d.mu.Unlock()
			return
		}
		p.dirty = false
		badge := p.badge
		p.badge = false
		d.mu.Unlock()
		if !d.drain(p) {
			d.mu.Lock()
			p.running = false
			d.mu.Unlock()
			return
		}
		if badge {
			d.sendBadge(p)
		}
	}
}

// drain delivers the pusher's notifications after its cursor; false
// when it must stop (closing, or the pusher is gone).
func (d *deliverer) drain(p *httpPusher) bool {
	for {
		items, err := d.s.unsentNotifications(d.ctx, p.key.userID, p.cursor.Load(), deliverBatch)
		if err != nil {
			if d.ctx.Err() != nil {
				return false
			}
			d.log.WithError(err).Error("push: reading notifications to deliver")
			if !d.sleep(p, d.cfg.InitialBackoff) {
				return false
			}
			continue
		}
		if len(items) == 0 {
			return true
		}
		for _, it := range items {
			if !d.deliver(p, it) {
				return false
			}
		}
	}
}

// acquire takes one of the maxInFlight places to build and send a
// notification: a thousand pushers woken by one message then finish a few
// at a time, the first within milliseconds, instead of all together at
// the end; false when closing.
func (d *deliverer) acquire() bool {
	select {
	case d.sem <- struct{}{}:
		return true
	case <-d.ctx.Done():
		return false
	}
}

func (d *deliverer) release() { <-d.sem }

// sleep waits, or until closing or the pusher is gone (false).
func (d *deliverer) sleep(p *httpPusher, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-d.ctx.Done():
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return !p.gone
}

// deliver sends one notification, retrying it as long as it may; false
// when the pusher must stop.
func (d *deliverer) deliver(p *httpPusher, it pushItem) bool {
	// Made when needed: most notifications are delivered at once and log
	// nothing.
	log := func() logrus.FieldLogger {
		return d.log.WithFields(logrus.Fields{"user_id": p.key.userID, "app_id": p.key.appID, "event_id": it.eventID})
	}
	for {
		if !d.acquire() {
			return false
		}
		body, badge, err := d.build(p, it)
		res, hidden := retryable, false
		if err == nil {
			res, err = d.post(d.ctx, p, body)
		} else if me, ok := mxerr.As(err); ok && me.Status == http.StatusNotFound {
			hidden = true
		}
		d.release()
		if hidden {
			// The user can no longer see the event.
			d.advance(p, it.pos)
			return true
		}
		now := d.s.now().UnixMilli()
		switch res {
		case delivered:
			p.backoff, p.lastSuccess, p.lastBadge = 0, now, badge
			if p.failingSince != 0 {
				p.failingSince = 0
				d.saveFailing(p)
			}
			d.advance(p, it.pos)
			return true
		case rejected:
			log().Info("push: the gateway rejected the pushkey; removing the pusher")
			d.remove(p)
			return false
		case permanent:
			log().WithError(err).Warn("push: notification refused; dropping it")
			d.advance(p, it.pos)
			return !d.disableIfDead(p, now)
		}
		if d.ctx.Err() != nil {
			return false
		}
		if p.failingSince == 0 {
			p.failingSince = now
			d.saveFailing(p)
		}
		if d.disableIfDead(p, now) {
			return false
		}
		if now-p.failingSince >= d.cfg.GiveUpAfter.Milliseconds() {
			// As Synapse: given up so that a gateway that comes back
			// does not get a day of old notifications at once.
			log().WithError(err).Warn("push: giving up on a notification")
			p.failingSince, p.backoff = 0, 0
			d.saveFailing(p)
			d.advance(p, it.pos)
			return true
		}
		if p.backoff == 0 {
			p.backoff = d.cfg.InitialBackoff
		} else {
			p.backoff = min(2*p.backoff, d.cfg.MaxBackoff)
		}
		log().WithError(err).WithField("retry_in", p.backoff).Info("push: notification not delivered; retrying")
		if !d.sleep(p, p.backoff) {
			return false
		}
	}
}

// disableIfDead disables a pusher that has delivered nothing for
// DisableAfter; true if it did.
func (d *deliverer) disableIfDead(p *httpPusher, now int64) bool {
	if now-p.lastSuccess < d.cfg.DisableAfter.Milliseconds() {
		return false
	}
	d.log.WithFields(logrus.Fields{"user_id": p.key.userID, "app_id": p.key.appID}).
		Warn("push: pusher failing for too long; disabling it (setting it again enables it)")
	if _, err := d.s.db.ExecContext(context.Background(), `UPDATE pushers SET enabled = 0
		WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, p.key.userID, p.key.appID, p.key.pushKey); err != nil {
		d.log.WithError(err).Error("push: disabling a pusher")
	}
	d.forget(p)
	return true
}

// remove deletes a pusher whose pushkey its gateway rejected: "Homeservers
// must cease sending notification requests for these pushkeys and remove
// the associated pushers".
func (d *deliverer) remove(p *httpPusher) {
	if _, err := d.s.db.ExecContext(context.Background(), `DELETE FROM pushers
		WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, p.key.userID, p.key.appID, p.key.pushKey); err != nil {
		d.log.WithError(err).Error("push: removing a rejected pusher")
	}
	d.forget(p)
}

// forget stops a pusher.
func (d *deliverer) forget(p *httpPusher) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p.gone = true
	if ps := d.byUser[p.key.userID]; ps[p.key] == p {
		delete(ps, p.key)
		if len(ps) == 0 {
			delete(d.byUser, p.key.userID)
		}
	}
}

// saveFailing stores when the pusher's current notification started
// failing, and its last success, which survive a restart.
func (d *deliverer) saveFailing(p *httpPusher) {
	if _, err := d.s.db.ExecContext(context.Background(), `UPDATE pushers SET failing_since = $1, last_success_ts = $2
		WHERE user_id = $3 AND app_id = $4 AND pushkey = $5`,
		p.failingSince, p.lastSuccess, p.key.userID, p.key.appID, p.key.pushKey); err != nil {
		d.log.WithError(err).Error("push: saving a pusher's failures")
	}
}

// advance moves a pusher's cursor past a notification and queues the
// cursor to be saved.
func (d *deliverer) advance(p *httpPusher, pos int64) {
	p.cursor.Store(pos)
	d.queueSave(p)
}

// queueSave queues a pusher's progress (cursor, last success, last badge)
// to be saved.
func (d *deliverer) queueSave(p *httpPusher) {
	pos := p.cursor.Load()
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.gone || d.closed {
		return
	}
	d.toSave[p.key] = savedCursor{pos: pos, successTS: p.lastSuccess, badge: p.lastBadge}
	if d.saveTick == nil {
		d.saveTick = time.AfterFunc(cursorSaveDelay, d.saveCursors)
	}
}

// saveCursors writes the queued cursors in one transaction.
func (d *deliverer) saveCursors() {
	d.saveMu.Lock()
	defer d.saveMu.Unlock()
	d.mu.Lock()
	batch := d.toSave
	d.toSave = map[pusherKey]savedCursor{}
	d.saveTick = nil
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := d.s.db.WithTx(context.Background(), func(tx *database.Tx) error {
		for k, c := range batch {
			if _, err := tx.ExecContext(context.Background(), `UPDATE pushers SET last_stream_pos = $1, last_success_ts = $2,
				last_badge = $3 WHERE user_id = $4 AND app_id = $5 AND pushkey = $6`,
				c.pos, c.successTS, c.badge, k.userID, k.appID, k.pushKey); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		d.log.WithError(err).Error("push: saving pusher cursors")
		d.mu.Lock()
		for k, c := range batch {
			if _, newer := d.toSave[k]; !newer {
				d.toSave[k] = c
			}
		}
		d.mu.Unlock()
	}
}

// close stops delivering (requests in flight are abandoned and will be
// sent again after the next start) and saves the cursors.
func (d *deliverer) close() {
	d.mu.Lock()
	d.closed = true
	if d.saveTick != nil {
		d.saveTick.Stop()
	}
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.saveCursors()
	d.client.CloseIdleConnections()
}

// build is the body of a notification to a pusher, and the unread count
// it carries.
func (d *deliverer) build(p *httpPusher, it pushItem) ([]byte, int, error) {
	s := d.s
	info, err := s.eventInfo(d.ctx, p.key.userID, it.roomID, it.eventID)
	if err != nil {
		return nil, 0, err
	}
	counts, err := s.badge(d.ctx, p.key.userID, false)
	if err != nil {
		return nil, 0, err
	}
	tw := tweaks(it.actions)
	n := gatewayNotification{
		EventID: it.eventID, RoomID: it.roomID, Prio: priority(info.typ, tw), Counts: counts,
		Devices: []gatewayDevice{{AppID: p.key.appID, PushKey: p.key.pushKey, PushKeyTS: p.pushKeyTS, Data: p.data, Tweaks: tw}},
	}
	if !p.eventIDOnly {
		n.Type, n.Sender, n.SenderDisplayName = info.typ, info.sender, info.senderDisplayName
		n.RoomName, n.RoomAlias = info.roomName, info.roomAlias
		if info.typ == "m.room.member" && info.stateKey != nil {
			target := *info.stateKey == p.key.userID
			n.UserIsTarget = &target
		}
		if d.cfg.IncludeContent && len(info.content) > 0 && string(info.content) != "{}" {
			n.Content = info.content
		}
	}
	body, err := json.Marshal(gatewayRequest{Notification: n})
	return body, counts.Unread, err
}

// sendBadge sends a counts-only notification when the user's unread count
// is not the one last sent, so that phones update their badges after the
// user read something elsewhere. Like Synapse's, it is sent once, not
// retried: the next notification carries the count anyway.
func (d *deliverer) sendBadge(p *httpPusher) {
	if !d.acquire() {
		return
	}
	defer d.release()
	counts, err := d.s.badge(d.ctx, p.key.userID, true)
	badge := counts.Unread
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.WithError(err).Error("push: counting unread notifications")
		}
		return
	}
	if badge == p.lastBadge {
		return
	}
	body, err := json.Marshal(gatewayRequest{Notification: gatewayNotification{
		Counts:  counts,
		Devices: []gatewayDevice{{AppID: p.key.appID, PushKey: p.key.pushKey, PushKeyTS: p.pushKeyTS, Data: p.data}},
	}})
	if err != nil {
		return
	}
	res, err := d.post(d.ctx, p, body)
	switch res {
	case delivered:
		p.lastBadge = badge
		d.queueSave(p)
	case rejected:
		d.remove(p)
	default:
		if d.ctx.Err() == nil {
			d.log.WithError(err).WithFields(logrus.Fields{"user_id": p.key.userID, "app_id": p.key.appID}).
				Info("push: badge update not delivered")
		}
	}
}

// pushItem is a notification to deliver.
type pushItem struct {
	roomID, eventID string
	pos             int64
	actions         []json.RawMessage
}

// unsentNotifications returns up to limit of a user's notifying rows after
// stream position after, oldest first: the written ones, then the pending.
func (s *Service) unsentNotifications(ctx context.Context, userID string, after int64, limit int) ([]pushItem, error) {
	flushed, pending, _ := s.pendingFor(userID, "")
	var out []pushItem
	if after < flushed {
		rows, err := s.db.QueryContext(ctx, `SELECT room_id, event_id, stream_pos, actions FROM event_push_actions
			WHERE user_id = $1 AND notify = 1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos LIMIT $4`,
			userID, after, flushed, limit)
		if err != nil {
			return nil, fmt.Errorf("notifications to push: %w", err)
		}
		for rows.Next() {
			var it pushItem
			var actions string
			if err := rows.Scan(&it.roomID, &it.eventID, &it.pos, &actions); err != nil {
				rows.Close()
				return nil, err
			}
			_ = json.Unmarshal([]byte(actions), &it.actions)
			out = append(out, it)
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	for _, r := range pending {
		if len(out) >= limit {
			break
		}
		if r.pos > after && r.pos > flushed && r.outcome.Notify {
			out = append(out, pushItem{roomID: r.roomID, eventID: r.eventID, pos: r.pos, actions: r.actions})
		}
	}
	return out, nil
}

// badge is the counts phones show, as Synapse's get_badge_count: unread,
// the number of joined rooms with unread notifications (or of
// notifications, without grouping by room) plus one for each pending
// invite; and missed_calls, the unread notifications that rang (call
// invitations the user has not read since). fresh counts from the
// receipts as stored instead of the count cache, which a receipt that
// just moved may not have invalidated yet.
func (s *Service) badge(ctx context.Context, userID string, fresh bool) (gatewayCounts, error) {
	// Memberships is cached by the room server: no query per notification.
	ms, err := s.rooms.Memberships(ctx, userID)
	if err != nil {
		return gatewayCounts{}, err
	}
	var out gatewayCounts
	for _, m := range ms {
		switch m.Membership {
		case "invite":
			out.Unread++
			continue
		case "join":
		default:
			continue
		}
		var total Counts
		if fresh {
			byThread, _, err := s.countUnread(ctx, userID, m.RoomID)
			if err != nil {
				return gatewayCounts{}, err
			}
			for _, c := range byThread {
				total.Notifications += c.Notifications
				total.calls += c.calls
			}
		} else {
			if total, _, err = s.UnreadCounts(ctx, userID, m.RoomID, 0); err != nil {
				return gatewayCounts{}, err
			}
		}
		out.MissedCalls += total.calls
		if !s.delivery.cfg.GroupUnreadCountByRoom {
			out.Unread += total.Notifications
		} else if total.Notifications > 0 {
			out.Unread++
		}
	}
	return out, nil
}

// ReadMaybeChanged tells the pushers of a user that what they have read
// may have moved (a read receipt, a read marker), so that their phones'
// badges follow.
func (s *Service) ReadMaybeChanged(userID string) {
	if !s.owns(userID) {
		s.cfg.Cluster.ReadChanged(userID)
		return
	}
	s.delivery.wakeUser(userID, true)
}
