// Package push owns push rules, the notifications they produce and the
// unread counts /sync reports, and pushers.
// https://spec.matrix.org/v1.19/client-server-api/#push-notifications
//
// Every committed event is evaluated, in stream order on one goroutine,
// against the push rules of each local member of its room other than its
// sender; events whose actions notify or highlight are recorded in
// event_push_actions (kept in memory a moment first, see flushDelay).
// Unread counts are those records after where the user has read up to
// (their read receipts, or their own last event); the counts syncs ask for
// are cached and kept current as notifications arrive (countCache).
//
// Evaluation starts from the room server's position at start-up: events
// committed but not yet evaluated when the process died are not evaluated
// later, so their notifications are missed (never the events).
//
// Notifications are delivered to the push gateways of HTTP pushers
// (deliver.go, gateway.go), and mailed to email pushers when an SMTP relay
// is configured (email.go).
package push

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
)

// TypePushRules is the global account data event that mirrors a user's
// push rules: {"global": ruleset}.
// https://spec.matrix.org/v1.19/client-server-api/#mpush_rules
const TypePushRules = "m.push_rules"

// Config is what the push domain needs from the configuration.
type Config struct {
	ServerName spec.ServerName
	Delivery   DeliveryConfig
	// Email enables email pushers when its SMTPHost is set.
	Email EmailConfig
}

// Rooms is what the push domain needs from the room server;
// *roomserver.Service satisfies it.
type Rooms interface {
	Subscribe(l roomserver.Listener)
	CurrentPos() int64
	StateAt(ctx context.Context, roomID string, pos int64) (map[roomserver.StateKey]*roomserver.Event, error)
	Event(ctx context.Context, roomID, userID, eventID string) (*roomserver.Event, error)
	Redaction(ctx context.Context, ev *roomserver.Event) *roomserver.Event
	// Memberships and OwnMembershipEvent serve push delivery (the badge,
	// and invites, which the invited user can see outside the room).
	Memberships(ctx context.Context, userID string) ([]roomserver.MembershipChange, error)
	OwnMembershipEvent(ctx context.Context, userID, eventID string) (*roomserver.Event, error)
}

// Users is what the push domain needs from the users domain;
// *users.Service satisfies it.
type Users interface {
	// AccountData reads global account data (404 M_NOT_FOUND if unset).
	AccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error)
	// SetPushRulesAccountData writes m.push_rules and wakes the user's
	// syncs.
	SetPushRulesAccountData(ctx context.Context, userID string, content json.RawMessage) error
	// ReadPositions is where the user's read receipts in a room are: the
	// stream position of the unthreaded one and of each thread's.
	ReadPositions(ctx context.Context, userID, roomID string) (unthreaded int64, threads map[string]int64, err error)
	// IgnoredUsers is the set of users the user ignores (nil: none).
	IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error)
}

// Service is the push domain.
type Service struct {
	db    *database.DB
	cfg   Config
	log   logrus.FieldLogger
	rooms Rooms
	users Users
	wake  func(userID string)
	now   func() time.Time

	// writeMu serialises changes to rules and the writes of m.push_rules
	// that mirror them, so the account data never goes back in time.
	writeMu sync.Mutex

	cacheMu sync.Mutex
	cache   map[string]*Ruleset // user -> evaluated ruleset
	gen     map[string]uint64   // user -> changes so far, to drop stale loads
	genAll  uint64              // times the whole cache was dropped, likewise
	// rulesChanged is told of each committed change of a user's rules
	// (SetRulesChangedHook); nil: nobody.
	rulesChanged func(userID string)

	// The evaluation goroutine's input and progress.
	inMu      sync.RWMutex
	closed    bool
	events    chan []*roomserver.Event
	done      chan struct{}
	posMu     sync.Mutex
	processed int64         // last stream position evaluated
	advanced  chan struct{} // closed when processed moves
	pending   *pendingStore
	counts    *countCache
	roomCtxs  map[int64]*roomContext
	roomLast  map[string]lastEvent // room -> last evaluated event

	delivery *deliverer
	email    *emailer // nil: email pushers are refused
	// elsewhere announces flushes to the other processes of a
	// deployment (cluster.go); nil for one process.
	elsewhere FlushAnnouncer
}

// maxCachedRulesets bounds the ruleset cache; it is emptied when full.
const maxCachedRulesets = 100_000

