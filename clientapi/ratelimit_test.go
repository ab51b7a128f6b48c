package clientapi_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/tessera-hs/tessera/calls"
	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#rate-limiting

// rateLimited returns an option that enables rate limits with a generous
// bucket for everything but the limits set by adjust. The refill rate is so
// slow that nothing refills during a test.
func rateLimited(adjust func(*config.RateLimits)) testserver.Option {
	return func(c *config.Config) {
		generous := config.Rate{PerSecond: 0.001, Burst: 100}
		c.RateLimits = config.RateLimits{
			Enabled:         true,
			LoginPerAddress: generous, LoginPerAccount: generous, LoginFailures: generous,
			RegisterPerAddress: generous, MediaUploadsPerUser: generous, CallTokens: generous, DelayedEventActions: generous,
			MessagesPerUser: generous, OAuthTokenPerAddress: generous,
		}
		adjust(&c.RateLimits)
	}
}

// expectLimited checks a 429 M_LIMIT_EXCEEDED with a positive
// retry_after_ms and a matching Retry-After header.
func expectLimited(t *testing.T, r resp) {
	t.Helper()
	r.expect(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	ms, ok := r.Body["retry_after_ms"].(float64)
	if !ok || ms <= 0 {
		t.Fatalf("retry_after_ms = %v, want > 0: %s", r.Body["retry_after_ms"], r.Raw)
	}
	if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Fatalf("Retry-After = %q, want whole seconds >= 1", r.Header.Get("Retry-After"))
	}
}

func TestRateLimitLoginFailures(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, rateLimited(func(rl *config.RateLimits) {
		rl.LoginFailures = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	alice := registerUser(t, srv, "alice", "password1")
	registerUser(t, srv, "bob", "password1")

	// Right passwords do not count.
	for range 3 {
		login(t, srv, "alice", "password1", nil)
	}
	// Two wrong passwords are answered as such; then the account backs off,
	// whatever the password.
	loginRaw(t, srv, "alice", "wrong", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	loginRaw(t, srv, "alice", "wrong", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	expectLimited(t, loginRaw(t, srv, "alice", "wrong", nil))
	expectLimited(t, loginRaw(t, srv, "alice", "password1", nil))
	expectLimited(t, loginRaw(t, srv, "@alice:tessera.test", "password1", nil))
	// The same back-off guards the password stage of UIA.
	r := post(t, srv, v3+"/account/password", alice.AccessToken, map[string]any{"new_password": "password2"})
	sess := wantFlows(t, r, "", "m.login.password")
	expectLimited(t, post(t, srv, v3+"/account/password", alice.AccessToken, map[string]any{
		"new_password": "password2", "auth": passwordAuth(sess, alice.UserID, "password1"),
	}))
	// Other accounts, and Alice's existing sessions, are unaffected.
	login(t, srv, "bob", "password1", nil)
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
}

func TestRateLimitUIAPasswordFailures(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, rateLimited(func(rl *config.RateLimits) {
		rl.LoginFailures = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	alice := registerUser(t, srv, "alice", "password1")
	path := v3 + "/account/deactivate"
	sess := wantFlows(t, post(t, srv, path, alice.AccessToken, map[string]any{}), "", "m.login.password")
	for range 2 {
		r := post(t, srv, path, alice.AccessToken, map[string]any{"auth": passwordAuth(sess, alice.UserID, "wrong")})
		wantFlows(t, r, "M_FORBIDDEN", "m.login.password")
	}
	expectLimited(t, post(t, srv, path, alice.AccessToken, map[string]any{"auth": passwordAuth(sess, alice.UserID, "password1")}))
	expectLimited(t, loginRaw(t, srv, "alice", "password1", nil))
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
}

func TestRateLimitLoginPerAddress(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, rateLimited(func(rl *config.RateLimits) {
		rl.LoginPerAddress = config.Rate{PerSecond: 0.001, Burst: 3}
	}))
	registerUser(t, srv, "alice", "password1")
	registerUser(t, srv, "bob", "password1")
	login(t, srv, "alice", "password1", nil)
	login(t, srv, "bob", "password1", nil)
	loginRaw(t, srv, "nobody", "password1", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	expectLimited(t, loginRaw(t, srv, "alice", "password1", nil))
	expectLimited(t, loginRaw(t, srv, "bob", "password1", nil))
}

func TestRateLimitLoginPerAccount(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, rateLimited(func(rl *config.RateLimits) {
		rl.LoginPerAccount = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	registerUser(t, srv, "alice", "password1")
	registerUser(t, srv, "bob", "password1")
	login(t, srv, "alice", "password1", nil)
	login(t, srv, "ALICE", "password1", nil)
	expectLimited(t, loginRaw(t, srv, "@alice:tessera.test", "password1", nil))
	login(t, srv, "bob", "password1", nil)
}

func TestRateLimitRegistration(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, guestsAllowed, rateLimited(func(rl *config.RateLimits) {
		rl.RegisterPerAddress = config.Rate{PerSecond: 0.001, Burst: 3}
	}))
	// The limit counts accounts, not requests: the UIA challenge and a
	// refused attempt are free.
	post(t, srv, v3+"/register", "", map[string]any{"username": "bad name", "password": "password1"}).
		expect(t, http.StatusBadRequest, "M_INVALID_USERNAME")
	registerUser(t, srv, "alice", "password1")
	registerUser(t, srv, "bob", "password1")
	post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusOK, "")

	// Burst used up: the next registration is refused on its first request.
	expectLimited(t, post(t, srv, v3+"/register", "", map[string]any{"username": "carol", "password": "password1"}))
	expectLimited(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}))
	get(t, srv, v3+"/register/available?username=carol", "").expect(t, http.StatusOK, "")
	// Logging in is limited separately.
	login(t, srv, "alice", "password1", nil)
}

func TestRateLimitRegistrationTokens(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t,
		withTokens(config.RegistrationToken{Token: "right"}),
		rateLimited(func(rl *config.RateLimits) {
			rl.RegisterPerAddress = config.Rate{PerSecond: 0.001, Burst: 3}
		}))
	validity := "/_matrix/client/v1/register/m.login.registration_token/validity?token="
	// Guessing through the validity endpoint and through /register draws on
	// the same bucket.
	get(t, srv, validity+"guess1", "").expect(t, http.StatusOK, "")
	sess := wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1"}),
		"", "m.login.registration_token")
	r := post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "guess2", "session": sess}})
	wantFlows(t, r, "M_UNAUTHORIZED", "m.login.registration_token")
	get(t, srv, validity+"guess3", "").expect(t, http.StatusOK, "")
	expectLimited(t, get(t, srv, validity+"right", ""))
	expectLimited(t, post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "right", "session": sess}}))
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusOK, "")
}

