package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// What the server admin API (package admin) reads and does to rooms,
// whatever the admin's own membership: listings of every room, the current
// state without history visibility, and purging a room from the database.

// AdminRoom is a room as Synapse's room admin API describes it.
// https://element-hq.github.io/synapse/latest/admin_api/rooms.html
type AdminRoom struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	Topic              *string `json:"topic"`
	Avatar             *string `json:"avatar"`
	CanonicalAlias     *string `json:"canonical_alias"`
	JoinedMembers      int     `json:"joined_members"`
	JoinedLocalMembers int     `json:"joined_local_members"`
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Encryption         *string `json:"encryption"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	GuestAccess        *string `json:"guest_access"`
	HistoryVisibility  *string `json:"history_visibility"`
	StateEvents        int     `json:"state_events"`
	RoomType           *string `json:"room_type"`
}

// adminStateFields are the state events (state key "") an AdminRoom is
// read from, and the content field of each.
var adminStateFields = map[string]string{
	spec.MRoomName: "name", spec.MRoomTopic: "topic", "m.room.avatar": "url",
	spec.MRoomCanonicalAlias: "alias", "m.room.encryption": "algorithm", spec.MRoomJoinRules: "join_rule",
	spec.MRoomGuestAccess: "guest_access", spec.MRoomHistoryVisibility: "history_visibility",
}

// AdminRooms describes every room this server holds the state of, or only
// roomID's when it is not "" (then M_NOT_FOUND if unknown). The listing is
// built in memory from a few grouped queries: an admin page is rare, and
// this keeps the SQL portable (no JSON functions).
func (s *Service) AdminRooms(ctx context.Context, roomID string) ([]*AdminRoom, error) {
	cond, args := "", []any{}
	if roomID != "" {
		cond, args = " WHERE room_id = $1", []any{roomID}
	}
	rooms := map[string]*AdminRoom{}
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, room_version, published FROM rooms`+cond, args...)
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	for rows.Next() {
		r := &AdminRoom{Federatable: true}
		if err := rows.Scan(&r.RoomID, &r.Version, &r.Public); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read room: %w", err)
		}
		rooms[r.RoomID] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	if roomID != "" && len(rooms) == 0 {
		return nil, mxerr.NotFound("Room not found")
	}
	scoped := func(q string) string {
		if roomID == "" {
			return q
		}
		return strings.Replace(q, "WHERE ", "WHERE c.room_id = $1 AND ", 1)
	}
	rows, err = s.db.QueryContext(ctx, scoped(`SELECT c.room_id, c.type, e.sender, e.json FROM current_state c
		JOIN events e ON e.event_id = c.event_id WHERE c.state_key = ''`), args...)
	if err != nil {
		return nil, fmt.Errorf("room state: %w", err)
	}
	for rows.Next() {
		var id, typ, sender, js string
		if err := rows.Scan(&id, &typ, &sender, &js); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read room state: %w", err)
		}
		r := rooms[id]
		if r == nil {
			continue
		}
		var ev struct {
			Content map[string]any `json:"content"`
		}
		if json.Unmarshal([]byte(js), &ev) != nil {
			continue
		}
		if typ == spec.MRoomCreate {
			r.Creator = sender
			if c, ok := ev.Content["creator"].(string); ok {
				r.Creator = c // before room version 11
			}
			if f, ok := ev.Content["m.federate"].(bool); ok {
				r.Federatable = f
			}
			if t, ok := ev.Content["type"].(string); ok {
				r.RoomType = &t
			}
			continue
		}
		field, ok := adminStateFields[typ]
		if !ok {
			continue
		}
		if v, ok := ev.Content[field].(string); ok {
			adminRoomField(r, typ, &v)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("room state: %w", err)
	}
	counts := []struct {
		query string
		set   func(*AdminRoom, int)
	}{
		{`SELECT c.room_id, COUNT(*) FROM current_state c WHERE 1 = 1 GROUP BY c.room_id`,
			func(r *AdminRoom, n int) { r.StateEvents = n }},
		{`SELECT c.room_id, COUNT(*) FROM memberships c WHERE c.membership = 'join' GROUP BY c.room_id`,
			func(r *AdminRoom, n int) { r.JoinedMembers = n }},
		{`SELECT c.room_id, COUNT(*) FROM memberships c WHERE c.membership = 'join' AND c.user_id LIKE '%:' || ` +
			fmt.Sprintf("$%d", len(args)+1) + ` GROUP BY c.room_id`,
			func(r *AdminRoom, n int) { r.JoinedLocalMembers = n }},
	}
	for i, c := range counts {
		a := args
		if i == 2 {
			a = append(append([]any{}, args...), string(s.cfg.ServerName))
		}
		if err := s.adminCount(ctx, scoped(c.query), a, rooms, c.set); err != nil {
			return nil, err
		}
	}
	out := make([]*AdminRoom, 0, len(rooms))
	for _, r := range rooms {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RoomID < out[j].RoomID })
	return out, nil
}

