package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/internal/database"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// Token is a sync token: a position in each stream, in the order of
// streamNames. Positions are persistent, so a token from before a restart
// still works after it. Streams added later go at the end: an older token
// lacks their positions and reads them as 0, which means "everything".
type Token []int64

// streamNames lists the streams in token order; events comes first.
var streamNames = []string{"events", "account_data", "receipts", "typing", "presence", "to_device", "device_lists"}

// deviceListsIndex is the device_lists stream's place in a token.
var deviceListsIndex = slices.Index(streamNames, "device_lists")

func (t Token) String() string {
	var b strings.Builder
	b.WriteByte('s')
	for i := range streamNames {
		if i > 0 {
			b.WriteByte('_')
		}
		b.WriteString(strconv.FormatInt(t.pos(i), 10))
	}
	return b.String()
}

func (t Token) pos(i int) int64 {
	if i < len(t) {
		return t[i]
	}
	return 0
}

// ParseToken reads a since token.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return nil, mxerr.InvalidParam("Invalid since token %q", s)
	}
	parts := strings.Split(rest, "_")
	t := make(Token, len(streamNames))
	for i, p := range parts {
		if i >= len(t) {
			break // positions of streams this server does not have
		}
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return nil, mxerr.InvalidParam("Invalid since token %q", s)
		}
		t[i] = v
	}
	return t, nil
}

// Service computes sync responses.
type Service struct {
	rooms    *roomserver.Service
	users    *users.Service
	notifier *Notifier
	// unreadCounter gives unread_notifications (nil: none).
	unreadCounter UnreadCounter
	// pushRules writes m.push_rules before an initial sync (nil: never).
	pushRules PushRulesAccountData
	// keys is the E2EE key store, for device_lists (nil: none).
	keys KeyStore
	// streams are the streams after events, in token order.
	streams  []stream
	lazy     *lazyMembers
	stop     chan struct{}
	stopOnce sync.Once
}

// New runs the sync domain's migrations, builds the sync service on the
// room server and subscribes its notifier to committed events.
func New(ctx context.Context, db *database.DB, rooms *roomserver.Service, us *users.Service, notifier *Notifier) (*Service, error) {
	if err := db.Migrate(ctx, "syncapi", migrations); err != nil {
		return nil, err
	}
	toDevice, err := newToDeviceStream(ctx, db, us, notifier)
	if err != nil {
		return nil, err
	}
	rooms.SubscribeAll(notifier.OnEvents)
	s := &Service{rooms: rooms, users: us, notifier: notifier, stop: make(chan struct{}), lazy: newLazyMembers()}
	// In the order of streamNames after "events".
	s.streams = []stream{accountDataStream{us}, receiptStream{us}, newTypingStream(notifier),
		newPresenceStream(us, rooms, notifier), toDevice, deviceListStream{s}}
	return s, nil
}

// Stop ends every waiting long-poll (each answers with what it has), so
// that a graceful shutdown does not wait out their timeouts.
func (s *Service) Stop() { s.stopOnce.Do(func() { close(s.stop) }) }

// Request is one /sync call.
type Request struct {
	UserID, DeviceID string
	Since            *Token
	Timeout          time.Duration
	FullState        bool
	Filter           *users.Filter
	// StateAfter asks for the state at the end of each timeline in place
	// of the state at its start (use_state_after, MSC4222), under these
	// names: "state_after", "org.matrix.msc4222.state_after" or both, as
	// the request named the parameter. Empty: the classic state section.
	// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
	StateAfter []string
}

// StateAfterStable and StateAfterUnstable are the names of the state_after
// section.
const (
	StateAfterStable   = "state_after"
	StateAfterUnstable = "org.matrix.msc4222.state_after"
)

// Response is the spec's /sync response.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
type Response struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       Rooms          `json:"rooms"`
	AccountData EventList      `json:"account_data"`
	Presence    EventList      `json:"presence"`
	ToDevice    EventList      `json:"to_device"`
	DeviceLists DeviceLists    `json:"device_lists"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count"`
	// FallbackKeyTypes is always present: a client reads its absence as
	// a server without fallback keys.
	FallbackKeyTypes []string `json:"device_unused_fallback_key_types"`

	// lazySent lists the member events sent to a lazy-loading client, to
	// remember once the response is final.
	lazySent []lazySent
}