// New runs the domain's migrations, subscribes to the room server's
// committed events and starts evaluating them. wake is called for each user
// whose notifications changed.
func New(ctx context.Context, db *database.DB, cfg Config, rooms Rooms, us Users, wake func(userID string), log logrus.FieldLogger) (*Service, error) {
	if err := db.Migrate(ctx, "push", migrations); err != nil {
		return nil, err
	}
	s := &Service{
		db: db, cfg: cfg, log: log, rooms: rooms, users: us, wake: wake, now: time.Now,
		cache: map[string]*Ruleset{}, gen: map[string]uint64{},
		events: make(chan []*roomserver.Event, 1024), done: make(chan struct{}),
		advanced: make(chan struct{}), roomCtxs: map[int64]*roomContext{},
		roomLast: map[string]lastEvent{},
	}
	// Subscribe before reading the position: an event committed in between
	// is then both delivered and already counted as processed, never lost
	// to a waiter.
	rooms.Subscribe(s.OnEvents)
	s.processed = rooms.CurrentPos()
	s.pending = newPendingStore(s.processed)
	s.counts = newCountCache()
	d, err := newDeliverer(s, cfg.Delivery)
	if err != nil {
		return nil, err
	}
	s.delivery = d
	if cfg.Email.SMTPHost != "" {
		if s.email, err = newEmailer(ctx, s, cfg.Email, d.cfg.GiveUpAfter); err != nil {
			d.close()
			return nil, err
		}
	}
	// Every stored pusher starts, and delivers what came after its
	// cursor before the last stop.
	if err := d.resync(ctx, func(pusherKey) bool { return true }, "1 = 1"); err != nil {
		d.close()
		return nil, err
	}
	if s.email != nil {
		if err := s.email.start(ctx); err != nil {
			s.email.close()
			d.close()
			return nil, err
		}
	}
	go s.loop()
	return s, nil
}

// Close stops evaluating once the events already handed over are done.
// Close the room server first, so that none arrive after.
func (s *Service) Close() {
	s.inMu.Lock()
	if s.closed {
		s.inMu.Unlock()
		return
	}
	s.closed = true
	close(s.events)
	s.inMu.Unlock()
	// Delivery first: its cursors are saved; what it had not delivered
	// is read again at the next start.
	s.delivery.close()
	s.email.close()
	<-s.done
}

// ReceiptsChanged drops the cached unread counts of a room after its
// receipts changed; call it before waking the room's syncs.
func (s *Service) ReceiptsChanged(roomID string) { s.counts.invalidateRoom(roomID) }

// isLocal reports whether a user ID belongs to this server.
func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+string(s.cfg.ServerName))
}

