// Package voip hands clients the TURN relays they use for 1:1 calls.
//
// Credentials follow the TURN REST API scheme coturn implements with
// use-auth-secret: the username is "<expiry unix seconds>:<user_id>" and the
// password is base64(HMAC-SHA1(shared secret, username)), so the TURN server
// checks them without asking us.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3voipturnserver
package voip

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
)

// TURNServer is the body of GET /voip/turnServer.
type TURNServer struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	// TTL is how long the credentials stay valid, in seconds.
	TTL int64 `json:"ttl"`
}

// Credentials returns userID's TURN credentials at now, or nil when no TURN
// server is configured (the endpoint then answers {}, as Synapse does).
func Credentials(cfg config.VoIP, userID string, now time.Time) *TURNServer {
	if len(cfg.TURNURIs) == 0 {
		return nil
	}
	lifetime := cfg.TURNUserLifetime.Std()
	srv := &TURNServer{URIs: cfg.TURNURIs, TTL: int64(lifetime / time.Second)}
	switch {
	case cfg.TURNSharedSecret != "":
		srv.Username = strconv.FormatInt(now.Add(lifetime).Unix(), 10) + ":" + userID
		mac := hmac.New(sha1.New, []byte(cfg.TURNSharedSecret))
		mac.Write([]byte(srv.Username))
		srv.Password = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	case cfg.TURNUsername != "":
		srv.Username, srv.Password = cfg.TURNUsername, cfg.TURNPassword
	default:
		return nil
	}
	return srv
}
