package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ClientEvents formats events for the viewer, as every endpoint that
// returns events must: the redaction of redacted events, the aggregations
// of their child events in unsigned.m.relations, and the viewer's
// membership at each event in unsigned.membership.
// https://spec.matrix.org/v1.19/client-server-api/#aggregations-of-child-events
func (s *Service) ClientEvents(ctx context.Context, viewer Viewer, evs []*Event) ([]ClientEvent, error) {
	return s.clientEvents(ctx, viewer, evs, map[string]*visibilityFilter{}, 1)
}

// ClientEvent is ClientEvents for one event.
func (s *Service) ClientEvent(ctx context.Context, viewer Viewer, ev *Event) (ClientEvent, error) {
	out, err := s.ClientEvents(ctx, viewer, []*Event{ev})
	if err != nil {
		return ClientEvent{}, err
	}
	return out[0], nil
}

// clientEvents is ClientEvents with the visibility filters of each room
// shared with the nested calls that format the events bundled in
// aggregations, which themselves bundle aggregations down to depth more
// levels (thread latest events carry their edits).
func (s *Service) clientEvents(ctx context.Context, viewer Viewer, evs []*Event, vfs map[string]*visibilityFilter, depth int) ([]ClientEvent, error) {
	out := make([]ClientEvent, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	aggs, err := s.aggregations(ctx, viewer, evs, vfs, depth)
	if err != nil {
		return nil, err
	}
	for i, ev := range evs {
		out[i] = ev.ToClient(viewer, s.Redaction(ctx, ev))
		if viewer.UserID != "" {
			vf, err := s.filterFor(ctx, vfs, ev.RoomID, viewer.UserID)
			if err != nil {
				return nil, err
			}
			m, err := vf.membershipAt(ctx, ev)
			if err != nil {
				return nil, err
			}
			out[i].Unsigned["membership"] = m
		}
		if a := aggs[ev.EventID()]; len(a) > 0 {
			out[i].Unsigned["m.relations"] = a
		}
	}
	return out, nil
}

// filterFor returns the viewer's visibility filter of a room, made once
// per call.
func (s *Service) filterFor(ctx context.Context, vfs map[string]*visibilityFilter, roomID, userID string) (*visibilityFilter, error) {
	if vf, ok := vfs[roomID]; ok {
		return vf, nil
	}
	vf, err := s.newVisibilityFilter(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	vfs[roomID] = vf
	return vf, nil
}

// membershipAt is the user's membership in the state after ev (so that
// their own member event shows what it made them); "leave" when they had
// none, as MSC4115 says.
// https://spec.matrix.org/v1.19/client-server-api/#room-event-format
func (f *visibilityFilter) membershipAt(ctx context.Context, ev *Event) (string, error) {
	if ev.Type() == spec.MRoomMember && ev.StateKeyEquals(f.userID) {
		if m, err := ev.Membership(); err == nil {
			return m, nil
		}
	}
	v, err := f.at(ctx, ev.StateGroup)
	if err != nil {
		return "", err
	}
	if v.membership == "" {
		return "leave", nil
	}
	return v.membership, nil
}

// maxInList bounds the IDs of one IN (...) list.
const maxInList = 500

// relationRow is a row of event_relations.
type relationRow struct {
	eventID, roomID, target, relType, typ, sender string
	originTS                                      int64
}

// aggregations computes unsigned.m.relations for each of evs (by event ID):
// m.replace, m.reference and m.thread. m.annotation is not aggregated by
// the server. Redacted events get none: their edits are not bundled, and a
// redacted event relates to nothing.
func (s *Service) aggregations(ctx context.Context, viewer Viewer, evs []*Event, vfs map[string]*visibilityFilter, depth int) (map[string]map[string]any, error) {
	byID := make(map[string]*Event, len(evs))
	ids := make([]string, 0, len(evs))
	for _, ev := range evs {
		if ev.RedactedBy != "" {
			continue
		}
		if _, dup := byID[ev.EventID()]; !dup && !s.noRels.has(ev.EventID()) {
			byID[ev.EventID()] = ev
			ids = append(ids, ev.EventID())
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	gen := s.noRels.generation()
	var rels []relationRow
	for start := 0; start < len(ids); start += maxInList {
		chunk := ids[start:min(start+maxInList, len(ids))]
		ph, args := placeholders(chunk, 0)
		rows, err := s.db.QueryContext(ctx, `SELECT event_id, room_id, relates_to, rel_type, type, sender, origin_ts FROM event_relations
			WHERE relates_to IN (`+ph+`) AND rel_type IN ('m.replace', 'm.reference')
			ORDER BY depth, stream_pos`, args...)
		if err != nil {
			return nil, fmt.Errorf("read relations: %w", err)
		}
		for rows.Next() {
			var r relationRow
			if err := rows.Scan(&r.eventID, &r.roomID, &r.target, &r.relType, &r.typ, &r.sender, &r.originTS); err != nil {
				rows.Close()
				return nil, err
			}
			rels = append(rels, r)
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
	}
	out := map[string]map[string]any{}
	put := func(id, relType string, v any) {
		if out[id] == nil {
			out[id] = map[string]any{}
		}
		out[id][relType] = v
	}

	// m.reference: the IDs of the referring events.
	// https://spec.matrix.org/v1.19/client-server-api/#server-side-aggregation-of-mreference-relationships
	refs := map[string][]map[string]string{}
	// m.replace: candidates that pass the checks the row allows; the event
	// itself is checked below, newest first.
	edits := map[string][]relationRow{}
	for _, r := range rels {
		orig := byID[r.target]
		if r.roomID != orig.RoomID {
			continue // relations stay within a room
		}
		switch r.relType {
		case RelReference:
			refs[r.target] = append(refs[r.target], map[string]string{"event_id": r.eventID})
		case RelReplace:
			if r.sender == string(orig.SenderID()) && r.typ == orig.Type() {
				edits[r.target] = append(edits[r.target], r)
			}
		}
	}
	for id, chunk := range refs {
		put(id, RelReference, map[string]any{"chunk": chunk})
	}
	for id, cands := range edits {
		edit, err := s.latestEdit(ctx, byID[id], cands, viewer, vfs)
		if err != nil {
			return nil, err
		}
		if edit != nil {
			ce := edit.ToClient(viewer, nil)
			put(id, RelReplace, ce)
		}
	}
	threadRoots := map[string]bool{}
	for start := 0; start < len(ids); start += maxInList {
		chunk := ids[start:min(start+maxInList, len(ids))]
		if err := s.threadAggregations(ctx, viewer, chunk, byID, vfs, depth, put, threadRoots); err != nil {
			return nil, err
		}
	}
	// What has no child relation now needs no query next time, until one
	// is committed.
	hasRels := map[string]bool{}
	for _, r := range rels {
		hasRels[r.target] = true
	}
	var none []string
	for _, id := range ids {
		if !hasRels[id] && !threadRoots[id] {
			none = append(none, id)
		}
	}
	s.noRels.record(gen, none)
	return out, nil
}

// latestEdit picks the most recent valid replacement of orig: by
// origin_server_ts, then the greatest event ID.
// https://spec.matrix.org/v1.19/client-server-api/#validity-of-replacement-events
func (s *Service) latestEdit(ctx context.Context, orig *Event, cands []relationRow, viewer Viewer, vfs map[string]*visibilityFilter) (*Event, error) {
	if orig.StateKey() != nil {
		return nil, nil
	}
	if rel, ok := RelationOf(orig.Content()); ok && rel.RelType == RelReplace {
		return nil, nil // an edit of an edit
	}
	ids := make([]string, len(cands))
	for i, c := range cands {
		ids[i] = c.eventID
	}
	loaded, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	var best *Event
	for _, c := range cands {
		ev := loaded[c.eventID]
		if ev == nil || ev.StateKey() != nil || ev.RedactedBy != "" {
			continue
		}
		// An encrypted edit carries m.new_content in its ciphertext.
		if ev.Type() != "m.room.encrypted" && !hasNewContent(ev.Content()) {
			continue
		}
		if best != nil && (ev.OriginServerTS() < best.OriginServerTS() ||
			ev.OriginServerTS() == best.OriginServerTS() && ev.EventID() < best.EventID()) {
			continue
		}
		if viewer.UserID != "" {
			vf, err := s.filterFor(ctx, vfs, ev.RoomID, viewer.UserID)
			if err != nil {
				return nil, err
			}
			if ok, err := vf.allowed(ctx, ev); err != nil || !ok {
				if err != nil {
					return nil, err
				}
				continue
			}
		}
		best = ev
	}
	return best, nil
}

func hasNewContent(content []byte) bool {
	var c struct {
		NewContent json.RawMessage `json:"m.new_content"`
	}
	return json.Unmarshal(content, &c) == nil && len(c.NewContent) > 0 && c.NewContent[0] == '{'
}

// threadAggregations adds the m.thread aggregation of each thread root
// among ids: the thread's latest event (with its own aggregations), its
// size, and whether the viewer took part.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-aggregation-of-mthread-relationships
func (s *Service) threadAggregations(ctx context.Context, viewer Viewer, ids []string, byID map[string]*Event,
	vfs map[string]*visibilityFilter, depth int, put func(id, relType string, v any), roots map[string]bool) error {
	ph, args := placeholders(ids, 1)
	args = append([]any{viewer.UserID}, args...)
	rows, err := s.db.QueryContext(ctx, `SELECT t.root_id, t.room_id, t.latest_id, t.count,
		EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to = t.root_id AND r.rel_type = 'm.thread' AND r.sender = $1)
		FROM threads t WHERE t.root_id IN (`+ph+`)`, args...)
	if err != nil {
		return fmt.Errorf("read threads: %w", err)
	}
	type thread struct {
		root, room, latest string
		count              int64
		participated       bool
	}
	var threads []thread
	for rows.Next() {
		var t thread
		if err := rows.Scan(&t.root, &t.room, &t.latest, &t.count, &t.participated); err != nil {
			rows.Close()
			return err
		}
		threads = append(threads, t)
		roots[t.root] = true
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if len(threads) == 0 {
		return nil
	}
	latestIDs := make([]string, len(threads))
	for i, t := range threads {
		latestIDs[i] = t.latest
	}
	loaded, err := s.events(ctx, s.db, latestIDs)
	if err != nil {
		return err
	}
	for _, t := range threads {
		latest := loaded[t.latest]
		if latest == nil || t.room != byID[t.root].RoomID {
			continue
		}
		if viewer.UserID != "" {
			vf, err := s.filterFor(ctx, vfs, latest.RoomID, viewer.UserID)
			if err != nil {
				return err
			}
			if ok, err := vf.allowed(ctx, latest); err != nil || !ok {
				if err != nil {
					return err
				}
				continue // the thread's news are hidden from the viewer
			}
		}
		var latestCE any
		if depth > 0 {
			ces, err := s.clientEvents(ctx, viewer, []*Event{latest}, vfs, depth-1)
			if err != nil {
				return err
			}
			latestCE = ces[0]
		} else {
			latestCE = latest.ToClient(viewer, nil)
		}
		put(t.root, RelThread, map[string]any{
			"latest_event":              latestCE,
			"count":                     t.count,
			"current_user_participated": t.participated || string(byID[t.root].SenderID()) == viewer.UserID,
		})
	}
	return nil
}

// placeholders returns "$n+1, $n+2, ..." for ids and the ids as arguments.
func placeholders(ids []string, n int) (string, []any) {
	ph := make([]string, len(ids))
	args := make([]any, len(ids))
	for i, id := range ids {
		ph[i] = fmt.Sprintf("$%d", n+i+1)
		args[i] = id
	}
	return strings.Join(ph, ", "), args
}
