package clientapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3register

func TestRegisterDummyFlow(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)

	// First request: the challenge, with flows and a session but no errcode.
	first := post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1"})
	sess := wantFlows(t, first, "", "m.login.dummy")
	if _, ok := first.Body["completed"]; ok {
		t.Errorf("fresh UIA session reports completed stages: %s", first.Raw)
	}

	// Second request: the dummy stage completes registration.
	second := post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.dummy", "session": sess},
	}).expect(t, http.StatusOK, "")
	s := sessionOf(t, second)
	if s.UserID != "@alice:tessera.test" {
		t.Errorf("user_id = %q", s.UserID)
	}
	if hs := second.str("home_server"); hs != "tessera.test" {
		t.Errorf("home_server = %q", hs)
	}
	if _, ok := second.Body["refresh_token"]; ok {
		t.Errorf("refresh_token returned without being asked for: %s", second.Raw)
	}
	if _, ok := second.Body["expires_in_ms"]; ok {
		t.Errorf("expires_in_ms returned for a non-expiring token: %s", second.Raw)
	}
	tokenWorks(t, srv, s.AccessToken, s.UserID)

	// A stage the server did not offer fails with M_UNAUTHORIZED and a new
	// challenge.
	first = post(t, srv, v3+"/register", "", map[string]any{"username": "carol", "password": "password1"})
	sess = wantFlows(t, first, "", "m.login.dummy")
	bad := post(t, srv, v3+"/register", "", map[string]any{
		"username": "carol", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "x", "session": sess},
	})
	if got := wantFlows(t, bad, "M_UNAUTHORIZED", "m.login.dummy"); got != sess {
		t.Errorf("session changed from %q to %q", sess, got)
	}
}

func TestRegisterWithMautrix(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	c := srv.Client("", "")
	res, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "bob", Password: "password1"})
	must(t, err, "register")
	if res.UserID != srv.UserID("bob") || res.AccessToken == "" || res.DeviceID == "" {
		t.Fatalf("register = %+v", res)
	}
	c.SetCredentials(res.UserID, res.AccessToken)
	who, err := c.Whoami(ctx)
	must(t, err, "whoami")
	if who.UserID != res.UserID || who.DeviceID != res.DeviceID {
		t.Fatalf("whoami = %+v, registered %+v", who, res)
	}
}

func TestRegisterClosed(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, registrationClosed)
	r := post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1"})
	r.expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// Also with a dummy auth that would otherwise complete.
	r = post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1", "auth": map[string]any{"type": "m.login.dummy"},
	})
	r.expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// The validity endpoint agrees that nothing can be registered.
	get(t, srv, "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", "").
		expect(t, http.StatusForbidden, "M_FORBIDDEN")
	// The account was not created.
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusOK, "")
}

func TestRegisterWithToken(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, withTokens(config.RegistrationToken{Token: "let-me-in", UsesAllowed: 1}))
	validity := func(token string) bool {
		t.Helper()
		r := get(t, srv, "/_matrix/client/v1/register/m.login.registration_token/validity?token="+
			url.QueryEscape(token), "").expect(t, http.StatusOK, "")
		v, ok := r.boolean("valid")
		if !ok {
			t.Fatalf("validity without boolean valid: %s", r.Raw)
		}
		return v
	}
	if !validity("let-me-in") {
		t.Fatal("configured token is not valid")
	}
	if validity("wrong") {
		t.Fatal("unknown token is valid")
	}
	get(t, srv, "/_matrix/client/v1/register/m.login.registration_token/validity", "").
		expect(t, http.StatusBadRequest, "M_MISSING_PARAM")

	body := map[string]any{"username": "alice", "password": "password1"}
	first := post(t, srv, v3+"/register", "", body)
	sess := wantFlows(t, first, "", "m.login.registration_token")

	// Dummy is not enough when a token is required.
	r := post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.dummy", "session": sess},
	})
	wantFlows(t, r, "M_UNAUTHORIZED", "m.login.registration_token")

	// A wrong token: 401 M_UNAUTHORIZED, with the session to retry in.
	r = post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": sess},
	})
	if got := wantFlows(t, r, "M_UNAUTHORIZED", "m.login.registration_token"); got != sess {
		t.Fatalf("session changed after a failed stage: %q -> %q", sess, got)
	}

	// The right token registers.
	r = post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "let-me-in", "session": sess},
	}).expect(t, http.StatusOK, "")
	alice := sessionOf(t, r)
	tokenWorks(t, srv, alice.AccessToken, "@alice:tessera.test")

	// It allowed one use: now it is spent.
	if validity("let-me-in") {
		t.Fatal("token with uses_allowed=1 is still valid after a registration")
	}
	first = post(t, srv, v3+"/register", "", map[string]any{"username": "bob", "password": "password1"})
	sess = wantFlows(t, first, "", "m.login.registration_token")
	r = post(t, srv, v3+"/register", "", map[string]any{
		"username": "bob", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "let-me-in", "session": sess},
	})
	wantFlows(t, r, "M_UNAUTHORIZED", "m.login.registration_token")
	get(t, srv, v3+"/register/available?username=bob", "").expect(t, http.StatusOK, "")
}

