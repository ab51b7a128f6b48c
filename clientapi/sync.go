package clientapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tessera-hs/tessera/internal/mxerr"
	"github.com/tessera-hs/tessera/syncapi"
	"github.com/tessera-hs/tessera/users"
)

func (a *API) syncRoutes() []route {
	return []route{
		{http.MethodGet, "/sync", a.authed(a.sync, guestOK)},
		{http.MethodGet, "/keys/changes", a.authed(a.keyChanges, guestOK)},
	}
}

// keyChanges: GET /keys/changes?from=&to=, the device list changes between
// two sync tokens.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3keyschanges
func (a *API) keyChanges(r *http.Request, who *users.Requester) (any, error) {
	q := r.URL.Query()
	var toks [2]syncapi.Token
	for i, name := range []string{"from", "to"} {
		v := q.Get(name)
		if v == "" {
			return nil, mxerr.MissingParam("Missing %s parameter", name)
		}
		t, err := syncapi.ParseToken(v)
		if err != nil {
			return nil, mxerr.InvalidParam("Invalid %s token %q", name, v)
		}
		toks[i] = t
	}
	changed, left, err := a.syncs.KeyChanges(r.Context(), who.UserID, toks[0], toks[1])
	if err != nil {
		return nil, err
	}
	return map[string][]string{"changed": changed, "left": left}, nil
}

// maxSyncTimeout bounds a long-poll, so a client cannot hold a request
// open for ever.
const maxSyncTimeout = 5 * time.Minute

// sync: GET /sync.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3sync
func (a *API) sync(r *http.Request, who *users.Requester) (any, error) {
	q := r.URL.Query()
	req := syncapi.Request{UserID: who.UserID, DeviceID: who.DeviceID}
	if s := q.Get("since"); s != "" {
		t, err := syncapi.ParseToken(s)
		if err != nil {
			return nil, err
		}
		req.Since = &t
	}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxerr.InvalidParam("timeout must be a non-negative integer of milliseconds")
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return nil, mxerr.InvalidParam("full_state must be true or false")
	}
	// use_state_after (MSC4222, in the spec since v1.16), also under its
	// unstable name: the state section is then state_after, named as the
	// parameter was.
	for _, p := range [][2]string{
		{"use_state_after", syncapi.StateAfterStable},
		{"org.matrix.msc4222.use_state_after", syncapi.StateAfterUnstable},
	} {
		switch q.Get(p[0]) {
		case "", "false":
		case "true":
			req.StateAfter = append(req.StateAfter, p[1])
		default:
			return nil, mxerr.InvalidParam("%s must be true or false", p[0])
		}
	}
	switch q.Get("set_presence") {
	case "", "online", "offline", "unavailable":
	default:
		return nil, mxerr.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if s := q.Get("filter"); s != "" {
		raw := []byte(s)
		if !strings.HasPrefix(strings.TrimSpace(s), "{") {
			stored, err := a.users.Filter(r.Context(), who.UserID, s)
			if err != nil {
				return nil, mxerr.InvalidParam("Unknown filter %q", s)
			}
			raw = stored
		}
		f, err := users.ParseFilter(raw)
		if err != nil {
			return nil, err
		}
		req.Filter = f
	}
	// The sync keeps the user online (or idle, or leaves them alone) while
	// it runs.
	defer a.syncs.Presence().Syncing(r.Context(), who.UserID, q.Get("set_presence"))()
	return a.syncs.Sync(r.Context(), req)
}
