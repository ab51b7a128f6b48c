package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Server-side search over the rooms a user may read.
// https://spec.matrix.org/v1.19/client-server-api/#server-side-search
//
// The index is an SQLite FTS5 table (event_search, migration 7), or on
// PostgreSQL a tsvector column (search_index.go), written in the commit
// transaction: an event is searchable as soon as it is visible,
// and a redaction takes it out in the transaction that redacts it.

// searchKeys maps the spec's keys to the event type whose content they
// index, and the JSON field they read.
var searchKeys = map[string]struct{ evType, field string }{
	"content.body":  {"m.room.message", "body"},
	"content.name":  {spec.MRoomName, "name"},
	"content.topic": {spec.MRoomTopic, "topic"},
}

// indexEvent adds ev's searchable text to the index.
func indexEvent(ctx context.Context, tx *database.Tx, ev *Event) error {
	for key, k := range searchKeys {
		if ev.Type() != k.evType || (ev.StateKey() != nil && *ev.StateKey() != "") {
			continue
		}
		var content map[string]any
		if json.Unmarshal(ev.Content(), &content) != nil {
			return nil
		}
		text, ok := content[k.field].(string)
		if !ok || text == "" {
			return nil
		}
		if err := tx.ExecLater(ctx, `INSERT INTO event_search (rowid, key, value) VALUES ($1, $2, $3)`,
			ev.StreamPos, key, text); err != nil {
			return fmt.Errorf("index %s for search: %w", ev.EventID(), err)
		}
		return nil
	}
	return nil
}

