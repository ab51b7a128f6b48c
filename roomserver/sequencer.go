package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tessera-hs/tessera/internal/database"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// EventRequest is an event a local user wants to send.
type EventRequest struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string // for m.room.redaction in room versions before 11
	Txn      *TxnKey
	// ts, if set, is the event's origin_server_ts (default: now).
	ts time.Time
}

// TxnKey makes a client request idempotent: the same key always yields the
// same event.
// https://spec.matrix.org/v1.19/client-server-api/#transaction-identifiers
type TxnKey struct {
	UserID, DeviceID string
	// Endpoint is the request's path without the transaction ID (for
	// example "send/!room:server/m.room.message"). The spec scopes a
	// transaction ID to a device and an endpoint: the same ID sent to
	// another room or with another event type is a new request, not a
	// retry, and must not get the earlier event back.
	Endpoint string
	// TxnID is the client's transaction ID, as unsigned.transaction_id
	// shows it to the sending device.
	TxnID string
}

// storeKey is the key's txn_ids.txn_id column: the endpoint, escaped so it
// holds no '/', then the client's ID, so that no two keys collide.
func (k TxnKey) storeKey() string { return url.PathEscape(k.Endpoint) + "/" + k.TxnID }

// checkFunc is a rule the request must meet against the current state,
// beyond the auth rules (for example: redacting needs the target to exist).
type checkFunc func(ctx context.Context, rs *roomState) error

type buildReq struct {
	ctx   context.Context
	ev    EventRequest
	check checkFunc
	// content, if set, makes the event's content after check has run
	// (for content that depends on what check found).
	content func() (json.RawMessage, error)
	resp    chan buildResult
	// remote, if set, is an event another server made: it is checked and
	// stored rather than built (remote.go).
	remote *remoteReq
	// reset drops the sequencer's copy of the room state (the room was
	// written behind its back, as by a join over federation).
	reset bool
	// exclusive, if set, runs in the sequencer between batches (no event
	// of the room is being built or committed) and is followed by a
	// reset: for admin changes to what the sequencer keeps.
	exclusive func(context.Context) error
}

type buildResult struct {
	ev  *Event
	err error
}

// pendingEvent is a built, authorised event waiting to be committed.
type pendingEvent struct {
	ev         *Event
	stateGroup int64
	newGroup   *newStateGroup
	redaction  *redaction
	txn        *TxnKey
	// outlier: stored for its content (state and auth events of a join,
	// soft-failed events) but not part of the room's timeline; it gets a
	// negative stream position, so no stream query sees it.
	outlier bool
	// outliersBefore are stored just before this event: the state another
	// server gave for it (remote.go).
	outliersBefore []*pendingEvent
	// currentGroup and currentState, when set, replace the room's current
	// state after this event: where branches of the DAG meet, the current
	// state is the resolution of theirs, not the state after one event.
	currentGroup *newStateGroup
	currentState map[tuple]*Event
	// built: this server built and signed the event just now, so its ID
	// (a hash of it, or random before room version 3) is new, and no
	// redaction of it can be waiting in pending_redactions: committing it
	// skips that lookup, a round trip on PostgreSQL.
	built bool
}

type newStateGroup struct {
	id, prev int64 // prev 0: a full snapshot
	chainLen int
	entries  stateIDs
}

type redaction struct {
	targetID     string
	redactedJSON []byte
	// pending is set for a target we do not have: the redaction is kept
	// and applied when it arrives (privileged: its sender had the redact
	// power level, so it applies whoever sent the target).
	pending, privileged bool
}

// room is the sequencer of one room. Only its goroutine touches st.
type room struct {
	id   string
	reqs chan *buildReq
	st   *roomState // nil until loaded (or after a failed commit)
	// senders counts requests between being handed this room (under
	// Service.mu) and being queued on reqs: the sequencer may retire only
	// when it is 0 and reqs is empty, or a request would be lost.
	senders atomic.Int64
}

// roomIdleTimeout is how long a sequencer waits for work before it
// retires, freeing its goroutine and the room's in-memory state; the next
// request starts a new one, which loads the state again.
const roomIdleTimeout = 10 * time.Minute

// maxBatch bounds how many requests one sequencer turn takes.
const maxBatch = 256