type EventList struct {
	Events []any `json:"events"`
}

type DeviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join"`
	Invite map[string]*InvitedRoom `json:"invite"`
	Leave  map[string]*LeftRoom    `json:"leave"`
	Knock  map[string]*KnockedRoom `json:"knock"`
}

// Timeline is a room's timeline section. The events are kept in the
// client format, which the other streams read; format (the filter's
// event_format and event_fields) is applied when it is written out.
type Timeline struct {
	Events    []roomserver.ClientEvent `json:"events"`
	Limited   bool                     `json:"limited"`
	PrevBatch string                   `json:"prev_batch,omitempty"`

	raw    []*roomserver.Event // the stored events behind Events
	format *eventFormat
}

func (t Timeline) MarshalJSON() ([]byte, error) {
	type plain Timeline // without the method
	if t.format == nil {
		return json.Marshal(plain(t))
	}
	return json.Marshal(struct {
		Events    []any  `json:"events"`
		Limited   bool   `json:"limited"`
		PrevBatch string `json:"prev_batch,omitempty"`
	}{t.format.events(t.Events, t.raw), t.Limited, t.PrevBatch})
}

// StateList is a room's state (or state_after) section.
type StateList struct {
	Events []roomserver.ClientEvent `json:"events"`

	raw    []*roomserver.Event
	format *eventFormat
}

func (l StateList) MarshalJSON() ([]byte, error) {
	type plain StateList
	if l.format == nil {
		return json.Marshal(plain(l))
	}
	return json.Marshal(struct {
		Events []any `json:"events"`
	}{l.format.events(l.Events, l.raw)})
}

// JoinedRoom is a joined room's entry. State holds the state section, or
// the state_after section when the request asked for it (it is written
// out under stateNames).
type JoinedRoom struct {
	Timeline            Timeline       `json:"timeline"`
	State               StateList      `json:"state"`
	Ephemeral           EventList      `json:"ephemeral"`
	AccountData         EventList      `json:"account_data"`
	Summary             map[string]any `json:"summary"`
	UnreadNotifications map[string]int `json:"unread_notifications"`
	// UnreadThreadNotifications: per-thread counts, when the filter asks
	// for them and some thread has any.
	UnreadThreadNotifications map[string]map[string]int `json:"unread_thread_notifications,omitempty"`

	stateNames []string // nil: "state"
}

func (jr JoinedRoom) MarshalJSON() ([]byte, error) {
	type plain JoinedRoom
	if len(jr.stateNames) == 0 {
		return json.Marshal(plain(jr))
	}
	m := map[string]any{
		"timeline": jr.Timeline, "ephemeral": jr.Ephemeral, "account_data": jr.AccountData,
		"summary": jr.Summary, "unread_notifications": jr.UnreadNotifications,
	}
	if jr.UnreadThreadNotifications != nil {
		m["unread_thread_notifications"] = jr.UnreadThreadNotifications
	}
	for _, name := range jr.stateNames {
		m[name] = jr.State
	}
	return json.Marshal(m)
}

func emptyJoinedRoom() *JoinedRoom {
	return &JoinedRoom{
		Timeline:            Timeline{Events: []roomserver.ClientEvent{}},
		State:               StateList{Events: []roomserver.ClientEvent{}},
		Ephemeral:           EventList{Events: []any{}},
		AccountData:         EventList{Events: []any{}},
		Summary:             map[string]any{},
		UnreadNotifications: map[string]int{},
	}
}

type InvitedRoom struct {
	InviteState struct {
		Events []StrippedEvent `json:"events"`
	} `json:"invite_state"`
}

type KnockedRoom struct {
	KnockState struct {
		Events []StrippedEvent `json:"events"`
	} `json:"knock_state"`
}

// LeftRoom is the entry of a room the user has left or was banned from:
// its events up to the leave.
type LeftRoom struct {
	Timeline    Timeline  `json:"timeline"`
	State       StateList `json:"state"`
	AccountData EventList `json:"account_data"`

	stateNames []string // nil: "state"
}

func (lr LeftRoom) MarshalJSON() ([]byte, error) {
	type plain LeftRoom
	if len(lr.stateNames) == 0 {
		return json.Marshal(plain(lr))
	}
	m := map[string]any{"timeline": lr.Timeline, "account_data": lr.AccountData}
	for _, name := range lr.stateNames {
		m[name] = lr.State
	}
	return json.Marshal(m)
}