func adminRoomField(r *AdminRoom, typ string, v *string) {
	switch typ {
	case spec.MRoomName:
		r.Name = v
	case spec.MRoomTopic:
		r.Topic = v
	case "m.room.avatar":
		r.Avatar = v
	case spec.MRoomCanonicalAlias:
		r.CanonicalAlias = v
	case "m.room.encryption":
		r.Encryption = v
	case spec.MRoomJoinRules:
		r.JoinRules = v
	case spec.MRoomGuestAccess:
		r.GuestAccess = v
	case spec.MRoomHistoryVisibility:
		r.HistoryVisibility = v
	}
}

func (s *Service) adminCount(ctx context.Context, query string, args []any, rooms map[string]*AdminRoom, set func(*AdminRoom, int)) error {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("room counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return fmt.Errorf("read room counts: %w", err)
		}
		if r := rooms[id]; r != nil {
			set(r, n)
		}
	}
	return rows.Err()
}

// AdminState is a room's current state, whoever asks.
func (s *Service) AdminState(ctx context.Context, roomID string) ([]*Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM current_state c
		JOIN events e ON e.event_id = c.event_id JOIN rooms r ON r.room_id = e.room_id
		WHERE c.room_id = $1 ORDER BY c.type, c.state_key`, roomID)
	if err != nil {
		return nil, fmt.Errorf("room state: %w", err)
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("read state event: %w", err)
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

// RoomMembers lists the users with the given membership in a room.
func (s *Service) RoomMembers(ctx context.Context, roomID, membership string) ([]string, error) {
	return database.Strings(ctx, s.db, `SELECT user_id FROM memberships WHERE room_id = $1 AND membership = $2
		ORDER BY user_id`, roomID, membership)
}

// ExtremityInfo describes one forward extremity of a room.
type ExtremityInfo struct {
	EventID    string `json:"event_id"`
	StateGroup int64  `json:"state_group"`
	Depth      int64  `json:"depth"`
	ReceivedTS int64  `json:"received_ts"`
}

// ForwardExtremities lists a room's forward extremities.
func (s *Service) ForwardExtremities(ctx context.Context, roomID string) ([]ExtremityInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT f.event_id, e.state_group, e.depth, e.origin_ts
		FROM forward_extremities f JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1
		ORDER BY e.depth, e.stream_pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("forward extremities: %w", err)
	}
	defer rows.Close()
	out := []ExtremityInfo{}
	for rows.Next() {
		var x ExtremityInfo
		if err := rows.Scan(&x.EventID, &x.StateGroup, &x.Depth, &x.ReceivedTS); err != nil {
			return nil, fmt.Errorf("read forward extremity: %w", err)
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// DeleteForwardExtremities deletes all but the most recent of a room's
// forward extremities, as Synapse's admin API does to mend a room that
// has gathered too many (each new event would reference them all); the
// room's next event is built on the one left. It returns how many went.
func (s *Service) DeleteForwardExtremities(ctx context.Context, roomID string) (int64, error) {
	var n int64
	req := &buildReq{ctx: ctx, resp: make(chan buildResult, 1), exclusive: func(ctx context.Context) error {
		res, err := s.db.ExecContext(ctx, `DELETE FROM forward_extremities WHERE room_id = $1 AND event_id <> (
			SELECT f.event_id FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
			WHERE f.room_id = $1 ORDER BY e.stream_pos DESC LIMIT 1)`, roomID)
		if err != nil {
			return fmt.Errorf("delete forward extremities of %s: %w", roomID, err)
		}
		n, err = res.RowsAffected()
		return err
	}}
	_, err := s.enqueue(ctx, roomID, req)
	return n, err
}

// MediaURIs lists the mxc:// URIs a room's events refer to, as Synapse's
// admin API finds them: each event's content.url and
// content.info.thumbnail_url, once each, newest event first.
func (s *Service) MediaURIs(ctx context.Context, roomID string) ([]string, error) {
	// LIKE skips the events that cannot hold one without decoding them.
	rows, err := s.db.QueryContext(ctx, `SELECT json FROM events WHERE room_id = $1 AND stream_pos > 0
		AND json LIKE '%mxc://%' ORDER BY stream_pos DESC`, roomID)
	if err != nil {
		return nil, fmt.Errorf("media of room %s: %w", roomID, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	out := []string{}
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("read event of room %s: %w", roomID, err)
		}
		var ev struct {
			Content struct {
				URL  any `json:"url"`
				Info struct {
					ThumbnailURL any `json:"thumbnail_url"`
				} `json:"info"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) != nil {
			continue
		}
		for _, v := range []any{ev.Content.URL, ev.Content.Info.ThumbnailURL} {
			if u, ok := v.(string); ok && strings.HasPrefix(u, "mxc://") && !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	return out, rows.Err()
}