// submit queues a request on the room's sequencer and waits for the event
// to be committed.
func (s *Service) submit(ctx context.Context, roomID string, ev EventRequest, check checkFunc) (*Event, error) {
	return s.submitBuilt(ctx, roomID, ev, check, nil)
}

// submitBuilt is submit with content made by content after check has run.
func (s *Service) submitBuilt(ctx context.Context, roomID string, ev EventRequest, check checkFunc, content func() (json.RawMessage, error)) (*Event, error) {
	return s.enqueue(ctx, roomID, &buildReq{ctx: ctx, ev: ev, check: check, content: content, resp: make(chan buildResult, 1)})
}

// enqueue hands a request to the room's sequencer, starting one if needed,
// and waits for its outcome.
func (s *Service) enqueue(ctx context.Context, roomID string, req *buildReq) (*Event, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("room server is shutting down")
	}
	r := s.rooms[roomID]
	if r == nil {
		r = &room{id: roomID, reqs: make(chan *buildReq, maxBatch)}
		s.rooms[roomID] = r
		s.wg.Add(1)
		go s.runRoom(r)
	}
	r.senders.Add(1)
	s.mu.Unlock()
	select {
	case r.reqs <- req:
		r.senders.Add(-1)
	case <-ctx.Done():
		r.senders.Add(-1)
		return nil, ctx.Err()
	}
	// Once queued, wait for the outcome even if the client goes away: the
	// event may already be committed, and the sequencer must not block.
	res := <-req.resp
	return res.ev, res.err
}

func (s *Service) runRoom(r *room) {
	defer s.wg.Done()
	idle := time.NewTimer(s.roomIdle())
	defer idle.Stop()
	for {
		var first *buildReq
		select {
		case req, ok := <-r.reqs:
			if !ok {
				return
			}
			first = req
		case <-idle.C:
			if s.retire(r) {
				return
			}
			idle.Reset(s.roomIdle())
			continue
		}
		batch := []*buildReq{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case req, ok := <-r.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, req)
			default:
				break drain
			}
		}
		s.processBatch(r, batch)
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(s.roomIdle())
	}
}

// retire removes an idle sequencer from the room table, unless a request
// is on its way to it. Afterwards nobody can reach it, so it may return.
func (s *Service) retire(r *room) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || r.senders.Load() > 0 || len(r.reqs) > 0 {
		return false
	}
	delete(s.rooms, r.id)
	return true
}

func (s *Service) roomIdle() time.Duration {
	if s.idleTimeout > 0 {
		return s.idleTimeout
	}
	return roomIdleTimeout
}

func (s *Service) processBatch(r *room, batch []*buildReq) {
	ctx := context.Background()
	for i := 0; i < len(batch); i++ {
		if batch[i].reset || batch[i].exclusive != nil {
			var err error
			if batch[i].exclusive != nil {
				err = batch[i].exclusive(batch[i].ctx)
			}
			r.st = nil
			batch[i].resp <- buildResult{err: err}
			batch = slices.Delete(batch, i, i+1)
			i--
		}
	}
	if len(batch) == 0 {
		return
	}
	if r.st == nil {
		st, err := s.loadRoomState(ctx, r.id)
		if err == nil && st == nil {
			err = mxerr.NotFound("Unknown room %s", r.id)
		}
		if err != nil {
			for _, req := range batch {
				req.resp <- buildResult{err: err}
			}
			return
		}
		r.st = st
	}
	r.st.annotations = nil // the previous batch's are committed (or failed)
	// As stored: build may trim the list before referencing it.
	before := slices.Clone(r.st.extremities)
	results := make([]buildResult, len(batch))
	var pending []*pendingEvent
	pendingIdx := map[int]int{}   // batch index -> pending index
	batchTxns := map[TxnKey]int{} // txn -> batch index, for repeats within a batch
	for i, req := range batch {
		if req.remote != nil {
			pe, err := s.buildRemote(ctx, r.st, req.remote, pending)
			if err != nil {
				results[i].err = err
				continue
			}
			pending = append(pending, pe.outliersBefore...)
			pendingIdx[i] = len(pending)
			pending = append(pending, pe)
			continue
		}
		if req.ev.Txn != nil {
			if j, ok := batchTxns[*req.ev.Txn]; ok {
				results[i] = buildResult{err: sameTxnErr{index: j}}
				continue
			}
			// Whether an earlier request used this transaction ID is
			// not looked up here, on every send: the commit's insert
			// into txn_ids finds a repeat (below), and a request that
			// fails looks it up before answering.
			batchTxns[*req.ev.Txn] = i
		}
		if req.check != nil {
			if err := req.check(req.ctx, r.st); err != nil {
				results[i] = s.txnResult(ctx, req.ev.Txn, err)
				continue
			}
		}
		if req.content != nil {
			c, err := req.content()
			if err != nil {
				results[i] = s.txnResult(ctx, req.ev.Txn, err)
				continue
			}
			req.ev.Content = c
		}
		pe, err := s.build(ctx, r.st, req.ev)
		if err != nil {
			results[i] = s.txnResult(ctx, req.ev.Txn, err)
			continue
		}
		pe.txn = req.ev.Txn
		s.apply(r.st, pe)
		pendingIdx[i] = len(pending)
		pending = append(pending, pe)
	}
	if len(pending) > 0 {
		err := s.commit.submit(&commitReq{
			roomID: r.id, events: pending, extremities: r.st.extremities, replaces: before, stateGroup: r.st.group,
		})
		if err != nil {
			// The in-memory state ran ahead of the database: reload it.
			r.st = nil
			if database.IsUniqueViolation(err) && s.retryRepeatedTxns(ctx, r, batch, results, pending, pendingIdx) {
				return
			}
			s.log.WithError(err).WithField("room_id", r.id).Error("commit failed")
		}
		for i, j := range pendingIdx {
			if err != nil {
				results[i] = buildResult{err: fmt.Errorf("commit event: %w", err)}
			} else {
				results[i] = buildResult{ev: pending[j].ev}
			}
		}
	}
	for i, req := range batch {
		if e, ok := results[i].err.(sameTxnErr); ok {
			results[i] = results[e.index]
		}
		req.resp <- results[i]
	}
}

