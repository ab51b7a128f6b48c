package clientapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestAdminRegistrationTokens: tokens made, read, changed and deleted
// through the API; a made token lets one register, as many times as
// allowed; the config file's tokens are listed and read-only.
func TestAdminRegistrationTokens(t *testing.T) {
	srv := testserver.Start(t, func(c *config.Config) { c.Registration.Open = false })
	root := registerAdmin(t, srv)
	tok := root.AccessToken
	const path = adminV1 + "/registration_tokens"
	register := func(name, token string) resp {
		sess := wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": name, "password": name + "-password"}),
			"", "m.login.registration_token")
		return post(t, srv, v3+"/register", "", map[string]any{"username": name, "password": name + "-password",
			"auth": map[string]any{"type": "m.login.registration_token", "token": token, "session": sess}})
	}
	// No token yet and registration closed.
	post(t, srv, v3+"/register", "", map[string]any{"username": "x", "password": "x-password"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")

	r := post(t, srv, path+"/new", tok, map[string]any{"token": "invite-1", "uses_allowed": 1}).expect(t, http.StatusOK, "")
	if r.str("token") != "invite-1" || r.Body["uses_allowed"] != float64(1) || r.Body["completed"] != float64(0) ||
		r.Body["pending"] != float64(0) || r.Body["expiry_time"] != nil {
		t.Fatalf("new token: %s", r.Raw)
	}
	r = post(t, srv, path+"/new", tok, map[string]any{"length": 20}).expect(t, http.StatusOK, "")
	if len(r.str("token")) != 20 {
		t.Fatalf("generated token: %s", r.Raw)
	}
	generated := r.str("token")
	post(t, srv, path+"/new", tok, map[string]any{"token": "invite-1"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	post(t, srv, path+"/new", tok, map[string]any{"token": "bad token!"}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	post(t, srv, path+"/new", tok, map[string]any{"uses_allowed": -1}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	post(t, srv, path+"/new", tok, map[string]any{"expiry_time": 1000}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	post(t, srv, path+"/new", tok, map[string]any{"length": 65}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	alice := sessionOf(t, register("alice", "invite-1").expect(t, http.StatusOK, ""))
	register("bob", "invite-1").expect(t, http.StatusUnauthorized, "M_UNAUTHORIZED")
	r = get(t, srv, path+"/invite-1", tok).expect(t, http.StatusOK, "")
	if r.Body["completed"] != float64(1) {
		t.Fatalf("after a registration: %s", r.Raw)
	}
	r = get(t, srv, path+"?valid=false", tok).expect(t, http.StatusOK, "")
	if ts := r.Body["registration_tokens"].([]any); len(ts) != 1 || ts[0].(map[string]any)["token"] != "invite-1" {
		t.Fatalf("invalid tokens: %s", r.Raw)
	}
	// More uses, and an expiry.
	exp := time.Now().Add(time.Hour).UnixMilli()
	r = put(t, srv, path+"/invite-1", tok, map[string]any{"uses_allowed": nil, "expiry_time": exp}).expect(t, http.StatusOK, "")
	if r.Body["uses_allowed"] != nil || r.Body["expiry_time"] != float64(exp) {
		t.Fatalf("updated: %s", r.Raw)
	}
	register("bob", "invite-1").expect(t, http.StatusOK, "")
	r = get(t, srv, path+"?valid=true", tok).expect(t, http.StatusOK, "")
	if ts := r.Body["registration_tokens"].([]any); len(ts) != 2 {
		t.Fatalf("valid tokens: %s", r.Raw)
	}
	put(t, srv, path+"/nope", tok, map[string]any{"uses_allowed": 1}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, path+"/"+generated, tok, nil).expect(t, http.StatusOK, "")
	get(t, srv, path+"/"+generated, tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, path+"/"+generated, tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, path+"/invite-1", alice.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
}

// TestAdminRegistrationTokensFromConfig: the config file's tokens show in
// the API, and are changed only in the file.
func TestAdminRegistrationTokensFromConfig(t *testing.T) {
	srv := testserver.Start(t, withTokens(config.RegistrationToken{Token: "from-file", UsesAllowed: 3}))
	root := registerAdmin(t, srv)
	r := get(t, srv, adminV1+"/registration_tokens", root.AccessToken).expect(t, http.StatusOK, "")
	ts := r.Body["registration_tokens"].([]any)
	if len(ts) != 1 || ts[0].(map[string]any)["token"] != "from-file" || ts[0].(map[string]any)["uses_allowed"] != float64(3) {
		t.Fatalf("config tokens: %s", r.Raw)
	}
	put(t, srv, adminV1+"/registration_tokens/from-file", root.AccessToken, map[string]any{"uses_allowed": 1}).
		expect(t, http.StatusBadRequest, "M_UNKNOWN")
	del(t, srv, adminV1+"/registration_tokens/from-file", root.AccessToken, nil).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	post(t, srv, adminV1+"/registration_tokens/new", root.AccessToken, map[string]any{"token": "from-file"}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}
