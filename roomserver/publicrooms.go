package roomserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// The published room directory: the rooms a server lists for anyone to
// find.
// https://spec.matrix.org/v1.19/client-server-api/#published-room-directory

// PublicRoom is a room's entry in the directory (PublishedRoomsChunk), and
// the base of a room summary.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3publicrooms
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRoomsRequest is what GET and POST /publicRooms ask for.
// PublicRoomsBody is the body of POST /publicRooms, the same on the
// client and federation APIs.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3publicrooms
type PublicRoomsBody struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// Request is the directory request the body asks for, for server.
func (b *PublicRoomsBody) Request(server string) PublicRoomsRequest {
	req := PublicRoomsRequest{Server: server, Since: b.Since, SearchTerm: b.Filter.GenericSearchTerm,
		RoomTypes: b.Filter.RoomTypes, ThirdPartyInstanceID: b.ThirdPartyInstanceID, IncludeAllNetworks: b.IncludeAllNetworks}
	if b.Limit != nil {
		req.Limit = *b.Limit
	}
	return req
}

type PublicRoomsRequest struct {
	// Server is the directory's server; "" or this server's name for ours.
	Server string
	// Limit caps the page; 0 asks for the server's maximum.
	Limit int
	// Since is a next_batch or prev_batch token of an earlier page.
	Since string
	// SearchTerm matches, ignoring case, part of the name, topic or
	// canonical alias.
	SearchTerm string
	// RoomTypes keeps rooms of these types; a nil entry stands for rooms
	// without a type. Empty keeps every room.
	RoomTypes []*string
	// ThirdPartyInstanceID asks for the rooms application services list
	// for one network instead of the server's directory: the instance_id
	// of a protocol instance ("{service id}|{network id}"), or a bare
	// network id for that network of every service.
	ThirdPartyInstanceID string
	// IncludeAllNetworks adds every network's rooms to the server's
	// directory.
	IncludeAllNetworks bool
}

