package cluster

import (
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// SecretHeader carries the instance secret on a request one process
// forwards to another.
const SecretHeader = "X-Tessera-Instance-Secret"

// roomWrites are the client endpoints under /rooms/{roomId}/ that write
// events to the room: its owner's sequencer must run them. The value is
// the method.
var roomWrites = map[string]string{
	"send": http.MethodPut, "state": http.MethodPut, "redact": http.MethodPut,
	"join": http.MethodPost, "leave": http.MethodPost, "invite": http.MethodPost,
	"kick": http.MethodPost, "ban": http.MethodPost, "unban": http.MethodPost,
	// The old room's tombstone and power levels; the new room is created
	// by the same process, so it owns that too (see roomserver.Cluster).
	"upgrade": http.MethodPost,
}

// adminRoomWrites are the admin endpoints under /rooms/{roomId} that write
// the room's events (kicks, power levels) or keep what they started in
// the owner's memory (a deletion's status): "METHOD /SUFFIX" after the
// room ID.
var adminRoomWrites = map[string]bool{
	"DELETE ":               true, // v1 and v2: kick everyone, then purge
	"POST /make_room_admin": true,
	"GET /delete_status":    true, // v2: the deletion runs on the owner
}

// fedRoomWrites are the federation endpoints, "METHOD VERSION/NAME"
// before /{roomId}/, that the room's owner serves: the joins, leaves and
// knocks of other servers' users (their templates too, built on the
// owner's view of the room) and invites. Transactions (/send) carry PDUs
// of many rooms: the federation edge hands each room's to its owner.
var fedRoomWrites = map[string]bool{
	"GET v1/make_join": true, "PUT v1/send_join": true, "PUT v2/send_join": true,
	"GET v1/make_leave": true, "PUT v1/send_leave": true, "PUT v2/send_leave": true,
	"GET v1/make_knock": true, "PUT v1/send_knock": true,
	"PUT v1/invite": true, "PUT v2/invite": true,
}

// fedWriteTarget returns the room a federation request writes to, if its
// owner serves it.
func fedWriteTarget(r *http.Request) (string, bool) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/_matrix/federation/")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 3 || !fedRoomWrites[r.Method+" "+parts[0]+"/"+parts[1]] {
		return "", false
	}
	target, err := url.PathUnescape(parts[2])
	if err != nil || !strings.HasPrefix(target, "!") {
		return "", false
	}
	return target, true
}

// ServerNoticesKey is the key whose owner sends every server notice: one
// process at a time decides whether a user's notices room exists, so that
// two notices sent at once through two processes cannot make two rooms;
// the rooms it creates are its own (roomserver.CreateRoom picks IDs this
// process owns), so that its writes to them need no forwarding.
const ServerNoticesKey = "server notices"

// writeTarget returns the room (a room ID, or an alias to resolve first) a
// request writes to, if it is one of the writes served by the room's
// owner; or the key of a singleton write (ServerNoticesKey).
func writeTarget(r *http.Request) (string, bool) {
	path := r.URL.EscapedPath()
	if strings.HasPrefix(path, "/_matrix/federation/") {
		return fedWriteTarget(r)
	}
	var rest string
	admin := false
	for _, p := range []string{"/_matrix/client/v3/", "/_matrix/client/r0/", "/_synapse/admin/v1/", "/_synapse/admin/v2/"} {
		if s, ok := strings.CutPrefix(path, p); ok {
			rest, admin = s, strings.HasPrefix(p, "/_synapse/")
			break
		}
	}
	parts := strings.Split(rest, "/")
	if admin && parts[0] == "send_server_notice" && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		return ServerNoticesKey, true
	}
	switch {
	case admin && len(parts) >= 2 && parts[0] == "rooms":
		if !adminRoomWrites[r.Method+" "+strings.Join(append([]string{""}, parts[2:]...), "/")] {
			return "", false
		}
	case len(parts) >= 3 && parts[0] == "rooms" && !admin:
		if m, ok := roomWrites[parts[2]]; !ok || m != r.Method {
			return "", false
		}
	case len(parts) == 2 && (parts[0] == "join" || parts[0] == "knock" && !admin) && r.Method == http.MethodPost:
		// By room ID or alias: an alias is resolved to find the owner.
	default:
		return "", false
	}
	target, err := url.PathUnescape(parts[1])
	if err != nil || !strings.HasPrefix(target, "!") && !strings.HasPrefix(target, "#") {
		return "", false
	}
	if strings.HasPrefix(target, "#") && parts[0] == "rooms" {
		return "", false // the endpoint refuses aliases itself
	}
	return target, true
}

// Resolver turns a room alias into the room ID it points to, or "" when
// it is unknown here (the request is then served where it lands, which
// answers it as one process would).
type Resolver func(ctx context.Context, alias string) (string, error)

// Forward serves the writes to rooms another instance owns by forwarding
// them to it, and everything else with next. A request another instance
// forwarded (it carries the secret) is always served here, so that two
// processes with different maps cannot bounce it between them.
func (m *Map) Forward(log logrus.FieldLogger, resolve Resolver, next http.Handler) http.Handler {
	proxies := map[string]*httputil.ReverseProxy{}
	for name, u := range m.urls {
		proxies[name] = m.proxy(name, u, log)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := r.Header.Get(SecretHeader); s != "" {
			if !m.checkSecret(s) {
				httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Bad instance secret").Body())
				return
			}
			r.Header.Del(SecretHeader)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), fromInstanceKey{}, true)))
			return
		}
		if strings.HasPrefix(r.URL.Path, InternalPrefix) {
			// Only for the other instances.
			httpx.WriteJSON(w, http.StatusForbidden, mxerr.Forbidden("Internal endpoint").Body())
			return
		}
		roomID, ok := writeTarget(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(roomID, "#") {
			id, err := resolve(r.Context(), roomID)
			if err != nil || id == "" {
				// Unknown or unreachable here: the local handler
				// answers (M_NOT_FOUND, or a join over federation).
				next.ServeHTTP(w, r)
				return
			}
			roomID = id
		}
		owner := m.Owner(roomID)
		if owner == m.self {
			next.ServeHTTP(w, r)
			return
		}
		proxies[owner].ServeHTTP(w, r)
	})
}

// proxy forwards requests to instance name at u: the client's request as
// it came (its access token, body and query), with the secret, and the
// owner's answer returned as is.
func (m *Map) proxy(name string, u *url.URL, log logrus.FieldLogger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(SecretHeader, m.secret)
		},
		ModifyResponse: func(resp *http.Response) error {
			// This process's CORS middleware has set them already; two
			// copies would make browsers refuse the answer.
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					resp.Header.Del(k)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.WithError(err).WithField("instance", name).Warn("forwarding a room write to its owner")
			httpx.WriteJSON(w, http.StatusBadGateway,
				mxerr.Unknown(http.StatusBadGateway, "Instance %s, which owns this room, is unavailable; retry later", name).Body())
		},
	}
}

type fromInstanceKey struct{}

// FromInstance reports whether r came from another instance of the
// deployment (it carried the instance secret, which Forward checked).
func FromInstance(r *http.Request) bool {
	v, _ := r.Context().Value(fromInstanceKey{}).(bool)
	return v
}
