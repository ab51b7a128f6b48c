package syncapi

import (
	"context"
	"slices"

	"github.com/tessera-hs/tessera/roomserver"
)

// What another sync engine (sliding sync, in slidingsync/) shares with
// /sync: the same stream positions and tokens, the same streams filling
// the same sections, the same timeline and visibility rules. It builds its
// own response shape from what these return.

// Now is the token of every stream's latest position.
func (s *Service) Now(ctx context.Context) (Token, error) {
	now := make(Token, len(streamNames))
	now[0] = s.rooms.CurrentPos()
	for i, st := range s.streams {
		p, err := st.current(ctx)
		if err != nil {
			return nil, err
		}
		now[i+1] = p
	}
	return now, nil
}

// ReceiptsStream and AccountDataStream are the receipts and account data
// streams' places in a token (see Pos).
var (
	ReceiptsStream    = slices.Index(streamNames, "receipts")
	AccountDataStream = slices.Index(streamNames, "account_data")
)

// Pos is the token's position in the stream at index i (0: events).
func (t Token) Pos(i int) int64 { return t.pos(i) }

// Notifier is the notifier that wakes waiting syncs.
func (s *Service) Notifier() *Notifier { return s.notifier }

// Stopping is closed when the server stops: waiting requests answer at
// once with what they have.
func (s *Service) Stopping() <-chan struct{} { return s.stop }

// EnsurePushRules writes the user's m.push_rules account data if it is not
// there yet, as an initial /sync does.
func (s *Service) EnsurePushRules(ctx context.Context, userID string) error {
	return s.ensurePushRules(ctx, userID)
}

// StreamSet picks streams of StreamsRequest.
type StreamSet struct {
	AccountData, Receipts, Typing bool
	// DeviceLists is device_lists and the device's one-time key counts and
	// unused fallback key types.
	DeviceLists bool
}

// StreamsRequest asks for what some of the streams after events hold for a
// user between two tokens.
type StreamsRequest struct {
	UserID, DeviceID string
	// Since nil: everything (an initial sync of these streams).
	Since *Token
	Now   Token
	// Rooms are the joined rooms the room-scoped streams (room account
	// data, receipts, typing) report on.
	Rooms []string
	Want  StreamSet
}

// Streams fills the sections of a /sync response that the requested
// streams own: global and per-room account data, receipts and typing (as
// the joined rooms' ephemeral events), device_lists and the key counts.
// The response's rooms carry only those sections.
func (s *Service) Streams(ctx context.Context, req StreamsRequest) (*Response, error) {
	resp := &Response{
		Rooms:       Rooms{Join: map[string]*JoinedRoom{}, Leave: map[string]*LeftRoom{}},
		AccountData: EventList{Events: []any{}},
		DeviceLists: DeviceLists{Changed: []string{}, Left: []string{}},
		OTKCounts:   map[string]int{},

		FallbackKeyTypes: []string{},
	}
	since := make(Token, len(streamNames))
	if req.Since != nil {
		for i := range since {
			since[i] = min(req.Since.pos(i), req.Now.pos(i))
		}
	}
	sc := &syncContext{
		req:  Request{UserID: req.UserID, DeviceID: req.DeviceID},
		resp: resp, initial: req.Since == nil, joined: req.Rooms,
		since: since, now: req.Now, next: append(Token(nil), req.Now...),
	}
	if req.Want.DeviceLists && req.Since != nil {
		mems, err := s.rooms.Memberships(ctx, req.UserID)
		if err != nil {
			return nil, err
		}
		sc.memberships = mems
	}
	for i, st := range s.streams {
		var want bool
		switch st.(type) {
		case accountDataStream:
			want = req.Want.AccountData
		case receiptStream:
			want = req.Want.Receipts
		case *Typing:
			want = req.Want.Typing
		case deviceListStream:
			want = req.Want.DeviceLists
		}
		if !want {
			continue
		}
		if _, err := st.fill(ctx, sc, since[i+1], req.Now.pos(i+1)); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// InviteState is what an invited or knocking user is shown of a room (the
// stripped state and their own membership event), as in /sync.
func (s *Service) InviteState(ctx context.Context, m roomserver.MembershipChange, userID string) ([]StrippedEvent, *roomserver.Event, error) {
	return s.inviteState(ctx, m, userID)
}

// UnreadCounts is a joined room's notification and highlight counts for
// the user, as /sync's unread_notifications.
func (s *Service) UnreadCounts(ctx context.Context, userID, roomID string) (notifications, highlights int, err error) {
	m, _, err := s.unread(ctx, userID, roomID, false)
	if err != nil {
		return 0, 0, err
	}
	return m["notification_count"], m["highlight_count"], nil
}

// RoomTimeline is a room's latest events in (from, to] that the user may
// see, leaving out non-state events of the users they ignore, at most
// limit; limited reports that older ones in the range were left out.
func (s *Service) RoomTimeline(ctx context.Context, roomID, userID string, ignored map[string]bool, from, to int64, limit int) ([]*roomserver.Event, bool, error) {
	f := &filter{timelineLimit: limit, ignored: ignored}
	tl, limited, _, _, err := s.timeline(ctx, f, roomID, userID, from, to)
	return tl, limited, err
}

// presenceIndex is the presence stream's place in a token.
var presenceIndex = slices.Index(streamNames, "presence")

// OnlyPresenceMoved reports whether now differs from seen in the presence
// stream alone (or not at all).
func OnlyPresenceMoved(seen, now Token) bool {
	for i := range streamNames {
		if i != presenceIndex && now.pos(i) != seen.pos(i) {
			return false
		}
	}
	return true
}
