package syncapi

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

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
var streamNames = []string{"events", "account_data", "receipts", "typing", "presence", "to_device"}

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
	notifier *Notifier
	// unreadCounter gives unread_notifications (nil: none).
	unreadCounter UnreadCounter
	// streams are the streams after events, in token order.
	streams  []stream
	stop     chan struct{}
	stopOnce sync.Once
}

// New builds the sync service on the room server and subscribes its
// notifier to committed events.
func New(rooms *roomserver.Service, us *users.Service, notifier *Notifier) *Service {
	rooms.Subscribe(notifier.OnEvents)
	return &Service{
		rooms: rooms, notifier: notifier, stop: make(chan struct{}),
		// In the order of streamNames after "events".
		streams: []stream{accountDataStream{us}, receiptStream{us}, newTypingStream(notifier), newPresenceStream(us, rooms, notifier), newToDeviceStream()},
	}
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
}

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

type Timeline struct {
	Events    []roomserver.ClientEvent `json:"events"`
	Limited   bool                     `json:"limited"`
	PrevBatch string                   `json:"prev_batch,omitempty"`
}

type StateList struct {
	Events []roomserver.ClientEvent `json:"events"`
}

type JoinedRoom struct {
	Timeline            Timeline       `json:"timeline"`
	State               StateList      `json:"state"`
	Ephemeral           EventList      `json:"ephemeral"`
	AccountData         EventList      `json:"account_data"`
	Summary             map[string]any `json:"summary"`
	UnreadNotifications map[string]int `json:"unread_notifications"`
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

type LeftRoom struct {
	Timeline    Timeline  `json:"timeline"`
	State       StateList `json:"state"`
	AccountData EventList `json:"account_data"`
}

// StrippedEvent is the stripped state format for invites and knocks.
// https://spec.matrix.org/v1.19/client-server-api/#stripped-state
type StrippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
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
	var deadline <-chan time.Time
	if req.Since != nil && req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		changed := s.notifier.Changed(req.UserID)
		resp, news, err := s.compute(ctx, req)
		if err != nil {
			return nil, err
		}
		if news || req.Since == nil || req.Timeout <= 0 || req.FullState {
			return resp, nil
		}
		select {
		case <-changed:
		case <-deadline:
			return resp, nil
		case <-ctx.Done():
			return resp, nil
		case <-s.stop:
			return resp, nil
		}
	}
}

