package slidingsync

import (
	"context"
	"slices"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/tessera-hs/tessera/syncapi"
)

// extensionRooms is what the room-scoped extensions pick their rooms from.
type extensionRooms struct {
	lists map[string][]string // each list's rooms in its ranges
	subs  []string            // the subscribed rooms the user may see
	byID  map[string]*candidate
	// fresh are the joined rooms this response sends for the first time:
	// they get their receipts, typing and account data from the start.
	fresh []string
}

// scope is the joined rooms an extension's lists and rooms pick.
func (er extensionRooms) scope(sc *RoomsScope) []string {
	seen := map[string]bool{}
	var out []string
	take := func(id string) {
		if c := er.byID[id]; c != nil && c.m.Membership == spec.Join && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, name := range sortedKeys(er.lists) {
		if slices.Contains(sc.Lists, "*") || slices.Contains(sc.Lists, name) {
			for _, id := range er.lists[name] {
				take(id)
			}
		}
	}
	for _, id := range er.subs {
		if slices.Contains(sc.Rooms, "*") || slices.Contains(sc.Rooms, id) {
			take(id)
		}
	}
	return out
}

// extensions fills the extensions the request turned on and reports
// whether any has news. They read /sync's streams between the request's
// token and the response's.
func (s *Service) extensions(ctx context.Context, c *conn, req *Request, now syncapi.Token, resp *Response, er extensionRooms) (bool, error) {
	ext := req.Extensions
	news := false
	if td := ext.ToDevice; td != nil && req.DeviceID != "" {
		events, last, err := s.sync.ToDevice().Page(ctx, req.UserID, req.DeviceID, td.Since, td.Limit)
		if err != nil {
			return false, err
		}
		resp.Extensions["to_device"] = map[string]any{"next_batch": strconv.FormatInt(last, 10), "events": events}
		news = news || len(events) > 0
	}
	want := syncapi.StreamSet{AccountData: ext.AccountData != nil, Receipts: ext.Receipts != nil, Typing: ext.Typing != nil, DeviceLists: ext.E2EE}
	if want == (syncapi.StreamSet{}) {
		return news, nil
	}
	scopes := map[string][]string{}
	var union []string
	seen := map[string]bool{}
	for name, sc := range map[string]*RoomsScope{"account_data": ext.AccountData, "receipts": ext.Receipts, "typing": ext.Typing} {
		if sc == nil {
			continue
		}
		scopes[name] = er.scope(sc)
		for _, id := range scopes[name] {
			if !seen[id] {
				seen[id] = true
				union = append(union, id)
			}
		}
	}
	isFresh := map[string]bool{}
	for _, id := range er.fresh {
		isFresh[id] = true
	}
	var old, fresh []string
	for _, id := range union {
		if isFresh[id] && c.since != nil {
			fresh = append(fresh, id)
		} else {
			old = append(old, id)
		}
	}
	main, err := s.sync.Streams(ctx, syncapi.StreamsRequest{UserID: req.UserID, DeviceID: req.DeviceID,
		Since: c.since, Now: now, Rooms: old, Want: want})
	if err != nil {
		return false, err
	}
	roomParts := []*syncapi.Response{main}
	if len(fresh) > 0 {
		w := want
		w.DeviceLists = false
		first, err := s.sync.Streams(ctx, syncapi.StreamsRequest{UserID: req.UserID, DeviceID: req.DeviceID,
			Now: now, Rooms: fresh, Want: w})
		if err != nil {
			return false, err
		}
		roomParts = append(roomParts, first)
	}
	// ephemeral picks a room's events of a type from either part.
	ephemeral := func(roomID, typ string) any {
		for _, part := range roomParts {
			if jr := part.Rooms.Join[roomID]; jr != nil {
				for _, ev := range jr.Ephemeral.Events {
					if m, ok := ev.(map[string]any); ok && m["type"] == typ {
						return ev
					}
				}
			}
		}
		return nil
	}
	if ext.E2EE {
		e2ee := map[string]any{
			"device_one_time_keys_count":       main.OTKCounts,
			"device_unused_fallback_key_types": main.FallbackKeyTypes,
		}
		if c.since != nil {
			e2ee["device_lists"] = main.DeviceLists
			news = news || len(main.DeviceLists.Changed)+len(main.DeviceLists.Left) > 0
		}
		resp.Extensions["e2ee"] = e2ee
	}
	if ext.AccountData != nil {
		rooms := map[string][]any{}
		for _, id := range scopes["account_data"] {
			for _, part := range roomParts {
				if jr := part.Rooms.Join[id]; jr != nil && len(jr.AccountData.Events) > 0 {
					rooms[id] = append(rooms[id], jr.AccountData.Events...)
				}
			}
		}
		global := main.AccountData.Events
		resp.Extensions["account_data"] = map[string]any{"global": global, "rooms": rooms}
		news = news || len(global) > 0 || len(rooms) > 0
	}
	for _, e := range []struct{ name, typ string }{{"receipts", "m.receipt"}, {"typing", "m.typing"}} {
		if scopes[e.name] == nil && (e.name == "receipts" && ext.Receipts == nil || e.name == "typing" && ext.Typing == nil) {
			continue
		}
		rooms := map[string]any{}
		for _, id := range scopes[e.name] {
			if ev := ephemeral(id, e.typ); ev != nil {
				rooms[id] = ev
			}
		}
		resp.Extensions[e.name] = map[string]any{"rooms": rooms}
		news = news || len(rooms) > 0
	}
	return news, nil
}