// With open registration and no tokens configured, registration is allowed,
// so the validity endpoint answers (every token is invalid) rather than 403,
// which the spec keeps for servers that do not permit registration.
func TestRegistrationTokenValidityWithoutTokens(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := get(t, srv, "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc", "").
		expect(t, http.StatusOK, "")
	if v, ok := r.boolean("valid"); !ok || v {
		t.Fatalf("valid = %v (present %v), want false: %s", v, ok, r.Raw)
	}
}

func TestRegisterGuest(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, guestsAllowed)
	// Everything but initial_device_display_name is ignored for guests.
	r := post(t, srv, v3+"/register?kind=guest", "", map[string]any{
		"username": "notused", "password": "password1", "device_id": "CHOSEN", "inhibit_login": true,
		"initial_device_display_name": "Guest phone",
	}).expect(t, http.StatusOK, "")
	g := sessionOf(t, r)
	if g.DeviceID == "CHOSEN" {
		t.Errorf("guest got the device_id it asked for; the server must pick one")
	}
	if g.UserID == "@notused:tessera.test" {
		t.Errorf("guest got the username it asked for")
	}
	w := whoami(t, srv, g.AccessToken).expect(t, http.StatusOK, "")
	if isGuest, _ := w.boolean("is_guest"); !isGuest {
		t.Errorf("whoami is_guest = false for a guest: %s", w.Raw)
	}
	if w.str("user_id") != g.UserID || w.str("device_id") != g.DeviceID {
		t.Errorf("whoami = %s, registered %+v", w.Raw, g)
	}
	d := get(t, srv, v3+"/devices/"+g.DeviceID, g.AccessToken).expect(t, http.StatusOK, "")
	if d.str("display_name") != "Guest phone" {
		t.Errorf("guest device display_name = %q", d.str("display_name"))
	}

	// Guests may not change a password or deactivate.
	post(t, srv, v3+"/account/password", g.AccessToken, map[string]any{"new_password": "password2"}).
		expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	post(t, srv, v3+"/account/deactivate", g.AccessToken, map[string]any{}).
		expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	// A guest cannot log in with the password it sent.
	loginRaw(t, srv, "notused", "password1", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	// With mautrix.
	res, _, err := srv.Client("", "").RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
	must(t, err, "register guest")
	if res.AccessToken == "" || res.UserID == "" || res.UserID == id.UserID(g.UserID) {
		t.Fatalf("second guest = %+v", res)
	}
}

