package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestOAuthPagesCSRF: every form post without the CSRF token of the
// browser's cookie is refused, signed in or not.
func TestOAuthPagesCSRF(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	registerUser(t, srv, "alice", "password1")
	conf := nativeClient(t, srv)
	b := newBrowser(t, srv)
	loginPage := b.get("/_tessera/login").expect(t, http.StatusOK)
	csrf := loginPage.hidden().Get("csrf")
	if len(csrf) < 32 {
		t.Fatalf("login page has no CSRF token: %.400s", loginPage.HTML)
	}
	creds := url.Values{"username": {"alice"}, "password": {"password1"}}
	b.post("/_tessera/login", creds).expect(t, http.StatusForbidden)
	creds.Set("csrf", strings.Repeat("A", len(csrf)))
	b.post("/_tessera/login", creds).expect(t, http.StatusForbidden)
	// Another browser's token does not do either.
	creds.Set("csrf", newBrowser(t, srv).get("/_tessera/login").hidden().Get("csrf"))
	b.post("/_tessera/login", creds).expect(t, http.StatusForbidden)
	if b.get("/_tessera/account").expect(t, http.StatusOK); !strings.Contains(b.get("/_tessera/account").HTML, `name="password"`) {
		t.Fatal("a refused login signed the browser in")
	}

	// Signed in, the consent, account and device forms need it too.
	p := b.get(conf.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	consent := b.login(p, "alice", "password1").expect(t, http.StatusOK)
	f := consent.hidden()
	f.Del("csrf")
	f.Set("action", "approve")
	b.post("/_tessera/oauth2/authorize", f).expect(t, http.StatusForbidden)
	for path, form := range map[string]url.Values{
		"/_tessera/account/password":       {"current_password": {"password1"}, "new_password": {"password2"}},
		"/_tessera/account/devices/delete": {"device_id": {"X"}},
		"/_tessera/account/deactivate":     {"password": {"password1"}},
		"/_tessera/device":                 {"user_code": {"BCDF-GHJK"}, "action": {"approve"}},
		"/_tessera/logout":                 {},
	} {
		if p := b.post(path, form); p.Status != http.StatusForbidden {
			t.Errorf("POST %s without CSRF: %d, want 403", path, p.Status)
		}
	}
	// Nothing happened: the password is unchanged.
	login(t, srv, "alice", "password1", nil)
}

// TestOAuthLoginThrottled: guessing passwords on the login page hits the
// same limits as /login.
func TestOAuthLoginThrottled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.LoginPerAddress = config.Rate{PerSecond: 0.001, Burst: 100}
		c.RateLimits.LoginPerAccount = config.Rate{PerSecond: 0.001, Burst: 100}
		c.RateLimits.LoginFailures = config.Rate{PerSecond: 0.001, Burst: 3}
		c.RateLimits.RegisterPerAddress = config.Rate{PerSecond: 100, Burst: 100}
	})
	registerUser(t, srv, "alice", "password1")
	b := newBrowser(t, srv)
	attempt := func(password string) page {
		f := b.get("/_tessera/login").hidden()
		f.Set("username", "alice")
		f.Set("password", password)
		return b.post("/_tessera/login", f)
	}
	for i := 0; i < 3; i++ {
		if p := attempt("wrong"); p.Status != http.StatusForbidden || !strings.Contains(p.HTML, "Invalid username or password") {
			t.Fatalf("wrong password %d: %d %.300s", i, p.Status, p.HTML)
		}
	}
	p := attempt("wrong").expect(t, http.StatusTooManyRequests)
	if !strings.Contains(p.HTML, "Too many attempts") {
		t.Fatalf("throttled page: %.400s", p.HTML)
	}
	// Even the right password waits now.
	attempt("password1").expect(t, http.StatusTooManyRequests)
	loginRaw(t, srv, "alice", "password1", nil).expect(t, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
}

