package clientapi_test

// The client-server API as an application service: as_token
// authentication and identity assertion, registration and login of the
// service's users, exclusive namespaces and rate limits; the rest is in
// appservice_more_test.go.
// https://spec.matrix.org/v1.19/application-service-api/#client-server-api-extensions

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// The test services, on server tessera.test:
//   - bridge: a bridge with a URL, users @_bridge_*, aliases #_bridge_*,
//     protocol "chat", not rate limited;
//   - e2b: an MSC4190 bridge without a URL, users @e2b_* (no underscore,
//     so that ordinary users could ask for them), rate limited;
//   - broken: declares "chat" too, but its every answer is a 500;
//   - down: its URL refuses connections.
const (
	bridgeToken = "as-token-bridge"
	e2bToken    = "as-token-e2b"
	brokenToken = "as-token-broken"
	downToken   = "as-token-down"
)

// fakeAS is the HTTP side of the test services: it records what the
// server asked and answers as the service whose hs_token came.
type fakeAS struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string // "hs_token METHOD path?query body"
}

func (f *fakeAS) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func newFakeAS(t *testing.T) *fakeAS {
	f := &fakeAS{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hs := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		f.got = append(f.got, fmt.Sprintf("%s %s %s %s", hs, r.Method, r.URL.RequestURI(), body))
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if hs != "hs-token-bridge" {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"broken"}`)
			return
		}
		switch {
		case r.URL.Path == "/_matrix/app/v1/ping":
			_, _ = io.WriteString(w, `{}`)
		case r.URL.Path == "/_matrix/app/v1/thirdparty/protocol/chat":
			_, _ = io.WriteString(w, `{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://x/y",
				"field_types":{},"instances":[{"desc":"Chat net","network_id":"chatnet","fields":{}}]}`)
		case r.URL.Path == "/_matrix/app/v1/thirdparty/location/chat":
			_, _ = fmt.Fprintf(w, `[{"alias":"#_bridge_%s:tessera.test","protocol":"chat","fields":{}}]`, r.URL.Query().Get("channel"))
		case r.URL.Path == "/_matrix/app/v1/thirdparty/user/chat":
			_, _ = fmt.Fprintf(w, `[{"userid":"@_bridge_%s:tessera.test","protocol":"chat","fields":{}}]`, r.URL.Query().Get("nick"))
		case r.URL.Path == "/_matrix/app/v1/thirdparty/location":
			_, _ = io.WriteString(w, `[{"alias":"`+r.URL.Query().Get("alias")+`","protocol":"chat","fields":{"channel":"x"}}]`)
		case r.URL.Path == "/_matrix/app/v1/thirdparty/user":
			_, _ = io.WriteString(w, `[]`)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"?"}`)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// registrations writes the test services' registration files.
func registrations(t *testing.T, asURL string) []string {
	dir := t.TempDir()
	files := map[string]string{
		"bridge.yaml": `id: bridge
url: ` + asURL + `
as_token: ` + bridgeToken + `
hs_token: hs-token-bridge
sender_localpart: bridgebot
rate_limited: false
protocols: [chat]
namespaces:
  users: [{exclusive: true, regex: '@_bridge_.*:tessera\.test'}]
  aliases: [{exclusive: true, regex: '#_bridge_.*:tessera\.test'}]
`,
		"e2b.yaml": `id: e2b
url: null
as_token: ` + e2bToken + `
hs_token: hs-token-e2b
sender_localpart: e2bbot
io.element.msc4190: true
namespaces:
  users: [{exclusive: true, regex: '@e2b_.*:tessera\.test'}]
`,
		"broken.yaml": `id: broken
url: ` + asURL + `
as_token: ` + brokenToken + `
hs_token: hs-token-broken
sender_localpart: brokenbot
protocols: [chat]
`,
		"down.yaml": `id: down
url: http://127.0.0.1:1
as_token: ` + downToken + `
hs_token: hs-token-down
sender_localpart: downbot
`,
	}
	var paths []string
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func withAppServices(paths []string) testserver.Option {
	return func(c *config.Config) { c.AppServices = paths }
}

// startAS starts a server with the test services.
func startAS(t *testing.T, opts ...testserver.Option) (*testserver.Server, *fakeAS) {
	f := newFakeAS(t)
	srv := testserver.Start(t, append([]testserver.Option{withAppServices(registrations(t, f.srv.URL))}, opts...)...)
	return srv, f
}

// asReg registers a user for a service with inhibit_login.
func asReg(t *testing.T, srv *testserver.Server, token, localpart string) {
	t.Helper()
	post(t, srv, v3+"/register", token, map[string]any{
		"type": "m.login.application_service", "username": localpart, "inhibit_login": true,
	}).expect(t, http.StatusOK, "")
}

func q(userID string) string { return "?user_id=" + url.QueryEscape(userID) }

func TestAppServiceAuth(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, bridgeToken, "_bridge_puppet")
	asReg(t, srv, e2bToken, "e2b_puppet")
	put(t, srv, v3+"/devices/E2BDEV"+q("@e2b_puppet:tessera.test"), e2bToken, map[string]any{}).expect(t, http.StatusCreated, "")

	cases := []struct {
		name, token, query string
		status             int
		errcode            string
		userID, deviceID   string
	}{
		{"sender", bridgeToken, "", 200, "", "@bridgebot:tessera.test", ""},
		{"puppet", bridgeToken, q("@_bridge_puppet:tessera.test"), 200, "", "@_bridge_puppet:tessera.test", ""},
		{"sender by user_id", bridgeToken, q("@bridgebot:tessera.test"), 200, "", "@bridgebot:tessera.test", ""},
		{"unregistered puppet", bridgeToken, q("@_bridge_ghost:tessera.test"), 403, "M_FORBIDDEN", "", ""},
		{"user outside the namespace", bridgeToken, q("@alice:tessera.test"), 403, "M_FORBIDDEN", "", ""},
		{"another service's user", bridgeToken, q("@e2b_puppet:tessera.test"), 403, "M_FORBIDDEN", "", ""},
		{"user of another server", bridgeToken, q("@_bridge_puppet:elsewhere.test"), 403, "M_FORBIDDEN", "", ""},
		{"ordinary token ignores user_id", alice.AccessToken, q("@_bridge_puppet:tessera.test"), 200, "", alice.UserID, alice.DeviceID},
		{"device of an MSC4190 service", e2bToken, q("@e2b_puppet:tessera.test") + "&device_id=E2BDEV", 200, "", "@e2b_puppet:tessera.test", "E2BDEV"},
		{"MSC3202 device parameter", e2bToken, q("@e2b_puppet:tessera.test") + "&org.matrix.msc3202.device_id=E2BDEV", 200, "", "@e2b_puppet:tessera.test", "E2BDEV"},
		{"unknown device", e2bToken, q("@e2b_puppet:tessera.test") + "&device_id=NOPE", 400, "M_UNKNOWN_DEVICE", "", ""},
		{"any service asserts devices (MSC4326)", bridgeToken, q("@_bridge_puppet:tessera.test") + "&device_id=NOPE", 400, "M_UNKNOWN_DEVICE", "", ""},
		{"wrong token", "as-token-nope", "", 401, "M_UNKNOWN_TOKEN", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := get(t, srv, v3+"/account/whoami"+c.query, c.token).expect(t, c.status, c.errcode)
			if c.status != 200 {
				return
			}
			if r.str("user_id") != c.userID || r.str("device_id") != c.deviceID {
				t.Fatalf("whoami = %s, want %s / %q", r.Raw, c.userID, c.deviceID)
			}
		})
	}
	// A service without a device still syncs, as its sender or a puppet.
	for _, query := range []string{"?timeout=0", q("@_bridge_puppet:tessera.test") + "&timeout=0"} {
		r := get(t, srv, v3+"/sync"+query, bridgeToken).expect(t, http.StatusOK, "")
		if r.str("next_batch") == "" {
			t.Fatalf("sync %s: no next_batch: %s", query, r.Raw)
		}
	}
	// Every registered service's sender exists from the start.
	for _, sender := range []string{"bridgebot", "e2bbot", "brokenbot", "downbot"} {
		get(t, srv, v3+"/profile/@"+sender+":tessera.test", "").expect(t, http.StatusOK, "")
	}
}

