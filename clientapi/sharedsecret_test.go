package clientapi_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// Synapse's shared-secret registration, as register_new_matrix_user uses it.
// https://element-hq.github.io/synapse/latest/admin_api/register_api.html

const adminRegister = "/_synapse/admin/v1/register"

func nonce(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	r := get(t, srv, adminRegister, "").expect(t, http.StatusOK, "")
	n := r.str("nonce")
	if n == "" {
		t.Fatalf("no nonce: %s", r.Raw)
	}
	return n
}

// signed is a shared-secret registration body with its MAC.
func signed(secret string, rq synapseadmin.ReqSharedSecretRegister) map[string]any {
	rq.SHA1Checksum = rq.Sign(secret)
	body := map[string]any{
		"nonce": rq.Nonce, "username": rq.Username, "password": rq.Password, "admin": rq.Admin, "mac": rq.SHA1Checksum,
	}
	if rq.Displayname != "" {
		body["displayname"] = rq.Displayname
	}
	if rq.UserType != "" {
		body["user_type"] = rq.UserType
	}
	return body
}

func TestSharedSecretRegister(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, registrationClosed) // works with registration closed
	admin := synapseadmin.Client{Client: srv.Client("", "")}

	res, err := admin.SharedSecretRegister(ctx, testserver.SharedSecret, synapseadmin.ReqSharedSecretRegister{
		Username: "root", Password: "root-password", Admin: true, Displayname: "The Admin",
	})
	must(t, err, "shared-secret register admin")
	if res.UserID != srv.UserID("root") || res.AccessToken == "" || res.DeviceID == "" {
		t.Fatalf("register = %+v", res)
	}
	tokenWorks(t, srv, res.AccessToken, "@root:tessera.test")
	login(t, srv, "root", "root-password", nil)
	r := get(t, srv, profilePath("@root:tessera.test"), "").expect(t, http.StatusOK, "")
	if r.str("displayname") != "The Admin" {
		t.Fatalf("displayname = %q", r.str("displayname"))
	}

	// A normal user, with a user_type (which is part of the MAC).
	n := nonce(t, srv)
	r = post(t, srv, adminRegister, "", signed(testserver.SharedSecret, synapseadmin.ReqSharedSecretRegister{
		Nonce: n, Username: "Bot", Password: "bot-password", UserType: "bot",
	})).expect(t, http.StatusOK, "")
	botTok := r.str("access_token")
	if r.str("user_id") != "@bot:tessera.test" || botTok == "" {
		t.Fatalf("register bot = %s", r.Raw)
	}

	// The admin flag took: the admin may change another user's profile,
	// the normal user may not.
	put(t, srv, profilePath("@bot:tessera.test", "displayname"), res.AccessToken,
		map[string]any{"displayname": "Renamed by admin"}).expect(t, http.StatusOK, "")
	put(t, srv, profilePath("@root:tessera.test", "displayname"), botTok,
		map[string]any{"displayname": "pwned"}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	r = get(t, srv, profilePath("@bot:tessera.test", "displayname"), "").expect(t, http.StatusOK, "")
	if r.str("displayname") != "Renamed by admin" {
		t.Fatalf("bot displayname = %q", r.str("displayname"))
	}
	r = get(t, srv, profilePath("@root:tessera.test", "displayname"), "").expect(t, http.StatusOK, "")
	if r.str("displayname") != "The Admin" {
		t.Fatalf("root displayname = %q", r.str("displayname"))
	}

	// A taken name.
	_, err = admin.SharedSecretRegister(ctx, testserver.SharedSecret, synapseadmin.ReqSharedSecretRegister{
		Username: "root", Password: "root-password",
	})
	wantErr(t, err, http.StatusBadRequest, "M_USER_IN_USE")
}

func TestSharedSecretRegisterErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	secret := testserver.SharedSecret

	// Each nonce is good for one registration.
	n := nonce(t, srv)
	post(t, srv, adminRegister, "", signed(secret, synapseadmin.ReqSharedSecretRegister{
		Nonce: n, Username: "first", Password: "password1",
	})).expect(t, http.StatusOK, "")
	post(t, srv, adminRegister, "", signed(secret, synapseadmin.ReqSharedSecretRegister{
		Nonce: n, Username: "second", Password: "password1",
	})).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	// A nonce the server never issued.
	post(t, srv, adminRegister, "", signed(secret, synapseadmin.ReqSharedSecretRegister{
		Nonce: "made-up", Username: "second", Password: "password1",
	})).expect(t, http.StatusBadRequest, "M_UNKNOWN")

	cases := []struct {
		name string
		body func(nonce string) map[string]any
	}{
		{"wrong secret", func(n string) map[string]any {
			return signed("not-the-secret", synapseadmin.ReqSharedSecretRegister{Nonce: n, Username: "second", Password: "password1"})
		}},
		{"admin flag not covered by the MAC", func(n string) map[string]any {
			b := signed(secret, synapseadmin.ReqSharedSecretRegister{Nonce: n, Username: "second", Password: "password1"})
			b["admin"] = true
			return b
		}},
		{"username changed after signing", func(n string) map[string]any {
			b := signed(secret, synapseadmin.ReqSharedSecretRegister{Nonce: n, Username: "second", Password: "password1"})
			b["username"] = "third"
			return b
		}},
		{"mac not hex", func(n string) map[string]any {
			b := signed(secret, synapseadmin.ReqSharedSecretRegister{Nonce: n, Username: "second", Password: "password1"})
			b["mac"] = "zz"
			return b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			post(t, srv, adminRegister, "", tc.body(nonce(t, srv))).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
	post(t, srv, adminRegister, "", map[string]any{"nonce": nonce(t, srv), "username": "x"}).
		expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	get(t, srv, v3+"/register/available?username=second", "").expect(t, http.StatusOK, "")
	get(t, srv, v3+"/register/available?username=third", "").expect(t, http.StatusOK, "")
}

func TestSharedSecretDisabled(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, func(c *config.Config) { c.Registration.SharedSecret = "" })
	get(t, srv, adminRegister, "").expect(t, http.StatusBadRequest, "M_UNKNOWN")
	// Signed with the empty secret: still refused.
	post(t, srv, adminRegister, "", signed("", synapseadmin.ReqSharedSecretRegister{
		Nonce: "n", Username: "root", Password: "password1", Admin: true,
	})).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	admin := &synapseadmin.Client{Client: srv.Client("", "")}
	_, err := admin.SharedSecretRegister(ctx, "", synapseadmin.ReqSharedSecretRegister{Username: "root", Password: "password1"})
	wantErr(t, err, http.StatusBadRequest, "M_UNKNOWN")
	get(t, srv, v3+"/register/available?username=root", "").expect(t, http.StatusOK, "")
}
