package clientapi_test

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

func TestOAuthMetadata(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	for _, path := range []string{"/_matrix/client/v1/auth_metadata", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"} {
		r := get(t, srv, path, "").expect(t, http.StatusOK, "")
		for _, key := range []string{"issuer", "authorization_endpoint", "token_endpoint", "revocation_endpoint",
			"registration_endpoint", "device_authorization_endpoint", "account_management_uri"} {
			if v := r.str(key); !strings.HasPrefix(v, srv.URL) {
				t.Errorf("%s: %s = %q, want a URL on the server", path, key, v)
			}
		}
		for key, want := range map[string]string{
			"response_types_supported": "code", "grant_types_supported": "refresh_token",
			"response_modes_supported": "fragment", "code_challenge_methods_supported": "S256",
			"prompt_values_supported": "create", "account_management_actions_supported": "org.matrix.device_delete",
		} {
			list, _ := r.Body[key].([]any)
			found := false
			for _, v := range list {
				found = found || v == want
			}
			if !found {
				t.Errorf("%s: %s = %v, want it to contain %q", path, key, r.Body[key], want)
			}
		}
	}
	v := get(t, srv, "/_matrix/client/versions", "").expect(t, http.StatusOK, "")
	if f, _ := v.Body["unstable_features"].(map[string]any); f["org.matrix.msc2965"] != true {
		t.Errorf("versions unstable_features = %v, want org.matrix.msc2965", f)
	}

	off := testserver.Start(t, func(c *config.Config) { c.Auth.OAuth.Enabled = false })
	get(t, off, "/_matrix/client/v1/auth_metadata", "").expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
	post(t, off, "/_tessera/oauth2/token", "", map[string]any{}).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")
}

func TestOAuthClientRegistration(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	base := func(extra map[string]any) map[string]any {
		md := map[string]any{"client_uri": "https://example.com/", "redirect_uris": []string{"https://example.com/cb"}}
		for k, v := range extra {
			md[k] = v
		}
		return md
	}
	for _, tc := range []struct {
		name string
		md   any
		want string // "" for 201
	}{
		{"web", base(nil), ""},
		{"web on a subdomain", base(map[string]any{"redirect_uris": []string{"https://app.example.com/cb"}}), ""},
		{"native loopback ipv4", base(map[string]any{"application_type": "native", "redirect_uris": []string{"http://127.0.0.1/cb"}}), ""},
		{"native loopback ipv6 with port", base(map[string]any{"application_type": "native", "redirect_uris": []string{"http://[::1]:8080/cb"}}), ""},
		{"native localhost", base(map[string]any{"application_type": "native", "redirect_uris": []string{"http://localhost/cb"}}), ""},
		{"native private-use scheme", base(map[string]any{"application_type": "native", "redirect_uris": []string{"com.example.app:/cb"}}), ""},
		{"with logo, tos, policy", base(map[string]any{"logo_uri": "https://cdn.example.com/l.png", "tos_uri": "https://example.com/tos",
			"policy_uri": "https://example.com/p"}), ""},
		{"device grant only", map[string]any{"client_uri": "https://example.com/", "grant_types": []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"}}, ""},

		{"no client_uri", map[string]any{"redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
		{"http client_uri", base(map[string]any{"client_uri": "http://example.com/"}), "invalid_client_metadata"},
		{"client_uri with a user", base(map[string]any{"client_uri": "https://u:p@example.com/"}), "invalid_client_metadata"},
		{"logo on another host", base(map[string]any{"logo_uri": "https://evil.org/l.png"}), "invalid_client_metadata"},
		{"policy over http", base(map[string]any{"policy_uri": "http://example.com/p"}), "invalid_client_metadata"},
		{"secret auth method", base(map[string]any{"token_endpoint_auth_method": "client_secret_basic"}), "invalid_client_metadata"},
		{"unknown application_type", base(map[string]any{"application_type": "desktop"}), "invalid_client_metadata"},
		{"not an object", "[]", "invalid_client_metadata"},
		{"no redirect_uris", map[string]any{"client_uri": "https://example.com/"}, "invalid_redirect_uri"},
		{"web over http", base(map[string]any{"redirect_uris": []string{"http://example.com/cb"}}), "invalid_redirect_uri"},
		{"web loopback", base(map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}}), "invalid_redirect_uri"},
		{"web on another host", base(map[string]any{"redirect_uris": []string{"https://example.org/cb"}}), "invalid_redirect_uri"},
		{"lookalike host", base(map[string]any{"redirect_uris": []string{"https://badexample.com/cb"}}), "invalid_redirect_uri"},
		{"fragment", base(map[string]any{"redirect_uris": []string{"https://example.com/cb#x"}}), "invalid_redirect_uri"},
		{"native http not loopback", base(map[string]any{"application_type": "native", "redirect_uris": []string{"http://example.com/cb"}}), "invalid_redirect_uri"},
		{"private-use scheme of another domain", base(map[string]any{"application_type": "native", "redirect_uris": []string{"org.evil.app:/cb"}}), "invalid_redirect_uri"},
		{"private-use scheme with authority", base(map[string]any{"application_type": "native", "redirect_uris": []string{"com.example.app://cb"}}), "invalid_redirect_uri"},
		{"private-use scheme without dot", base(map[string]any{"application_type": "native", "redirect_uris": []string{"myapp:/cb"}}), "invalid_redirect_uri"},
		{"private-use scheme for a web client", base(map[string]any{"redirect_uris": []string{"com.example.app:/cb"}}), "invalid_redirect_uri"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv, "/_tessera/oauth2/register", "", tc.md)
			if tc.want == "" {
				if r.Status != http.StatusCreated || r.str("client_id") == "" || r.str("token_endpoint_auth_method") != "none" {
					t.Fatalf("got %d %s, want 201 with a client_id", r.Status, r.Raw)
				}
				return
			}
			r.oauthError(t, http.StatusBadRequest, tc.want)
		})
	}
}

