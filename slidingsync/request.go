package slidingsync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// The request, as MSC4186 defines it, in the forms the clients in use send
// (docs/sliding-sync.md): matrix-js-sdk and ruma still send ranges,
// required_state pairs and is_invite from before the MSC was merged.
// https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md

// Limits on what one request may ask for.
const (
	maxLists             = 100
	maxRanges            = 100
	maxTimelineLimit     = 1000
	maxRequiredState     = 100
	maxSubscriptions     = 1000
	maxToDeviceLimit     = 1000
	defaultToDeviceLimit = 100
	maxConnIDLength      = 64
	// MaxTimeout bounds a long-poll, as /sync's.
	MaxTimeout = 5 * time.Minute
)

// Request is one sliding sync request.
type Request struct {
	UserID, DeviceID string
	// Pos is the pos of the last response the client processed ("" on a
	// connection's first request).
	Pos     string
	Timeout time.Duration
	ConnID  string
	// Lists are the request's lists, by name.
	Lists map[string]*ListConfig
	// Subscribe adds (or changes) sticky room subscriptions; Unsubscribe
	// drops them.
	Subscribe   map[string]*RoomConfig
	Unsubscribe []string
	Extensions  Extensions
}

// RoomConfig is what to send of a room: its timeline's length and state.
type RoomConfig struct {
	TimelineLimit int           `json:"timeline_limit"`
	RequiredState RequiredState `json:"required_state"`
}

// RequiredState selects state events. Include and Exclude are patterns;
// Lazy asks for the member events the timeline needs (lazy members).
type RequiredState struct {
	Include []StatePattern `json:"include,omitempty"`
	Exclude []StatePattern `json:"exclude,omitempty"`
	Lazy    bool           `json:"lazy,omitempty"`
}

// StatePattern matches state events: an empty Type or StateKey with Any*
// set matches all; StateKey "$ME" is the syncing user.
type StatePattern struct {
	Type     string `json:"t,omitempty"`
	AnyType  bool   `json:"at,omitempty"`
	StateKey string `json:"k,omitempty"`
	AnyKey   bool   `json:"ak,omitempty"`
}

func (p StatePattern) matches(typ, key, userID string) bool {
	if !p.AnyType && p.Type != typ {
		return false
	}
	if p.AnyKey {
		return true
	}
	if p.StateKey == "$ME" {
		return key == userID
	}
	return p.StateKey == key
}

