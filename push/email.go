package push

// Email pushers, as Synapse's EmailPusher: a room's notifications are
// mailed together, Delay after the first of them, unless the user has
// read them meanwhile; one mail per room, through the configured SMTP
// relay.
//
// Each email pusher has a cursor (pushers.last_stream_pos), the last
// notification it put in a batch; the batches wait in push_email_batches
// until due. The cursor moves and the batch is stored in one transaction,
// and a batch is deleted once its mail is accepted by the relay, so a
// restart neither loses nor repeats a mail (but a crash between the
// relay's acceptance and the delete sends that one mail again).

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// EmailConfig is the SMTP relay of email pushers (the config's
// push.email); email pushers are refused while SMTPHost is empty.
type EmailConfig struct {
	SMTPHost string
	SMTPPort int
	// TLS is "starttls" (required), "tls" (implicit) or "none"; empty is
	// starttls.
	TLS string
	// TLSName is the name the relay's certificate must be valid for
	// (empty: SMTPHost); CAFile a PEM file of the CAs to trust instead
	// of the system's; InsecureSkipVerify accepts any certificate (tests).
	TLSName, CAFile    string
	InsecureSkipVerify bool
	// AllowPlaintext allows TLS "none" to a relay that is not on
	// loopback; without it such a connection is refused.
	AllowPlaintext     bool
	Username, Password string
	From, AppName      string
	// Delay is how long a room's first unread notification waits for
	// more before the mail goes.
	Delay time.Duration
	// PublicBaseURL is where the links in mails point.
	PublicBaseURL string
}

// EmailAppID is the app_id of every email pusher (as Synapse requires).
const EmailAppID = "m.email"

const (
	// maxMailsInFlight bounds the SMTP connections open at once.
	maxMailsInFlight = 4
	// emailScanBatch is how many notifications a scan reads at a time.
	emailScanBatch = 100
	// confirmMailInterval is the least time between two confirmation
	// mails to one address for one user: setting a pusher again and
	// again must not flood someone's mailbox.
	confirmMailInterval = 10 * time.Minute
	// mailRetryMin and mailRetryMax bound the wait before a failed mail
	// is tried again (the time it has been failing, so doubling).
	mailRetryMin, mailRetryMax = time.Minute, time.Hour
)

type batchKey struct{ userID, address, roomID string }

// emailer runs the email pushers.
type emailer struct {
	s      *Service
	cfg    EmailConfig
	log    logrus.FieldLogger
	secret []byte
	from   *mail.Address
	// tls is how the relay's certificate is checked (nil for TLS none).
	tls *tls.Config
	// giveUpAfter is how long a failing mail is retried.
	giveUpAfter time.Duration
	sem         chan struct{}
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	users    map[string]bool // users with enabled email pushers
	scanning map[string]bool // a scan runs for the user
	rescan   map[string]bool // and must run again
	timers   map[batchKey]*time.Timer
}

