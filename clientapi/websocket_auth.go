package clientapi

import (
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/tessera-hs/tessera/internal/httpx"
	"github.com/tessera-hs/tessera/internal/mxerr"
)

// StreamTokenProtocolPrefix marks the access token offered as a WebSocket
// subprotocol: "org.tessera.token.<access token>" beside "m.json". A
// browser cannot set headers on a WebSocket, and a token in the URL would
// land in proxies' logs and browser history; the subprotocol list is a
// header, and the server answers with "m.json" only, never echoing the
// token. Our tokens are base64url with a prefix, which a subprotocol
// (an HTTP token) may hold.
const StreamTokenProtocolPrefix = "org.tessera.token."

// streamToken is the stream's access token: from the Authorization header
// or the access_token parameter, as on every endpoint, else from the
// subprotocols (inProtocol true).
func streamToken(r *http.Request) (token string, inProtocol bool, err error) {
	token, err = accessToken(r)
	if err == nil {
		return token, false, nil
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(p), StreamTokenProtocolPrefix); ok && t != "" {
				return t, true, nil
			}
		}
	}
	return "", false, err
}

// refuseInStream answers a refused token that came as a subprotocol from a
// browser, which cannot read an HTTP refusal of a WebSocket (it sees only a
// failed connection): the upgrade is accepted and the stream closed at
// once with 4401 and the errcode as the reason ("M_UNKNOWN_TOKEN", plus
// " soft_logout" for an expired token), as when a token stops working on
// an open stream. It reports false, having done nothing, for any other
// error or a request that is no proper stream upgrade.
func refuseInStream(w http.ResponseWriter, r *http.Request, err error) bool {
	me, ok := mxerr.As(err)
	if !ok || me.Status != http.StatusUnauthorized ||
		!httpx.HeaderHasToken(r.Header, "Connection", "upgrade") || !httpx.HeaderHasToken(r.Header, "Upgrade", "websocket") ||
		!httpx.HeaderHasToken(r.Header, "Sec-WebSocket-Protocol", streamSubprotocol) {
		return false
	}
	ws, aerr := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{streamSubprotocol},
		// As for an accepted stream (see ServeHTTP): only the token counts.
		InsecureSkipVerify: true,
	})
	if aerr != nil {
		return true // Accept has answered
	}
	reason := me.Code
	if soft, _ := me.Extra["soft_logout"].(bool); soft {
		reason += " soft_logout"
	}
	_ = ws.Close(closeTokenInvalid, reason)
	return true
}