// txnResult is the answer to a request that failed with err: the event of
// an earlier request with the same transaction ID if there is one (a
// retry gets the first answer even if it could not be sent now, as when
// its sender has since left the room), err otherwise.
func (s *Service) txnResult(ctx context.Context, txn *TxnKey, err error) buildResult {
	if txn == nil {
		return buildResult{err: err}
	}
	id, lerr := s.txnEvent(ctx, *txn)
	if lerr != nil {
		return buildResult{err: lerr}
	}
	if id == "" {
		return buildResult{err: err}
	}
	ev, eerr := s.event(ctx, id)
	return buildResult{ev: ev, err: eerr}
}

// retryRepeatedTxns handles a batch whose commit failed on a unique key:
// requests that repeat the transaction ID of an earlier, committed one
// (whose txn_ids row the commit collided with) get that one's event, and
// the others of the batch, answered nothing yet, are built and committed
// again. It reports false, having answered nobody, when no request of the
// batch repeats a transaction: the failure was something else.
func (s *Service) retryRepeatedTxns(ctx context.Context, r *room, batch []*buildReq, results []buildResult,
	pending []*pendingEvent, pendingIdx map[int]int) bool {
	repeated := map[int]bool{}
	for i, j := range pendingIdx {
		txn := pending[j].txn
		if txn == nil {
			continue
		}
		if id, err := s.txnEvent(ctx, *txn); err == nil && id != "" {
			results[i].ev, results[i].err = s.event(ctx, id)
			repeated[i] = true
		}
	}
	if len(repeated) == 0 {
		return false
	}
	requeue := func(i int) bool {
		_, wasPending := pendingIdx[i]
		return wasPending && !repeated[i]
	}
	var again []*buildReq
	for i, req := range batch {
		if e, ok := results[i].err.(sameTxnErr); ok {
			if requeue(e.index) {
				again = append(again, req)
				continue
			}
			results[i] = results[e.index]
		} else if requeue(i) {
			again = append(again, req)
			continue
		}
		req.resp <- results[i]
	}
	if len(again) > 0 {
		s.processBatch(r, again)
	}
	return true
}

// sameTxnErr marks a request that repeats an earlier one in the batch; it
// gets that request's result.
type sameTxnErr struct{ index int }

func (sameTxnErr) Error() string { return "duplicate transaction" }