func newEmailer(ctx context.Context, s *Service, cfg EmailConfig, giveUpAfter time.Duration) (*emailer, error) {
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("push: email from address: %w", err)
	}
	tlsConfig, err := smtpTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	secret, err := linkSecret(ctx, s.db)
	if err != nil {
		return nil, err
	}
	e := &emailer{
		s: s, cfg: cfg, log: s.log.WithField("component", "email pusher"), secret: secret, from: from, tls: tlsConfig,
		giveUpAfter: giveUpAfter, sem: make(chan struct{}, maxMailsInFlight),
		users: map[string]bool{}, scanning: map[string]bool{}, rescan: map[string]bool{}, timers: map[batchKey]*time.Timer{},
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// start loads the email pushers and the waiting batches, and looks for
// what was notified after each pusher's cursor while the server was down.
func (e *emailer) start(ctx context.Context) error {
	users, err := e.s.ownedEmailUsers(ctx)
	if err != nil {
		return err
	}
	rows, err := e.s.db.QueryContext(ctx, `SELECT user_id, address, room_id, due_ts FROM push_email_batches`)
	if err != nil {
		return fmt.Errorf("load email batches: %w", err)
	}
	type due struct {
		k  batchKey
		ts int64
	}
	var batches []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.k.userID, &d.k.address, &d.k.roomID, &d.ts); err != nil {
			rows.Close()
			return err
		}
		if e.s.owns(d.k.userID) { // another process's user: mailed by its owner
			batches = append(batches, d)
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, b := range batches {
		e.schedule(b.k, b.ts)
	}
	e.mu.Lock()
	for _, u := range users {
		e.users[u] = true
	}
	e.mu.Unlock()
	for _, u := range users {
		e.wake(u)
	}
	return nil
}

// reload notes whether a user has enabled email pushers after a change,
// and looks for their notifications.
func (e *emailer) reload(ctx context.Context, userID string) error {
	if e == nil {
		return nil
	}
	var n int
	if err := e.s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushers WHERE user_id = $1 AND kind = 'email' AND enabled = 1`,
		userID).Scan(&n); err != nil {
		return fmt.Errorf("load email pushers: %w", err)
	}
	e.mu.Lock()
	if n > 0 && e.s.owns(userID) {
		e.users[userID] = true
	} else {
		delete(e.users, userID)
	}
	e.mu.Unlock()
	e.wake(userID)
	return nil
}

// wake makes the user's email pushers batch their new notifications.
func (e *emailer) wake(userID string) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || !e.users[userID] {
		return
	}
	if e.scanning[userID] {
		e.rescan[userID] = true
		return
	}
	e.scanning[userID] = true
	e.wg.Add(1)
	go e.scanLoop(userID)
}

func (e *emailer) scanLoop(userID string) {
	defer e.wg.Done()
	for {
		if err := e.scan(e.ctx, userID); err != nil && e.ctx.Err() == nil {
			// The next notification wakes the scan again.
			e.log.WithError(err).WithField("user_id", userID).Error("push: batching notifications for email")
		}
		e.mu.Lock()
		if !e.rescan[userID] || e.closed {
			delete(e.scanning, userID)
			delete(e.rescan, userID)
			e.mu.Unlock()
			return
		}
		delete(e.rescan, userID)
		e.mu.Unlock()
	}
}

// scan puts each of the user's notifications after their email pushers'
// cursors in its room's batch, starting a batch where none waits.
func (e *emailer) scan(ctx context.Context, userID string) error {
	rows, err := e.s.db.QueryContext(ctx, `SELECT pushkey, last_stream_pos FROM pushers
		WHERE user_id = $1 AND kind = 'email' AND enabled = 1`, userID)
	if err != nil {
		return err
	}
	type cursor struct {
		address string
		pos     sql.NullInt64
	}
	var pushers []cursor
	for rows.Next() {
		var c cursor
		if err := rows.Scan(&c.address, &c.pos); err != nil {
			rows.Close()
			return err
		}
		pushers = append(pushers, c)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, p := range pushers {
		pos := p.pos.Int64
		if !p.pos.Valid {
			pos = e.s.startPos()
		}
		for {
			items, err := e.s.unsentNotifications(ctx, userID, pos, emailScanBatch)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				break
			}
			if pos, err = e.addToBatches(ctx, userID, p.address, items); err != nil {
				return err
			}
		}
	}
	return nil
}

// addToBatches stores a batch for each room of items that has none, and
// moves the pusher's cursor past them; it returns the new cursor.
func (e *emailer) addToBatches(ctx context.Context, userID, address string, items []pushItem) (int64, error) {
	delayed := e.s.now().Add(e.cfg.Delay).UnixMilli()
	last := items[len(items)-1].pos
	type start struct {
		k   batchKey
		due int64
	}
	var started []start
	err := e.s.db.WithTx(ctx, func(tx *database.Tx) error {
		started = started[:0]
		seen := map[string]bool{}
		for _, it := range items {
			if seen[it.roomID] {
				continue
			}
			seen[it.roomID] = true
			k := batchKey{userID, address, it.roomID}
			// A room mailed about recently waits for its throttle.
			ready, err := roomReadyAt(ctx, tx, k)
			if err != nil {
				return err
			}
			due := max(delayed, ready)
			res, err := tx.ExecContext(ctx, `INSERT INTO push_email_batches (user_id, address, room_id, first_pos, due_ts)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, address, room_id) DO NOTHING`,
				userID, address, it.roomID, it.pos, due)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				started = append(started, start{k, due})
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE pushers SET last_stream_pos = $1
			WHERE user_id = $2 AND app_id = $3 AND pushkey = $4`, last, userID, EmailAppID, address)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store email batches: %w", err)
	}
	for _, b := range started {
		e.schedule(b.k, b.due)
	}
	return last, nil
}