// RoomPosition is a room and the stream position of its latest event.
type RoomPosition struct {
	RoomID    string `json:"room_id"`
	StreamPos int64  `json:"stream_ordering"`
}

// RoomsWithServer lists the rooms where a server has a joined member (the
// rooms this server sends it events of), ordered by room ID, each with the
// stream position of its latest event.
func (s *Service) RoomsWithServer(ctx context.Context, server spec.ServerName) ([]RoomPosition, error) {
	// LIKE narrows the scan; the exact domain is checked below, as LIKE
	// ignores case and treats _ as a wildcard.
	rows, err := s.db.QueryContext(ctx, `SELECT m.room_id, m.user_id,
			(SELECT MAX(e.stream_pos) FROM events e WHERE e.room_id = m.room_id)
		FROM memberships m WHERE m.membership = 'join' AND m.user_id LIKE $1 ORDER BY m.room_id`, "%:"+string(server))
	if err != nil {
		return nil, fmt.Errorf("rooms with %s: %w", server, err)
	}
	defer rows.Close()
	out := []RoomPosition{}
	for rows.Next() {
		var rp RoomPosition
		var userID string
		var pos sql.NullInt64
		if err := rows.Scan(&rp.RoomID, &userID, &pos); err != nil {
			return nil, fmt.Errorf("read room with %s: %w", server, err)
		}
		u, err := spec.NewUserID(userID, true)
		if err != nil || u.Domain() != server || (len(out) > 0 && out[len(out)-1].RoomID == rp.RoomID) {
			continue
		}
		rp.StreamPos = pos.Int64
		out = append(out, rp)
	}
	return out, rows.Err()
}

// AliasesOf lists a room's local aliases.
func (s *Service) AliasesOf(ctx context.Context, roomID string) ([]string, error) {
	return database.Strings(ctx, s.db, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
}

// MoveAliases points a room's local aliases at another room, as a room
// shutdown does when it makes a replacement room.
func (s *Service) MoveAliases(ctx context.Context, from, to string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, to, from); err != nil {
		return fmt.Errorf("move aliases: %w", err)
	}
	return nil
}

// purgeRoomTables are the room server's tables with a room_id column, all
// of whose rows for a purged room go. Events' dependents (edges, the search
// index) are deleted first, by the room's events.
var purgeRoomTables = []string{
	"event_relations", "threads", "pending_redactions", "rejected_events", "forward_extremities",
	"current_state", "memberships", "room_aliases", "appservice_room_lists", "reports", "room_purges",
}

