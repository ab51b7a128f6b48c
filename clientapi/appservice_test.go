package clientapi_test

// The client-server API as an application service: as_token
// authentication and identity assertion, registration and login of the
// service's users, exclusive namespaces, rate limits, the ping, network
// room lists, third-party lookups and MSC4190 devices.
// https://spec.matrix.org/v1.19/application-service-api/#client-server-api-extensions

import (
	"encoding/json"
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

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

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
		{"device ignored without MSC4190", bridgeToken, q("@_bridge_puppet:tessera.test") + "&device_id=NOPE", 200, "", "@_bridge_puppet:tessera.test", ""},
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
		{"MSC4190 service must inhibit login", e2bToken, with(map[string]any{"username": "e2b_y"}), 400, "IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED", false},
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
		{"MSC4190 service", e2bToken, "e2b_a", 400, "IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED"},
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

func TestAppServicePing(t *testing.T) {
	srv, f := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	ping := func(id, token string, body any) resp {
		return post(t, srv, "/_matrix/client/v1/appservice/"+id+"/ping", token, body)
	}
	cases := []struct {
		name, id, token string
		status          int
		errcode         string
	}{
		{"itself", "bridge", bridgeToken, 200, ""},
		{"another service", "e2b", bridgeToken, 403, "M_FORBIDDEN"},
		{"an ordinary user", "bridge", alice.AccessToken, 403, "M_FORBIDDEN"},
		{"no url", "e2b", e2bToken, 400, "M_URL_NOT_SET"},
		{"the service fails", "broken", brokenToken, 502, "M_BAD_STATUS"},
		{"the service is down", "down", downToken, 502, "M_CONNECTION_FAILED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ping(c.id, c.token, map[string]any{"transaction_id": "txn-" + c.id}).expect(t, c.status, c.errcode)
			switch c.errcode {
			case "":
				if _, ok := r.Body["duration_ms"].(float64); !ok {
					t.Fatalf("no duration_ms: %s", r.Raw)
				}
				want := `hs-token-bridge POST /_matrix/app/v1/ping {"transaction_id":"txn-bridge"}`
				if got := f.seen(); len(got) == 0 || got[len(got)-1] != want {
					t.Fatalf("the service saw %q, want last %q", got, want)
				}
			case "M_BAD_STATUS":
				if r.Body["status"] != float64(500) || !strings.Contains(fmt.Sprint(r.Body["body"]), "broken") {
					t.Fatalf("M_BAD_STATUS without the service's status and body: %s", r.Raw)
				}
			}
		})
	}
	t.Run("no transaction_id", func(t *testing.T) {
		ping("bridge", bridgeToken, map[string]any{}).expect(t, http.StatusOK, "")
	})
}