// TestOAuthCodeFlow runs the authorisation code grant end to end with
// golang.org/x/oauth2, then uses the tokens with mautrix-go: they are
// ordinary Tessera tokens.
func TestOAuthCodeFlow(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	conf := nativeClient(t, srv, scopeAPI, "urn:matrix:client:device:OAUTHDEVICE1")
	b := newBrowser(t, srv)

	// The pages set their cookies HttpOnly and SameSite=Lax (Secure only
	// over HTTPS; this server is plain HTTP).
	first := b.get(conf.AuthCodeURL("st4te", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	first.expect(t, http.StatusOK)
	for _, c := range first.Header.Values("Set-Cookie") {
		if !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite=Lax") || strings.Contains(c, "Secure") {
			t.Errorf("cookie %q: want HttpOnly, SameSite=Lax and no Secure over http", c)
		}
	}
	if csp := first.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}

	verifier := oauth2.GenerateVerifier()
	code := authorizeCode(t, b, conf, verifier, "alice", "password1")
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if tok.RefreshToken == "" || tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
		t.Fatalf("token = %+v, want a bearer token with a refresh token and an expiry", tok)
	}
	if s, _ := tok.Extra("scope").(string); s != scopeAPI+" urn:matrix:client:device:OAUTHDEVICE1" {
		t.Errorf("scope = %q", s)
	}
	who := whoami(t, srv, tok.AccessToken).expect(t, http.StatusOK, "")
	if who.str("user_id") != alice.UserID || who.str("device_id") != "OAUTHDEVICE1" {
		t.Fatalf("whoami = %s", who.Raw)
	}

	// A real client: create a room, send, sync.
	c := srv.Client(id.UserID(alice.UserID), tok.AccessToken)
	room, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "oauth"})
	must(t, err, "create room")
	sent, err := c.SendText(ctx, room.RoomID, "hello over OAuth")
	must(t, err, "send")
	sync, err := c.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	must(t, err, "sync")
	found := false
	for _, ev := range sync.Rooms.Join[room.RoomID].Timeline.Events {
		found = found || ev.ID == sent.EventID
	}
	if !found {
		t.Fatalf("the message is not in the sync")
	}

	// Refresh rotates the tokens; the scope stays.
	refresh := func(rt string) resp {
		return tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {conf.ClientID}})
	}
	r1 := refresh(tok.RefreshToken).expect(t, http.StatusOK, "")
	if r1.str("refresh_token") == tok.RefreshToken || r1.str("access_token") == tok.AccessToken ||
		r1.str("scope") != scopeAPI+" urn:matrix:client:device:OAUTHDEVICE1" {
		t.Fatalf("refresh = %s", r1.Raw)
	}
	tokenDead(t, srv, tok.AccessToken, false)
	tokenWorks(t, srv, r1.str("access_token"), alice.UserID)
	// The new pair is in use: the old refresh token presented again is a
	// stolen copy, and the whole family goes.
	refresh(tok.RefreshToken).oauthError(t, http.StatusBadRequest, "invalid_grant")
	tokenDead(t, srv, r1.str("access_token"), false)
	refresh(r1.str("refresh_token")).oauthError(t, http.StatusBadRequest, "invalid_grant")

	// Another client may not use this client's refresh token.
	other := nativeClient(t, srv)
	verifier = oauth2.GenerateVerifier()
	tok2, err := conf.Exchange(ctx, authorizeCode(t, b, conf, verifier, "alice", "password1"), oauth2.VerifierOption(verifier))
	must(t, err, "second exchange")
	tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2.RefreshToken}, "client_id": {other.ClientID}}).
		oauthError(t, http.StatusBadRequest, "invalid_grant")

	// Revocation (RFC 7009) ends the session: the device goes with its tokens.
	revoke := func(clientID, token string) resp {
		return do(t, srv, req{Method: http.MethodPost, Path: "/_tessera/oauth2/revoke",
			Body:    url.Values{"client_id": {clientID}, "token": {token}}.Encode(),
			Headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	}
	revoke(other.ClientID, tok2.AccessToken).oauthError(t, http.StatusBadRequest, "invalid_request")
	tokenWorks(t, srv, tok2.AccessToken, alice.UserID)
	revoke(conf.ClientID, tok2.AccessToken).expect(t, http.StatusOK, "")
	tokenDead(t, srv, tok2.AccessToken, false)
	refresh(tok2.RefreshToken).oauthError(t, http.StatusBadRequest, "invalid_grant")
	if ids := deviceIDs(t, srv, alice.AccessToken); strings.Contains(strings.Join(ids, ","), "OAUTHDEVICE1") {
		t.Fatalf("devices after revocation = %v", ids)
	}
	// An unknown token is not an error.
	revoke(conf.ClientID, "tsa_nope").expect(t, http.StatusOK, "")
	revoke("nope", tok2.AccessToken).oauthError(t, http.StatusUnauthorized, "invalid_client")
}

func TestOAuthAuthorizeErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	conf := nativeClient(t, srv)
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	good := url.Values{"client_id": {conf.ClientID}, "redirect_uri": {conf.RedirectURL}, "response_type": {"code"},
		"scope": {scopeAPI}, "state": {"xyz"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = vv
		}
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q
	}
	b := newBrowser(t, srv)
	b.get("/_tessera/oauth2/authorize?"+good.Encode()).expect(t, http.StatusOK)
	for _, tc := range []struct {
		name  string
		query url.Values
		want  string // the error sent to the client; "" for an error page
	}{
		{"unknown client", with("client_id", "nope"), ""},
		{"unregistered redirect uri", with("redirect_uri", "http://127.0.0.1/elsewhere"), ""},
		{"redirect uri of another host", with("redirect_uri", "https://evil.example/cb"), ""},
		{"missing PKCE", with("code_challenge", ""), "invalid_request"},
		{"plain PKCE", with("code_challenge_method", "plain"), "invalid_request"},
		{"PKCE method missing", with("code_challenge_method", ""), "invalid_request"},
		{"malformed challenge", with("code_challenge", "short"), "invalid_request"},
		{"implicit grant", with("response_type", "token"), "unsupported_response_type"},
		{"no API scope", with("scope", "openid"), "invalid_scope"},
		{"bad device scope", with("scope", scopeAPI+" urn:matrix:client:device:x"), "invalid_scope"},
		{"unknown response_mode", with("response_mode", "form_post"), "invalid_request"},
		{"unknown prompt", with("prompt", "none"), "invalid_request"},
		{"prompt=login", with("prompt", "login"), "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := b.get("/_tessera/oauth2/authorize?" + tc.query.Encode())
			if tc.want == "" {
				p.expect(t, http.StatusBadRequest)
				if p.Location != "" || !strings.Contains(p.HTML, "invalid sign-in request") {
					t.Fatalf("want an error page, no redirect; got %q %.300s", p.Location, p.HTML)
				}
				return
			}
			p.expect(t, http.StatusSeeOther)
			u, err := url.Parse(p.Location)
			if err != nil || !strings.HasPrefix(p.Location, conf.RedirectURL+"?") {
				t.Fatalf("redirect = %q", p.Location)
			}
			if u.Query().Get("error") != tc.want || u.Query().Get("state") != "xyz" {
				t.Fatalf("redirect = %q, want error=%s with the state", p.Location, tc.want)
			}
		})
	}
	// response_mode=fragment puts the answer in the fragment.
	p := b.get("/_tessera/oauth2/authorize?" + with("response_mode", "fragment").Encode())
	p = b.login(p, registerUser(t, srv, "bob", "password1").UserID, "password1").expect(t, http.StatusOK)
	to := b.consent(p, "approve")
	if frag, _ := url.ParseQuery(to.Fragment); frag.Get("code") == "" || frag.Get("state") != "xyz" || to.RawQuery != "" {
		t.Fatalf("fragment redirect = %s", to)
	}
	p = b.get("/_tessera/oauth2/authorize?"+good.Encode()).expect(t, http.StatusOK)
	if to := b.consent(p, "deny"); to.Query().Get("error") != "access_denied" || to.Query().Get("state") != "xyz" {
		t.Fatalf("deny redirect = %s", to)
	}
	p = b.get("/_tessera/oauth2/authorize?"+with("response_mode", "fragment").Encode()).expect(t, http.StatusOK)
	if to := b.consent(p, "deny"); !strings.Contains(to.Fragment, "error=access_denied") {
		t.Fatalf("deny redirect = %s", to)
	}
}

func TestOAuthTokenErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Auth.OAuth.CodeLifetime = config.Duration(time.Second) })
	alice := registerUser(t, srv, "alice", "password1")
	conf := nativeClient(t, srv)
	other := nativeClient(t, srv)
	b := newBrowser(t, srv)
	exchange := func(code, verifier, clientID, redirect string) resp {
		return tokenForm(t, srv, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"client_id": {clientID}, "redirect_uri": {redirect}})
	}
	newCode := func() (string, string) {
		v := oauth2.GenerateVerifier()
		return authorizeCode(t, b, conf, v, "alice", "password1"), v
	}

	code, v := newCode()
	exchange(code, "", conf.ClientID, conf.RedirectURL).oauthError(t, http.StatusBadRequest, "invalid_request")
	exchange(code, oauth2.GenerateVerifier(), conf.ClientID, conf.RedirectURL).oauthError(t, http.StatusBadRequest, "invalid_grant")
	exchange(code, v, other.ClientID, other.RedirectURL).oauthError(t, http.StatusBadRequest, "invalid_grant")
	exchange(code, v, conf.ClientID, "http://127.0.0.1:4242/other").oauthError(t, http.StatusBadRequest, "invalid_grant")
	exchange(code, v, "nope", conf.RedirectURL).oauthError(t, http.StatusUnauthorized, "invalid_client")
	// Failed attempts leave the code usable by its own client...
	first := exchange(code, v, conf.ClientID, conf.RedirectURL).expect(t, http.StatusOK, "")
	tokenWorks(t, srv, first.str("access_token"), alice.UserID)
	// ...once: a replay fails and revokes what the code gave.
	exchange(code, v, conf.ClientID, conf.RedirectURL).oauthError(t, http.StatusBadRequest, "invalid_grant")
	tokenDead(t, srv, first.str("access_token"), false)

	code, v = newCode()
	time.Sleep(1100 * time.Millisecond)
	exchange(code, v, conf.ClientID, conf.RedirectURL).oauthError(t, http.StatusBadRequest, "invalid_grant")

	exchange("nope", v, conf.ClientID, conf.RedirectURL).oauthError(t, http.StatusBadRequest, "invalid_grant")
	tokenForm(t, srv, url.Values{"grant_type": {"password"}, "client_id": {conf.ClientID}}).oauthError(t, http.StatusBadRequest, "unsupported_grant_type")
	tokenForm(t, srv, url.Values{"client_id": {conf.ClientID}}).oauthError(t, http.StatusBadRequest, "invalid_request")
	tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "client_id": {conf.ClientID}, "refresh_token": {"tsr_nope"}}).
		oauthError(t, http.StatusBadRequest, "invalid_grant")
	// A refresh token from /login is not an OAuth grant's.
	pw := login(t, srv, "alice", "password1", map[string]any{"refresh_token": true})
	tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "client_id": {conf.ClientID}, "refresh_token": {pw.RefreshToken}}).
		oauthError(t, http.StatusBadRequest, "invalid_grant")
	// A client that did not register the grant may not use it.
	webOnly := registerOAuthClient(t, srv, map[string]any{"client_uri": "https://example.com/", "redirect_uris": []string{"https://example.com/cb"}})
	tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "client_id": {webOnly}, "refresh_token": {"x"}}).
		oauthError(t, http.StatusBadRequest, "unauthorized_client")

	// A device deleted through the Matrix API takes its grant with it: the
	// same device ID signed in again by /login is not the client's.
	dev := *conf
	dev.Scopes = []string{scopeAPI, "urn:matrix:client:device:REUSEDDEV01"}
	v = oauth2.GenerateVerifier()
	_, err := dev.Exchange(ctx, authorizeCode(t, b, &dev, v, "alice", "password1"), oauth2.VerifierOption(v))
	must(t, err, "exchange for REUSEDDEV01")
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/REUSEDDEV01", alice.AccessToken, nil, alice.UserID, "password1").
		expect(t, http.StatusOK, "")
	again := login(t, srv, "alice", "password1", map[string]any{"device_id": "REUSEDDEV01", "refresh_token": true})
	tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "client_id": {conf.ClientID}, "refresh_token": {again.RefreshToken}}).
		oauthError(t, http.StatusBadRequest, "invalid_grant")

	// The oauth2 library sees the same errors.
	_, err = conf.Exchange(ctx, "nope", oauth2.VerifierOption(v))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("exchange error = %v, want invalid_grant", err)
	}
}