func TestOAuthDeviceGrant(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Auth.OAuth.DeviceCodeInterval = config.Duration(200 * time.Millisecond) })
	alice := registerUser(t, srv, "alice", "password1")
	conf := nativeClient(t, srv, scopeAPI, "urn:matrix:client:device:TVDEVICE0001")
	start := func() *oauth2.DeviceAuthResponse {
		da, err := conf.DeviceAuth(ctx)
		must(t, err, "device authorization")
		if da.UserCode == "" || !strings.HasPrefix(da.VerificationURIComplete, srv.URL+"/_tessera/device?user_code=") {
			t.Fatalf("device authorization = %+v", da)
		}
		return da
	}
	poll := func(da *oauth2.DeviceAuthResponse) resp {
		return tokenForm(t, srv, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
			"device_code": {da.DeviceCode}, "client_id": {conf.ClientID}})
	}

	da := start()
	poll(da).oauthError(t, http.StatusBadRequest, "authorization_pending")
	poll(da).oauthError(t, http.StatusBadRequest, "slow_down")
	time.Sleep(250 * time.Millisecond)
	poll(da).oauthError(t, http.StatusBadRequest, "authorization_pending")

	// The user opens the page, signs in, types the code, allows.
	b := newBrowser(t, srv)
	p := b.login(b.get("/_tessera/device").expect(t, http.StatusOK), "alice", "password1").expect(t, http.StatusOK)
	if !strings.Contains(p.HTML, `name="user_code"`) {
		t.Fatalf("device page: %.400s", p.HTML)
	}
	b.get("/_tessera/device?user_code=BCDF-GHJK").expect(t, http.StatusNotFound)
	consent := b.get("/_tessera/device?user_code="+url.QueryEscape(strings.ToLower(da.UserCode))).expect(t, http.StatusOK)
	if !strings.Contains(consent.HTML, "Test Client") || !strings.Contains(consent.HTML, "TVDEVICE0001") {
		t.Fatalf("device consent page: %.600s", consent.HTML)
	}
	f := consent.hidden()
	f.Set("action", "approve")
	b.post("/_tessera/device", f).expect(t, http.StatusOK)

	// The library's own polling gets the tokens.
	tok, err := conf.DeviceAccessToken(ctx, da)
	must(t, err, "device access token")
	who := whoami(t, srv, tok.AccessToken).expect(t, http.StatusOK, "")
	if who.str("user_id") != alice.UserID || who.str("device_id") != "TVDEVICE0001" {
		t.Fatalf("whoami = %s", who.Raw)
	}
	poll(da).oauthError(t, http.StatusBadRequest, "invalid_grant")

	// Denied.
	da = start()
	f = b.get("/_tessera/device?user_code="+url.QueryEscape(da.UserCode)).expect(t, http.StatusOK).hidden()
	f.Set("action", "deny")
	b.post("/_tessera/device", f).expect(t, http.StatusOK)
	time.Sleep(250 * time.Millisecond)
	poll(da).oauthError(t, http.StatusBadRequest, "access_denied")
	// Another client cannot redeem the code.
	da = start()
	other := nativeClient(t, srv)
	tokenForm(t, srv, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {da.DeviceCode}, "client_id": {other.ClientID}}).oauthError(t, http.StatusBadRequest, "invalid_grant")
	// A client that did not register the grant cannot start it.
	web := registerOAuthClient(t, srv, map[string]any{"client_uri": "https://example.com/", "redirect_uris": []string{"https://example.com/cb"}})
	do(t, srv, req{Method: http.MethodPost, Path: "/_tessera/oauth2/device", Body: url.Values{"client_id": {web}, "scope": {scopeAPI}}.Encode(),
		Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}).oauthError(t, http.StatusBadRequest, "unauthorized_client")
}

func TestOAuthDeviceCodeExpires(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Auth.OAuth.DeviceCodeLifetime = config.Duration(time.Second) })
	conf := nativeClient(t, srv)
	da, err := conf.DeviceAuth(ctx)
	must(t, err, "device authorization")
	time.Sleep(1100 * time.Millisecond)
	tokenForm(t, srv, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {da.DeviceCode}, "client_id": {conf.ClientID}}).oauthError(t, http.StatusBadRequest, "expired_token")
}

