package clientapi

import (
	"net/http"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/roomserver"
	"github.com/tessera-hs/tessera/users"
)

func (a *API) searchRoutes() []route {
	return []route{
		{http.MethodPost, "/search", a.authed(a.search, noGuests)},
	}
}

// searchBody is POST /search's body; room_events is the one category.
type searchBody struct {
	SearchCategories struct {
		RoomEvents *struct {
			SearchTerm   *string       `json:"search_term"`
			Keys         []string      `json:"keys"`
			Filter       *searchFilter `json:"filter"`
			OrderBy      string        `json:"order_by"`
			EventContext *struct {
				BeforeLimit    *int `json:"before_limit"`
				AfterLimit     *int `json:"after_limit"`
				IncludeProfile bool `json:"include_profile"`
			} `json:"event_context"`
			IncludeState bool `json:"include_state"`
			Groupings    *struct {
				GroupBy []struct {
					Key string `json:"key"`
				} `json:"group_by"`
			} `json:"groupings"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

// searchFilter is the RoomEventFilter of a search.
type searchFilter struct {
	users.RoomEventFilter
	Limit        *int     `json:"limit"`
	Rooms        []string `json:"rooms"`
	NotRooms     []string `json:"not_rooms"`
	IncludeLeave bool     `json:"include_leave"`
}

// Search limits: Synapse's default page of 10, and a ceiling.
const (
	searchDefaultLimit = 10
	searchMaxLimit     = 100
	searchMaxContext   = 100
)

// search: POST /search.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3search
func (a *API) search(r *http.Request, who *users.Requester) (any, error) {
	var body searchBody
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return nil, err
	}
	re := body.SearchCategories.RoomEvents
	if re == nil {
		return map[string]any{"search_categories": map[string]any{}}, nil
	}
	if re.SearchTerm == nil {
		return nil, mxerr.BadJSON("room_events.search_term is required")
	}
	req := roomserver.SearchRequest{
		UserID: who.UserID, Term: *re.SearchTerm, Keys: re.Keys, OrderBy: re.OrderBy,
		IncludeState: re.IncludeState, Limit: searchDefaultLimit, NextBatch: r.URL.Query().Get("next_batch"),
	}
	if f := re.Filter; f != nil {
		req.Rooms, req.NotRooms, req.IncludeLeave = f.Rooms, f.NotRooms, f.IncludeLeave
		req.Filter = roomserver.EventFilter{Types: f.Types, NotTypes: f.NotTypes, Senders: f.Senders,
			NotSenders: f.NotSenders, ContainsURL: f.ContainsURL}
		if f.Limit != nil {
			if *f.Limit < 1 {
				return nil, mxerr.InvalidParam("filter.limit must be positive")
			}
			req.Limit = min(*f.Limit, searchMaxLimit)
		}
	}
	if c := re.EventContext; c != nil {
		req.Context, req.IncludeProfile = true, c.IncludeProfile
		req.BeforeLimit, req.AfterLimit = 5, 5
		for _, l := range []struct {
			v   *int
			dst *int
		}{{c.BeforeLimit, &req.BeforeLimit}, {c.AfterLimit, &req.AfterLimit}} {
			if l.v != nil {
				if *l.v < 0 {
					return nil, mxerr.InvalidParam("event_context limits must not be negative")
				}
				*l.dst = min(*l.v, searchMaxContext)
			}
		}
	}
	if g := re.Groupings; g != nil {
		for _, k := range g.GroupBy {
			req.GroupBy = append(req.GroupBy, k.Key)
		}
	}
	resp, err := a.rooms.Search(r.Context(), req)
	if err != nil {
		return nil, err
	}
	// Results and their context are timeline events: format them as
	// /messages does, with aggregations and unsigned.membership.
	hits := make([]*roomserver.Event, len(resp.Results))
	for i, res := range resp.Results {
		hits[i] = res.Event
	}
	formatted, err := a.timelineEvents(r, who, hits)
	if err != nil {
		return nil, err
	}
	results := make([]map[string]any, len(resp.Results))
	for i, res := range resp.Results {
		out := map[string]any{"rank": res.Rank, "result": formatted[i]}
		if c := res.Context; c != nil {
			before, err := a.timelineEvents(r, who, c.Before)
			if err != nil {
				return nil, err
			}
			after, err := a.timelineEvents(r, who, c.After)
			if err != nil {
				return nil, err
			}
			ctx := map[string]any{
				"events_before": before,
				"events_after":  after,
				"start":         c.Start.String(),
				"end":           c.End.String(),
			}
			if c.Profiles != nil {
				ctx["profile_info"] = c.Profiles
			}
			out["context"] = ctx
		}
		results[i] = out
	}
	cat := map[string]any{"count": resp.Count, "results": results, "highlights": resp.Highlights}
	if resp.NextBatch != "" {
		cat["next_batch"] = resp.NextBatch
	}
	if resp.State != nil {
		state := map[string]any{}
		for id, evs := range resp.State {
			state[id] = a.clientEvents(r, who, evs)
		}
		cat["state"] = state
	}
	if resp.Groups != nil {
		cat["groups"] = resp.Groups
	}
	return map[string]any{"search_categories": map[string]any{"room_events": cat}}, nil
}
