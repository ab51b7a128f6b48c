package cluster

import (
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
}

// writeRoom returns the room a client request writes to, if it is one of
// the writes forwarded to the room's owner.
func writeRoom(r *http.Request) (string, bool) {
	var rest string
	for _, p := range []string{"/_matrix/client/v3/", "/_matrix/client/r0/"} {
		if s, ok := strings.CutPrefix(r.URL.EscapedPath(), p); ok {
			rest = s
			break
		}
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) >= 3 && parts[0] == "rooms":
		if m, ok := roomWrites[parts[2]]; !ok || m != r.Method {
			return "", false
		}
	case len(parts) == 2 && parts[0] == "join" && r.Method == http.MethodPost:
		// By room ID only: an alias is resolved where the request lands.
	default:
		return "", false
	}
	roomID, err := url.PathUnescape(parts[1])
	if err != nil || !strings.HasPrefix(roomID, "!") {
		return "", false
	}
	return roomID, true
}

// Forward serves the writes to rooms another instance owns by forwarding
// them to it, and everything else with next. A request another instance
// forwarded (it carries the secret) is always served here, so that two
// processes with different maps cannot bounce it between them.
func (m *Map) Forward(log logrus.FieldLogger, next http.Handler) http.Handler {
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
			next.ServeHTTP(w, r)
			return
		}
		roomID, ok := writeRoom(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
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