// StrippedEvent is the stripped state format for invites and knocks.
// https://spec.matrix.org/v1.19/client-server-api/#stripped-state
type StrippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// inviteState is what an invited or knocking user is shown of a room, and
// their own membership event. For a room known only from another server's
// invite, the stripped state is what that server sent.
func (s *Service) inviteState(ctx context.Context, m roomserver.MembershipChange, userID string) ([]StrippedEvent, *roomserver.Event, error) {
	raw, invite, ok, err := s.rooms.RemoteInviteState(ctx, m.RoomID, m.StreamPos)
	if err != nil {
		return nil, nil, err
	}
	if ok {
		events := make([]StrippedEvent, 0, len(raw)+1)
		for _, r := range raw {
			var se StrippedEvent
			if json.Unmarshal(r, &se) == nil && se.Type != "" {
				events = append(events, se)
			}
		}
		if invite != nil {
			events = append(events, stripped(invite))
		}
		return events, invite, nil
	}
	st, err := s.rooms.StrippedState(ctx, m.RoomID, m.StreamPos)
	if err != nil {
		return nil, nil, err
	}
	own, err := s.rooms.StateAt(ctx, m.RoomID, m.StreamPos)
	if err != nil {
		return nil, nil, err
	}
	events := make([]StrippedEvent, 0, len(st)+1)
	for _, ev := range st {
		events = append(events, stripped(ev))
	}
	mine := own[roomserver.StateKey{Type: spec.MRoomMember, StateKey: userID}]
	if mine != nil {
		events = append(events, stripped(mine))
	}
	return events, mine, nil
}

func stripped(ev *roomserver.Event) StrippedEvent {
	sk := ""
	if ev.StateKey() != nil {
		sk = *ev.StateKey()
	}
	return StrippedEvent{Content: ev.Content(), Sender: string(ev.SenderID()), StateKey: sk, Type: ev.Type()}
}

// defaultTimelineLimit is the spec's suggested default.
const defaultTimelineLimit = 10

// Sync answers a /sync request: at once if anything changed since the
// token (or for an initial sync), else when something does or the timeout
// ends.
func (s *Service) Sync(ctx context.Context, req Request) (*Response, error) {
	if req.Since == nil {
		if err := s.ensurePushRules(ctx, req.UserID); err != nil {
			return nil, fmt.Errorf("push rules account data: %w", err)
		}
	}
	f := newFilter(req.Filter)
	lazy := f.lazyMembers && req.DeviceID != ""
	if lazy {
		var since *int64
		if req.Since != nil {
			p := req.Since.pos(0)
			since = &p
		}
		s.lazy.begin(req.UserID, req.DeviceID, since)
	}
	var deadline <-chan time.Time
	if req.Since != nil && req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	done := func(resp *Response) (*Response, error) {
		if lazy {
			if tok, err := ParseToken(resp.NextBatch); err == nil {
				s.lazy.sent(req.UserID, req.DeviceID, tok.pos(0), resp.lazySent)
			}
		}
		return resp, nil
	}
	for {
		changed := s.notifier.Changed(req.UserID)
		resp, news, err := s.compute(ctx, req, f)
		if err != nil {
			return nil, err
		}
		if news || req.Since == nil || req.Timeout <= 0 || req.FullState {
			return done(resp)
		}
		select {
		case <-changed:
		case <-deadline:
			return done(resp)
		case <-ctx.Done():
			return done(resp)
		case <-s.stop:
			return done(resp)
		}
	}
}

