package clientapi_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#login

func TestLoginFlows(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := get(t, srv, v3+"/login", "").expect(t, http.StatusOK, "")
	flows, _ := r.Body["flows"].([]any)
	var types []string
	for _, f := range flows {
		fm, _ := f.(map[string]any)
		s, _ := fm["type"].(string)
		types = append(types, s)
	}
	if !slices.Equal(types, []string{"m.login.password"}) {
		t.Fatalf("login flows = %v, want [m.login.password]", types)
	}
	res, err := srv.Client("", "").GetLoginFlows(ctx)
	must(t, err, "login flows")
	if !res.HasFlow(mautrix.AuthTypePassword) {
		t.Fatalf("mautrix sees no password flow: %+v", res)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")

	ok := []struct {
		name string
		body map[string]any
	}{
		{"localpart", map[string]any{"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}},
		{"full user ID", map[string]any{"identifier": map[string]any{"type": "m.id.user", "user": "@alice:tessera.test"}}},
		{"localpart in other case", map[string]any{"identifier": map[string]any{"type": "m.id.user", "user": "ALICE"}}},
		{"legacy user field", map[string]any{"user": "alice"}},
		{"legacy user field with user ID", map[string]any{"user": "@alice:tessera.test"}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"type": "m.login.password", "password": "password1"}
			for k, v := range tc.body {
				body[k] = v
			}
			r := post(t, srv, v3+"/login", "", body).expect(t, http.StatusOK, "")
			s := sessionOf(t, r)
			if s.UserID != alice.UserID {
				t.Fatalf("user_id = %q", s.UserID)
			}
			if s.DeviceID == alice.DeviceID || s.AccessToken == alice.AccessToken {
				t.Fatalf("login reused the registration's device or token")
			}
			if _, ok := r.Body["refresh_token"]; ok {
				t.Errorf("refresh_token without refresh_token: true: %s", r.Raw)
			}
			if _, ok := r.Body["expires_in_ms"]; ok {
				t.Errorf("expires_in_ms without a refresh token (the token must not expire): %s", r.Raw)
			}
			tokenWorks(t, srv, s.AccessToken, alice.UserID)
		})
	}

	bad := []struct {
		name    string
		body    map[string]any
		status  int
		errcode string
	}{
		{"wrong password", map[string]any{"type": "m.login.password", "user": "alice", "password": "nope"},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"no password", map[string]any{"type": "m.login.password", "user": "alice"},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"unknown user", map[string]any{"type": "m.login.password", "user": "nobody", "password": "password1"},
			http.StatusForbidden, "M_FORBIDDEN"},
		{"user of another server", map[string]any{"type": "m.login.password", "user": "@alice:elsewhere.test",
			"password": "password1"}, http.StatusForbidden, "M_FORBIDDEN"},
		{"unknown login type", map[string]any{"type": "m.login.magic", "user": "alice", "password": "password1"},
			http.StatusBadRequest, "M_UNKNOWN"},
		{"token login not offered", map[string]any{"type": "m.login.token", "token": "abc"},
			http.StatusBadRequest, "M_UNKNOWN"},
		{"no type", map[string]any{"user": "alice", "password": "password1"},
			http.StatusBadRequest, "M_UNKNOWN"},
		{"no identifier", map[string]any{"type": "m.login.password", "password": "password1"},
			http.StatusBadRequest, "M_MISSING_PARAM"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			post(t, srv, v3+"/login", "", tc.body).expect(t, tc.status, tc.errcode)
		})
	}

	// mautrix sees the same.
	c := srv.Client("", "")
	_, err := c.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: "wrong",
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
	})
	wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
	res, err := c.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: "password1", StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
	})
	must(t, err, "login")
	who, err := c.Whoami(ctx)
	must(t, err, "whoami")
	if who.UserID != srv.UserID("alice") || who.DeviceID != res.DeviceID {
		t.Fatalf("whoami = %+v after login %+v", who, res)
	}
}