func TestRegisterGuestNotAllowed(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	post(t, srv, v3+"/register?kind=admin", "", map[string]any{}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestRegisterInhibitLogin(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := register(t, srv, map[string]any{"username": "alice", "password": "password1", "inhibit_login": true}).
		expect(t, http.StatusOK, "")
	if r.str("user_id") != "@alice:tessera.test" {
		t.Fatalf("user_id = %q", r.str("user_id"))
	}
	for _, k := range []string{"access_token", "device_id", "refresh_token", "expires_in_ms"} {
		if _, ok := r.Body[k]; ok {
			t.Errorf("inhibit_login response has %s: %s", k, r.Raw)
		}
	}
	// The account exists, has no devices, and can log in.
	s := login(t, srv, "alice", "password1", nil)
	if got := deviceIDs(t, srv, s.AccessToken); !slices.Equal(got, []string{s.DeviceID}) {
		t.Fatalf("devices = %v, want only the login's %s", got, s.DeviceID)
	}
}

func TestRegisterUsernames(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	registerUser(t, srv, "taken", "password1")

	// Rejected usernames are reported on the first request, before UIA.
	bad := []struct {
		name, username, errcode string
	}{
		{"space", "has space", "M_INVALID_USERNAME"},
		{"colon", "a:b", "M_INVALID_USERNAME"},
		{"at", "a@b", "M_INVALID_USERNAME"},
		{"non-ascii", "zoë", "M_INVALID_USERNAME"},
		{"all digits", "12345", "M_INVALID_USERNAME"},
		{"leading underscore", "_bridge", "M_INVALID_USERNAME"},
		{"too long", strings.Repeat("a", 256), "M_INVALID_USERNAME"},
		{"taken", "taken", "M_USER_IN_USE"},
		{"taken, other case", "TAKEN", "M_USER_IN_USE"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv, v3+"/register", "", map[string]any{"username": tc.username, "password": "password1"})
			r.expect(t, http.StatusBadRequest, tc.errcode)
			if _, ok := r.Body["session"]; ok {
				t.Errorf("rejection carries a UIA session: %s", r.Raw)
			}
			a := get(t, srv, v3+"/register/available?username="+url.QueryEscape(tc.username), "")
			a.expect(t, http.StatusBadRequest, tc.errcode)
		})
	}

	// Uppercase is mapped onto the lowercase localpart, as Synapse does.
	r := register(t, srv, map[string]any{"username": "MixedCase", "password": "password1"}).
		expect(t, http.StatusOK, "")
	if r.str("user_id") != "@mixedcase:tessera.test" {
		t.Fatalf("user_id = %q, want @mixedcase:tessera.test", r.str("user_id"))
	}
	// Every allowed character.
	r = register(t, srv, map[string]any{"username": "a.b_c=d-e/f+g1", "password": "password1"}).
		expect(t, http.StatusOK, "")
	if r.str("user_id") != "@a.b_c=d-e/f+g1:tessera.test" {
		t.Fatalf("user_id = %q", r.str("user_id"))
	}
	// No username: the server picks a valid one.
	r = register(t, srv, map[string]any{"password": "password1"}).expect(t, http.StatusOK, "")
	if uid := r.str("user_id"); len(uid) < len("@x:tessera.test") || uid[0] != '@' {
		t.Fatalf("generated user_id = %q", uid)
	}
}

func TestRegisterAvailable(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	registerUser(t, srv, "alice", "password1")

	r := get(t, srv, v3+"/register/available?username=bob", "").expect(t, http.StatusOK, "")
	if v, ok := r.boolean("available"); !v || !ok {
		t.Fatalf("available = %s", r.Raw)
	}
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusBadRequest, "M_USER_IN_USE")
	get(t, srv, v3+"/register/available?username=bad%20name", "").
		expect(t, http.StatusBadRequest, "M_INVALID_USERNAME")
	get(t, srv, v3+"/register/available", "").expect(t, http.StatusBadRequest, "M_MISSING_PARAM")

	// mautrix agrees.
	c := srv.Client("", "")
	res, err := c.RegisterAvailable(ctx, "carol")
	must(t, err, "available")
	if !res.Available {
		t.Fatal("carol not available")
	}
	_, err = c.RegisterAvailable(ctx, "alice")
	wantErr(t, err, http.StatusBadRequest, "M_USER_IN_USE")
}

func TestRegisterPasswordRules(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Passwords.MinLength = 10 })
	// A weak password is refused on the first request, before UIA.
	r := post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "short"})
	r.expect(t, http.StatusBadRequest, "M_WEAK_PASSWORD")
	// And on the second, should a client skip the first.
	first := post(t, srv, v3+"/register", "", map[string]any{"username": "alice"})
	sess := wantFlows(t, first, "", "m.login.dummy")
	post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "123456789",
		"auth": map[string]any{"type": "m.login.dummy", "session": sess},
	}).expect(t, http.StatusBadRequest, "M_WEAK_PASSWORD")
	// No password at all once authenticating.
	post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "auth": map[string]any{"type": "m.login.dummy", "session": sess},
	}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusOK, "")

	registerUser(t, srv, "alice", "1234567890")
}