// TestOAuthLogout: OAuth tokens are ordinary tokens: /logout with the
// access token signs the device out, and its refresh token dies with it.
func TestOAuthLogout(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	conf := nativeClient(t, srv)
	verifier := oauth2.GenerateVerifier()
	tok, err := conf.Exchange(ctx, authorizeCode(t, newBrowser(t, srv), conf, verifier, "alice", "password1"), oauth2.VerifierOption(verifier))
	must(t, err, "exchange")
	tokenWorks(t, srv, tok.AccessToken, alice.UserID)
	post(t, srv, v3+"/logout", tok.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	tokenDead(t, srv, tok.AccessToken, false)
	tokenForm(t, srv, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {conf.ClientID}}).
		oauthError(t, http.StatusBadRequest, "invalid_grant")
	if ids := deviceIDs(t, srv, alice.AccessToken); len(ids) != 1 {
		t.Fatalf("devices after logout = %v", ids)
	}
}

// TestOAuthTokenRateLimit: the token endpoint has its own limit per client
// address (rate_limits.oauth_token_per_address), answered in OAuth's error
// format with 429 and Retry-After; the client registration endpoint's
// limit answers the same way.
func TestOAuthTokenRateLimit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, rateLimited(func(l *config.RateLimits) {
		l.OAuthTokenPerAddress = config.Rate{PerSecond: 0.001, Burst: 3}
		l.RegisterPerAddress = config.Rate{PerSecond: 0.001, Burst: 2}
	}))
	conf := nativeClient(t, srv)
	refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {conf.ClientID}, "refresh_token": {"tsr_nope"}}
	// Failed requests count too: the limit is against guessing.
	for i := 0; i < 3; i++ {
		tokenForm(t, srv, refresh).oauthError(t, http.StatusBadRequest, "invalid_grant")
	}
	for _, r := range []resp{tokenForm(t, srv, refresh), tokenForm(t, srv, url.Values{"grant_type": {"authorization_code"}})} {
		r.oauthError(t, http.StatusTooManyRequests, "too_many_requests")
		if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
		}
		if r.str("error_description") == "" || r.Body["errcode"] != nil {
			t.Fatalf("not an OAuth error body: %s", r.Raw)
		}
	}
	// Registration's own limit (one client registered above).
	registerOAuthClient(t, srv, map[string]any{"client_name": "Second", "client_uri": "https://client.example.org/",
		"application_type": "native", "redirect_uris": []string{loopbackURI}, "token_endpoint_auth_method": "none"})
	r := post(t, srv, "/_tessera/oauth2/register", "", map[string]any{"client_name": "Third"})
	r.oauthError(t, http.StatusTooManyRequests, "too_many_requests")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After on the registration limit")
	}
}