// schedule sends a batch at due (ms).
func (e *emailer) schedule(k batchKey, due int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if t := e.timers[k]; t != nil {
		t.Stop()
	}
	wait := time.Until(time.UnixMilli(due))
	e.timers[k] = time.AfterFunc(max(wait, 0), func() { e.fire(k) })
}

func (e *emailer) fire(k batchKey) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	delete(e.timers, k)
	e.wg.Add(1)
	e.mu.Unlock()
	defer e.wg.Done()
	select {
	case e.sem <- struct{}{}:
	case <-e.ctx.Done():
		return
	}
	defer func() { <-e.sem }()
	if err := e.sendBatch(e.ctx, k); err != nil && e.ctx.Err() == nil {
		e.log.WithError(err).WithField("user_id", k.userID).Error("push: sending a notification email")
	}
}

// sendBatch mails a due batch if its notifications are still unread, and
// deletes it; a failed mail is tried again later.
func (e *emailer) sendBatch(ctx context.Context, k batchKey) error {
	var firstPos, failingSince int64
	err := e.s.db.QueryRowContext(ctx, `SELECT first_pos, failing_since FROM push_email_batches
		WHERE user_id = $1 AND address = $2 AND room_id = $3`, k.userID, k.address, k.roomID).Scan(&firstPos, &failingSince)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // unsubscribed meanwhile
	}
	if err != nil {
		return err
	}
	var n int
	if err := e.s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushers WHERE user_id = $1 AND kind = 'email'
		AND pushkey = $2 AND enabled = 1`, k.userID, k.address).Scan(&n); err != nil {
		return err
	}
	var items []mailItem
	var total int
	if n > 0 {
		if items, total, err = e.unreadItems(ctx, k.userID, k.roomID, firstPos); err != nil {
			return err
		}
	}
	if len(items) > 0 {
		msg, err := e.notificationMail(k, items, total)
		if err != nil {
			return err
		}
		if err := e.send(ctx, k.address, msg); err != nil {
			return e.retryLater(ctx, k, failingSince, err)
		}
		// The mail went: note it even if the server is shutting down
		// (close waits), or the batch would be mailed again after the
		// restart; and a failure to note the throttle must not keep it.
		ctx = context.WithoutCancel(ctx)
		if err := e.mailed(ctx, k, firstPos, e.s.now()); err != nil {
			e.log.WithError(err).WithField("user_id", k.userID).Error("push: updating the email throttle")
		}
	}
	_, err = e.s.db.ExecContext(ctx, `DELETE FROM push_email_batches WHERE user_id = $1 AND address = $2 AND room_id = $3`,
		k.userID, k.address, k.roomID)
	return err
}

// retryLater schedules a failed mail again, waiting as long as it has
// been failing (at least a minute, at most an hour), or drops it after
// giveUpAfter, as notifications to push gateways.
func (e *emailer) retryLater(ctx context.Context, k batchKey, failingSince int64, cause error) error {
	now := e.s.now()
	if failingSince == 0 {
		failingSince = now.UnixMilli()
	}
	failing := now.Sub(time.UnixMilli(failingSince))
	log := e.log.WithError(cause).WithField("user_id", k.userID)
	if failing >= e.giveUpAfter {
		log.Warn("push: giving up on a notification email")
		_, err := e.s.db.ExecContext(ctx, `DELETE FROM push_email_batches WHERE user_id = $1 AND address = $2 AND room_id = $3`,
			k.userID, k.address, k.roomID)
		return err
	}
	due := now.Add(min(max(failing, mailRetryMin), mailRetryMax)).UnixMilli()
	log.Info("push: notification email not sent; retrying")
	if _, err := e.s.db.ExecContext(ctx, `UPDATE push_email_batches SET due_ts = $1, failing_since = $2
		WHERE user_id = $3 AND address = $4 AND room_id = $5`, due, failingSince, k.userID, k.address, k.roomID); err != nil {
		return err
	}
	e.schedule(k, due)
	return nil
}

// unreadItems are the first maxMailItems of the user's notifications in a
// room from firstPos on that they have not read, oldest first, and how
// many there are (up to maxMailRows).
func (e *emailer) unreadItems(ctx context.Context, userID, roomID string, firstPos int64) ([]mailItem, int, error) {
	s := e.s
	flushed, pending, _ := s.pending.forUser(userID, roomID)
	read, err := s.readPositions(ctx, userID, roomID)
	if err != nil {
		return nil, 0, err
	}
	type row struct {
		eventID, threadID string
		pos               int64
	}
	var rows []row
	r, err := s.db.QueryContext(ctx, `SELECT event_id, thread_id, stream_pos FROM event_push_actions
		WHERE user_id = $1 AND room_id = $2 AND notify = 1 AND stream_pos >= $3 AND stream_pos <= $4
		ORDER BY stream_pos LIMIT $5`, userID, roomID, firstPos, flushed, maxMailRows)
	if err != nil {
		return nil, 0, fmt.Errorf("notifications to mail: %w", err)
	}
	for r.Next() {
		var x row
		if err := r.Scan(&x.eventID, &x.threadID, &x.pos); err != nil {
			r.Close()
			return nil, 0, err
		}
		rows = append(rows, x)
	}
	if err := r.Close(); err != nil {
		return nil, 0, err
	}
	for _, p := range pending {
		if p.pos > flushed && p.pos >= firstPos && p.outcome.Notify {
			rows = append(rows, row{p.eventID, p.threadID, p.pos})
		}
	}
	var out []mailItem
	total := 0
	for _, x := range rows {
		if read.isRead(x.threadID, x.pos) {
			continue
		}
		if len(out) >= maxMailItems {
			total++
			continue
		}
		info, err := s.eventInfo(ctx, userID, roomID, x.eventID)
		if me, ok := mxerr.As(err); ok && me.Status == 404 {
			continue // no longer visible to the user
		}
		if err != nil {
			return nil, 0, err
		}
		out = append(out, mailItem{info: info})
		total++
	}
	return out, total, nil
}

// canonicalEmail is the address of an email pusher's pushkey, lowercased
// (as Synapse's canonicalise_email), or an error if it is not a bare
// address.
func canonicalEmail(pushKey string) (string, error) {
	a, err := mail.ParseAddress(pushKey)
	if err != nil || a.Name != "" || a.Address != strings.TrimSpace(pushKey) || !strings.Contains(a.Address, "@") {
		return "", mxerr.InvalidParam("An email pusher's pushkey must be an email address")
	}
	return strings.ToLower(a.Address), nil
}

// prepareAddress tells whether the user has confirmed the address, and if
// not, whether a confirmation mail should go now (not more often than
// confirmMailInterval), noting that it went.
func (e *emailer) prepareAddress(ctx context.Context, userID, address string) (confirmed, mailNow bool, err error) {
	now := e.s.now().UnixMilli()
	err = e.s.db.WithTx(ctx, func(tx *database.Tx) error {
		var sent int64
		err := tx.QueryRowContext(ctx, `SELECT confirmed, confirm_sent_ts FROM push_email_addresses
			WHERE user_id = $1 AND address = $2`, userID, address).Scan(&confirmed, &sent)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if confirmed || now-sent < confirmMailInterval.Milliseconds() {
			return nil
		}
		mailNow = true
		_, err = tx.ExecContext(ctx, `INSERT INTO push_email_addresses (user_id, address, confirm_sent_ts) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, address) DO UPDATE SET confirm_sent_ts = excluded.confirm_sent_ts`, userID, address, now)
		return err
	})
	if err != nil {
		return false, false, fmt.Errorf("email address: %w", err)
	}
	return confirmed, mailNow, nil
}

// mailConfirmation sends the confirmation link in the background: the
// relay may be slow, and the client's request need not wait for it.
func (e *emailer) mailConfirmation(userID, address string) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		msg, err := e.confirmationMail(userID, address)
		if err == nil {
			err = e.send(e.ctx, address, msg)
		}
		if err != nil && e.ctx.Err() == nil {
			e.log.WithError(err).WithField("user_id", userID).Error("push: sending an email confirmation link")
		}
	}()
}

// close stops the timers and waits for the mails being sent; waiting
// batches are sent after the next start.
func (e *emailer) close() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.closed = true
	for _, t := range e.timers {
		t.Stop()
	}
	e.timers = map[batchKey]*time.Timer{}
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}