// unindexEvent takes a redacted event out of the index.
func unindexEvent(ctx context.Context, tx *database.Tx, eventID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE rowid IN (SELECT stream_pos FROM events WHERE event_id = $1)`,
		eventID); err != nil {
		return fmt.Errorf("unindex %s: %w", eventID, err)
	}
	return nil
}

// SearchRequest is the room_events category of POST /search.
type SearchRequest struct {
	UserID string
	Term   string
	// Keys are the fields to search; empty means all three.
	Keys []string
	// OrderBy is "rank" (the default) or "recent".
	OrderBy string
	// Rooms and NotRooms narrow the rooms searched; IncludeLeave adds
	// the rooms the user has left.
	Rooms, NotRooms []string
	IncludeLeave    bool
	Filter          EventFilter
	Limit           int
	// Context asks for the events around each result.
	Context                 bool
	BeforeLimit, AfterLimit int
	IncludeProfile          bool
	IncludeState            bool
	// GroupBy is any of "room_id" and "sender".
	GroupBy []string
	// NextBatch is the token of a previous page.
	NextBatch string
}

// SearchResponse is what a search found.
type SearchResponse struct {
	Count      int
	Results    []SearchResult
	Highlights []string
	NextBatch  string
	// State is the current state of each room with results, when asked.
	State map[string][]*Event
	// Groups maps "room_id" or "sender" to the results of each group.
	Groups map[string]map[string]*SearchGroup
}

// SearchResult is one matching event with its rank and context.
type SearchResult struct {
	Rank    float64
	Event   *Event
	Context *SearchContext
}

// SearchContext is the events around a result.
type SearchContext struct {
	Before, After []*Event
	Start, End    Token
	// Profiles are the senders' display names and avatars at the event.
	Profiles map[string]SearchProfile
}

// SearchProfile is a sender's profile in a room.
type SearchProfile struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SearchGroup is a group of results.
type SearchGroup struct {
	Results []string `json:"results"`
	Order   int      `json:"order"`
}

// searchBatch is how many candidates a search reads at a time; the
// history visibility check drops some of them.
const searchBatch = 50

// Search runs a full-text search over the rooms the user is in (and those
// they left, with include_leave), keeping only events their history
// visibility lets them see.
func (s *Service) Search(ctx context.Context, req SearchRequest) (*SearchResponse, error) {
	keys := req.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	for _, k := range keys {
		if _, ok := searchKeys[k]; !ok {
			return nil, mxerr.InvalidParam("Unknown search key %q", k)
		}
	}
	recent := false
	switch req.OrderBy {
	case "", "rank":
	case "recent":
		recent = true
	default:
		return nil, mxerr.InvalidParam("order_by must be \"rank\" or \"recent\"")
	}
	for _, g := range req.GroupBy {
		if g != "room_id" && g != "sender" {
			return nil, mxerr.InvalidParam("Unknown group_by key %q", g)
		}
	}
	// The token is "r<offset>" for rank order and "s<stream_pos>" (the
	// last candidate read) for recent order.
	var offset int
	var beforePos *int64
	if req.NextBatch != "" {
		n, err := strconv.ParseInt(req.NextBatch[min(1, len(req.NextBatch)):], 10, 64)
		switch {
		case err != nil || n < 0 && !recent:
			return nil, mxerr.InvalidParam("Invalid next_batch")
		case recent && strings.HasPrefix(req.NextBatch, "s"):
			beforePos = &n
		case !recent && strings.HasPrefix(req.NextBatch, "r"):
			offset = int(n)
		default:
			return nil, mxerr.InvalidParam("Invalid next_batch")
		}
	}
	rooms, err := s.searchRooms(ctx, req)
	if err != nil {
		return nil, err
	}
	resp := &SearchResponse{Results: []SearchResult{}, Highlights: []string{}}
	terms := searchTerms(req.Term)
	if len(terms) == 0 || len(rooms) == 0 {
		return resp, nil
	}
	idx := newSearchIndex(s.db.Engine())
	roomsJSON, _ := json.Marshal(rooms)
	keysJSON, _ := json.Marshal(keys)
	where := idx.match("$1") + ` AND s.key IN ` + s.db.JSONValues("$2") + ` AND e.room_id IN ` + s.db.JSONValues("$3")
	// Only the room's history: not the outliers of auth chains.
	where += ` AND ` + HistorySQL
	args := []any{idx.query(terms), string(keysJSON), string(roomsJSON)}
	if len(req.Filter.Senders) > 0 {
		js, _ := json.Marshal(req.Filter.Senders)
		args = append(args, string(js))
		where += ` AND e.sender IN ` + s.db.JSONValues(fmt.Sprintf("$%d", len(args)))
	}
	if len(req.Filter.NotSenders) > 0 {
		js, _ := json.Marshal(req.Filter.NotSenders)
		args = append(args, string(js))
		where += ` AND e.sender NOT IN ` + s.db.JSONValues(fmt.Sprintf("$%d", len(args)))
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_search s JOIN events e ON e.stream_pos = s.rowid WHERE `+where,
		args...).Scan(&resp.Count); err != nil {
		return nil, fmt.Errorf("count search results: %w", err)
	}

	filters := map[string]*visibilityFilter{}
	highlights := map[string]bool{}
	limit := max(req.Limit, 1)
	var last int64
	exhausted := false
	for len(resp.Results) < limit && !exhausted {
		q := `SELECT e.event_id, s.rowid, ` + idx.rank("$1") + `, s.value FROM event_search s JOIN events e ON e.stream_pos = s.rowid WHERE ` + where
		pageArgs := append([]any(nil), args...)
		if recent {
			if beforePos != nil {
				pageArgs = append(pageArgs, *beforePos)
				q += fmt.Sprintf(` AND s.rowid < $%d`, len(pageArgs))
			}
			q += ` ORDER BY s.rowid DESC`
		} else {
			q += ` ORDER BY ` + idx.byRank("$1")
		}
		skip := offset
		if recent {
			skip = 0 // the position bound pages instead
		}
		pageArgs = append(pageArgs, searchBatch, skip)
		q += fmt.Sprintf(` LIMIT $%d OFFSET $%d`, len(pageArgs)-1, len(pageArgs))
		cands, err := s.searchCandidates(ctx, q, pageArgs)
		if err != nil {
			return nil, err
		}
		exhausted = len(cands) < searchBatch
		for _, c := range cands {
			if len(resp.Results) == limit {
				// More may follow: the page ends before this one.
				exhausted = false
				break
			}
			last = c.pos
			offset++
			ev := c.ev
			if ev == nil || !req.Filter.match(ev) {
				continue
			}
			vf := filters[ev.RoomID]
			if vf == nil {
				if vf, err = s.newVisibilityFilter(ctx, ev.RoomID, req.UserID); err != nil {
					return nil, err
				}
				filters[ev.RoomID] = vf
			}
			if ok, err := vf.allowed(ctx, ev); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
			resp.Results = append(resp.Results, SearchResult{Rank: c.rank, Event: ev})
			for _, w := range highlightWords(c.value, terms) {
				highlights[w] = true
			}
		}
		if recent {
			beforePos = &last
		}
		if len(resp.Results) == limit && !exhausted {
			if recent {
				resp.NextBatch = "s" + strconv.FormatInt(last, 10)
			} else {
				resp.NextBatch = "r" + strconv.Itoa(offset)
			}
		}
	}
	for w := range highlights {
		resp.Highlights = append(resp.Highlights, w)
	}
	sort.Strings(resp.Highlights)
	if err := s.searchExtras(ctx, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

type searchCandidate struct {
	ev    *Event
	pos   int64
	rank  float64
	value string
}

func (s *Service) searchCandidates(ctx context.Context, q string, args []any) ([]searchCandidate, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	var cands []searchCandidate
	var ids []string
	for rows.Next() {
		var c searchCandidate
		var id string
		if err := rows.Scan(&id, &c.pos, &c.rank, &c.value); err != nil {
			rows.Close()
			return nil, fmt.Errorf("search: %w", err)
		}
		ids = append(ids, id)
		cands = append(cands, c)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	evs, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		cands[i].ev = evs[id]
	}
	return cands, nil
}

// searchRooms lists the rooms a search covers: those the user is joined
// to (and has left, with include_leave), narrowed by the filter.
func (s *Service) searchRooms(ctx context.Context, req SearchRequest) ([]string, error) {
	q := `SELECT room_id FROM memberships WHERE user_id = $1 AND forgotten = 0 AND membership = 'join'`
	if req.IncludeLeave {
		q = `SELECT room_id FROM memberships WHERE user_id = $1 AND forgotten = 0 AND membership IN ('join', 'leave', 'ban')`
	}
	all, err := database.Strings(ctx, s.db, q, req.UserID)
	if err != nil {
		return nil, fmt.Errorf("rooms to search: %w", err)
	}
	rooms := all[:0]
	for _, r := range all {
		if (len(req.Rooms) == 0 || contains(req.Rooms, r)) && !contains(req.NotRooms, r) {
			rooms = append(rooms, r)
		}
	}
	return rooms, nil
}

// searchExtras adds what the request asked for beyond the results:
// context, profiles, room state and groups.
func (s *Service) searchExtras(ctx context.Context, req SearchRequest, resp *SearchResponse) error {
	if req.Context {
		for i := range resp.Results {
			c, err := s.searchContext(ctx, req, resp.Results[i].Event)
			if err != nil {
				return err
			}
			resp.Results[i].Context = c
		}
	}
	if req.IncludeState {
		resp.State = map[string][]*Event{}
		for _, r := range resp.Results {
			id := r.Event.RoomID
			if _, ok := resp.State[id]; ok {
				continue
			}
			st, err := s.stateForReader(ctx, id, req.UserID)
			if err != nil {
				return err
			}
			resp.State[id] = sortedState(st)
		}
	}
	if len(req.GroupBy) > 0 {
		resp.Groups = map[string]map[string]*SearchGroup{}
		for _, by := range req.GroupBy {
			groups := map[string]*SearchGroup{}
			for _, r := range resp.Results {
				key := r.Event.RoomID
				if by == "sender" {
					key = string(r.Event.SenderID())
				}
				g := groups[key]
				if g == nil {
					// Groups are ordered by their best result.
					g = &SearchGroup{Results: []string{}, Order: len(groups) + 1}
					groups[key] = g
				}
				g.Results = append(g.Results, r.Event.EventID())
			}
			resp.Groups[by] = groups
		}
	}
	return nil
}

// searchContext reads the visible events around ev, and the profiles of
// their senders as of ev.
func (s *Service) searchContext(ctx context.Context, req SearchRequest, ev *Event) (*SearchContext, error) {
	c := &SearchContext{Before: []*Event{}, After: []*Event{}, Start: before(ev), End: after(ev)}
	if req.BeforeLimit > 0 {
		from := before(ev)
		m, err := s.Messages(ctx, MessagesRequest{RoomID: ev.RoomID, UserID: req.UserID, From: &from, Backwards: true, Limit: req.BeforeLimit})
		if err != nil {
			return nil, err
		}
		c.Before = m.Chunk
		if m.End != nil {
			c.Start = *m.End
		}
	}
	if req.AfterLimit > 0 {
		from := after(ev)
		m, err := s.Messages(ctx, MessagesRequest{RoomID: ev.RoomID, UserID: req.UserID, From: &from, Limit: req.AfterLimit})
		if err != nil {
			return nil, err
		}
		c.After = m.Chunk
		if m.End != nil {
			c.End = *m.End
		}
	}
	if !req.IncludeProfile {
		return c, nil
	}
	st, err := s.stateOfGroup(ctx, s.db, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	c.Profiles = map[string]SearchProfile{}
	var ids []string
	for _, e := range append(append([]*Event{ev}, c.Before...), c.After...) {
		if id, ok := st[tuple{spec.MRoomMember, string(e.SenderID())}]; ok {
			ids = append(ids, id)
		}
	}
	members, err := s.events(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		var p SearchProfile
		_ = json.Unmarshal(m.Content(), &p)
		if m.StateKey() != nil {
			c.Profiles[*m.StateKey()] = p
		}
	}
	return c, nil
}

// searchTerms splits a search term into words as FTS5's unicode61
// tokenizer does (letters, digits; case folded), so each can be quoted.
func searchTerms(term string) []string {
	words := strings.FieldsFunc(strings.ToLower(term), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
	seen := map[string]bool{}
	out := words[:0]
	for _, w := range words {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// highlightWords returns the words of text that a search term matched (as
// a prefix), for the response's highlights.
func highlightWords(text string, terms []string) []string {
	var out []string
	for _, w := range searchTerms(text) {
		for _, t := range terms {
			if strings.HasPrefix(w, t) {
				out = append(out, w)
				break
			}
		}
	}
	return out
}
