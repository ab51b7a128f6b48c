package roomserver

import (
	"slices"
	"time"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
)

// commitReq is one room's batch of events, written atomically.
type commitReq struct {
	roomID  string
	newRoom string // room version, when the batch creates the room
	// alias, when creating a room with room_alias_name: claimed in the
	// same transaction, so that of two rooms created at once with one
	// alias, the loser is not created at all.
	alias, aliasCreator string
	events              []*pendingEvent
	extremities         []string // the room's forward extremities after the batch
	// replaces, when not nil, is the room's forward extremities before
	// the batch, as stored: only the rows that change are written. When
	// nil, every row of the room is replaced.
	replaces   []string
	stateGroup int64 // the room's current state group after the batch
	done       chan error
}

// errAliasTaken fails a room creation whose alias another room took first.
var errAliasTaken = errors.New("room alias already taken")

// committer writes events. It takes every batch waiting when it starts a
// transaction and commits them together: one fsync for all of them. That
// is group commit: the busier the server, the more events share each
// fsync.
//
// On SQLite it is the single writer: transactions commit one at a time,
// in stream order. In a cluster, each process commits one transaction at
// a time, with positions from a sequence all share (clusterpos.go). On PostgreSQL in one process,
// several transactions run at once (concurrent.go): a room has one batch
// in flight at a time, positions come from a sequence, and batches are
// published in stream order whatever order they commit in.
type committer struct {
	s       *Service
	reqs    chan *commitReq
	stopped chan struct{}
	lastPos int64 // last stream position written; owned by the loop
	// lastOutlier is the last (negative) position given to an outlier.
	lastOutlier atomic.Int64
	// outlierStride is the step between them: 1, or in a cluster the
	// number of classes the instances share out (cluster.go).
	outlierStride int64
	// servers caches the servers with a member in each room, for the
	// outbox; dropped for a room whenever its membership changes.
	serversMu sync.Mutex
	servers   map[string][]spec.ServerName
	// conc runs the concurrent writers; nil for the single writer.
	conc *concurrentCommits
	// published is the last stream position whose events have committed
	// (read atomically by sync).
	published int64
	// localPublished is the last position of this process's own commits
	// (read atomically): published in one process; in a cluster, other
	// processes' commits move only published.
	localPublished int64
	// lastMember is the stream position of the latest committed
	// membership change (read atomically): sync skips looking for
	// membership changes in a window that ends before it.
	lastMember atomic.Int64
}

// The recent-events rings: 64 events cover the default timeline limit of
// an incremental sync with room to spare; 20,000 rings of at most 64 IDs
// is a few tens of MiB at worst.
const (
	recentPerRoom = 64
	recentRooms   = 20_000
)

// maxCommitEvents bounds one transaction.
const maxCommitEvents = 4096