func TestLoginDeviceReuse(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")

	first := login(t, srv, "alice", "password1", map[string]any{
		"device_id": "LAPTOP", "initial_device_display_name": "Work laptop",
	})
	if first.DeviceID != "LAPTOP" {
		t.Fatalf("device_id = %q, want LAPTOP", first.DeviceID)
	}
	d := get(t, srv, v3+"/devices/LAPTOP", alice.AccessToken).expect(t, http.StatusOK, "")
	if d.str("display_name") != "Work laptop" {
		t.Fatalf("display_name = %q", d.str("display_name"))
	}

	// Logging in again with the same device ID: new token, the old one dies,
	// the device stays (and keeps its name).
	second := login(t, srv, "alice", "password1", map[string]any{
		"device_id": "LAPTOP", "initial_device_display_name": "Ignored name",
	})
	if second.DeviceID != "LAPTOP" || second.AccessToken == first.AccessToken {
		t.Fatalf("second login = %+v", second)
	}
	tokenDead(t, srv, first.AccessToken, false)
	w := whoami(t, srv, second.AccessToken).expect(t, http.StatusOK, "")
	if w.str("device_id") != "LAPTOP" {
		t.Fatalf("whoami device_id = %q", w.str("device_id"))
	}
	if got := deviceIDs(t, srv, alice.AccessToken); !slices.Equal(got, sorted(alice.DeviceID, "LAPTOP")) {
		t.Fatalf("devices = %v", got)
	}
	d = get(t, srv, v3+"/devices/LAPTOP", alice.AccessToken).expect(t, http.StatusOK, "")
	if d.str("display_name") != "Work laptop" {
		t.Fatalf("display_name after re-login = %q, want the original", d.str("display_name"))
	}

	// Another user may use the same device ID without touching Alice's.
	registerUser(t, srv, "bob", "password1")
	bob := login(t, srv, "bob", "password1", map[string]any{"device_id": "LAPTOP"})
	tokenWorks(t, srv, second.AccessToken, alice.UserID)
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)
}