func TestAppServiceRoomDirectory(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	room := post(t, srv, v3+"/createRoom", bridgeToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")
	mainRoom := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat", "visibility": "public"}).
		expect(t, http.StatusOK, "").str("room_id")
	list := func(network, token, visibility string) resp {
		return put(t, srv, v3+"/directory/list/appservice/"+network+"/"+url.PathEscape(room), token,
			map[string]any{"visibility": visibility})
	}
	list("chatnet", alice.AccessToken, "public").expect(t, http.StatusForbidden, "M_FORBIDDEN")
	list("chatnet", bridgeToken, "hidden").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	list("chatnet", bridgeToken, "public").expect(t, http.StatusOK, "")

	rooms := func(body map[string]any) []string {
		r := post(t, srv, v3+"/publicRooms", alice.AccessToken, body).expect(t, http.StatusOK, "")
		var out []string
		for _, c := range r.Body["chunk"].([]any) {
			out = append(out, c.(map[string]any)["room_id"].(string))
		}
		return sorted(out...)
	}
	cases := []struct {
		name string
		body map[string]any
		want []string
	}{
		{"the server's directory", map[string]any{}, []string{mainRoom}},
		{"the network by instance_id", map[string]any{"third_party_instance_id": "bridge|chatnet"}, []string{room}},
		{"the network by network id", map[string]any{"third_party_instance_id": "chatnet"}, []string{room}},
		{"another network", map[string]any{"third_party_instance_id": "bridge|othernet"}, nil},
		{"another service's network", map[string]any{"third_party_instance_id": "e2b|chatnet"}, nil},
		{"all networks", map[string]any{"include_all_networks": true}, sorted(room, mainRoom)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := rooms(c.body); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("rooms = %v, want %v", got, c.want)
			}
		})
	}
	t.Run("both", func(t *testing.T) {
		post(t, srv, v3+"/publicRooms", alice.AccessToken, map[string]any{"include_all_networks": true, "third_party_instance_id": "chatnet"}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("private again", func(t *testing.T) {
		list("chatnet", bridgeToken, "private").expect(t, http.StatusOK, "")
		if got := rooms(map[string]any{"third_party_instance_id": "chatnet"}); len(got) != 0 {
			t.Fatalf("rooms = %v after private", got)
		}
	})
}

func TestAppServiceThirdParty(t *testing.T) {
	srv, f := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	tok := alice.AccessToken
	cases := []struct {
		name, path string
		status     int
		errcode    string
		want       string // a substring of the answer
	}{
		{"protocols", "/thirdparty/protocols", 200, "", `"instance_id":"bridge|chatnet"`},
		{"protocol", "/thirdparty/protocol/chat", 200, "", `"location_fields":["channel"]`},
		{"unknown protocol", "/thirdparty/protocol/irc", 404, "M_NOT_FOUND", ""},
		{"location", "/thirdparty/location/chat?channel=general", 200, "", `"alias":"#_bridge_general:tessera.test"`},
		{"user", "/thirdparty/user/chat?nick=bob", 200, "", `"userid":"@_bridge_bob:tessera.test"`},
		{"location of an unknown protocol", "/thirdparty/location/irc?channel=x", 404, "M_NOT_FOUND", ""},
		{"reverse location", "/thirdparty/location?alias=" + url.QueryEscape("#_bridge_x:tessera.test"), 200, "", `"channel":"x"`},
		{"reverse user, none", "/thirdparty/user?userid=" + url.QueryEscape("@_bridge_x:tessera.test"), 404, "M_NOT_FOUND", ""},
		{"reverse without its parameter", "/thirdparty/location", 400, "M_MISSING_PARAM", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := get(t, srv, v3+c.path, tok)
			if c.status != http.StatusOK || strings.HasPrefix(c.path, "/thirdparty/proto") {
				r.expect(t, c.status, c.errcode)
			} else if r.Status != http.StatusOK || !strings.HasPrefix(string(r.Raw), "[") {
				t.Fatalf("status %d, want 200 and a list: %s", r.Status, r.Raw)
			}
			if c.want != "" && !strings.Contains(string(r.Raw), c.want) {
				t.Fatalf("answer %s lacks %s", r.Raw, c.want)
			}
		})
	}
	// The lookups reached the services with their hs_token and the
	// client's query, and the broken service's 500s were left out.
	var sawQuery, sawBroken bool
	for _, s := range f.seen() {
		sawQuery = sawQuery || strings.HasPrefix(s, "hs-token-bridge GET /_matrix/app/v1/thirdparty/location/chat?channel=general")
		sawBroken = sawBroken || strings.HasPrefix(s, "hs-token-broken GET /_matrix/app/v1/thirdparty/protocol/chat")
	}
	if !sawQuery || !sawBroken {
		t.Fatalf("requests to the services: %q", f.seen())
	}
	var protocols map[string]map[string]any
	if err := json.Unmarshal(get(t, srv, v3+"/thirdparty/protocols", tok).Raw, &protocols); err != nil || len(protocols) != 1 {
		t.Fatalf("protocols = %v (%v)", protocols, err)
	}
	if n := len(protocols["chat"]["instances"].([]any)); n != 1 {
		t.Fatalf("%d instances, want the bridge's 1", n)
	}
}

func TestAppServiceDevicesMSC4190(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, e2bToken, "e2b_p")
	asReg(t, srv, bridgeToken, "_bridge_p")
	as := q("@e2b_p:tessera.test")
	dev := func(id string) string { return v3 + "/devices/" + id + as }
	steps := []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"create", http.MethodPut, dev("DEV1"), e2bToken, map[string]any{"display_name": "bridge device"}, 201, ""},
		{"exists", http.MethodPut, dev("DEV1"), e2bToken, map[string]any{}, 200, ""},
		{"second", http.MethodPut, dev("DEV2"), e2bToken, map[string]any{}, 201, ""},
		{"use it", http.MethodGet, v3 + "/account/whoami" + as + "&device_id=DEV1", e2bToken, nil, 200, ""},
		{"listed", http.MethodGet, dev("DEV1"), e2bToken, nil, 200, ""},
		{"delete without UIA", http.MethodDelete, dev("DEV1"), e2bToken, map[string]any{}, 200, ""},
		{"gone", http.MethodGet, v3 + "/account/whoami" + as + "&device_id=DEV1", e2bToken, nil, 400, "M_UNKNOWN_DEVICE"},
		{"delete_devices without UIA", http.MethodPost, v3 + "/delete_devices" + as, e2bToken, map[string]any{"devices": []string{"DEV2"}}, 200, ""},
		{"any service (spec v1.17)", http.MethodPut, v3 + "/devices/NEW" + q("@_bridge_p:tessera.test"), bridgeToken, map[string]any{}, 201, ""},
		{"ordinary users only rename", http.MethodPut, v3 + "/devices/NEW", alice.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		{"ordinary users still need UIA", http.MethodDelete, v3 + "/devices/" + alice.DeviceID, alice.AccessToken, map[string]any{}, 401, ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			do(t, srv, req{Method: s.method, Path: s.path, Token: s.token, Body: s.body}).expect(t, s.status, s.errcode)
		})
	}
	// Cross-signing keys are replaced without UIA too (MSC4190).
	t.Run("cross-signing keys", func(t *testing.T) {
		for range 2 {
			cs := kxNewCrossSigning(t, "@e2b_p:tessera.test")
			post(t, srv, kxCSPath+as, e2bToken, cs.body(t)).expect(t, http.StatusOK, "")
		}
		// Ordinary users still need UIA.
		for i := range 2 {
			r := post(t, srv, kxCSPath, alice.AccessToken, kxNewCrossSigning(t, alice.UserID).body(t))
			if want := []int{200, 401}[i]; r.Status != want {
				t.Fatalf("upload %d by alice: %d, want %d: %s", i, r.Status, want, r.Raw)
			}
		}
	})
}