// wants reports whether the config asks for the state event (type, key).
func (rs *RequiredState) wants(typ, key, userID string) bool {
	in := false
	for _, p := range rs.Include {
		if p.matches(typ, key, userID) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, p := range rs.Exclude {
		if p.matches(typ, key, userID) {
			return false
		}
	}
	return true
}

// ListConfig is one list: a room config, the filters that pick its rooms
// and the ranges of the filtered, sorted rooms it covers.
type ListConfig struct {
	RoomConfig
	// Ranges are inclusive [start, end] pairs, sorted and disjoint; nil
	// covers the whole list.
	Ranges  [][2]int
	Filters *Filters
}

// inRange reports whether index i of the list is in its ranges.
func (l *ListConfig) inRange(i int) bool {
	if l.Ranges == nil {
		return true
	}
	for _, r := range l.Ranges {
		if i >= r[0] && i <= r[1] {
			return true
		}
	}
	return false
}

// Filters are a list's room filters; nil fields do not filter.
type Filters struct {
	IsDM         *bool     `json:"is_dm"`
	IsEncrypted  *bool     `json:"is_encrypted"`
	IsInvite     *bool     `json:"is_invite"`
	IsInvited    *bool     `json:"is_invited"`
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	Spaces       []string  `json:"spaces"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

// Extensions are the extensions a request turns on.
type Extensions struct {
	ToDevice    *ToDeviceConfig
	E2EE        bool
	AccountData *RoomsScope
	Receipts    *RoomsScope
	Typing      *RoomsScope
}

// ToDeviceConfig is the to_device extension's request.
type ToDeviceConfig struct {
	Since int64
	Limit int
}

// RoomsScope is the rooms a room-scoped extension reports on: those of the
// named lists' ranges and the named subscriptions ("*": all).
type RoomsScope struct {
	Lists, Rooms []string
}

// wire forms of the body.
type (
	wireBody struct {
		ConnID            *string                    `json:"conn_id"`
		Pos               *string                    `json:"pos"`
		Timeout           *int64                     `json:"timeout"`
		SetPresence       *string                    `json:"set_presence"`
		Lists             map[string]json.RawMessage `json:"lists"`
		RoomSubscriptions map[string]json.RawMessage `json:"room_subscriptions"`
		UnsubscribeRooms  []string                   `json:"unsubscribe_rooms"`
		Extensions        map[string]json.RawMessage `json:"extensions"`
	}
	wireRoomConfig struct {
		TimelineLimit *int64          `json:"timeline_limit"`
		RequiredState json.RawMessage `json:"required_state"`
	}
	wireList struct {
		wireRoomConfig
		Ranges  [][]int64       `json:"ranges"`
		Range   []int64         `json:"range"`
		Filters json.RawMessage `json:"filters"`
	}
	wireStateObject struct {
		Include     []wireStateElement `json:"include"`
		Exclude     []wireStateElement `json:"exclude"`
		LazyMembers bool               `json:"lazy_members"`
	}
	wireStateElement struct {
		Type     *string `json:"type"`
		StateKey *string `json:"state_key"`
	}
	wireExtension struct {
		Enabled *bool           `json:"enabled"`
		Lists   []string        `json:"lists"`
		Rooms   []string        `json:"rooms"`
		Since   json.RawMessage `json:"since"`
		Limit   *int64          `json:"limit"`
	}
)

var listName = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// Query is what the query string may carry (clients in use send pos,
// timeout and set_presence there).
type Query struct {
	Pos, Timeout, SetPresence *string
}

// ParseRequest reads and checks a request; nothing is looked up, so a bad
// request changes nothing. It returns the request and its set_presence.
func ParseRequest(userID, deviceID string, q Query, body []byte) (*Request, string, error) {
	var wb wireBody
	if len(bytes.TrimSpace(body)) > 0 {
		if !json.Valid(body) {
			return nil, "", mxerr.NotJSON("The request body is not JSON")
		}
		if err := json.Unmarshal(body, &wb); err != nil {
			return nil, "", mxerr.BadJSON("The request body is not a sliding sync request: %v", jsonErr(err))
		}
	}
	req := &Request{UserID: userID, DeviceID: deviceID}
	// The query wins over the body.
	if q.Pos != nil {
		req.Pos = *q.Pos
	} else if wb.Pos != nil {
		req.Pos = *wb.Pos
	}
	var timeoutMS int64
	switch {
	case q.Timeout != nil:
		if _, err := fmt.Sscan(*q.Timeout, &timeoutMS); err != nil || fmt.Sprint(timeoutMS) != *q.Timeout {
			return nil, "", mxerr.InvalidParam("timeout must be an integer of milliseconds")
		}
	case wb.Timeout != nil:
		timeoutMS = *wb.Timeout
	}
	if timeoutMS < 0 {
		return nil, "", mxerr.InvalidParam("timeout must not be negative")
	}
	req.Timeout = min(time.Duration(timeoutMS)*time.Millisecond, MaxTimeout)
	presence := ""
	if q.SetPresence != nil {
		presence = *q.SetPresence
	} else if wb.SetPresence != nil {
		presence = *wb.SetPresence
	}
	switch presence {
	case "", "online", "offline", "unavailable":
	default:
		return nil, "", mxerr.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if wb.ConnID != nil {
		if len(*wb.ConnID) > maxConnIDLength {
			return nil, "", mxerr.InvalidParam("conn_id is longer than %d characters", maxConnIDLength)
		}
		req.ConnID = *wb.ConnID
	}
	if len(wb.Lists) > maxLists {
		return nil, "", mxerr.InvalidParam("At most %d lists", maxLists)
	}
	req.Lists = make(map[string]*ListConfig, len(wb.Lists))
	for name, raw := range wb.Lists {
		if !listName.MatchString(name) {
			return nil, "", mxerr.InvalidParam("Invalid list name %q: 1-64 characters of A-Z a-z 0-9 . _ ~ -", name)
		}
		l, err := parseList(name, raw)
		if err != nil {
			return nil, "", err
		}
		req.Lists[name] = l
	}
	if len(wb.RoomSubscriptions) > maxSubscriptions {
		return nil, "", mxerr.InvalidParam("At most %d room subscriptions", maxSubscriptions)
	}
	req.Subscribe = make(map[string]*RoomConfig, len(wb.RoomSubscriptions))
	for roomID, raw := range wb.RoomSubscriptions {
		if _, err := spec.NewRoomID(roomID); err != nil {
			return nil, "", mxerr.InvalidParam("Invalid room ID %q in room_subscriptions", roomID)
		}
		var w wireRoomConfig
		if err := strictObject(raw, &w); err != nil {
			return nil, "", mxerr.BadJSON("room_subscriptions[%q] is not a room config: %v", roomID, err)
		}
		rc, err := parseRoomConfig(fmt.Sprintf("room_subscriptions[%q]", roomID), w)
		if err != nil {
			return nil, "", err
		}
		req.Subscribe[roomID] = rc
	}
	for _, roomID := range wb.UnsubscribeRooms {
		if _, err := spec.NewRoomID(roomID); err != nil {
			return nil, "", mxerr.InvalidParam("Invalid room ID %q in unsubscribe_rooms", roomID)
		}
	}
	req.Unsubscribe = wb.UnsubscribeRooms
	if err := parseExtensions(wb.Extensions, &req.Extensions); err != nil {
		return nil, "", err
	}
	return req, presence, nil
}

// strictObject decodes a JSON object into v, refusing anything else.
func strictObject(raw json.RawMessage, v any) error {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("not a JSON object")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return jsonErr(err)
	}
	return nil
}

func jsonErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s must be of type %s", te.Field, te.Type)
	}
	return err
}

func parseList(name string, raw json.RawMessage) (*ListConfig, error) {
	var w wireList
	if err := strictObject(raw, &w); err != nil {
		return nil, mxerr.BadJSON("lists[%q] is not a list config: %v", name, err)
	}
	rc, err := parseRoomConfig(fmt.Sprintf("lists[%q]", name), w.wireRoomConfig)
	if err != nil {
		return nil, err
	}
	l := &ListConfig{RoomConfig: *rc}
	ranges := w.Ranges
	if w.Range != nil {
		if w.Ranges != nil {
			return nil, mxerr.InvalidParam("lists[%q] has both range and ranges", name)
		}
		ranges = [][]int64{w.Range}
	}
	if ranges != nil {
		if len(ranges) > maxRanges {
			return nil, mxerr.InvalidParam("lists[%q] has more than %d ranges", name, maxRanges)
		}
		l.Ranges = make([][2]int, 0, len(ranges))
		for i, r := range ranges {
			if len(r) != 2 {
				return nil, mxerr.InvalidParam("lists[%q]: a range is a pair [start, end]", name)
			}
			if r[0] < 0 || r[1] < 0 || r[0] > r[1] {
				return nil, mxerr.InvalidParam("lists[%q]: range [%d, %d] must have 0 <= start <= end", name, r[0], r[1])
			}
			if i > 0 && r[0] <= int64(l.Ranges[i-1][1]) {
				return nil, mxerr.InvalidParam("lists[%q]: ranges must be in order and must not overlap", name)
			}
			const maxIndex = 1 << 30
			l.Ranges = append(l.Ranges, [2]int{int(min(r[0], maxIndex)), int(min(r[1], maxIndex))})
		}
	}
	if len(w.Filters) > 0 && string(bytes.TrimSpace(w.Filters)) != "null" {
		var f Filters
		if err := strictObject(w.Filters, &f); err != nil {
			return nil, mxerr.BadJSON("lists[%q].filters is not a filter: %v", name, err)
		}
		if f.IsInvite == nil {
			f.IsInvite = f.IsInvited
		}
		for _, s := range f.Spaces {
			if _, err := spec.NewRoomID(s); err != nil {
				return nil, mxerr.InvalidParam("lists[%q].filters.spaces: invalid room ID %q", name, s)
			}
		}
		l.Filters = &f
	}
	return l, nil
}

func parseRoomConfig(where string, w wireRoomConfig) (*RoomConfig, error) {
	rc := &RoomConfig{}
	if w.TimelineLimit == nil {
		return nil, mxerr.BadJSON("%s: timeline_limit is required", where)
	}
	if *w.TimelineLimit < 0 || *w.TimelineLimit > maxTimelineLimit {
		return nil, mxerr.InvalidParam("%s: timeline_limit must be between 0 and %d", where, maxTimelineLimit)
	}
	rc.TimelineLimit = int(*w.TimelineLimit)
	rs, err := parseRequiredState(where, w.RequiredState)
	if err != nil {
		return nil, err
	}
	rc.RequiredState = rs
	return rc, nil
}

// parseRequiredState reads required_state in either form: the pairs the
// clients in use send, or the merged MSC's {include, exclude,
// lazy_members}. An absent required_state asks for no state.
func parseRequiredState(where string, raw json.RawMessage) (RequiredState, error) {
	var rs RequiredState
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return rs, nil
	}
	bad := func(format string, a ...any) error {
		return mxerr.BadJSON("%s.required_state: %s", where, fmt.Sprintf(format, a...))
	}
	switch t[0] {
	case '[':
		var pairs [][]*string
		if err := json.Unmarshal(raw, &pairs); err != nil {
			return rs, bad("each entry must be a pair [type, state_key] of strings")
		}
		if len(pairs) > maxRequiredState {
			return rs, mxerr.InvalidParam("%s.required_state has more than %d entries", where, maxRequiredState)
		}
		for _, p := range pairs {
			if len(p) != 2 || p[0] == nil || p[1] == nil {
				return rs, bad("each entry must be a pair [type, state_key] of strings")
			}
			typ, key := *p[0], *p[1]
			if typ == spec.MRoomMember && key == "$LAZY" {
				rs.Lazy = true
				continue
			}
			rs.Include = append(rs.Include, StatePattern{Type: typ, AnyType: typ == "*", StateKey: key, AnyKey: key == "*"})
		}
	case '{':
		var o wireStateObject
		if err := json.Unmarshal(raw, &o); err != nil {
			return rs, bad("%v", jsonErr(err))
		}
		if len(o.Include)+len(o.Exclude) > maxRequiredState {
			return rs, mxerr.InvalidParam("%s.required_state has more than %d entries", where, maxRequiredState)
		}
		conv := func(es []wireStateElement) []StatePattern {
			out := make([]StatePattern, 0, len(es))
			for _, e := range es {
				p := StatePattern{AnyType: e.Type == nil, AnyKey: e.StateKey == nil}
				if e.Type != nil {
					p.Type = *e.Type
				}
				if e.StateKey != nil {
					p.StateKey = *e.StateKey
				}
				out = append(out, p)
			}
			return out
		}
		rs.Include, rs.Exclude, rs.Lazy = conv(o.Include), conv(o.Exclude), o.LazyMembers
	default:
		return rs, bad("must be a list of [type, state_key] pairs or an object")
	}
	return rs, nil
}

// knownExtensions are the extensions Tessera serves.
var knownExtensions = []string{"to_device", "e2ee", "account_data", "receipts", "typing"}

func parseExtensions(raw map[string]json.RawMessage, out *Extensions) error {
	for name, body := range raw {
		if !slices.Contains(knownExtensions, name) {
			if strings.Contains(name, ".") {
				continue // a namespaced (unstable) extension this server does not have
			}
			return mxerr.BadJSON("Unknown extension %q", name)
		}
		var w wireExtension
		if err := strictObject(body, &w); err != nil {
			return mxerr.BadJSON("extensions.%s is not an extension config: %v", name, err)
		}
		if w.Enabled == nil || !*w.Enabled {
			continue
		}
		scope := &RoomsScope{Lists: w.Lists, Rooms: w.Rooms}
		if scope.Lists == nil {
			scope.Lists = []string{"*"}
		}
		if scope.Rooms == nil {
			scope.Rooms = []string{"*"}
		}
		switch name {
		case "to_device":
			td := &ToDeviceConfig{Limit: defaultToDeviceLimit}
			if w.Limit != nil {
				if *w.Limit < 1 || *w.Limit > maxToDeviceLimit {
					return mxerr.InvalidParam("extensions.to_device.limit must be between 1 and %d", maxToDeviceLimit)
				}
				td.Limit = int(*w.Limit)
			}
			if s := bytes.TrimSpace(w.Since); len(s) > 0 && string(s) != "null" {
				var str string
				if err := json.Unmarshal(s, &str); err != nil {
					return mxerr.BadJSON("extensions.to_device.since must be a string")
				}
				if _, err := fmt.Sscan(str, &td.Since); err != nil || td.Since < 0 || fmt.Sprint(td.Since) != str {
					return mxerr.InvalidParam("Invalid extensions.to_device.since %q", str)
				}
			}
			out.ToDevice = td
		case "e2ee":
			out.E2EE = true
		case "account_data":
			out.AccountData = scope
		case "receipts":
			out.Receipts = scope
		case "typing":
			out.Typing = scope
		}
	}
	return nil
}

// roomRules is a room's combined config as the rules that matched it: the
// state it asks for is what any of them asks for.
type roomRules struct {
	TimelineLimit int             `json:"limit"`
	States        []RequiredState `json:"state,omitempty"`
}

func (r *roomRules) add(c *RoomConfig) {
	r.TimelineLimit = max(r.TimelineLimit, c.TimelineLimit)
	for _, s := range r.States {
		if sameState(s, c.RequiredState) {
			return
		}
	}
	r.States = append(r.States, c.RequiredState)
	sort.SliceStable(r.States, func(i, j int) bool { return stateKeyOf(r.States[i]) < stateKeyOf(r.States[j]) })
}

func (r *roomRules) wants(typ, key, userID string) bool {
	for i := range r.States {
		if r.States[i].wants(typ, key, userID) {
			return true
		}
	}
	return false
}

func (r *roomRules) lazy() bool {
	for _, s := range r.States {
		if s.Lazy {
			return true
		}
	}
	return false
}

func sameState(a, b RequiredState) bool { return stateKeyOf(a) == stateKeyOf(b) }

func stateKeyOf(s RequiredState) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func tooManySubscriptions() error {
	return mxerr.InvalidParam("At most %d room subscriptions per connection", maxSubscriptions)
}