func newCommitter(ctx context.Context, s *Service) (*committer, error) {
	c := &committer{s: s, reqs: make(chan *commitReq, 1024), stopped: make(chan struct{}), outlierStride: 1}
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&c.lastPos); err != nil {
		return nil, fmt.Errorf("read stream position: %w", err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(group_id), 0) FROM state_groups`).Scan(&s.lastGroupID); err != nil {
		return nil, fmt.Errorf("read state group id: %w", err)
	}
	c.published = c.lastPos
	c.localPublished = c.lastPos
	var lastOutlier int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(stream_pos), 0) FROM events`).Scan(&lastOutlier); err != nil {
		return nil, fmt.Errorf("read outlier position: %w", err)
	}
	c.lastOutlier.Store(min(lastOutlier, 0))
	var lastMember int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM memberships`).Scan(&lastMember); err != nil {
		return nil, fmt.Errorf("read membership position: %w", err)
	}
	c.lastMember.Store(lastMember)
	s.recent = newRecentEvents(recentPerRoom, recentRooms, c.lastPos)
	if s.db.ConcurrentWriters() > 1 && s.cfg.Cluster == nil {
		conc, err := newConcurrentCommits(ctx, c)
		if err != nil {
			return nil, err
		}
		c.conc = conc
	}
	go c.loop()
	return c, nil
}

// submit queues a batch and waits until it is committed or has failed.
func (c *committer) submit(req *commitReq) error {
	req.done = make(chan error, 1)
	c.reqs <- req
	return <-req.done
}

func (c *committer) close() {
	close(c.reqs)
	<-c.stopped
}

func (c *committer) loop() {
	defer close(c.stopped)
	for first := range c.reqs {
		batch := []*commitReq{first}
		n := len(first.events)
	drain:
		for n < maxCommitEvents {
			select {
			case req, ok := <-c.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, req)
				n += len(req.events)
			default:
				break drain
			}
		}
		if c.conc != nil {
			c.conc.dispatch(batch)
			continue
		}
		c.s.applyMu.Lock()
		c.commit(batch)
		c.s.applyMu.Unlock()
	}
	if c.conc != nil {
		c.conc.wait()
	}
}

func (c *committer) commit(batch []*commitReq) {
	if c.s.cfg.Cluster != nil {
		c.commitClustered(batch, true)
		return
	}
	ctx := context.Background()
	startPos, startOutlier := c.lastPos, c.lastOutlier.Load()
	err := c.s.db.WithTx(ctx, func(tx *database.Tx) error {
		pos := startPos
		next := func() int64 { pos++; return pos }
		for _, req := range batch {
			if err := c.writeRoomBatch(ctx, tx, req, next); err != nil {
				return fmt.Errorf("room %s: %w", req.roomID, err)
			}
		}
		c.lastPos = pos
		return nil
	})
	if err != nil {
		c.lastPos = startPos
		c.lastOutlier.Store(startOutlier)
		c.dropServers() // it may hold what the failed transaction read
		// One bad batch must not fail the others: retry each on its own.
		if len(batch) > 1 {
			for _, req := range batch {
				c.commit([]*commitReq{req})
			}
			return
		}
		batch[0].done <- err
		return
	}
	c.apply(batch, startPos, c.lastPos)
}

// commitClustered is commit in a cluster: the positions come from the
// shared sequence (clusterpos.go), and the batch is published once the
// other processes have committed every lower position. retry: register
// again and retry once if the others counted this process out.
func (c *committer) commitClustered(batch []*commitReq, retry bool) {
	ctx := context.Background()
	startOutlier := c.lastOutlier.Load()
	n := 0
	for _, req := range batch {
		for _, pe := range req.events {
			if !pe.outlier {
				n++
			}
		}
	}
	var ids []int64
	err := c.s.db.WithTx(ctx, func(tx *database.Tx) error {
		ids = nil
		if n > 0 {
			var err error
			if ids, err = c.s.takePositions(ctx, tx, n); err != nil {
				return err
			}
		}
		i := 0
		next := func() int64 { i++; return ids[i-1] }
		for _, req := range batch {
			if err := c.writeRoomBatch(ctx, tx, req, next); err != nil {
				return fmt.Errorf("room %s: %w", req.roomID, err)
			}
		}
		if n > 0 {
			return c.s.publishBound(ctx, tx)
		}
		return nil
	})
	if err != nil {
		c.lastOutlier.Store(startOutlier)
		c.dropServers() // it may hold what the failed transaction read
		if errors.Is(err, errWriterDead) && retry {
			if err := c.s.registerWriter(ctx); err != nil {
				c.s.log.WithError(err).Error("registering again as an event writer")
			}
			c.commitClustered(batch, false)
			return
		}
		// One bad batch must not fail the others: retry each on its own.
		if len(batch) > 1 {
			for _, req := range batch {
				c.commitClustered([]*commitReq{req}, retry)
			}
			return
		}
		batch[0].done <- err
		return
	}
	if n == 0 {
		// Outliers only: nothing in the stream to wait for.
		for _, req := range batch {
			req.done <- nil
		}
		return
	}
	c.s.committed(ctx, batch, ids)
}

// apply brings the in-memory state up to the committed batch, whose events
// hold the positions from < p <= to (all of them that committed), makes
// those positions readable, answers the batch's senders and tells the
// listeners.
func (c *committer) apply(batch []*commitReq, from, to int64) {
	var all []*Event
	members := false
	var targets []string
	for _, req := range batch {
		for _, pe := range req.events {
			if !bytes.Contains(pe.ev.Content(), []byte(`"m.relates_to"`)) {
				continue
			}
			if rel, ok := RelationOf(pe.ev.Content()); ok {
				targets = append(targets, rel.EventID)
			}
		}
	}
	// Before the events are published: a reader woken by them must not
	// trust an old "no relations".
	c.s.noRels.related(targets)
	for _, req := range batch {
		for _, pe := range req.events {
			if pe.outlier {
				continue
			}
			if pe.currentState != nil || pe.ev.Type() == spec.MRoomMember && pe.ev.StateKey() != nil {
				c.lastMember.Store(max(c.lastMember.Load(), pe.ev.StreamPos))
				members = true
			}
			c.s.cache.put(pe.ev)
			c.s.facts.observe(pe.ev, pe.currentState != nil)
			if pe.redaction != nil {
				c.s.cache.forget(pe.redaction.targetID)
			}
			all = append(all, pe.ev)
		}
	}
	if members {
		c.s.memberships.Invalidate()
		c.s.membership.Invalidate()
	}
	c.s.recent.add(from, all)
	atomic.StoreInt64(&c.published, to)
	atomic.StoreInt64(&c.localPublished, to)
	for _, req := range batch {
		req.done <- nil
	}
	c.s.publish(all)
}

// publishLocal tells the listeners that hear only this process's commits
// of a batch that could not be published in order to all of them (the
// others hear of it from a later catch-up).
func (s *Service) publishLocal(batch []*commitReq) {
	var evs []*Event
	for _, req := range batch {
		for _, pe := range req.events {
			if !pe.outlier {
				evs = append(evs, pe.ev)
			}
		}
	}
	s.mu.Lock()
	ls := s.listeners
	s.mu.Unlock()
	for _, l := range ls {
		l(evs)
	}
}

// dropServers forgets the servers of every room.
func (c *committer) dropServers() {
	c.serversMu.Lock()
	c.servers = nil
	c.serversMu.Unlock()
}

// writeRoomBatch writes a room's batch, each event that is not an outlier
// at the position next returns.
func (c *committer) writeRoomBatch(ctx context.Context, tx *database.Tx, req *commitReq, next func() int64) error {
	if req.newRoom != "" {
		if _, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, created_ts) VALUES ($1, $2, $3)`,
			req.roomID, req.newRoom, int64(req.events[0].ev.OriginServerTS())); err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
	}
	if req.alias != "" {
		res, err := tx.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)
			ON CONFLICT (alias) DO NOTHING`, req.alias, req.roomID, req.aliasCreator)
		if err != nil {
			return fmt.Errorf("insert alias: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errAliasTaken
		}
	}
	for _, pe := range req.events {
		if pe.outlier {
			pe.ev.StreamPos = c.lastOutlier.Add(-c.outlierStride)
		} else {
			pe.ev.StreamPos = next()
		}
		if err := writeEvent(ctx, tx, pe); err != nil {
			return err
		}
		if pe.currentState != nil {
			if err := writeCurrentState(ctx, tx, req.roomID, pe); err != nil {
				return err
			}
		}
		if err := c.queueOut(ctx, tx, req.roomID, pe); err != nil {
			return fmt.Errorf("queue %s for other servers: %w", pe.ev.EventID(), err)
		}
	}
	if err := writeExtremities(ctx, tx, req); err != nil {
		return err
	}
	var bump int64
	for _, pe := range req.events {
		if !pe.outlier && IsBumpType(pe.ev.Type()) {
			bump = pe.ev.StreamPos
		}
	}
	return tx.ExecLater(ctx, `UPDATE rooms SET state_group = $1,
		bump_pos = CASE WHEN $3 > bump_pos THEN $3 ELSE bump_pos END WHERE room_id = $2`, req.stateGroup, req.roomID, bump)
}

// writeExtremities stores the room's forward extremities after the batch.
// When the ones before it are known, only the rows that change are
// written, each by its key: deleting every row of the room instead makes
// PostgreSQL scan the table, whose dead rows (a delete and an insert per
// event, faster than autovacuum clears them) grow it to tens of pages
// between vacuums.
func writeExtremities(ctx context.Context, tx *database.Tx, req *commitReq) error {
	if req.replaces == nil {
		if err := tx.ExecLater(ctx, `DELETE FROM forward_extremities WHERE room_id = $1`, req.roomID); err != nil {
			return err
		}
		for _, id := range req.extremities {
			if err := tx.ExecLater(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)`, req.roomID, id); err != nil {
				return err
			}
		}
		return nil
	}
	for _, id := range req.replaces {
		if slices.Contains(req.extremities, id) {
			continue
		}
		if err := tx.ExecLater(ctx, `DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2`, req.roomID, id); err != nil {
			return err
		}
	}
	for _, id := range req.extremities {
		if slices.Contains(req.replaces, id) {
			continue
		}
		if err := tx.ExecLater(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)
			ON CONFLICT (room_id, event_id) DO NOTHING`, req.roomID, id); err != nil {
			return err
		}
	}
	return nil
}

func writeEvent(ctx context.Context, tx *database.Tx, pe *pendingEvent) error {
	if !pe.built {
		if err := applyPendingRedaction(ctx, tx, pe.ev); err != nil {
			return err
		}
	}
	ev := pe.ev
	var unsigned *string
	// The transaction ID is kept with the event so that the sending device
	// still sees unsigned.transaction_id once the event has left the
	// cache (or after a restart).
	if ev.ReplacesState != "" || ev.TxnID != "" {
		b, _ := json.Marshal(unsignedExtra{PrevContent: ev.PrevContent, PrevSender: ev.PrevSender, ReplacesState: ev.ReplacesState,
			TxnUser: ev.TxnUser, TxnDevice: ev.TxnDevice, TxnID: ev.TxnID})
		s := string(b)
		unsigned = &s
	}
	// The writes of an event go through ExecLater: on PostgreSQL they
	// reach the server together, one round trip instead of one each.
	err := tx.ExecLater(ctx, `INSERT INTO events
		(stream_pos, event_id, room_id, type, state_key, sender, depth, origin_ts, state_group, json, unsigned)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		ev.StreamPos, ev.EventID(), ev.RoomID, ev.Type(), ev.StateKey(), string(ev.SenderID()), ev.Depth(),
		int64(ev.OriginServerTS()), pe.stateGroup, string(ev.JSON()), unsigned)
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	if ev.RedactedBy != "" {
		if err := tx.ExecLater(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2`, ev.RedactedBy, ev.EventID()); err != nil {
			return fmt.Errorf("mark event redacted: %w", err)
		}
	}
	for _, prev := range ev.PrevEventIDs() {
		if err := tx.ExecLater(ctx, `INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2)`, ev.EventID(), prev); err != nil {
			return fmt.Errorf("insert edge: %w", err)
		}
	}
	if err := indexEvent(ctx, tx, ev); err != nil {
		return err
	}
	if g := pe.newGroup; g != nil {
		if err := writeStateGroup(ctx, tx, ev.RoomID, g); err != nil {
			return err
		}
	}
	if sk := ev.StateKey(); sk != nil && !pe.outlier && pe.currentState == nil {
		if err := tx.ExecLater(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
			ev.RoomID, ev.Type(), *sk, ev.EventID()); err != nil {
			return fmt.Errorf("update current state: %w", err)
		}
		if ev.Type() == spec.MRoomMember {
			m, err := ev.Membership()
			if err != nil {
				return err
			}
			if err := tx.ExecLater(ctx, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten)
				VALUES ($1, $2, $3, $4, $5, 0)
				ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
					event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0`,
				ev.RoomID, *sk, m, ev.EventID(), ev.StreamPos); err != nil {
				return fmt.Errorf("update membership: %w", err)
			}
		}
	}
	if err := writeRelation(ctx, tx, ev); err != nil {
		return err
	}
	if red := pe.redaction; red != nil && red.pending {
		if _, err := tx.ExecContext(ctx, `INSERT INTO pending_redactions (target_id, redaction_id, room_id, sender, privileged)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
			red.targetID, ev.EventID(), ev.RoomID, string(ev.SenderID()), red.privileged); err != nil {
			return fmt.Errorf("keep pending redaction: %w", err)
		}
	} else if red != nil {
		if _, err := tx.ExecContext(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`,
			string(red.redactedJSON), ev.EventID(), red.targetID); err != nil {
			return fmt.Errorf("apply redaction: %w", err)
		}
		if err := forgetRelation(ctx, tx, red.targetID); err != nil {
			return err
		}
		if err := unindexEvent(ctx, tx, red.targetID); err != nil {
			return err
		}
	}
	if t := pe.txn; t != nil {
		if err := tx.ExecLater(ctx, `INSERT INTO txn_ids (user_id, device_id, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			t.UserID, t.DeviceID, t.storeKey(), ev.EventID(), time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("record transaction: %w", err)
		}
	}
	return nil
}

// writeCurrentState replaces the room's current state (and the
// memberships it implies) with pe.currentState, after pe: the state where
// branches of the DAG met, or the whole state of a room joined over
// federation.
func writeCurrentState(ctx context.Context, tx *database.Tx, roomID string, pe *pendingEvent) error {
	if g := pe.currentGroup; g != nil {
		if err := writeStateGroup(ctx, tx, roomID, g); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM current_state WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("clear current state: %w", err)
	}
	for t, ev := range pe.currentState {
		if _, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
			roomID, t.Type, t.StateKey, ev.EventID()); err != nil {
			return fmt.Errorf("write current state: %w", err)
		}
		if t.Type != spec.MRoomMember {
			continue
		}
		m, err := ev.Membership()
		if err != nil {
			return err
		}
		// The position of a membership is where it changed for us: this
		// event's, unless the row already names the same event.
		if _, err := tx.ExecContext(ctx, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten)
			VALUES ($1, $2, $3, $4, $5, 0)
			ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
				event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0
			WHERE memberships.event_id != excluded.event_id`,
			roomID, t.StateKey, m, ev.EventID(), pe.ev.StreamPos); err != nil {
			return fmt.Errorf("update membership: %w", err)
		}
	}
	return nil
}