// PublicRoomsResponse is a page of the directory.
type PublicRoomsResponse struct {
	Chunk                  []PublicRoom `json:"chunk"`
	NextBatch              string       `json:"next_batch,omitempty"`
	PrevBatch              string       `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int          `json:"total_room_count_estimate"`
}

// maxPublicRooms bounds a page, as Synapse does (MAX_PUBLIC_ROOMS_IN_RESPONSE):
// clients page with next_batch for more.
const maxPublicRooms = 100

// PublicRooms lists a page of the published rooms. Since v1.19 the order
// is the server's choice; we keep the order the spec used to require and
// still recommends: most joined members first, then by room ID, so that
// pages are stable.
//
// As in Synapse, a published room is listed only while someone is in it
// and it is open to the people who find it there: a join rule of public,
// knock or knock_restricted, or history anyone may read. An invite-only
// room left published by mistake does not show.
func (s *Service) PublicRooms(ctx context.Context, req PublicRoomsRequest) (*PublicRoomsResponse, error) {
	if err := s.checkDirectoryServer(req.Server); err != nil {
		return nil, err
	}
	if req.Limit < 0 {
		return nil, mxerr.InvalidParam("limit must not be negative")
	}
	limit := req.Limit
	if limit == 0 || limit > maxPublicRooms {
		limit = maxPublicRooms
	}
	var since *directoryToken
	if req.Since != "" {
		t, err := parseDirectoryToken(req.Since)
		if err != nil {
			return nil, err
		}
		since = &t
	}
	resp := &PublicRoomsResponse{Chunk: []PublicRoom{}}
	where, args := `r.published = 1`, []any{}
	switch {
	case req.ThirdPartyInstanceID != "":
		service, network, ok := strings.Cut(req.ThirdPartyInstanceID, "|")
		if !ok {
			service, network = "", req.ThirdPartyInstanceID
		}
		where = `r.room_id IN (SELECT l.room_id FROM appservice_room_lists l
			WHERE l.network_id = $1 AND ($2 = '' OR l.appservice_id = $2))`
		args = []any{network, service}
	case req.IncludeAllNetworks:
		where = `(r.published = 1 OR r.room_id IN (SELECT l.room_id FROM appservice_room_lists l))`
	}

	infos, err := s.roomInfos(ctx, where, args...)
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(req.SearchTerm)
	var rooms []PublicRoom
	for _, info := range infos {
		pr := info.publicRoom()
		switch pr.JoinRule {
		case spec.Public, "knock", "knock_restricted":
		default:
			if !pr.WorldReadable {
				continue
			}
		}
		if pr.NumJoinedMembers == 0 || !matchRoomType(req.RoomTypes, pr.RoomType) {
			continue
		}
		if term != "" && !strings.Contains(strings.ToLower(pr.Name), term) &&
			!strings.Contains(strings.ToLower(pr.Topic), term) &&
			!strings.Contains(strings.ToLower(pr.CanonicalAlias), term) {
			continue
		}
		rooms = append(rooms, pr)
	}
	sort.Slice(rooms, func(i, j int) bool { return keyOf(rooms[i]).before(keyOf(rooms[j])) })
	resp.TotalRoomCountEstimate = len(rooms)

	// The page is rooms[start:end]. A next_batch token continues after
	// the page's last room, a prev_batch token goes back from its first,
	// so both stay valid as rooms gain and lose members.
	start, end := 0, min(limit, len(rooms))
	if since != nil {
		// The first room after (or, backwards, not before) the token.
		i := sort.Search(len(rooms), func(i int) bool { return since.key.before(keyOf(rooms[i])) })
		if since.backwards {
			i = sort.Search(len(rooms), func(i int) bool { return !keyOf(rooms[i]).before(since.key) })
			start, end = max(0, i-limit), i
		} else {
			start, end = i, min(i+limit, len(rooms))
		}
	}
	resp.Chunk = append(resp.Chunk, rooms[start:end]...)
	if end < len(rooms) {
		k := directoryToken{}
		if end > start {
			k.key = keyOf(rooms[end-1])
		} else {
			k.key = since.key
		}
		resp.NextBatch = k.String()
	}
	if start > 0 {
		k := directoryToken{backwards: true}
		if end > start {
			k.key = keyOf(rooms[start])
		} else {
			k.key = since.key
		}
		resp.PrevBatch = k.String()
	}
	return resp, nil
}

// checkDirectoryServer accepts a directory request for this server. The
// client edge asks other servers' directories over federation when it is
// on; without it they are not found.
func (s *Service) checkDirectoryServer(server string) error {
	if server == "" || server == string(s.cfg.ServerName) {
		return nil
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return mxerr.InvalidParam("Invalid server name %q", server)
	}
	return mxerr.NotFound("Cannot list the rooms of %s: room directories of other servers need federation, which is not enabled on this server", server)
}

func matchRoomType(types []*string, roomType string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if (t == nil && roomType == "") || (t != nil && *t == roomType) {
			return true
		}
	}
	return false
}

// directoryKey is a room's place in the directory's order.
type directoryKey struct {
	members int
	roomID  string
}

func keyOf(pr PublicRoom) directoryKey { return directoryKey{pr.NumJoinedMembers, pr.RoomID} }

// before reports whether k comes before o: more members first, then by
// room ID.
func (k directoryKey) before(o directoryKey) bool {
	if k.members != o.members {
		return k.members > o.members
	}
	return k.roomID < o.roomID
}

// directoryToken is a pagination token: a place in the order and a
// direction. Its text form is opaque to clients: base64url of
// "f|b" + members + ":" + room ID.
type directoryToken struct {
	backwards bool
	key       directoryKey
}

func (t directoryToken) String() string {
	dir := "f"
	if t.backwards {
		dir = "b"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(dir + strconv.Itoa(t.key.members) + ":" + t.key.roomID))
}

func parseDirectoryToken(s string) (directoryToken, error) {
	bad := mxerr.InvalidParam("Invalid pagination token %q", s)
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) < 2 {
		return directoryToken{}, bad
	}
	var t directoryToken
	switch raw[0] {
	case 'f':
	case 'b':
		t.backwards = true
	default:
		return directoryToken{}, bad
	}
	n, roomID, ok := strings.Cut(string(raw[1:]), ":")
	members, err := strconv.Atoi(n)
	if !ok || err != nil || members < 0 {
		return directoryToken{}, bad
	}
	t.key = directoryKey{members, roomID}
	return t, nil
}

// roomInfo is what the directory and room summaries show of a room: its
// version, joined member count, and the few state events they read.
type roomInfo struct {
	roomID  string
	version string
	joined  int
	state   map[string]*Event // by type; state key ""
}

// directoryTypes are the state events roomInfo reads.
var directoryTypes = []string{
	spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, spec.MRoomTopic, spec.MRoomAvatar,
	spec.MRoomCanonicalAlias, spec.MRoomHistoryVisibility, spec.MRoomGuestAccess, spec.MRoomEncryption,
}

// roomInfos reads the roomInfo of the rooms r (the rooms table) matching
// where, without loading their whole state: big rooms have many members.
func (s *Service) roomInfos(ctx context.Context, where string, args ...any) (map[string]*roomInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT r.room_id, r.room_version,
		(SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join')
		FROM rooms r WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read rooms: %w", err)
	}
	infos := map[string]*roomInfo{}
	for rows.Next() {
		info := &roomInfo{state: map[string]*Event{}}
		if err := rows.Scan(&info.roomID, &info.version, &info.joined); err != nil {
			rows.Close()
			return nil, err
		}
		infos[info.roomID] = info
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if len(infos) == 0 {
		return infos, nil
	}
	// The types are constants of ours, so they can be literals.
	evs, err := s.queryEvents(ctx, `SELECT cs.event_id FROM current_state cs JOIN rooms r ON r.room_id = cs.room_id
		WHERE cs.state_key = '' AND cs.type IN ('`+strings.Join(directoryTypes, "','")+`') AND `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read directory state: %w", err)
	}
	for _, ev := range evs {
		if info := infos[ev.RoomID]; info != nil {
			info.state[ev.Type()] = ev
		}
	}
	return infos, nil
}

// contentString reads one string field of the content of the state event
// of type typ ("" if absent or not a string).
func (info *roomInfo) contentString(typ, field string) string {
	ev := info.state[typ]
	if ev == nil {
		return ""
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(ev.Content(), &c) != nil {
		return ""
	}
	var v string
	_ = json.Unmarshal(c[field], &v)
	return v
}

func (info *roomInfo) publicRoom() PublicRoom {
	pr := PublicRoom{
		RoomID:           info.roomID,
		NumJoinedMembers: info.joined,
		Name:             info.contentString(spec.MRoomName, "name"),
		Topic:            plainTopic(info.state[spec.MRoomTopic]),
		CanonicalAlias:   info.contentString(spec.MRoomCanonicalAlias, "alias"),
		AvatarURL:        info.contentString(spec.MRoomAvatar, "url"),
		JoinRule:         info.contentString(spec.MRoomJoinRules, "join_rule"),
		RoomType:         info.contentString(spec.MRoomCreate, "type"),
		GuestCanJoin:     info.contentString(spec.MRoomGuestAccess, "guest_access") == "can_join",
	}
	if ev := info.state[spec.MRoomHistoryVisibility]; ev != nil {
		pr.WorldReadable = historyVisibility(ev.Content()) == spec.WorldReadable
	}
	return pr
}

// plainTopic is the plain-text topic of an m.room.topic event: the
// text/plain representation in m.topic, or else the topic field, which is
// plain text.
// https://spec.matrix.org/v1.19/client-server-api/#mroomtopic
func plainTopic(ev *Event) string {
	if ev == nil {
		return ""
	}
	var c struct {
		Topic  string `json:"topic"`
		MTopic struct {
			Text []struct {
				MimeType string `json:"mimetype"`
				Body     string `json:"body"`
			} `json:"m.text"`
		} `json:"m.topic"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		// m.topic may have another shape in rooms made by other servers;
		// the topic field is still there.
		var t struct {
			Topic string `json:"topic"`
		}
		_ = json.Unmarshal(ev.Content(), &t)
		return t.Topic
	}
	for _, r := range c.MTopic.Text {
		// A representation without a mimetype is text/plain.
		if (r.MimeType == "" || r.MimeType == "text/plain") && r.Body != "" {
			return r.Body
		}
	}
	return c.Topic
}