// compute builds the response for the changes between the since token and
// now, and reports whether there were any.
func (s *Service) compute(ctx context.Context, req Request, f *filter) (*Response, bool, error) {
	nowTok := make(Token, len(streamNames))
	nowTok[0] = s.rooms.CurrentPos()
	for i, st := range s.streams {
		p, err := st.current(ctx)
		if err != nil {
			return nil, false, err
		}
		nowTok[i+1] = p
	}
	initial := req.Since == nil
	if !initial {
		for i, st := range s.streams {
			c, ok := st.(catchUpper)
			if !ok || req.Since.pos(i+1) <= nowTok[i+1] {
				continue
			}
			if err := c.catchUp(ctx); err != nil {
				return nil, false, err
			}
			p, err := st.current(ctx)
			if err != nil {
				return nil, false, err
			}
			nowTok[i+1] = p
		}
	}
	sinceTok := make(Token, len(streamNames))
	if !initial {
		for i := range sinceTok {
			// A position from the future (another server's token, or a
			// restored backup) is taken as now rather than waited for.
			sinceTok[i] = min(req.Since.pos(i), nowTok[i])
		}
	}
	now, since := nowTok[0], sinceTok[0]
	resp := &Response{
		Rooms: Rooms{
			Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
			Leave: map[string]*LeftRoom{}, Knock: map[string]*KnockedRoom{},
		},
		AccountData: EventList{Events: []any{}},
		Presence:    EventList{Events: []any{}},
		ToDevice:    EventList{Events: []any{}},
		DeviceLists: DeviceLists{Changed: []string{}, Left: []string{}},
		OTKCounts:   map[string]int{},

		FallbackKeyTypes: []string{},
	}
	mems, err := s.rooms.Memberships(ctx, req.UserID)
	if err != nil {
		return nil, false, err
	}
	if !initial {
		// A room left and forgotten since the token is in leave once, and
		// its members in device_lists.left.
		forgotten, err := s.rooms.ForgottenSince(ctx, req.UserID, sinceTok[0])
		if err != nil {
			return nil, false, err
		}
		mems = append(mems, forgotten...)
	}
	// Read for each response: un-ignoring takes effect at once.
	if f.ignored, err = s.users.IgnoredUsers(ctx, req.UserID); err != nil {
		return nil, false, err
	}
	sc := &syncContext{req: req, resp: resp, initial: initial, next: append(Token(nil), nowTok...),
		since: sinceTok, now: nowTok, memberships: mems}
	news := false
	roomNews := map[string]bool{}
	for _, m := range mems {
		if !f.roomAllowed(m.RoomID) || m.StreamPos > now {
			continue
		}
		changedSince := m.StreamPos > since
		switch m.Membership {
		case "join":
			sc.joined = append(sc.joined, m.RoomID)
			// A room joined since the token is new to the client: it gets
			// the room's recent timeline and whole state.
			fresh := initial || (changedSince && s.membershipAt(ctx, req.UserID, m, since) != "join")
			rs := roomSpan{roomID: m.RoomID, since: since, upto: now, full: fresh || req.FullState, fromStart: fresh}
			jr, ok, err := s.joinedRoom(ctx, sc, f, rs)
			if err != nil {
				return nil, false, err
			}
			if ok {
				resp.Rooms.Join[m.RoomID] = jr
				roomNews[m.RoomID] = true
				news = true
			}
		case "invite", "knock":
			if !initial && !changedSince {
				continue
			}
			events, mine, err := s.inviteState(ctx, m, req.UserID)
			if err != nil {
				return nil, false, err
			}
			if m.Membership == "invite" && mine != nil && f.ignored[string(mine.SenderID())] {
				continue // "Servers must not send room invites from ignored users"
			}
			if m.Membership == "invite" {
				ir := &InvitedRoom{}
				ir.InviteState.Events = events
				resp.Rooms.Invite[m.RoomID] = ir
			} else {
				kr := &KnockedRoom{}
				kr.KnockState.Events = events
				resp.Rooms.Knock[m.RoomID] = kr
			}
			news = true
		case "leave", "ban":
			// A room left since the token is always reported; on an
			// initial (or full_state) sync, the rooms left before only
			// with include_leave.
			everything := initial || req.FullState
			if !changedSince && !(everything && f.includeLeave) {
				continue
			}
			if initial && !f.includeLeave {
				continue
			}
			fresh := initial || !changedSince || s.membershipAt(ctx, req.UserID, m, since) != "join"
			rs := roomSpan{roomID: m.RoomID, since: since, upto: m.StreamPos, full: fresh || req.FullState, fromStart: fresh}
			lr, err := s.leftRoom(ctx, sc, f, rs)
			if err != nil {
				return nil, false, err
			}
			resp.Rooms.Leave[m.RoomID] = lr
			news = true
		}
	}
	for i, st := range s.streams {
		n, err := st.fill(ctx, sc, sinceTok[i+1], nowTok[i+1])
		if err != nil {
			return nil, false, err
		}
		news = news || n
	}
	s.applySectionFilters(sc, f, roomNews)
	// Rooms that are here only for another stream's news (a receipt, say)
	// still report their counts: a receipt is often what changed them.
	for roomID, jr := range resp.Rooms.Join {
		if len(jr.UnreadNotifications) == 0 {
			if jr.UnreadNotifications, jr.UnreadThreadNotifications, err = s.unread(ctx, req.UserID, roomID, f.threadCounts); err != nil {
				return nil, false, err
			}
		}
	}
	resp.NextBatch = sc.next.String()
	return resp, news, nil
}