// Rules returns a user's global ruleset. Reading the rules also writes
// the m.push_rules account data if the user has none yet (see
// EnsureAccountData).
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules
func (s *Service) Rules(ctx context.Context, userID string) (*Ruleset, error) {
	rs, err := s.ruleset(ctx, userID)
	if err != nil {
		return nil, err
	}
	if err := s.ensureAccountData(ctx, userID, rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// EnsureAccountData writes a user's m.push_rules account data if it is
// missing or out of date (as after an upgrade that changed the default
// rules), so that clients see the rules in /sync ("When a user changes
// their push rules a m.push_rules event is sent to all clients"). Every
// change to the rules rewrites it; reading the rules through the API
// calls this. Call it when an account is created to have the rules in the
// user's very first sync.
func (s *Service) EnsureAccountData(ctx context.Context, userID string) error {
	rs, err := s.ruleset(ctx, userID)
	if err != nil {
		return err
	}
	return s.ensureAccountData(ctx, userID, rs)
}

// Rule returns one rule; 404 M_NOT_FOUND if there is none.
func (s *Service) Rule(ctx context.Context, userID, kind, ruleID string) (*Rule, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	rs, err := s.ruleset(ctx, userID)
	if err != nil {
		return nil, err
	}
	r := rs.Find(kind, ruleID)
	if r == nil {
		return nil, errRuleNotFound()
	}
	return r, nil
}

func errRuleNotFound() error { return mxerr.NotFound("The push rule was not found.") }

// ruleset returns a user's ruleset from the cache, loading it on a miss.
func (s *Service) ruleset(ctx context.Context, userID string) (*Ruleset, error) {
	s.cacheMu.Lock()
	if rs, ok := s.cache[userID]; ok {
		s.cacheMu.Unlock()
		return rs, nil
	}
	g, ga := s.gen[userID], s.genAll
	s.cacheMu.Unlock()
	rs, err := s.loadRuleset(ctx, userID)
	if err != nil {
		return nil, err
	}
	s.cacheMu.Lock()
	if s.gen[userID] == g && s.genAll == ga {
		if len(s.cache) >= maxCachedRulesets {
			s.cache = map[string]*Ruleset{}
		}
		s.cache[userID] = rs
	}
	s.cacheMu.Unlock()
	return rs, nil
}

// invalidate drops a user's cached ruleset after a change.
func (s *Service) invalidate(userID string) {
	s.cacheMu.Lock()
	delete(s.cache, userID)
	s.gen[userID]++
	s.cacheMu.Unlock()
}

// SetRulesChangedHook sets f to be told of each committed change of a
// user's push rules: in a deployment of several processes, the others
// drop their cached copy (RulesChangedElsewhere). Call it before serving.
func (s *Service) SetRulesChangedHook(f func(userID string)) { s.rulesChanged = f }

// RulesChangedElsewhere drops the cached ruleset of userID, whose rules
// another process changed, or every cached ruleset when userID is "" (such
// changes may have been missed).
func (s *Service) RulesChangedElsewhere(userID string) {
	if userID != "" {
		s.invalidate(userID)
		return
	}
	s.cacheMu.Lock()
	s.cache = map[string]*Ruleset{}
	s.genAll++
	s.cacheMu.Unlock()
}

// accountDataContent is the content of m.push_rules for a ruleset.
func accountDataContent(rs *Ruleset) (json.RawMessage, error) {
	return json.Marshal(map[string]*Ruleset{"global": rs})
}

// ensureAccountData writes m.push_rules if it is missing or differs from
// rs.
func (s *Service) ensureAccountData(ctx context.Context, userID string, rs *Ruleset) error {
	want, err := accountDataContent(rs)
	if err != nil {
		return err
	}
	cur, err := s.users.AccountData(ctx, userID, "", TypePushRules)
	if err == nil && bytes.Equal(cur, want) {
		return nil
	}
	if me, ok := mxerr.As(err); err != nil && (!ok || me.Status != 404) {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.writeAccountData(ctx, userID, false)
}

// writeAccountData writes m.push_rules from the stored rules (unless it is
// already current and force is false). The caller holds writeMu.
func (s *Service) writeAccountData(ctx context.Context, userID string, force bool) error {
	rs, err := s.loadRuleset(ctx, userID)
	if err != nil {
		return err
	}
	content, err := accountDataContent(rs)
	if err != nil {
		return err
	}
	if !force {
		cur, err := s.users.AccountData(ctx, userID, "", TypePushRules)
		if err == nil && bytes.Equal(cur, content) {
			return nil
		}
	}
	return s.users.SetPushRulesAccountData(ctx, userID, content)
}

// loadRuleset reads a user's rules and assembles the ruleset: the master
// rule first, then the user's rules of each kind, then the other
// server-default rules ("They operate at a lower priority than
// user-defined rules, except for the .m.rule.master rule").
func (s *Service) loadRuleset(ctx context.Context, userID string) (*Ruleset, error) {
	user := map[string][]*Rule{}
	rows, err := s.db.QueryContext(ctx, `SELECT kind, rule_id, rule_json, enabled FROM push_rules
		WHERE user_id = $1 ORDER BY kind, position`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var kind, id, raw string
		var enabled bool
		if err := rows.Scan(&kind, &id, &raw, &enabled); err != nil {
			return nil, err
		}
		var jr jsonRule
		if err := json.Unmarshal([]byte(raw), &jr); err != nil {
			s.log.WithError(err).WithFields(logrus.Fields{"user_id": userID, "rule_id": id}).Error("push: unreadable stored rule")
			continue
		}
		r := &Rule{Kind: kind, RuleID: id, Enabled: enabled, Actions: jr.Actions, Pattern: jr.Pattern}
		if hasConditions(kind) {
			r.Conditions = jr.Conditions
			if r.Conditions == nil {
				r.Conditions = []json.RawMessage{}
			}
		}
		if r.Actions == nil {
			r.Actions = []json.RawMessage{}
		}
		user[kind] = append(user[kind], r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	defaults := DefaultRules(userID)
	if err := s.applyDefaultChanges(ctx, userID, defaults); err != nil {
		return nil, err
	}
	byKind := map[string][]*Rule{}
	for _, kind := range Kinds {
		var out []*Rule
		var rest []*Rule
		for _, d := range defaults[kind] {
			if d.RuleID == masterRuleID {
				out = append(out, d)
			} else {
				rest = append(rest, d)
			}
		}
		out = append(out, user[kind]...)
		out = append(out, rest...)
		byKind[kind] = out
	}
	return NewRuleset(byKind), nil
}

// applyDefaultChanges applies the user's changes to server-default rules.
func (s *Service) applyDefaultChanges(ctx context.Context, userID string, defaults map[string][]*Rule) error {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, rule_id, enabled, actions FROM push_rule_defaults WHERE user_id = $1`, userID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var kind, id string
		var enabled *bool
		var actions *string
		if err := rows.Scan(&kind, &id, &enabled, &actions); err != nil {
			return err
		}
		for _, d := range defaults[kind] {
			if d.RuleID != id {
				continue
			}
			if enabled != nil {
				d.Enabled = *enabled
			}
			if actions != nil {
				var a []json.RawMessage
				if json.Unmarshal([]byte(*actions), &a) == nil {
					if a == nil {
						a = []json.RawMessage{}
					}
					d.Actions = a
				}
			}
		}
	}
	return rows.Err()
}