// TestRateLimitCallTokens: LiveKit token requests, per user on the client
// API and per address on the token service, each a bucket of its own.
func TestRateLimitCallTokens(t *testing.T) {
	srv := testserver.Start(t, testserver.Calls(), rateLimited(func(rl *config.RateLimits) {
		rl.CallTokens = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	roomID := adCreateRoom(t, srv, alice, map[string]any{})
	tr := get(t, srv, "/_matrix/client/v1/rtc/transports", alice.AccessToken).expect(t, http.StatusOK, "")
	sfuURL, _ := tr.Body["transports"].([]any)[0].(map[string]any)["url"].(string)
	body := map[string]any{"url": sfuURL, "room_id": roomID, "slot_id": "m.call#ROOM", "member_id": "m1"}
	const path = "/_matrix/client/v1/rtc/livekit/get_token"
	for range 2 {
		post(t, srv, path, alice.AccessToken, body).expect(t, http.StatusOK, "")
	}
	expectLimited(t, post(t, srv, path, alice.AccessToken, body))
	// Delegating a leave draws on the same bucket.
	expectLimited(t, post(t, srv, "/_matrix/client/v1/rtc/livekit/delegate_delayed_leave", alice.AccessToken,
		map[string]any{"url": sfuURL, "room_id": roomID, "slot_id": "m.call#ROOM", "member_id": "m1", "delay_id": "x"}))
	// Bob's bucket is his own: not joined, so refused, but not limited.
	post(t, srv, path, bob.AccessToken, body).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	// The token service counts requests per address before reading them.
	svc := calls.TokenPrefix + "/get_token"
	for range 2 {
		post(t, srv, svc, "", map[string]any{}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
	}
	expectLimited(t, post(t, srv, svc, "", map[string]any{}))
}