// compute builds the response for the changes between the since token and
// now, and reports whether there were any.
func (s *Service) compute(ctx context.Context, req Request) (*Response, bool, error) {
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
		NextBatch: nowTok.String(),
		Rooms: Rooms{
			Join: map[string]*JoinedRoom{}, Invite: map[string]*InvitedRoom{},
			Leave: map[string]*LeftRoom{}, Knock: map[string]*KnockedRoom{},
		},
		AccountData: EventList{Events: []any{}},
		Presence:    EventList{Events: []any{}},
		ToDevice:    EventList{Events: []any{}},
		DeviceLists: DeviceLists{Changed: []string{}, Left: []string{}},
		OTKCounts:   map[string]int{},
	}
	f := newFilter(req.Filter)
	viewer := roomserver.Viewer{UserID: req.UserID, DeviceID: req.DeviceID}
	mems, err := s.rooms.Memberships(ctx, req.UserID)
	if err != nil {
		return nil, false, err
	}
	sc := &syncContext{req: req, resp: resp, initial: initial}
	news := false
	for _, m := range mems {
		if !f.roomAllowed(m.RoomID) || m.StreamPos > now {
			continue
		}
		changedSince := m.StreamPos > since
		switch m.Membership {
		case "join":
			jr, ok, err := s.joinedRoom(ctx, req, f, viewer, m.RoomID, since, now, initial || req.FullState || changedSince)
			if err != nil {
				return nil, false, err
			}
			if ok {
				resp.Rooms.Join[m.RoomID] = jr
				news = true
			}
			sc.joined = append(sc.joined, m.RoomID)
		case "invite", "knock":
			if !initial && !changedSince {
				continue
			}
			st, err := s.rooms.StrippedState(ctx, m.RoomID, m.StreamPos)
			if err != nil {
				return nil, false, err
			}
			own, err := s.rooms.StateAt(ctx, m.RoomID, m.StreamPos)
			if err != nil {
				return nil, false, err
			}
			events := make([]StrippedEvent, 0, len(st)+1)
			for _, ev := range st {
				events = append(events, stripped(ev))
			}
			if ev, ok := own[roomserver.StateKey{Type: spec.MRoomMember, StateKey: req.UserID}]; ok {
				events = append(events, stripped(ev))
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
			if !changedSince || (initial && !f.includeLeave) {
				continue
			}
			lr, err := s.leftRoom(ctx, req, f, viewer, m, since)
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
	// Rooms that are here only for another stream's news (a receipt, say)
	// still report their counts: a receipt is often what changed them.
	for roomID, jr := range resp.Rooms.Join {
		if len(jr.UnreadNotifications) == 0 {
			if jr.UnreadNotifications, err = s.unread(ctx, req.UserID, roomID); err != nil {
				return nil, false, err
			}
		}
	}
	return resp, news, nil
}

// joinedRoom builds a joined room's section. full asks for the room's
// whole state (initial sync, full_state, or a room joined since the token).
// It reports false when nothing changed in the room.
func (s *Service) joinedRoom(ctx context.Context, req Request, f *filter, viewer roomserver.Viewer, roomID string, since, now int64, full bool) (*JoinedRoom, bool, error) {
	from := since
	if full {
		from = 0
	}
	tl, limited, err := s.rooms.Timeline(ctx, roomID, req.UserID, from, now, f.timelineLimit)
	if err != nil {
		return nil, false, err
	}
	if !full && len(tl) == 0 {
		return nil, false, nil
	}
	tl = f.timeline(tl)
	jr := emptyJoinedRoom()
	jr.Timeline = Timeline{Events: s.clientEvents(ctx, tl, viewer), Limited: limited}
	if jr.UnreadNotifications, err = s.unread(ctx, req.UserID, roomID); err != nil {
		return nil, false, err
	}
	// The state section is the state at the start of the timeline that the
	// client does not have yet.
	var start map[roomserver.StateKey]*roomserver.Event
	if len(tl) > 0 {
		if start, err = s.rooms.StateBefore(ctx, roomID, tl[0]); err != nil {
			return nil, false, err
		}
		jr.Timeline.PrevBatch = roomserver.Token{Depth: tl[0].Depth(), Stream: tl[0].StreamPos - 1}.String()
	} else if start, err = s.rooms.StateAt(ctx, roomID, now); err != nil {
		return nil, false, err
	}
	if !full {
		if !limited {
			start = nil // every state change is in the timeline
		} else {
			old, err := s.rooms.StateAt(ctx, roomID, since)
			if err != nil {
				return nil, false, err
			}
			for k, ev := range start {
				if o, ok := old[k]; ok && o.EventID() == ev.EventID() {
					delete(start, k)
				}
			}
		}
	}
	inTimeline := map[string]bool{}
	for _, ev := range tl {
		inTimeline[ev.EventID()] = true
	}
	var state []*roomserver.Event
	for _, ev := range roomserver.SortByStream(start) {
		if !inTimeline[ev.EventID()] && f.stateWanted(ev, tl, req.UserID) {
			state = append(state, ev)
		}
	}
	jr.State.Events = s.clientEvents(ctx, state, viewer)
	return jr, true, nil
}

func (s *Service) leftRoom(ctx context.Context, req Request, f *filter, viewer roomserver.Viewer, m roomserver.MembershipChange, since int64) (*LeftRoom, error) {
	tl, limited, err := s.rooms.Timeline(ctx, m.RoomID, req.UserID, since, m.StreamPos, f.timelineLimit)
	if err != nil {
		return nil, err
	}
	lr := &LeftRoom{
		Timeline:    Timeline{Events: s.clientEvents(ctx, f.timeline(tl), viewer), Limited: limited},
		State:       StateList{Events: []roomserver.ClientEvent{}},
		AccountData: EventList{Events: []any{}},
	}
	if len(tl) > 0 {
		lr.Timeline.PrevBatch = roomserver.Token{Depth: tl[0].Depth(), Stream: tl[0].StreamPos - 1}.String()
	}
	return lr, nil
}

func (s *Service) clientEvents(ctx context.Context, evs []*roomserver.Event, viewer roomserver.Viewer) []roomserver.ClientEvent {
	out := make([]roomserver.ClientEvent, len(evs))
	for i, ev := range evs {
		out[i] = ev.ToClient(viewer, s.rooms.Redaction(ctx, ev))
	}
	return out
}