func TestOAuthPasswordLoginOff(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Auth.PasswordLogin = false })
	get(t, srv, v3+"/login", "").expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
	loginRaw(t, srv, "alice", "password1", nil).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
	get(t, srv, "/_matrix/client/v1/auth_metadata", "").expect(t, http.StatusOK, "")

	on := testserver.Start(t)
	r := get(t, on, v3+"/login", "").expect(t, http.StatusOK, "")
	if !strings.Contains(string(r.Raw), `"m.login.password"`) {
		t.Fatalf("flows = %s", r.Raw)
	}
}

// TestOAuthAccountPage: the account_management_uri lists devices, signs
// one out (its tokens die), changes the password and deactivates.
func TestOAuthAccountPage(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	phone := login(t, srv, "alice", "password1", map[string]any{"device_id": "PHONE", "initial_device_display_name": "My phone"})
	b := newBrowser(t, srv)
	p := b.get("/_tessera/account?action=org.matrix.device_view&device_id=PHONE").expect(t, http.StatusOK)
	p = b.login(p, "alice", "password1").expect(t, http.StatusOK)
	if !strings.Contains(p.HTML, "PHONE") || !strings.Contains(p.HTML, "My phone") || !strings.Contains(p.HTML, alice.DeviceID) {
		t.Fatalf("account page: %.1500s", p.HTML)
	}
	csrf := p.hidden().Get("csrf")
	b.post("/_tessera/account/devices/delete", url.Values{"csrf": {csrf}, "device_id": {"PHONE"}}).expect(t, http.StatusSeeOther)
	tokenDead(t, srv, phone.AccessToken, false)
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)

	b.post("/_tessera/account/password", url.Values{"csrf": {csrf}, "current_password": {"wrong"}, "new_password": {"password2"}}).
		expect(t, http.StatusForbidden)
	b.post("/_tessera/account/password", url.Values{"csrf": {csrf}, "current_password": {"password1"}, "new_password": {"password2"},
		"logout_devices": {"1"}}).expect(t, http.StatusOK)
	tokenDead(t, srv, alice.AccessToken, false)
	login(t, srv, "alice", "password2", nil)

	b.post("/_tessera/account/deactivate", url.Values{"csrf": {csrf}, "password": {"password1"}}).expect(t, http.StatusForbidden)
	b.post("/_tessera/account/deactivate", url.Values{"csrf": {csrf}, "password": {"password2"}}).expect(t, http.StatusOK)
	loginRaw(t, srv, "alice", "password2", nil).expect(t, http.StatusForbidden, "M_USER_DEACTIVATED")
	// The browser's session ended with the account.
	if p := b.get("/_tessera/account"); !strings.Contains(p.HTML, `name="password"`) {
		t.Fatalf("account page after deactivation: %.400s", p.HTML)
	}
}

// TestOAuthSignUp: prompt=create shows the sign-up page, under the same
// registration tokens as /register.
func TestOAuthSignUp(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, registrationClosed, withTokens(config.RegistrationToken{Token: "letmein", UsesAllowed: 1}))
	conf := nativeClient(t, srv)
	b := newBrowser(t, srv)
	verifier := oauth2.GenerateVerifier()
	p := b.get(conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "create"))).expect(t, http.StatusOK)
	if !strings.Contains(p.HTML, `name="registration_token"`) {
		t.Fatalf("sign-up page: %.600s", p.HTML)
	}
	f := p.hidden()
	f.Set("username", "Carol")
	f.Set("password", "password1")
	b.post("/_tessera/register", f).expect(t, http.StatusUnauthorized)
	f.Set("registration_token", "wrong")
	b.post("/_tessera/register", f).expect(t, http.StatusUnauthorized)
	f.Set("registration_token", "letmein")
	res := b.post("/_tessera/register", f).expect(t, http.StatusSeeOther)
	to := b.consent(b.get(res.Location).expect(t, http.StatusOK), "approve")
	tok, err := conf.Exchange(ctx, to.Query().Get("code"), oauth2.VerifierOption(verifier))
	must(t, err, "exchange")
	tokenWorks(t, srv, tok.AccessToken, "@carol:tessera.test")
	// The token was single-use.
	f.Set("username", "dave")
	b2 := newBrowser(t, srv)
	f.Set("csrf", b2.get("/_tessera/register").hidden().Get("csrf"))
	b2.post("/_tessera/register", f).expect(t, http.StatusUnauthorized)

	closed := testserver.Start(t, registrationClosed)
	newBrowser(t, closed).get("/_tessera/register").expect(t, http.StatusForbidden)
}