func TestAppServiceRegister(t *testing.T) {
	srv, _ := startAS(t)
	asType := map[string]any{"type": "m.login.application_service"}
	with := func(extra map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range asType {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		name    string
		token   string
		body    map[string]any
		status  int
		errcode string
		login   bool // a token comes back
	}{
		{"puppet, inhibit_login", bridgeToken, with(map[string]any{"username": "_bridge_a", "inhibit_login": true}), 200, "", false},
		{"puppet with a login", bridgeToken, with(map[string]any{"username": "_bridge_b"}), 200, "", true},
		{"type inside auth", bridgeToken, map[string]any{"username": "_bridge_c", "auth": asType, "inhibit_login": true}, 200, "", false},
		{"taken", bridgeToken, with(map[string]any{"username": "_bridge_a", "inhibit_login": true}), 400, "M_USER_IN_USE", false},
		{"outside the namespace", bridgeToken, with(map[string]any{"username": "carol", "inhibit_login": true}), 400, "M_EXCLUSIVE", false},
		{"another service's namespace", bridgeToken, with(map[string]any{"username": "e2b_x", "inhibit_login": true}), 400, "M_EXCLUSIVE", false},
		{"service without namespace", downToken, with(map[string]any{"username": "dave", "inhibit_login": true}), 400, "M_EXCLUSIVE", false},
		{"MSC4190 service must inhibit login", e2bToken, with(map[string]any{"username": "e2b_y"}), 400, "M_APPSERVICE_LOGIN_UNSUPPORTED", false},
		{"MSC4190 service", e2bToken, with(map[string]any{"username": "e2b_y", "inhibit_login": true}), 200, "", false},
		{"no username", bridgeToken, with(map[string]any{"inhibit_login": true}), 400, "M_MISSING_PARAM", false},
		{"wrong token", "as-token-nope", with(map[string]any{"username": "_bridge_d"}), 401, "M_UNKNOWN_TOKEN", false},
		{"no token", "", with(map[string]any{"username": "_bridge_d"}), 401, "M_MISSING_TOKEN", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, srv, v3+"/register", c.token, c.body).expect(t, c.status, c.errcode)
			if c.status != 200 {
				return
			}
			if want := "@" + c.body["username"].(string) + ":tessera.test"; r.str("user_id") != want {
				t.Fatalf("user_id = %q, want %q", r.str("user_id"), want)
			}
			if c.login {
				tokenWorks(t, srv, r.str("access_token"), r.str("user_id"))
			} else if r.str("access_token") != "" {
				t.Fatalf("inhibit_login, yet a token: %s", r.Raw)
			}
		})
	}
	// Ordinary users cannot take a user ID in an exclusive namespace.
	t.Run("ordinary registration", func(t *testing.T) {
		post(t, srv, v3+"/register", "", map[string]any{"username": "e2b_eve", "password": "password-eve"}).
			expect(t, http.StatusBadRequest, "M_EXCLUSIVE")
		get(t, srv, v3+"/register/available?username=e2b_eve", "").expect(t, http.StatusBadRequest, "M_EXCLUSIVE")
		get(t, srv, v3+"/register/available?username=bridgebot", "").expect(t, http.StatusBadRequest, "M_EXCLUSIVE")
		get(t, srv, v3+"/register/available?username=eve", "").expect(t, http.StatusOK, "")
	})
}

