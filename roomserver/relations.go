package roomserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Event relationships: the m.relates_to of an event's content, stored in
// event_relations as events commit, and the threads they form.
// https://spec.matrix.org/v1.19/client-server-api/#forming-relationships-between-events

// Relationship types the server gives meaning to.
const (
	RelAnnotation = "m.annotation"
	RelReplace    = "m.replace"
	RelReference  = "m.reference"
	RelThread     = "m.thread"
)

// Relation is an event's m.relates_to with a rel_type.
type Relation struct {
	RelType string `json:"rel_type"`
	EventID string `json:"event_id"`
	// Key is the annotation key of an m.annotation.
	Key string `json:"key,omitempty"`
}

// RelationOf reads the relation in an event's content. ok is false when
// the content has none (or a malformed one: a relation whose fields are
// not strings relates nothing).
func RelationOf(content []byte) (rel Relation, ok bool) {
	var c struct {
		RelatesTo *Relation `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil || c.RelatesTo.RelType == "" || c.RelatesTo.EventID == "" {
		return Relation{}, false
	}
	return *c.RelatesTo, true
}

// writeRelation records ev's relation, if it has one, in the commit
// transaction.
func writeRelation(ctx context.Context, tx *database.Tx, ev *Event) error {
	rel, ok := RelationOf(ev.Content())
	if !ok {
		return nil
	}
	var key *string
	if rel.RelType == RelAnnotation {
		key = &rel.Key
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO event_relations
		(event_id, room_id, relates_to, rel_type, type, sender, key, origin_ts, depth, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING`,
		ev.EventID(), ev.RoomID, rel.EventID, rel.RelType, ev.Type(), string(ev.SenderID()), key,
		int64(ev.OriginServerTS()), ev.Depth(), ev.StreamPos)
	if err != nil {
		return fmt.Errorf("insert relation: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 || rel.RelType != RelThread {
		return nil
	}
	// SET expressions see the row's old values, so each CASE compares the
	// new event with the thread's previous latest.
	_, err = tx.ExecContext(ctx, `INSERT INTO threads (root_id, room_id, latest_id, latest_depth, latest_stream, count)
		VALUES ($1, $2, $3, $4, $5, 1)
		ON CONFLICT (root_id) DO UPDATE SET count = threads.count + 1,
			latest_id = CASE WHEN `+newerThread+` THEN excluded.latest_id ELSE threads.latest_id END,
			latest_depth = CASE WHEN `+newerThread+` THEN excluded.latest_depth ELSE threads.latest_depth END,
			latest_stream = CASE WHEN `+newerThread+` THEN excluded.latest_stream ELSE threads.latest_stream END`,
		rel.EventID, ev.RoomID, ev.EventID(), ev.Depth(), ev.StreamPos)
	if err != nil {
		return fmt.Errorf("update thread: %w", err)
	}
	return nil
}

// newerThread is true when the inserted thread event comes after the
// thread's latest one, topologically.
const newerThread = `(excluded.latest_depth > threads.latest_depth OR
	(excluded.latest_depth = threads.latest_depth AND excluded.latest_stream > threads.latest_stream))`

// forgetRelation drops the relation of a redacted event: "when an
// annotation is redacted, it is removed from the count", an edit that is
// redacted no longer replaces, a redacted thread event leaves the thread.
func forgetRelation(ctx context.Context, tx *database.Tx, eventID string) error {
	var target, relType string
	err := tx.QueryRowContext(ctx, `SELECT relates_to, rel_type FROM event_relations WHERE event_id = $1`, eventID).Scan(&target, &relType)
	if isNoRows(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read relation: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM event_relations WHERE event_id = $1`, eventID); err != nil {
		return fmt.Errorf("delete relation: %w", err)
	}
	if relType != RelThread {
		return nil
	}
	// Recount the thread and find its new latest event.
	var latest string
	var depth, stream, count int64
	err = tx.QueryRowContext(ctx, `SELECT event_id, depth, stream_pos,
		(SELECT COUNT(*) FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.thread')
		FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.thread'
		ORDER BY depth DESC, stream_pos DESC LIMIT 1`, target).Scan(&latest, &depth, &stream, &count)
	if isNoRows(err) {
		_, err = tx.ExecContext(ctx, `DELETE FROM threads WHERE root_id = $1`, target)
		return err
	}
	if err != nil {
		return fmt.Errorf("recount thread: %w", err)
	}
	_, err = tx.ExecContext(ctx, `UPDATE threads SET latest_id = $1, latest_depth = $2, latest_stream = $3, count = $4
		WHERE root_id = $5`, latest, depth, stream, count, target)
	return err
}

// checkRelation enforces what the spec asks of a relation a local user
// sends: an annotation is not sent twice, and a thread does not start from
// an event that itself relates to another.
func (s *Service) checkRelation(ctx context.Context, rs *roomState, roomID, sender, typ string, content json.RawMessage) error {
	rel, ok := RelationOf(content)
	if !ok {
		return nil
	}
	switch rel.RelType {
	case RelAnnotation:
		// https://spec.matrix.org/v1.19/client-server-api/#avoiding-duplicate-annotations
		var one int
		err := s.db.QueryRowContext(ctx, `SELECT 1 FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.annotation'
			AND sender = $2 AND type = $3 AND key = $4 LIMIT 1`, rel.EventID, sender, typ, rel.Key).Scan(&one)
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("look for duplicate annotation: %w", err)
		}
		k := annotationKey{rel.EventID, sender, typ, rel.Key}
		if err == nil || rs.annotations[k] {
			return &mxerr.Error{Status: 400, Code: "M_DUPLICATE_ANNOTATION", Message: "You already sent this annotation"}
		}
		if rs.annotations == nil {
			rs.annotations = map[annotationKey]bool{}
		}
		// Remembered until the batch commits, for a duplicate in the same
		// batch (which the database does not hold yet).
		rs.annotations[k] = true
	case RelThread:
		// https://spec.matrix.org/v1.19/client-server-api/#validation-of-mthread-relationships
		target, err := s.event(ctx, rel.EventID)
		if err != nil {
			if me, ok := mxerr.As(err); ok && me.Code == "M_NOT_FOUND" {
				return nil // an unknown root is the client's business, as in Synapse
			}
			return err
		}
		if target.RoomID != roomID {
			return &mxerr.Error{Status: 400, Code: "M_UNKNOWN", Message: "A thread root must be in the same room"}
		}
		if _, ok := RelationOf(target.Content()); ok {
			return &mxerr.Error{Status: 400, Code: "M_UNKNOWN", Message: "Cannot start a thread from an event with a relation"}
		}
	}
	return nil
}

// annotationKey identifies an annotation for duplicate detection.
type annotationKey struct{ target, sender, typ, key string }

// RelationsRequest is /relations's parameters.
type RelationsRequest struct {
	RoomID, UserID, EventID string
	RelType, EventType      string // "" for any
	From, To                *Token
	Forwards                bool
	Limit                   int
	// Recurse includes events that relate to the event through others.
	Recurse bool
}

// RelationsResponse is /relations's result.
type RelationsResponse struct {
	Chunk     []*Event
	NextBatch *Token // nil: no more events
	// RecursionDepth is how deep the server looked, when asked to recurse.
	RecursionDepth int
}

// maxRecursion is how many levels of relations /relations follows when
// asked to recurse: the spec's minimum, as in Synapse.
const maxRecursion = 3

// Relations returns the events that relate to an event the user may see,
// newest first (oldest first with Forwards), and only those the user may
// see. A parent event that is missing or hidden is 404 M_NOT_FOUND.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidrelationseventid
func (s *Service) Relations(ctx context.Context, req RelationsRequest) (*RelationsResponse, error) {
	parent, err := s.Event(ctx, req.RoomID, req.UserID, req.EventID)
	if err != nil {
		return nil, err
	}
	// A /sync next_batch is a position in the events stream: place it in
	// the room's topological order before comparing it with rows.
	if req.From, err = s.placeOptional(ctx, req.RoomID, req.From); err != nil {
		return nil, err
	}
	if req.To, err = s.placeOptional(ctx, req.RoomID, req.To); err != nil {
		return nil, err
	}
	parents := []string{parent.EventID()}
	resp := &RelationsResponse{}
	if req.Recurse {
		resp.RecursionDepth = maxRecursion
		// The events up to maxRecursion-1 relations below the parent,
		// whose children are the answer's too.
		level := parents
		for d := 1; d < maxRecursion && len(level) > 0; d++ {
			ph, args := placeholders(level, 1)
			next, err := database.Strings(ctx, s.db, `SELECT event_id FROM event_relations
				WHERE room_id = $1 AND relates_to IN (`+ph+`)`, append([]any{req.RoomID}, args...)...)
			if err != nil {
				return nil, fmt.Errorf("relations below %s: %w", req.EventID, err)
			}
			parents = append(parents, next...)
			level = next
		}
	}
	vf, err := s.newVisibilityFilter(ctx, req.RoomID, req.UserID)
	if err != nil {
		return nil, err
	}
	ph, args := placeholders(parents, 1)
	args = append([]any{req.RoomID}, args...)
	q := `SELECT event_id FROM event_relations WHERE room_id = $1 AND relates_to IN (` + ph + `)`
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if req.RelType != "" {
		q += ` AND rel_type = ` + arg(req.RelType)
	}
	if req.EventType != "" {
		q += ` AND type = ` + arg(req.EventType)
	}
	// Tokens are positions between events, as for /messages: backwards
	// from t takes the events at or before it, forwards those after it.
	older := func(t Token) string {
		d := arg(t.Depth)
		return ` AND (depth < ` + d + ` OR (depth = ` + d + ` AND stream_pos <= ` + arg(t.Stream) + `))`
	}
	newer := func(t Token) string {
		d := arg(t.Depth)
		return ` AND (depth > ` + d + ` OR (depth = ` + d + ` AND stream_pos > ` + arg(t.Stream) + `))`
	}
	if req.Forwards {
		if req.From != nil {
			q += newer(*req.From)
		}
		if req.To != nil {
			q += older(*req.To)
		}
		q += ` ORDER BY depth ASC, stream_pos ASC`
	} else {
		if req.From != nil {
			q += older(*req.From)
		}
		if req.To != nil {
			q += newer(*req.To)
		}
		q += ` ORDER BY depth DESC, stream_pos DESC`
	}
	q += ` LIMIT ` + arg(req.Limit+1)
	evs, err := s.queryEvents(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("relations of %s: %w", req.EventID, err)
	}
	if len(evs) > req.Limit {
		evs = evs[:req.Limit]
		last := evs[len(evs)-1]
		next := after(last)
		if !req.Forwards {
			next = before(last)
		}
		resp.NextBatch = &next
	}
	if resp.Chunk, err = vf.filter(ctx, evs); err != nil {
		return nil, err
	}
	return resp, nil
}

// ThreadsRequest is /threads's parameters.
type ThreadsRequest struct {
	RoomID, UserID string
	// Participated keeps only the threads the user took part in.
	Participated bool
	From         *Token
	Limit        int
}

// ThreadsResponse is /threads's result.
type ThreadsResponse struct {
	Chunk     []*Event
	NextBatch *Token
}

// Threads lists a room's thread roots the user may see, the most recently
// active thread first.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv1roomsroomidthreads
func (s *Service) Threads(ctx context.Context, req ThreadsRequest) (*ThreadsResponse, error) {
	if _, err := s.checkCanRead(ctx, req.RoomID, req.UserID); err != nil {
		return nil, err
	}
	from, err := s.placeOptional(ctx, req.RoomID, req.From)
	if err != nil {
		return nil, err
	}
	req.From = from
	vf, err := s.newVisibilityFilter(ctx, req.RoomID, req.UserID)
	if err != nil {
		return nil, err
	}
	args := []any{req.RoomID}
	q := `SELECT t.root_id, t.latest_depth, t.latest_stream FROM threads t WHERE t.room_id = $1`
	if req.Participated {
		args = append(args, req.UserID)
		q += ` AND (EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.root_id AND e.sender = $2)
			OR EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to = t.root_id AND r.rel_type = 'm.thread' AND r.sender = $2))`
	}
	if req.From != nil {
		args = append(args, req.From.Depth, req.From.Stream)
		d, p := fmt.Sprintf("$%d", len(args)-1), fmt.Sprintf("$%d", len(args))
		q += ` AND (t.latest_depth < ` + d + ` OR (t.latest_depth = ` + d + ` AND t.latest_stream <= ` + p + `))`
	}
	args = append(args, req.Limit+1)
	q += fmt.Sprintf(` ORDER BY t.latest_depth DESC, t.latest_stream DESC LIMIT $%d`, len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	var ids []string
	var positions []Token
	for rows.Next() {
		var id string
		var t Token
		if err := rows.Scan(&id, &t.Depth, &t.Stream); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
		positions = append(positions, t)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	resp := &ThreadsResponse{}
	if len(ids) > req.Limit {
		// The next page starts at the first thread left out.
		resp.NextBatch = &positions[req.Limit]
		ids = ids[:req.Limit]
	}
	loaded, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	var roots []*Event
	for _, id := range ids {
		if ev := loaded[id]; ev != nil && ev.RoomID == req.RoomID {
			roots = append(roots, ev)
		}
	}
	if resp.Chunk, err = vf.filter(ctx, roots); err != nil {
		return nil, err
	}
	return resp, nil
}