// TestOAuthBehindHTTPS: with an https public_baseurl (a TLS proxy in
// front), the issuer and endpoints are https and the cookies Secure.
func TestOAuthBehindHTTPS(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.PublicBaseURL = "https://matrix.example.org" })
	r := get(t, srv, "/_matrix/client/v1/auth_metadata", "").expect(t, http.StatusOK, "")
	if r.str("issuer") != "https://matrix.example.org/" || r.str("token_endpoint") != "https://matrix.example.org/_tessera/oauth2/token" {
		t.Fatalf("metadata = %s", r.Raw)
	}
	p := newBrowser(t, srv).get("/_tessera/login").expect(t, http.StatusOK)
	cookies := p.Header.Values("Set-Cookie")
	if len(cookies) == 0 {
		t.Fatal("no cookie set")
	}
	for _, c := range cookies {
		if !strings.Contains(c, "Secure") || !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Lax") {
			t.Errorf("cookie %q: want Secure, HttpOnly, SameSite=Lax", c)
		}
	}
}

// TestOAuthCrossSigningReset: a client signed in through OAuth replaces
// its cross-signing keys after the user approves on the account page (the
// m.oauth UIA stage); a password-login device keeps the password stage.
func TestOAuthCrossSigningReset(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	conf := nativeClient(t, srv)
	b := newBrowser(t, srv)
	verifier := oauth2.GenerateVerifier()
	tok, err := conf.Exchange(ctx, authorizeCode(t, b, conf, verifier, "alice", "password1"), oauth2.VerifierOption(verifier))
	must(t, err, "exchange")

	post(t, srv, kxCSPath, tok.AccessToken, kxNewCrossSigning(t, alice.UserID).body(t)).expect(t, http.StatusOK, "")
	cs2 := kxNewCrossSigning(t, alice.UserID)
	// A password-login device is offered the password only.
	wantFlows(t, post(t, srv, kxCSPath, alice.AccessToken, cs2.body(t)), "", "m.login.password")

	ch := post(t, srv, kxCSPath, tok.AccessToken, cs2.body(t)).expect(t, http.StatusUnauthorized, "")
	if !strings.Contains(string(ch.Raw), `{"stages":["m.oauth"]}`) {
		t.Fatalf("challenge = %s, want an m.oauth flow", ch.Raw)
	}
	params, _ := ch.Body["params"].(map[string]any)
	stage, _ := params["m.oauth"].(map[string]any)
	approveURL, _ := stage["url"].(string)
	if !strings.HasPrefix(approveURL, srv.URL+"/_tessera/account?action=org.matrix.cross_signing_reset") {
		t.Fatalf("m.oauth url = %q", approveURL)
	}
	retry := cs2.body(t)
	retry["auth"] = map[string]any{"type": "m.oauth", "session": ch.str("session")}
	// Not approved yet: the challenge again.
	post(t, srv, kxCSPath, tok.AccessToken, retry).expect(t, http.StatusUnauthorized, "")

	page := b.get(approveURL).expect(t, http.StatusOK)
	if !strings.Contains(page.HTML, "Reset your identity?") {
		t.Fatalf("account page: %.600s", page.HTML)
	}
	f := url.Values{"csrf": {page.hidden().Get("csrf")}, "password": {"wrong"}}
	b.post("/_tessera/account/cross-signing-reset", f).expect(t, http.StatusForbidden)
	post(t, srv, kxCSPath, tok.AccessToken, retry).expect(t, http.StatusUnauthorized, "")
	f.Set("password", "password1")
	b.post("/_tessera/account/cross-signing-reset", f).expect(t, http.StatusOK)
	post(t, srv, kxCSPath, tok.AccessToken, retry).expect(t, http.StatusOK, "")
	r := kxQuery(t, srv, alice.AccessToken, map[string][]string{alice.UserID: {}})
	if kxPath(r.Body, "master_keys", alice.UserID, "keys", "ed25519:"+cs2.master.pub) != cs2.master.pub {
		t.Fatalf("master key not replaced: %s", r.Raw)
	}
}
