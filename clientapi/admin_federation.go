package clientapi

import (
	"net/http"
	"slices"
	"sort"
	"strconv"

	"github.com/tessera-hs/tessera/federation/queue"
	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/users"
)

// The federation admin API: what sending to each destination has come to.
// https://element-hq.github.io/synapse/latest/usage/administration/admin_api/federation.html

func destinationJSON(h queue.Health) map[string]any {
	var failure any
	if h.FailureTS != 0 {
		failure = h.FailureTS
	}
	return map[string]any{
		"destination": h.Destination, "retry_last_ts": h.RetryLastTS, "retry_interval": h.RetryInterval.Milliseconds(),
		"failure_ts": failure, "last_successful_stream_ordering": nil,
	}
}

// destinationOrders are the list's orders.
var destinationOrders = map[string]func(a, b queue.Health) bool{
	"destination":    func(a, b queue.Health) bool { return a.Destination < b.Destination },
	"retry_last_ts":  func(a, b queue.Health) bool { return a.RetryLastTS < b.RetryLastTS },
	"retry_interval": func(a, b queue.Health) bool { return a.RetryInterval < b.RetryInterval },
	"failure_ts":     func(a, b queue.Health) bool { return a.FailureTS < b.FailureTS },
}

// adminDestinations: GET /_synapse/admin/v1/federation/destinations.
func (a *API) adminDestinations(r *http.Request, _ *users.Requester) (any, error) {
	from, limit, backwards, err := queryPage(r)
	if err != nil {
		return nil, err
	}
	orderBy := r.URL.Query().Get("order_by")
	less, ok := destinationOrders[orderBy]
	if orderBy == "" {
		less, ok = destinationOrders["destination"], true
	}
	if !ok {
		return nil, mxerr.InvalidParam("Unknown value for order_by: %s", orderBy)
	}
	all, err := a.admin.ListDestinations(r.Context(), r.URL.Query().Get("destination"))
	if err != nil {
		return nil, err
	}
	sort.SliceStable(all, func(i, j int) bool {
		if backwards {
			return less(all[j], all[i])
		}
		return less(all[i], all[j])
	})
	start, end := min(from, len(all)), min(from+limit, len(all))
	list := make([]map[string]any, 0, end-start)
	for _, h := range all[start:end] {
		list = append(list, destinationJSON(h))
	}
	out := map[string]any{"destinations": list, "total": len(all)}
	if end < len(all) {
		out["next_token"] = end
	}
	return out, nil
}

// adminDestination: GET /_synapse/admin/v1/federation/destinations/{destination}.
func (a *API) adminDestination(r *http.Request, _ *users.Requester) (any, error) {
	h, err := a.admin.Destination(r.Context(), pathVar(r, "destination"))
	if err != nil {
		return nil, err
	}
	return destinationJSON(*h), nil
}

// adminDestinationRooms: GET
// /_synapse/admin/v1/federation/destinations/{destination}/rooms (from,
// limit, dir over the rooms ordered by ID).
func (a *API) adminDestinationRooms(r *http.Request, _ *users.Requester) (any, error) {
	from, limit, backwards, err := queryPage(r)
	if err != nil {
		return nil, err
	}
	all, err := a.admin.DestinationRooms(r.Context(), pathVar(r, "destination"))
	if err != nil {
		return nil, err
	}
	if backwards {
		slices.Reverse(all)
	}
	start, end := min(from, len(all)), min(from+limit, len(all))
	out := map[string]any{"rooms": all[start:end], "total": len(all)}
	if end < len(all) {
		out["next_token"] = strconv.Itoa(end)
	}
	return out, nil
}

// adminResetConnection: POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection.
func (a *API) adminResetConnection(r *http.Request, who *users.Requester) (any, error) {
	if err := a.admin.ResetConnection(r.Context(), who.UserID, pathVar(r, "destination")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