// applySectionFilters applies what the filter says of the sections the
// streams filled (rooms' ephemeral and account data events, global account
// data), drops the entries of rooms the filter leaves out, and names the
// state sections.
func (s *Service) applySectionFilters(sc *syncContext, f *filter, roomNews map[string]bool) {
	resp := sc.resp
	resp.AccountData.Events = limitEvents(f.accountDataF, resp.AccountData.Events)
	roomAccountData := func(roomID string, evs []any) []any {
		if !sectionRoomAllowed(f.roomAccountDataF, roomID) {
			return []any{}
		}
		if f.roomAccountDataF != nil {
			return limitEvents(&f.roomAccountDataF.EventFilter, evs)
		}
		return evs
	}
	for roomID, jr := range resp.Rooms.Join {
		if !f.roomAllowed(roomID) {
			delete(resp.Rooms.Join, roomID)
			continue
		}
		before := len(jr.Ephemeral.Events) + len(jr.AccountData.Events)
		if !sectionRoomAllowed(f.ephemeralF, roomID) {
			jr.Ephemeral.Events = []any{}
		} else if f.ephemeralF != nil {
			jr.Ephemeral.Events = limitEvents(&f.ephemeralF.EventFilter, jr.Ephemeral.Events)
		}
		jr.AccountData.Events = roomAccountData(roomID, jr.AccountData.Events)
		if !roomNews[roomID] && before > 0 && len(jr.Ephemeral.Events)+len(jr.AccountData.Events) == 0 {
			delete(resp.Rooms.Join, roomID) // its only news was filtered out
			continue
		}
		jr.stateNames = sc.req.StateAfter
	}
	for roomID, lr := range resp.Rooms.Leave {
		lr.AccountData.Events = roomAccountData(roomID, lr.AccountData.Events)
		lr.stateNames = sc.req.StateAfter
	}
}

// membershipAt is the user's membership of a room just after stream
// position pos ("" for none).
func (s *Service) membershipAt(ctx context.Context, _ string, m roomserver.MembershipChange, pos int64) string {
	return s.rooms.MembershipAt(ctx, m.EventID, pos)
}

// roomSpan is the part of a room's history a response covers.
type roomSpan struct {
	roomID      string
	since, upto int64
	// full asks for the whole state rather than the changes since the
	// token; fromStart for the room's latest events rather than those
	// after the token (a room new to the client).
	full, fromStart bool
}

// roomEvents is what a response says of a room's events.
type roomEvents struct {
	timeline []*roomserver.Event
	limited  bool
	end      string              // the position of the span's end, a pagination token
	state    []*roomserver.Event // the state (or state_after) section
	summary  map[string]any      // nil: unchanged
}

// joinedRoom builds a joined room's entry. It reports false when nothing
// changed in the room.
func (s *Service) joinedRoom(ctx context.Context, sc *syncContext, f *filter, rs roomSpan) (*JoinedRoom, bool, error) {
	re, ok, err := s.roomEvents(ctx, sc, f, rs, true)
	if err != nil || !ok {
		return nil, false, err
	}
	jr := emptyJoinedRoom()
	if jr.Timeline, jr.State, err = s.sections(ctx, sc, f, re); err != nil {
		return nil, false, err
	}
	if re.summary != nil {
		jr.Summary = re.summary
	}
	if jr.UnreadNotifications, jr.UnreadThreadNotifications, err = s.unread(ctx, sc.req.UserID, rs.roomID, f.threadCounts); err != nil {
		return nil, false, err
	}
	return jr, true, nil
}