func writeStateGroup(ctx context.Context, tx *database.Tx, roomID string, g *newStateGroup) error {
	var prev *int64
	if g.prev != 0 {
		prev = &g.prev
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)`,
		g.id, roomID, prev, g.chainLen); err != nil {
		return fmt.Errorf("insert state group: %w", err)
	}
	for t, id := range g.entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
			g.id, t.Type, t.StateKey, id); err != nil {
			return fmt.Errorf("insert state entry: %w", err)
		}
	}
	return nil
}

// applyPendingRedaction redacts an event as it is stored if a redaction of
// it arrived first (pending_redactions) and may apply: its sender sent the
// event too, or had the redact power level.
func applyPendingRedaction(ctx context.Context, tx *database.Tx, ev *Event) error {
	if ev.Redacted() {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT redaction_id, sender, privileged FROM pending_redactions
		WHERE target_id = $1 AND room_id = $2`, ev.EventID(), ev.RoomID)
	if err != nil {
		return fmt.Errorf("pending redactions: %w", err)
	}
	var by string
	for rows.Next() {
		var id, sender string
		var privileged bool
		if err := rows.Scan(&id, &sender, &privileged); err != nil {
			rows.Close()
			return err
		}
		if by == "" && (privileged || sender == string(ev.SenderID())) {
			by = id
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if by == "" {
		return nil
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ev.Version())
	if err != nil {
		return err
	}
	redacted, err := verImpl.RedactEventJSON(ev.JSON())
	if err != nil {
		return fmt.Errorf("redact %s: %w", ev.EventID(), err)
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(ev.EventID(), redacted, true)
	if err != nil {
		return fmt.Errorf("redact %s: %w", ev.EventID(), err)
	}
	ev.PDU, ev.RedactedBy = pdu, by
	_, err = tx.ExecContext(ctx, `DELETE FROM pending_redactions WHERE target_id = $1`, ev.EventID())
	return err
}