// build creates, signs and auth-checks an event on top of rs.
func (s *Service) build(ctx context.Context, rs *roomState, er EventRequest) (*pendingEvent, error) {
	if len(rs.extremities) > 20 {
		// More prev_events than this is a sign of a badly forked DAG;
		// referencing the newest is enough to merge it.
		rs.extremities = rs.extremities[len(rs.extremities)-20:]
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID:   er.Sender,
		RoomID:     rs.roomID,
		Type:       er.Type,
		StateKey:   er.StateKey,
		Content:    spec.RawJSON(er.Content),
		Redacts:    er.Redacts,
		PrevEvents: append([]string{}, rs.extremities...),
		Depth:      rs.depth + 1,
	}
	isCreate := er.Type == spec.MRoomCreate && er.StateKey != nil && *er.StateKey == ""
	if isCreate && rs.version.DomainlessRoomIDs() {
		proto.RoomID = "" // the room ID is derived from the create event's ID
	}
	b := rs.version.NewEventBuilderFromProtoEvent(proto)
	if err := b.AddAuthEvents(rs); err != nil {
		return nil, mxerr.BadJSON("Cannot build event: %v", err)
	}
	ts := er.ts
	if ts.IsZero() {
		ts = time.Now()
	}
	pdu, err := b.Build(ts, s.cfg.ServerName, s.cfg.KeyID, s.cfg.PrivateKey)
	if err != nil {
		return nil, InvalidEventError(err)
	}
	if err := gomatrixserverlib.Allowed(pdu, rs, UserIDForSender); err != nil {
		return nil, mxerr.Forbidden("%s", err.Error())
	}
	roomID := rs.roomID
	if isCreate {
		roomID = pdu.RoomID().String()
	}
	pe := &pendingEvent{ev: &Event{PDU: pdu, RoomID: roomID}, stateGroup: rs.group, built: true}
	if er.Txn != nil {
		pe.ev.TxnUser, pe.ev.TxnDevice, pe.ev.TxnID = er.Txn.UserID, er.Txn.DeviceID, er.Txn.TxnID
	}
	if sk := pdu.StateKey(); sk != nil {
		if prev := rs.get(pdu.Type(), *sk); prev != nil {
			pe.ev.ReplacesState = prev.EventID()
			pe.ev.PrevContent = prev.Content()
			pe.ev.PrevSender = string(prev.SenderID())
		}
	}
	if pdu.Type() == spec.MRoomRedaction {
		red, err := s.redactionFor(ctx, rs, pdu)
		if err != nil {
			return nil, err
		}
		pe.redaction = red
	}
	return pe, nil
}

// apply moves rs forward past a built event: extremities, depth, state.
func (s *Service) apply(rs *roomState, pe *pendingEvent) {
	pdu := pe.ev.PDU
	if rs.roomID == "" {
		rs.roomID = pe.ev.RoomID
	}
	rs.extremities = []string{pdu.EventID()}
	rs.depth = max(rs.depth, pdu.Depth())
	if sk := pdu.StateKey(); sk != nil {
		t := tuple{pdu.Type(), *sk}
		g := &newStateGroup{id: s.nextGroupID()}
		if rs.group == 0 || rs.chainLen+1 >= maxChainLen {
			// A full snapshot.
			g.entries = make(stateIDs, len(rs.state)+1)
			for k, ev := range rs.state {
				g.entries[k] = ev.EventID()
			}
			g.entries[t] = pdu.EventID()
		} else {
			g.prev, g.chainLen = rs.group, rs.chainLen+1
			g.entries = stateIDs{t: pdu.EventID()}
		}
		rs.state[t] = pe.ev
		rs.group, rs.chainLen = g.id, g.chainLen
		pe.newGroup = g
		pe.stateGroup = g.id
	}
	pe.ev.StateGroup = pe.stateGroup
	if red := pe.redaction; red != nil {
		// A redacted state event keeps applying in its redacted form.
		for t, ev := range rs.state {
			if ev.EventID() == red.targetID {
				if p, err := rs.version.NewEventFromTrustedJSON(red.redactedJSON, true); err == nil {
					rs.state[t] = &Event{PDU: p, RoomID: ev.RoomID, StreamPos: ev.StreamPos, StateGroup: ev.StateGroup, RedactedBy: pdu.EventID()}
				}
			}
		}
	}
}

func (s *Service) nextGroupID() int64 { return atomic.AddInt64(&s.lastGroupID, s.groupStride) }