// leftRoom builds the entry of a room the user left: its events up to the
// leave, and the state there.
func (s *Service) leftRoom(ctx context.Context, sc *syncContext, f *filter, rs roomSpan) (*LeftRoom, error) {
	lr := &LeftRoom{
		Timeline:    Timeline{Events: []roomserver.ClientEvent{}},
		State:       StateList{Events: []roomserver.ClientEvent{}},
		AccountData: EventList{Events: []any{}},
	}
	re, ok, err := s.roomEvents(ctx, sc, f, rs, false)
	if err != nil {
		return nil, err
	}
	if ok {
		if lr.Timeline, lr.State, err = s.sections(ctx, sc, f, re); err != nil {
			return nil, err
		}
	}
	return lr, nil
}

// sections formats a room's timeline and state sections.
func (s *Service) sections(ctx context.Context, sc *syncContext, f *filter, re *roomEvents) (Timeline, StateList, error) {
	viewer := roomserver.Viewer{UserID: sc.req.UserID, DeviceID: sc.req.DeviceID}
	// Timeline events carry their aggregations and the viewer's
	// membership; state events are formatted plainly.
	events, err := s.rooms.ClientEvents(ctx, viewer, re.timeline)
	if err != nil {
		return Timeline{}, StateList{}, err
	}
	tl := Timeline{Events: events, Limited: re.limited, raw: re.timeline, format: f.format}
	if len(re.timeline) > 0 {
		first := re.timeline[0]
		tl.PrevBatch = roomserver.Token{Depth: first.Depth(), Stream: first.StreamPos - 1}.String()
	} else {
		// An empty timeline (a limit of 0, a filter that drops the room's
		// events) still says where the client can page back from.
		tl.PrevBatch = re.end
	}
	st := StateList{Events: s.clientEvents(ctx, re.state, viewer), raw: re.state, format: f.format}
	return tl, st, nil
}