// PurgeRoom deletes everything the room server holds of a room: events,
// state, memberships, aliases, reports, the room itself. It refuses while a
// local user is joined, unless force. Afterwards the room is unknown here;
// a sequencer that held it loads nothing and answers M_NOT_FOUND.
func (s *Service) PurgeRoom(ctx context.Context, roomID string, force bool) error {
	if !force {
		if err := s.CheckPurgeRoom(ctx, roomID); err != nil {
			return err
		}
	}
	var eventIDs []string
	err := s.db.WithTx(ctx, func(tx *database.Tx) error {
		var err error
		if eventIDs, err = database.Strings(ctx, tx, `SELECT event_id FROM events WHERE room_id = $1`, roomID); err != nil {
			return fmt.Errorf("purge %s: %w", roomID, err)
		}
		steps := []string{
			`DELETE FROM event_search WHERE rowid IN (SELECT stream_pos FROM events WHERE room_id = $1)`,
			`DELETE FROM event_edges WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)`,
			`DELETE FROM backfilled_events WHERE event_id IN (SELECT event_id FROM events WHERE room_id = $1)`,
			`DELETE FROM state_group_entries WHERE group_id IN (SELECT group_id FROM state_groups WHERE room_id = $1)`,
			`DELETE FROM state_groups WHERE room_id = $1`,
			`DELETE FROM events WHERE room_id = $1`,
		}
		for _, t := range purgeRoomTables {
			steps = append(steps, `DELETE FROM `+t+` WHERE room_id = $1`)
		}
		steps = append(steps, `DELETE FROM rooms WHERE room_id = $1`)
		for _, q := range steps {
			if _, err := tx.ExecContext(ctx, q, roomID); err != nil {
				return fmt.Errorf("purge %s: %w", roomID, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// What memory holds of the room goes too.
	for _, id := range eventIDs {
		s.cache.forget(id)
	}
	s.facts.mu.Lock()
	delete(s.facts.rooms, roomID)
	s.facts.mu.Unlock()
	s.versions.Delete(roomID)
	s.memberships.Invalidate()
	s.membership.Invalidate()
	s.resetRoom(roomID)
	return nil
}

// CheckPurgeRoom refuses (400 M_UNKNOWN) to purge a room a local user is
// still joined to.
func (s *Service) CheckPurgeRoom(ctx context.Context, roomID string) error {
	joined, err := s.RoomMembers(ctx, roomID, "join")
	if err != nil {
		return err
	}
	for _, u := range joined {
		if s.isLocal(u) {
			return mxerr.Unknown(400, "Users are still joined to this room")
		}
	}
	return nil
}

// JoinGuard may refuse a local user's join to a room, such as one an admin
// blocked; nil allows it.
type JoinGuard func(ctx context.Context, roomID, userID string) error

// SetJoinGuard installs g; call it once, before serving requests.
func (s *Service) SetJoinGuard(g JoinGuard) { s.joinGuard = g }

// AdminPowerLevels returns a room's power levels as the auth rules apply
// them (creators of v12 rooms at their unbounded level) and the current
// m.room.power_levels content ({} if there is none).
func (s *Service) AdminPowerLevels(ctx context.Context, roomID string) (*gomatrixserverlib.PowerLevelContent, json.RawMessage, error) {
	rs, err := s.loadRoomState(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	if rs == nil {
		return nil, nil, mxerr.NotFound("Room not found")
	}
	pl, err := powerLevels(rs)
	if err != nil {
		return nil, nil, fmt.Errorf("power levels of %s: %w", roomID, err)
	}
	content := json.RawMessage(`{}`)
	if ev := rs.get(spec.MRoomPowerLevels, ""); ev != nil {
		content = ev.Content()
	}
	return pl, content, nil
}

// ReportDetails is one report with the reported event, for the admins.
type ReportDetails struct {
	Report
	// Event is the reported event as stored (nil for a room report, or
	// if the event is gone).
	Event *Event
}

// ReportByID returns one report; M_NOT_FOUND if there is none.
func (s *Service) ReportByID(ctx context.Context, id int64) (*ReportDetails, error) {
	var d ReportDetails
	var eventID, reason sql.NullString
	var score sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT id, room_id, event_id, reporter, reason, score, received_ts
		FROM reports WHERE id = $1`, id).Scan(&d.ID, &d.RoomID, &eventID, &d.Reporter, &reason, &score, &d.ReceivedTS)
	if isNoRows(err) {
		return nil, mxerr.NotFound("Event report not found")
	}
	if err != nil {
		return nil, fmt.Errorf("report %d: %w", id, err)
	}
	d.EventID = eventID.String
	if reason.Valid {
		d.Reason = &reason.String
	}
	if score.Valid {
		d.Score = &score.Int64
	}
	if d.EventID != "" {
		if ev, err := s.event(ctx, d.EventID); err == nil {
			d.Event = ev
		}
	}
	return &d, nil
}

// DeleteReport deletes one report; M_NOT_FOUND if there is none.
func (s *Service) DeleteReport(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM reports WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete report %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerr.NotFound("Event report not found")
	}
	return nil
}

// RoomSize is a room's estimated share of the database.
type RoomSize struct {
	RoomID        string `json:"room_id"`
	EstimatedSize int64  `json:"estimated_size"`
}

// RoomSizes estimates each room's size in the database, largest first:
// the bytes of its events' JSON and of its state snapshots' entries. It
// leaves out indexes and page overhead, which SQLite does not report per
// row without its dbstat extension.
func (s *Service) RoomSizes(ctx context.Context, limit int) ([]RoomSize, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT room_id, SUM(n) AS size FROM (
		SELECT room_id, SUM(LENGTH(json) + COALESCE(LENGTH(unsigned), 0) + LENGTH(event_id) + 64) AS n FROM events GROUP BY room_id
		UNION ALL
		SELECT g.room_id, SUM(LENGTH(e.type) + LENGTH(e.state_key) + LENGTH(e.event_id) + 16) AS n
			FROM state_group_entries e JOIN state_groups g ON g.group_id = e.group_id GROUP BY g.room_id
	) t GROUP BY room_id ORDER BY size DESC, room_id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("room sizes: %w", err)
	}
	defer rows.Close()
	out := []RoomSize{}
	for rows.Next() {
		var r RoomSize
		if err := rows.Scan(&r.RoomID, &r.EstimatedSize); err != nil {
			return nil, fmt.Errorf("read room size: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
