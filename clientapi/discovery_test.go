package clientapi_test

import (
	"net/http"
	"regexp"
	"slices"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientversions
func TestVersions(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := get(t, srv, "/_matrix/client/versions", "").expect(t, http.StatusOK, "")
	list, _ := r.Body["versions"].([]any)
	if len(list) == 0 {
		t.Fatalf("no versions: %s", r.Raw)
	}
	versionRe := regexp.MustCompile(`^(v[1-9][0-9]*\.[0-9]+|r0\.[0-9]+\.[0-9]+)$`)
	var versions []string
	for _, v := range list {
		s, _ := v.(string)
		if !versionRe.MatchString(s) {
			t.Errorf("malformed version %q", s)
		}
		versions = append(versions, s)
	}
	// v1.11 tells clients to use authenticated media, which we serve.
	for _, want := range []string{"v1.1", "v1.11", "v1.12"} {
		if !slices.Contains(versions, want) {
			t.Errorf("versions %v lack %s", versions, want)
		}
	}
	if _, ok := r.Body["unstable_features"].(map[string]any); !ok {
		t.Errorf("unstable_features is not an object: %s", r.Raw)
	}
	// Authentication is optional, and a token does not change the answer.
	alice := registerUser(t, srv, "alice", "password1")
	get(t, srv, "/_matrix/client/versions", alice.AccessToken).expect(t, http.StatusOK, "")

	res, err := srv.Client("", "").Versions(ctx)
	must(t, err, "versions")
	if len(res.Versions) != len(versions) {
		t.Fatalf("mautrix versions = %v", res.Versions)
	}
}

// https://spec.matrix.org/v1.19/client-server-api/#getwell-knownmatrixclient
func TestWellKnown(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	r := get(t, srv, "/.well-known/matrix/client", "").expect(t, http.StatusOK, "")
	hs, _ := r.Body["m.homeserver"].(map[string]any)
	if base, _ := hs["base_url"].(string); base != srv.URL && base != srv.URL+"/" {
		t.Fatalf("base_url = %q, want %s", base, srv.URL)
	}
	if r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatal("well-known without CORS header")
	}

	// With public_baseurl configured, that is what clients are told.
	pub := testserver.Start(t, func(c *config.Config) { c.PublicBaseURL = "https://matrix.example.org/" })
	r = get(t, pub, "/.well-known/matrix/client", "").expect(t, http.StatusOK, "")
	hs, _ = r.Body["m.homeserver"].(map[string]any)
	if base, _ := hs["base_url"].(string); base != "https://matrix.example.org/" && base != "https://matrix.example.org" {
		t.Fatalf("base_url = %q, want https://matrix.example.org", base)
	}
}

// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities
func TestCapabilities(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, guestsAllowed)
	alice := registerUser(t, srv, "alice", "password1")
	get(t, srv, v3+"/capabilities", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

	caps := func(token string) map[string]any {
		t.Helper()
		r := get(t, srv, v3+"/capabilities", token).expect(t, http.StatusOK, "")
		c, ok := r.Body["capabilities"].(map[string]any)
		if !ok {
			t.Fatalf("capabilities is not an object: %s", r.Raw)
		}
		return c
	}
	enabled := func(c map[string]any, name string) (bool, bool) {
		m, ok := c[name].(map[string]any)
		if !ok {
			return false, false
		}
		b, ok := m["enabled"].(bool)
		return b, ok
	}

	c := caps(alice.AccessToken)
	for name, want := range map[string]bool{
		"m.change_password": true, "m.set_displayname": true, "m.set_avatar_url": true,
		"m.3pid_changes": false, "m.get_login_token": false, "m.profile_fields": true,
	} {
		if got, ok := enabled(c, name); !ok || got != want {
			t.Errorf("%s.enabled = %v (present %v), want %v", name, got, ok, want)
		}
	}
	// "This property should be omitted altogether if suspend and lock would
	// be false."
	if _, ok := c["m.account_moderation"]; ok {
		t.Errorf("m.account_moderation present though no moderation is possible: %v", c["m.account_moderation"])
	}

	// Guests cannot change a password.
	g := sessionOf(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusOK, ""))
	if got, ok := enabled(caps(g.AccessToken), "m.change_password"); !ok || got {
		t.Errorf("guest m.change_password.enabled = %v (present %v), want false", got, ok)
	}

	res, err := client(srv, alice).Capabilities(ctx)
	must(t, err, "capabilities")
	if res.ChangePassword == nil || !res.ChangePassword.Enabled {
		t.Fatalf("mautrix capabilities = %+v", res)
	}
	if res.ThreePIDChanges == nil || res.ThreePIDChanges.Enabled {
		t.Fatalf("mautrix m.3pid_changes = %+v", res.ThreePIDChanges)
	}
}