func TestWhoami(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	w := whoami(t, srv, alice.AccessToken).expect(t, http.StatusOK, "")
	if w.str("user_id") != "@alice:tessera.test" || w.str("device_id") != alice.DeviceID {
		t.Fatalf("whoami = %s", w.Raw)
	}
	if g, ok := w.boolean("is_guest"); g || !ok {
		t.Fatalf("is_guest = %v (present %v), want false", g, ok)
	}
	whoami(t, srv, "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	tokenDead(t, srv, "tsa_not-a-real-token", false)
}

// https://spec.matrix.org/v1.19/client-server-api/#refreshing-access-tokens
func TestRefreshTokens(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	registerUser(t, srv, "alice", "password1")

	r := loginRaw(t, srv, "alice", "password1", map[string]any{"refresh_token": true}).expect(t, http.StatusOK, "")
	s1 := sessionOf(t, r)
	if s1.RefreshToken == "" {
		t.Fatalf("no refresh_token: %s", r.Raw)
	}
	if ms, _ := r.Body["expires_in_ms"].(float64); ms != float64((5 * time.Minute).Milliseconds()) {
		t.Fatalf("expires_in_ms = %v, want the configured 5m", r.Body["expires_in_ms"])
	}
	tokenWorks(t, srv, s1.AccessToken, s1.UserID)

	refresh := func(token string) resp {
		t.Helper()
		return post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": token})
	}

	// Refresh: new tokens; the old access token dies at once.
	r = refresh(s1.RefreshToken).expect(t, http.StatusOK, "")
	at2, rt2 := r.str("access_token"), r.str("refresh_token")
	if at2 == "" || rt2 == "" || at2 == s1.AccessToken || rt2 == s1.RefreshToken {
		t.Fatalf("refresh = %s", r.Raw)
	}
	if ms, _ := r.Body["expires_in_ms"].(float64); ms <= 0 {
		t.Fatalf("refresh expires_in_ms = %v", r.Body["expires_in_ms"])
	}
	tokenDead(t, srv, s1.AccessToken, false)

	// The old refresh token still works while the new pair is unused (a
	// client whose response was lost retries); the retry replaces the pair.
	r = refresh(s1.RefreshToken).expect(t, http.StatusOK, "")
	at3, rt3 := r.str("access_token"), r.str("refresh_token")
	tokenDead(t, srv, at2, false)

	// Using the new access token revokes the old refresh token.
	w := whoami(t, srv, at3).expect(t, http.StatusOK, "")
	if w.str("device_id") != s1.DeviceID {
		t.Fatalf("refreshed token is for device %q, want %q", w.str("device_id"), s1.DeviceID)
	}
	refresh(s1.RefreshToken).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	refresh(rt2).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Using the new refresh token revokes its predecessor too.
	r = refresh(rt3).expect(t, http.StatusOK, "")
	at4, rt4 := r.str("access_token"), r.str("refresh_token")
	r = refresh(rt4).expect(t, http.StatusOK, "")
	at5 := r.str("access_token")
	refresh(rt3).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	tokenDead(t, srv, at4, false)
	tokenWorks(t, srv, at5, s1.UserID)

	// Unknown and missing refresh tokens.
	r = refresh("tsr_unknown").expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if soft, _ := r.boolean("soft_logout"); soft {
		t.Errorf("unknown refresh token says soft_logout: %s", r.Raw)
	}
	post(t, srv, v3+"/refresh", "", map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")

	// The device survived all of it.
	if got := deviceIDs(t, srv, at5); !slices.Contains(got, s1.DeviceID) {
		t.Fatalf("devices = %v, lost %s", got, s1.DeviceID)
	}
	// Logging out kills the refresh token with the device.
	post(t, srv, v3+"/logout", at5, nil).expect(t, http.StatusOK, "")
	refresh(rt4).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

func TestExpiredAccessToken(t *testing.T) {
	t.Parallel()
	const lifetime = time.Second
	srv := testserver.Start(t, accessTokenLifetime(lifetime))
	registerUser(t, srv, "alice", "password1")

	start := time.Now()
	r := loginRaw(t, srv, "alice", "password1", map[string]any{"refresh_token": true}).expect(t, http.StatusOK, "")
	s := sessionOf(t, r)
	if ms, _ := r.Body["expires_in_ms"].(float64); ms != float64(lifetime.Milliseconds()) {
		t.Fatalf("expires_in_ms = %v, want %d", r.Body["expires_in_ms"], lifetime.Milliseconds())
	}
	// A client that does not ask for a refresh token gets one that does not
	// expire, as the spec requires.
	forever := login(t, srv, "alice", "password1", nil)

	time.Sleep(time.Until(start.Add(lifetime + 100*time.Millisecond)))

	// Expired: a soft logout, so the client refreshes and keeps its device.
	tokenDead(t, srv, s.AccessToken, true)
	tokenWorks(t, srv, forever.AccessToken, s.UserID)

	r = post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": s.RefreshToken}).expect(t, http.StatusOK, "")
	w := whoami(t, srv, r.str("access_token")).expect(t, http.StatusOK, "")
	if w.str("device_id") != s.DeviceID {
		t.Fatalf("device after refresh = %q, want %q", w.str("device_id"), s.DeviceID)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	phone := login(t, srv, "alice", "password1", nil)

	post(t, srv, v3+"/logout", phone.AccessToken, nil).expect(t, http.StatusOK, "")
	tokenDead(t, srv, phone.AccessToken, false)
	// The device went with the token.
	if got := deviceIDs(t, srv, alice.AccessToken); !slices.Equal(got, []string{alice.DeviceID}) {
		t.Fatalf("devices after logout = %v, want [%s]", got, alice.DeviceID)
	}
	get(t, srv, v3+"/devices/"+phone.DeviceID, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	// Logging out twice: the token is already gone.
	post(t, srv, v3+"/logout", phone.AccessToken, nil).expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	post(t, srv, v3+"/logout", "", nil).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	post(t, srv, v3+"/logout/all", "", nil).expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

	// The deprecated access_token query parameter works too.
	tablet := login(t, srv, "alice", "password1", nil)
	get(t, srv, v3+"/account/whoami?access_token="+tablet.AccessToken, "").expect(t, http.StatusOK, "")
	post(t, srv, v3+"/logout?access_token="+tablet.AccessToken, "", nil).expect(t, http.StatusOK, "")
	tokenDead(t, srv, tablet.AccessToken, false)

	// Logout with mautrix.
	c := client(srv, login(t, srv, "alice", "password1", nil))
	_, err := c.Logout(ctx)
	must(t, err, "logout")
	_, err = c.Whoami(ctx)
	wantErr(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
}

func TestLogoutAll(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	phone := login(t, srv, "alice", "password1", map[string]any{"refresh_token": true})
	tablet := login(t, srv, "alice", "password1", nil)

	c := client(srv, tablet)
	_, err := c.LogoutAll(ctx)
	must(t, err, "logout all")
	for _, s := range []session{alice, phone, tablet} {
		tokenDead(t, srv, s.AccessToken, false)
	}
	post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": phone.RefreshToken}).
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	// Other users are untouched; Alice can log in again and has one device.
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)
	again := login(t, srv, "alice", "password1", nil)
	if got := deviceIDs(t, srv, again.AccessToken); !slices.Equal(got, []string{again.DeviceID}) {
		t.Fatalf("devices after logout/all and login = %v", got)
	}
}