func TestRegisterDeviceIDAndName(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := register(t, srv, map[string]any{
		"username": "alice", "password": "password1",
		"device_id": "MYPHONE", "initial_device_display_name": "Alice's phone",
	}).expect(t, http.StatusOK, "")
	s := sessionOf(t, r)
	if s.DeviceID != "MYPHONE" {
		t.Fatalf("device_id = %q, want MYPHONE", s.DeviceID)
	}
	devs := get(t, srv, v3+"/devices", s.AccessToken).expect(t, http.StatusOK, "")
	list, _ := devs.Body["devices"].([]any)
	if len(list) != 1 {
		t.Fatalf("devices = %s", devs.Raw)
	}
	d := list[0].(map[string]any)
	if d["device_id"] != "MYPHONE" || d["display_name"] != "Alice's phone" {
		t.Fatalf("device = %v", d)
	}
	if ts, _ := d["last_seen_ts"].(float64); ts <= 0 {
		t.Errorf("last_seen_ts = %v", d["last_seen_ts"])
	}
	if ip, _ := d["last_seen_ip"].(string); ip != "127.0.0.1" {
		t.Errorf("last_seen_ip = %v", d["last_seen_ip"])
	}

	// Registration with refresh_token: true gets a refresh token.
	r = register(t, srv, map[string]any{"username": "bob", "password": "password1", "refresh_token": true}).
		expect(t, http.StatusOK, "")
	if r.str("refresh_token") == "" {
		t.Fatalf("no refresh_token: %s", r.Raw)
	}
	if ms, _ := r.Body["expires_in_ms"].(float64); ms <= 0 {
		t.Fatalf("expires_in_ms = %v", r.Body["expires_in_ms"])
	}
}

// A device_id the server refuses must be refused before the account is
// created, or the name is lost to an account nobody can log in to.
func TestRegisterDeviceIDTooLong(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	long := strings.Repeat("D", 256)
	post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1", "device_id": long}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	sess := wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1"}),
		"", "m.login.dummy")
	post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1", "device_id": long,
		"auth": map[string]any{"type": "m.login.dummy", "session": sess},
	}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusOK, "")

	s := registerUser(t, srv, "alice", "password1")
	loginRaw(t, srv, "alice", "password1", map[string]any{"device_id": long}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	if got := deviceIDs(t, srv, s.AccessToken); !slices.Equal(got, []string{s.DeviceID}) {
		t.Fatalf("devices = %v", got)
	}
	// 255 bytes is fine.
	ok := login(t, srv, "alice", "password1", map[string]any{"device_id": long[:255]})
	if ok.DeviceID != long[:255] {
		t.Fatalf("device_id = %q", ok.DeviceID)
	}
}

// Racing registrations of one name: exactly one wins, the others are told
// the name is taken (not a 500 from the unique constraint).
func TestRegisterRace(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	const n = 8
	sessions := make([]string, n)
	for i := range sessions {
		sessions[i] = wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": "racer", "password": "password1"}),
			"", "m.login.dummy")
	}
	type result struct {
		r   resp
		err error
	}
	results := make(chan result, n)
	for _, sess := range sessions {
		go func() {
			r, err := tryDo(srv, req{Method: http.MethodPost, Path: v3 + "/register", Body: map[string]any{
				"username": "racer", "password": "password1",
				"auth": map[string]any{"type": "m.login.dummy", "session": sess},
			}})
			results <- result{r, err}
		}()
	}
	won := 0
	for range n {
		res := <-results
		must(t, res.err, "register")
		r := res.r
		switch r.Status {
		case http.StatusOK:
			won++
			tokenWorks(t, srv, sessionOf(t, r).AccessToken, "@racer:tessera.test")
		default:
			r.expect(t, http.StatusBadRequest, "M_USER_IN_USE")
		}
	}
	if won != 1 {
		t.Fatalf("%d registrations of one name succeeded, want 1", won)
	}
}