// txnEvent returns the event ID an earlier request with this transaction
// key produced, or "".
func (s *Service) txnEvent(ctx context.Context, k TxnKey) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
		k.UserID, k.DeviceID, k.storeKey()).Scan(&id)
	if isNoRows(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up transaction: %w", err)
	}
	return id, nil
}

// redactionFor checks a local redaction and prepares its effect. Room
// versions 3+ leave it to the server to check that the redacter may redact
// the target: the original sender may, and so may anyone at the room's
// redact power level.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid
func (s *Service) redactionFor(ctx context.Context, rs *roomState, red gomatrixserverlib.PDU) (*redaction, error) {
	targetID := red.Redacts()
	if targetID == "" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(red.Content(), &c)
		targetID = c.Redacts
	}
	pl, err := powerLevels(rs)
	if err != nil {
		return nil, err
	}
	privileged := pl.UserLevel(red.SenderID()) >= pl.Redact
	target, err := s.event(ctx, targetID)
	if me, ok := mxerr.As(err); ok && me.Code == "M_NOT_FOUND" && targetID != "" && rs.version.Version() != gomatrixserverlib.RoomVersionV1 &&
		rs.version.Version() != gomatrixserverlib.RoomVersionV2 {
		// Room versions 3+ do not need the target to accept a
		// redaction: it waits for the target to arrive.
		return &redaction{targetID: targetID, pending: true, privileged: privileged}, nil
	}
	if err != nil || target.RoomID != rs.roomID {
		return nil, mxerr.NotFound("Event to redact not found in this room")
	}
	if target.SenderID() != red.SenderID() && !privileged {
		return nil, mxerr.Forbidden("You may redact only your own events at your power level")
	}
	if target.Redacted() {
		return nil, nil // already redacted: nothing more to strip
	}
	redacted, err := rs.version.RedactEventJSON(target.JSON())
	if err != nil {
		return nil, fmt.Errorf("redact %s: %w", targetID, err)
	}
	return &redaction{targetID: targetID, redactedJSON: redacted}, nil
}

// powerLevels returns the room's power levels, with the spec's defaults
// when there is no power levels event, and creators at their level.
func powerLevels(rs *roomState) (*gomatrixserverlib.PowerLevelContent, error) {
	if ev := rs.get(spec.MRoomPowerLevels, ""); ev != nil {
		pl, err := ev.PowerLevels()
		if err != nil {
			return nil, err
		}
		return withCreators(rs, pl), nil
	}
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	if create := rs.get(spec.MRoomCreate, ""); create != nil {
		pl.Users = map[string]int64{string(create.SenderID()): 100}
	}
	return withCreators(rs, &pl), nil
}

// withCreators gives room creators their unlimited level in room versions
// with privileged creators (v12): they are not listed in the power levels.
func withCreators(rs *roomState, pl *gomatrixserverlib.PowerLevelContent) *gomatrixserverlib.PowerLevelContent {
	if !rs.version.PrivilegedCreators() {
		return pl
	}
	create := rs.get(spec.MRoomCreate, "")
	if create == nil {
		return pl
	}
	users := make(map[string]int64, len(pl.Users)+1)
	for k, v := range pl.Users {
		users[k] = v
	}
	users[string(create.SenderID())] = gomatrixserverlib.CreatorPowerLevel
	var c gomatrixserverlib.CreateContent
	if json.Unmarshal(create.Content(), &c) == nil {
		for _, u := range c.AdditionalCreators {
			users[u] = gomatrixserverlib.CreatorPowerLevel
		}
	}
	cp := *pl
	cp.Users = users
	return &cp
}

// InvalidEventError is the client's error for an event gomatrixserverlib
// will not build or parse: 413 M_TOO_LARGE for one over 65,536 bytes (or
// with a type or state key too long), as the spec and Synapse answer, and
// 400 M_BAD_JSON for anything else.
// https://spec.matrix.org/v1.19/client-server-api/#size-limits
func InvalidEventError(err error) *mxerr.Error {
	var ve gomatrixserverlib.EventValidationError
	if errors.As(err, &ve) {
		if ve.Code == gomatrixserverlib.EventValidationTooLarge {
			return mxerr.TooLarge("%s", ve.Message)
		}
		return mxerr.BadJSON("%s", ve.Message)
	}
	return mxerr.BadJSON("Invalid event: %v", err)
}