func TestAppServiceLogin(t *testing.T) {
	srv, _ := startAS(t)
	registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, bridgeToken, "_bridge_a")
	asReg(t, srv, e2bToken, "e2b_a")

	flows := get(t, srv, v3+"/login", "").expect(t, http.StatusOK, "")
	if !strings.Contains(string(flows.Raw), `"m.login.application_service"`) {
		t.Fatalf("GET /login does not offer m.login.application_service: %s", flows.Raw)
	}
	body := func(user string) map[string]any {
		return map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": user}}
	}
	cases := []struct {
		name, token, user string
		status            int
		errcode           string
	}{
		{"puppet", bridgeToken, "_bridge_a", 200, ""},
		{"puppet by user ID", bridgeToken, "@_bridge_a:tessera.test", 200, ""},
		{"sender", bridgeToken, "bridgebot", 200, ""},
		{"unregistered puppet", bridgeToken, "_bridge_ghost", 403, "M_FORBIDDEN"},
		{"user outside the namespace", bridgeToken, "alice", 400, "M_EXCLUSIVE"},
		{"MSC4190 service", e2bToken, "e2b_a", 400, "M_APPSERVICE_LOGIN_UNSUPPORTED"},
		{"wrong token", "as-token-nope", "_bridge_a", 401, "M_UNKNOWN_TOKEN"},
		{"no token", "", "_bridge_a", 401, "M_MISSING_TOKEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, srv, v3+"/login", c.token, body(c.user)).expect(t, c.status, c.errcode)
			if c.status == 200 {
				s := sessionOf(t, r)
				tokenWorks(t, srv, s.AccessToken, s.UserID)
			}
		})
	}
}

