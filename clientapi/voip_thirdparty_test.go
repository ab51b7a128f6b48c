package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestTURNServer(t *testing.T) {
	t.Run("none configured", func(t *testing.T) {
		srv := testserver.Start(t)
		alice := srv.Register("alice", "password1")
		r := get(t, srv, v3+"/voip/turnServer", alice.AccessToken).expect(t, http.StatusOK, "")
		if len(r.Body) != 0 {
			t.Fatalf("want {}, got %s", r.Raw)
		}
		get(t, srv, v3+"/voip/turnServer", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})

	t.Run("shared secret", func(t *testing.T) {
		uris := []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"}
		srv := testserver.Start(t, guestsAllowed, func(c *config.Config) {
			c.VoIP.TURNURIs = uris
			c.VoIP.TURNSharedSecret = "coturn-secret"
			c.VoIP.TURNUserLifetime = config.Duration(30 * time.Minute)
			c.VoIP.TURNAllowGuests = false
		})
		alice := srv.Register("alice", "password1")
		before := time.Now()
		r := get(t, srv, v3+"/voip/turnServer", alice.AccessToken).expect(t, http.StatusOK, "")
		user := r.str("username")
		expiry, who, ok := strings.Cut(user, ":")
		if !ok || who != string(alice.UserID) {
			t.Fatalf("username = %q, want <expiry>:%s", user, alice.UserID)
		}
		exp, err := strconv.ParseInt(expiry, 10, 64)
		if err != nil || exp < before.Add(30*time.Minute).Unix() || exp > time.Now().Add(30*time.Minute).Unix() {
			t.Fatalf("expiry %q is not now+30m", expiry)
		}
		mac := hmac.New(sha1.New, []byte("coturn-secret"))
		mac.Write([]byte(user))
		if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.str("password") != want {
			t.Fatalf("password = %q, want %q", r.str("password"), want)
		}
		if ttl, _ := r.Body["ttl"].(float64); ttl != 1800 {
			t.Fatalf("ttl = %v, want 1800", r.Body["ttl"])
		}
		got, _ := r.Body["uris"].([]any)
		if len(got) != 2 || got[0] != uris[0] || got[1] != uris[1] {
			t.Fatalf("uris = %v, want %v", got, uris)
		}

		g := sessionOf(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusOK, ""))
		get(t, srv, v3+"/voip/turnServer", g.AccessToken).expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	})
}

func TestThirdPartyLookups(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "password1")
	tok := alice.AccessToken

	r := get(t, srv, v3+"/thirdparty/protocols", tok).expect(t, http.StatusOK, "")
	if len(r.Body) != 0 {
		t.Fatalf("protocols = %s, want {} (no application services)", r.Raw)
	}
	for _, tc := range []struct {
		path    string
		status  int
		errcode string
	}{
		{"/thirdparty/protocol/irc", http.StatusNotFound, "M_NOT_FOUND"},
		{"/thirdparty/location/irc?searchFields=x", http.StatusNotFound, "M_NOT_FOUND"},
		{"/thirdparty/user/irc", http.StatusNotFound, "M_NOT_FOUND"},
		{"/thirdparty/location?alias=%23a:tessera.test", http.StatusNotFound, "M_NOT_FOUND"},
		{"/thirdparty/user?userid=@a:tessera.test", http.StatusNotFound, "M_NOT_FOUND"},
		{"/thirdparty/location", http.StatusBadRequest, "M_MISSING_PARAM"},
		{"/thirdparty/user", http.StatusBadRequest, "M_MISSING_PARAM"},
	} {
		get(t, srv, v3+tc.path, tok).expect(t, tc.status, tc.errcode)
	}
	get(t, srv, v3+"/thirdparty/protocols", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}
