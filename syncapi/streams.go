package syncapi

import (
	"context"
	"encoding/json"

	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

// stream is one of the streams after events: it owns one position in the
// token and fills its part of a response.
type stream interface {
	// current is the stream's latest position.
	current(ctx context.Context) (int64, error)
	// fill adds what changed in (since, now] and reports whether there
	// was anything.
	fill(ctx context.Context, sc *syncContext, since, now int64) (bool, error)
}

// catchUpper is a stream whose position, in a deployment of several
// processes (docs/scaling.md), this process learns of a moment after
// another process commits it: a client's token from there can be ahead.
// catchUp reads the committed position, so that the response does not
// send back what the client has and its token never goes backwards.
type catchUpper interface {
	catchUp(ctx context.Context) error
}

// syncContext is what the streams share while a response is built.
type syncContext struct {
	req     Request
	resp    *Response
	initial bool
	joined  []string // rooms the user is joined to (that the filter allows)
	// since and now are the response's window; memberships the user's
	// memberships, whatever the filter says.
	since, now  Token
	memberships []roomserver.MembershipChange
	// next is the response's next_batch. A stream that sends only part of
	// what is waiting lowers its own position in it, so that the next
	// sync carries on from there.
	next Token
}

// joinedRoom returns the response entry of a joined room, adding an empty
// one for a room that has news only in this stream.
func (sc *syncContext) joinedRoom(roomID string) *JoinedRoom {
	if jr, ok := sc.resp.Rooms.Join[roomID]; ok {
		return jr
	}
	jr := emptyJoinedRoom()
	sc.resp.Rooms.Join[roomID] = jr
	return jr
}

func (sc *syncContext) isJoined(roomID string) bool {
	for _, id := range sc.joined {
		if id == roomID {
			return true
		}
	}
	return false
}

// accountDataStream delivers global and per-room account data (tags
// included, as m.tag).
// https://spec.matrix.org/v1.19/client-server-api/#client-config
type accountDataStream struct{ users *users.Service }

func (a accountDataStream) current(ctx context.Context) (int64, error) {
	return a.users.AccountDataPos(ctx)
}

func (a accountDataStream) catchUp(ctx context.Context) error {
	return a.users.CatchUp(ctx, users.StreamAccountData)
}

func (a accountDataStream) fill(ctx context.Context, sc *syncContext, since, now int64) (bool, error) {
	if since >= now && !sc.initial {
		return false, nil
	}
	entries, err := a.users.AccountDataSince(ctx, sc.req.UserID, since)
	if err != nil {
		return false, err
	}
	news := false
	for _, e := range entries {
		if e.StreamPos > now {
			continue // arrived after this response's token: next time
		}
		ev := map[string]any{"type": e.Type, "content": e.Content}
		if e.RoomID == "" {
			sc.resp.AccountData.Events = append(sc.resp.AccountData.Events, ev)
			news = true
			continue
		}
		if !sc.isJoined(e.RoomID) {
			// A room the user has left has its account data in its leave
			// section, when the response has one.
			if lr, ok := sc.resp.Rooms.Leave[e.RoomID]; ok {
				lr.AccountData.Events = append(lr.AccountData.Events, ev)
				news = true
			}
			continue
		}
		jr := sc.joinedRoom(e.RoomID)
		jr.AccountData.Events = append(jr.AccountData.Events, ev)
		news = true
	}
	return news, nil
}

// receiptStream delivers read receipts as m.receipt ephemeral events.
// https://spec.matrix.org/v1.19/client-server-api/#receipts
type receiptStream struct{ users *users.Service }

func (r receiptStream) current(ctx context.Context) (int64, error) { return r.users.ReceiptsPos(ctx) }

func (r receiptStream) catchUp(ctx context.Context) error {
	return r.users.CatchUp(ctx, users.StreamReceipts)
}

func (r receiptStream) fill(ctx context.Context, sc *syncContext, since, now int64) (bool, error) {
	if (since >= now && !sc.initial) || len(sc.joined) == 0 {
		return false, nil
	}
	receipts, err := r.users.ReceiptsSince(ctx, sc.req.UserID, sc.joined, since)
	if err != nil {
		return false, err
	}
	byRoom := map[string][]users.Receipt{}
	for _, rc := range receipts {
		if rc.StreamPos <= now {
			byRoom[rc.RoomID] = append(byRoom[rc.RoomID], rc)
		}
	}
	for roomID, rcs := range byRoom {
		content, err := json.Marshal(users.ReceiptContent(rcs))
		if err != nil {
			return false, err
		}
		jr := sc.joinedRoom(roomID)
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{
			"type": "m.receipt", "content": json.RawMessage(content),
		})
	}
	return len(byRoom) > 0, nil
}