func TestAppServiceExclusiveAliases(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, bridgeToken, "_bridge_p")
	roomOf := func(token, query string) string {
		r := post(t, srv, v3+"/createRoom"+query, token, map[string]any{}).expect(t, http.StatusOK, "")
		return r.str("room_id")
	}
	aliceRoom := roomOf(alice.AccessToken, "")
	botRoom := roomOf(bridgeToken, "")
	e2bRoom := roomOf(e2bToken, "")
	esc := url.PathEscape
	cases := []struct {
		name, token, query, alias, roomID string
		status                            int
		errcode                           string
	}{
		{"ordinary user, reserved alias", alice.AccessToken, "", "#_bridge_x:tessera.test", aliceRoom, 400, "M_EXCLUSIVE"},
		{"ordinary user, free alias", alice.AccessToken, "", "#free:tessera.test", aliceRoom, 200, ""},
		{"the service's sender", bridgeToken, "", "#_bridge_x:tessera.test", botRoom, 200, ""},
		{"the service's puppet", bridgeToken, q("@_bridge_p:tessera.test"), "#_bridge_y:tessera.test", botRoom, 200, ""},
		{"another service", e2bToken, "", "#_bridge_z:tessera.test", e2bRoom, 400, "M_EXCLUSIVE"},
		{"the service, outside its namespaces", bridgeToken, "", "#free2:tessera.test", botRoom, 400, "M_EXCLUSIVE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			put(t, srv, v3+"/directory/room/"+esc(c.alias)+c.query, c.token, map[string]any{"room_id": c.roomID}).
				expect(t, c.status, c.errcode)
		})
	}
	t.Run("createRoom room_alias_name", func(t *testing.T) {
		post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"room_alias_name": "_bridge_new"}).
			expect(t, http.StatusBadRequest, "M_EXCLUSIVE")
		post(t, srv, v3+"/createRoom"+q("@_bridge_p:tessera.test"), bridgeToken, map[string]any{"room_alias_name": "_bridge_new"}).
			expect(t, http.StatusOK, "")
		post(t, srv, v3+"/createRoom", bridgeToken, map[string]any{"room_alias_name": "free3"}).
			expect(t, http.StatusBadRequest, "M_EXCLUSIVE")
		r := get(t, srv, v3+"/directory/room/"+esc("#_bridge_new:tessera.test"), "").expect(t, http.StatusOK, "")
		if r.str("room_id") == "" {
			t.Fatalf("alias not created: %s", r.Raw)
		}
	})
}

func TestAppServiceRateLimits(t *testing.T) {
	srv, _ := startAS(t, rateLimited(func(l *config.RateLimits) {
		l.MediaUploadsPerUser = config.Rate{PerSecond: 0.001, Burst: 1}
		l.RegisterPerAddress = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	// Registrations: the unlimited bridge registers any number, the
	// limited service shares the address's budget (alice took one).
	alice := registerUser(t, srv, "alice", "password-alice")
	for _, name := range []string{"_bridge_p", "_bridge_q", "_bridge_r"} {
		asReg(t, srv, bridgeToken, name)
	}
	asReg(t, srv, e2bToken, "e2b_p")
	expectLimited(t, post(t, srv, v3+"/register", e2bToken, map[string]any{
		"type": "m.login.application_service", "username": "e2b_q", "inhibit_login": true,
	}))
	upload := func(token, query string) resp {
		return do(t, srv, req{Method: http.MethodPost, Path: "/_matrix/media/v3/upload" + query, Token: token,
			Body: "hello", Headers: map[string]string{"Content-Type": "text/plain"}})
	}
	cases := []struct {
		name, token, query string
		limited            bool
	}{
		{"rate_limited: false sender", bridgeToken, "", false},
		{"rate_limited: false puppet", bridgeToken, q("@_bridge_p:tessera.test"), false},
		{"rate-limited service", e2bToken, q("@e2b_p:tessera.test"), true},
		{"ordinary user", alice.AccessToken, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			upload(c.token, c.query).expect(t, http.StatusOK, "")
			for range 3 {
				r := upload(c.token, c.query)
				if c.limited {
					expectLimited(t, r)
					return
				}
				r.expect(t, http.StatusOK, "")
			}
		})
	}
}