// TestAppServiceMautrixIntent drives the server with mautrix-go's
// appservice package, as a bridge does: puppets registered by their
// intents join a room and send into it, and a real user sees them.
func TestAppServiceMautrixIntent(t *testing.T) {
	srv, f := startAS(t)
	alice := client(srv, registerUser(t, srv, "alice", "password-alice"))
	reg := &appservice.Registration{
		ID: "bridge", URL: f.srv.URL, AppToken: bridgeToken, ServerToken: "hs-token-bridge",
		SenderLocalpart: "bridgebot", RateLimited: new(bool), Protocols: []string{"chat"},
	}
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "tessera.test", HomeserverURL: srv.URL})
	must(t, err, "create the appservice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	roomID := created.RoomID

	bot := as.BotIntent()
	must(t, bot.EnsureRegistered(ctx), "bot registered")
	for _, name := range []string{"_bridge_alpha", "_bridge_beta"} {
		puppet := as.Intent(id.NewUserID(name, "tessera.test"))
		must(t, puppet.EnsureRegistered(ctx), "register "+name)
		must(t, puppet.SetDisplayName(ctx, "Puppet "+name), "display name")
		must(t, puppet.EnsureJoined(ctx, roomID), "join")
		_, err := puppet.SendText(ctx, roomID, "hello from "+name)
		must(t, err, "send")
	}
	// Registering again is no error for the intent (M_USER_IN_USE).
	again := as.Intent(id.NewUserID("_bridge_alpha", "tessera.test"))
	must(t, again.EnsureRegistered(ctx), "register again")

	msgs, err := alice.Messages(ctx, roomID, "", "", 'b', nil, 20)
	must(t, err, "messages")
	seen := map[string]string{}
	for _, ev := range msgs.Chunk {
		if ev.Type == event.EventMessage {
			seen[ev.Sender.String()], _ = ev.Content.Raw["body"].(string)
		}
	}
	for _, name := range []string{"_bridge_alpha", "_bridge_beta"} {
		if got := seen["@"+name+":tessera.test"]; got != "hello from "+name {
			t.Fatalf("alice sees %q from %s (all: %v)", got, name, seen)
		}
	}
	// A puppet outside the namespace is refused.
	outsider := as.Intent(id.NewUserID("notmine", "tessera.test"))
	err = outsider.EnsureRegistered(ctx)
	wantErr(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
}

// TestAppServiceTimestampMassaging: a service's ts sets origin_server_ts of
// the messages and state events it sends; anyone else's is ignored.
// https://spec.matrix.org/v1.19/application-service-api/#timestamp-massaging
func TestAppServiceTimestampMassaging(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, bridgeToken, "_bridge_p")
	puppet := q("@_bridge_p:tessera.test")
	room := post(t, srv, v3+"/createRoom"+puppet, bridgeToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")
	post(t, srv, v3+"/join/"+url.PathEscape(room), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	rp := v3 + "/rooms/" + url.PathEscape(room)
	cases := []struct {
		name, path, token string
		status            int
		errcode           string
		ts                float64 // 0: about now
	}{
		{"message", rp + "/send/m.room.message/t1" + puppet + "&ts=1000000", bridgeToken, 200, "", 1000000},
		{"state", rp + "/state/m.room.topic/" + puppet + "&ts=2000000", bridgeToken, 200, "", 2000000},
		{"state with a state key", rp + "/state/org.example.bridge/x" + puppet + "&ts=3000000", bridgeToken, 200, "", 3000000},
		{"zero", rp + "/send/m.room.message/t2" + puppet + "&ts=0", bridgeToken, 200, "", -1},
		{"not a number", rp + "/send/m.room.message/t3" + puppet + "&ts=soon", bridgeToken, 400, "M_INVALID_PARAM", 0},
		{"negative", rp + "/send/m.room.message/t4" + puppet + "&ts=-5", bridgeToken, 400, "M_INVALID_PARAM", 0},
		{"ordinary user", rp + "/send/m.room.message/t5?ts=1000000", alice.AccessToken, 200, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := put(t, srv, c.path, c.token, map[string]any{"msgtype": "m.text", "body": "hi", "topic": "t"}).expect(t, c.status, c.errcode)
			if c.status != 200 {
				return
			}
			ev := get(t, srv, rp+"/event/"+url.PathEscape(r.str("event_id")), alice.AccessToken).expect(t, http.StatusOK, "")
			got, _ := ev.Body["origin_server_ts"].(float64)
			switch {
			case c.ts > 0 && got != c.ts, c.ts < 0 && got != 0, c.ts == 0 && got < 1e12:
				t.Fatalf("origin_server_ts = %v, want %v (0: now)", got, c.ts)
			}
		})
	}
}