// roomEvents works out a room's timeline, its state section and (for a
// joined room) its summary. It reports false when there is nothing to
// say of the room.
//
// The state section is, without use_state_after, the state at the start
// of the timeline that the client does not have (all of it for a full
// sync); with it, the state at the end of the timeline that the client
// does not have, state events of the timeline included.
func (s *Service) roomEvents(ctx context.Context, sc *syncContext, f *filter, rs roomSpan, joined bool) (*roomEvents, bool, error) {
	userID, roomID := sc.req.UserID, rs.roomID
	from := rs.since
	if rs.fromStart {
		from = 0
	}
	tl, limited, sawAny, dropped, err := s.timeline(ctx, f, roomID, userID, from, rs.upto)
	if err != nil {
		return nil, false, err
	}
	if !rs.full && !sawAny {
		return nil, false, nil
	}
	// The timeline of a room new to the client is incomplete unless it
	// starts at the room's creation: the client must page back for the
	// rest (as Synapse, limited for every newly joined room). In a room
	// joined over federation the events before the join are not even
	// here, and only paging back (backfill) finds them.
	if rs.fromStart && (!sc.initial || len(tl) == 0 || tl[0].Type() != spec.MRoomCreate) {
		limited = true
	}
	if !limited && !rs.fromStart {
		// Events fetched after a long partition leave a hole before them.
		gap, err := s.rooms.TimelineHasGap(ctx, tl)
		if err != nil {
			return nil, false, err
		}
		limited = gap
	}
	stateAfter := len(sc.req.StateAfter) > 0
	// gapless: the timeline is every event since the token, so the client
	// can follow the state through it.
	gapless := !rs.full && !limited && !dropped
	inTimeline := make(map[string]bool, len(tl))
	for _, ev := range tl {
		inTimeline[ev.EventID()] = true
	}

	// base is the state at the point the section describes, loaded when
	// needed.
	var base map[roomserver.StateKey]*roomserver.Event
	loadBase := func() error {
		if base != nil {
			return nil
		}
		var err error
		if !stateAfter && len(tl) > 0 {
			base, err = s.rooms.StateBefore(ctx, roomID, tl[0])
		} else {
			base, err = s.rooms.StateAt(ctx, roomID, rs.upto)
		}
		return err
	}
	var delta []*roomserver.Event
	switch {
	case rs.full:
		if err := loadBase(); err != nil {
			return nil, false, err
		}
		delta = roomserver.SortByStream(base)
	case gapless:
		if stateAfter {
			// Every state change is in the timeline: the latest of each.
			latest := map[roomserver.StateKey]*roomserver.Event{}
			for _, ev := range tl {
				if sk := ev.StateKey(); sk != nil {
					latest[roomserver.StateKey{Type: ev.Type(), StateKey: *sk}] = ev
				}
			}
			delta = roomserver.SortByStream(latest)
		}
	default:
		if err := loadBase(); err != nil {
			return nil, false, err
		}
		old, err := s.rooms.StateAt(ctx, roomID, rs.since)
		if err != nil {
			return nil, false, err
		}
		for _, ev := range roomserver.SortByStream(base) {
			k := roomserver.StateKey{Type: ev.Type(), StateKey: *ev.StateKey()}
			if o, ok := old[k]; !ok || o.EventID() != ev.EventID() {
				delta = append(delta, ev)
			}
		}
	}
	if !stateAfter {
		// The timeline has its own events.
		delta = dropEvents(delta, inTimeline)
	}

	re := &roomEvents{timeline: tl, limited: limited}
	if len(tl) == 0 {
		end, err := s.rooms.Place(ctx, roomID, roomserver.Token{Stream: rs.upto, Live: true})
		if err != nil {
			return nil, false, err
		}
		re.end = end.String()
	}
	// The summary goes out when the members may have changed.
	if joined && (rs.full || hasMember(tl) || (!gapless && hasMember(delta))) {
		end := base
		if !stateAfter || end == nil {
			if end, err = s.rooms.StateAt(ctx, roomID, rs.upto); err != nil {
				return nil, false, err
			}
		}
		re.summary = summarize(end, userID)
	}

	// Lazy loading: a full section keeps only the member events the
	// timeline needs (its senders', the heroes', the user's own); an
	// incremental one keeps every member change since the token (the spec
	// requires those of the gap) and adds the needed members the client
	// may not have.
	if f.lazyMembers {
		needed := map[string]bool{}
		for _, ev := range tl {
			needed[string(ev.SenderID())] = true
		}
		if heroes, ok := re.summary["m.heroes"].([]string); ok {
			for _, h := range heroes {
				needed[h] = true
			}
		}
		if rs.full {
			needed[userID] = true
			s.lazy.forgetRoom(userID, sc.req.DeviceID, roomID)
			kept := delta[:0:0]
			for _, ev := range delta {
				if ev.Type() != spec.MRoomMember || needed[*ev.StateKey()] {
					kept = append(kept, ev)
				}
			}
			delta = kept
		} else if len(needed) > 0 {
			have := map[string]bool{}
			for _, ev := range delta {
				if ev.Type() == spec.MRoomMember {
					have[*ev.StateKey()] = true
				}
			}
			var missing []string
			for u := range needed {
				if !have[u] {
					missing = append(missing, u)
				}
			}
			if len(missing) > 0 {
				if err := loadBase(); err != nil {
					return nil, false, err
				}
				sort.Strings(missing)
				for _, u := range missing {
					ev, ok := base[roomserver.StateKey{Type: spec.MRoomMember, StateKey: u}]
					if !ok || (!stateAfter && inTimeline[ev.EventID()]) {
						continue
					}
					if !f.includeRedundant && s.lazy.has(userID, sc.req.DeviceID, roomID, u, ev.EventID()) {
						continue // the client has it
					}
					delta = append(delta, ev)
				}
				sort.SliceStable(delta, func(i, j int) bool { return delta[i].StreamPos < delta[j].StreamPos })
			}
		}
	}

	// The state filter, last: it applies to member events as to any.
	if !sectionRoomAllowed(f.stateF, roomID) {
		delta = nil
	}
	for _, ev := range delta {
		if f.stateWanted(ev) {
			re.state = append(re.state, ev)
		}
	}
	if f.lazyMembers {
		for _, list := range [][]*roomserver.Event{re.state, tl} {
			for _, ev := range list {
				if ev.Type() == spec.MRoomMember && ev.StateKey() != nil {
					sc.resp.lazySent = append(sc.resp.lazySent, lazySent{roomID: roomID, member: *ev.StateKey(), eventID: ev.EventID()})
				}
			}
		}
	}
	if !rs.full && len(tl) == 0 && len(re.state) == 0 && re.summary == nil {
		return nil, false, nil // what changed was all filtered out
	}
	return re, true, nil
}

func dropEvents(evs []*roomserver.Event, drop map[string]bool) []*roomserver.Event {
	out := evs[:0:0]
	for _, ev := range evs {
		if !drop[ev.EventID()] {
			out = append(out, ev)
		}
	}
	return out
}

func hasMember(evs []*roomserver.Event) bool {
	for _, ev := range evs {
		if ev.Type() == spec.MRoomMember {
			return true
		}
	}
	return false
}

// maxHeroes is how many members the summary names.
const maxHeroes = 5

// summarize is a joined room's summary (see Summary) as /sync sends it.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
func summarize(state map[roomserver.StateKey]*roomserver.Event, userID string) map[string]any {
	heroes, joined, invited := Summary(state, userID)
	return map[string]any{
		"m.heroes":               heroes,
		"m.joined_member_count":  joined,
		"m.invited_member_count": invited,
	}
}

// Summary is what a room's state says of its members: its joined and
// invited member counts, and its heroes, the first members (other than the
// user) by stream order who are joined or invited, or, when there are
// none, who have left or were banned. Sliding sync sends the same.
func Summary(state map[roomserver.StateKey]*roomserver.Event, userID string) (heroes []string, joined, invited int) {
	var present, gone []*roomserver.Event
	for k, ev := range state {
		if k.Type != spec.MRoomMember {
			continue
		}
		membership, _ := ev.Membership()
		switch membership {
		case spec.Join:
			joined++
		case spec.Invite:
			invited++
		}
		if k.StateKey == userID {
			continue
		}
		switch membership {
		case spec.Join, spec.Invite:
			present = append(present, ev)
		case spec.Leave, spec.Ban:
			gone = append(gone, ev)
		}
	}
	candidates := present
	if len(candidates) == 0 {
		candidates = gone
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].StreamPos < candidates[j].StreamPos })
	heroes = []string{}
	for _, ev := range candidates {
		if len(heroes) == maxHeroes {
			break
		}
		heroes = append(heroes, *ev.StateKey())
	}
	return heroes, joined, invited
}

// timeline returns the latest events of a room in (from, to] that the
// user may see and the timeline filter lets through, at most the filter's
// limit; whether older ones were left out (limited); whether there were
// any events in the range at all; and whether the filter dropped any.
// When the filter drops events it reads further back, a few windows at
// most, to fill the limit.
func (s *Service) timeline(ctx context.Context, f *filter, roomID, userID string, from, to int64) (tl []*roomserver.Event, limited, sawAny, dropped bool, err error) {
	limit := f.timelineLimit
	if !sectionRoomAllowed(f.timelineF, roomID) {
		evs, more, err := s.rooms.Timeline(ctx, roomID, userID, from, to, 1)
		any := len(evs) > 0 || more
		return nil, any, any, any, err
	}
	if !f.timelineFiltered() {
		evs, more, err := s.rooms.Timeline(ctx, roomID, userID, from, to, limit)
		return evs, more, len(evs) > 0 || more, false, err
	}
	window := max(2*limit, 20)
	hi := to
	var out []*roomserver.Event
	for round := 0; ; round++ {
		batch, more, err := s.rooms.Timeline(ctx, roomID, userID, from, hi, window)
		if err != nil {
			return nil, false, false, false, err
		}
		if len(batch) > 0 || more {
			sawAny = true
		}
		kept := make([]*roomserver.Event, 0, len(batch))
		for _, ev := range batch {
			if roomEventWanted(f.timelineF, ev) && !f.ignoredEvent(ev) {
				kept = append(kept, ev)
			} else {
				dropped = true
			}
		}
		out = append(kept, out...)
		if len(out) >= limit {
			trimmed := len(out) > limit
			return out[len(out)-limit:], trimmed || more, sawAny, dropped, nil
		}
		if !more {
			return out, false, sawAny, dropped, nil
		}
		if len(batch) == 0 || round == 2 {
			return out, true, sawAny, dropped, nil
		}
		hi = batch[0].StreamPos - 1
	}
}

func (s *Service) clientEvents(ctx context.Context, evs []*roomserver.Event, viewer roomserver.Viewer) []roomserver.ClientEvent {
	out := make([]roomserver.ClientEvent, len(evs))
	for i, ev := range evs {
		out[i] = ev.ToClient(viewer, s.rooms.Redaction(ctx, ev))
	}
	return out
}
