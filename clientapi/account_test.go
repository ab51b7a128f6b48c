package clientapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountpassword
func TestChangePassword(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "old-password")
	phone := login(t, srv, "alice", "old-password", nil)
	tablet := login(t, srv, "alice", "old-password", map[string]any{"refresh_token": true})
	bob := registerUser(t, srv, "bob", "bobs-password")

	path := v3 + "/account/password"
	body := map[string]any{"new_password": "new-password"}

	// First request: the challenge.
	first := post(t, srv, path, alice.AccessToken, body)
	sess := wantFlows(t, first, "", "m.login.password")

	// A wrong password: 401 with M_FORBIDDEN, and the session to retry in.
	r := post(t, srv, path, alice.AccessToken, map[string]any{
		"new_password": "new-password", "auth": passwordAuth(sess, alice.UserID, "wrong"),
	})
	if got := wantFlows(t, r, "M_FORBIDDEN", "m.login.password"); got != sess {
		t.Fatalf("session changed after a failed stage: %q -> %q", sess, got)
	}
	// Someone else's password, naming them: refused too.
	r = post(t, srv, path, alice.AccessToken, map[string]any{
		"new_password": "new-password", "auth": passwordAuth(sess, bob.UserID, "bobs-password"),
	})
	wantFlows(t, r, "M_FORBIDDEN", "m.login.password")
	// A UIA session belongs to its user and operation.
	bobSess := wantFlows(t, post(t, srv, path, bob.AccessToken, body), "", "m.login.password")
	post(t, srv, path, alice.AccessToken, map[string]any{
		"new_password": "new-password", "auth": passwordAuth(bobSess, alice.UserID, "old-password"),
	}).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	post(t, srv, path, alice.AccessToken, map[string]any{
		"new_password": "new-password", "auth": passwordAuth("no-such-session", alice.UserID, "old-password"),
	}).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	// Nothing changed so far.
	tokenWorks(t, srv, phone.AccessToken, alice.UserID)
	login(t, srv, "alice", "old-password", nil)

	// The right password (identifier as a localpart this time).
	post(t, srv, path, alice.AccessToken, map[string]any{
		"new_password": "new-password", "auth": passwordAuth(sess, "alice", "old-password"),
	}).expect(t, http.StatusOK, "")

	// The requesting device survives; every other device is logged out.
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
	tokenDead(t, srv, phone.AccessToken, false)
	tokenDead(t, srv, tablet.AccessToken, false)
	post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": tablet.RefreshToken}).
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	if got := deviceIDs(t, srv, alice.AccessToken); !slices.Equal(got, []string{alice.DeviceID}) {
		t.Fatalf("devices = %v, want only %s", got, alice.DeviceID)
	}
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)

	// The old password no longer logs in; the new one does.
	loginRaw(t, srv, "alice", "old-password", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	login(t, srv, "alice", "new-password", nil)
}

func TestChangePasswordKeepDevices(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "old-password")
	phone := login(t, srv, "alice", "old-password", nil)

	withPasswordUIA(t, srv, http.MethodPost, v3+"/account/password", alice.AccessToken,
		map[string]any{"new_password": "new-password", "logout_devices": false}, alice.UserID, "old-password").
		expect(t, http.StatusOK, "")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
	tokenWorks(t, srv, phone.AccessToken, alice.UserID)
	login(t, srv, "alice", "new-password", nil)
	loginRaw(t, srv, "alice", "old-password", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
}

func TestChangePasswordBadInput(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "old-password")
	path := v3 + "/account/password"
	post(t, srv, path, alice.AccessToken, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	post(t, srv, path, alice.AccessToken, map[string]any{"new_password": "short"}).
		expect(t, http.StatusBadRequest, "M_WEAK_PASSWORD")
	post(t, srv, path, alice.AccessToken, map[string]any{"new_password": 12345678}).
		expect(t, http.StatusBadRequest, "M_BAD_JSON")
	post(t, srv, path, "", map[string]any{"new_password": "new-password"}).
		expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
	// A wrong-type stage is refused with M_UNAUTHORIZED.
	sess := wantFlows(t, post(t, srv, path, alice.AccessToken, map[string]any{"new_password": "new-password"}),
		"", "m.login.password")
	r := post(t, srv, path, alice.AccessToken, map[string]any{
		"new_password": "new-password", "auth": map[string]any{"type": "m.login.dummy", "session": sess},
	})
	wantFlows(t, r, "M_UNAUTHORIZED", "m.login.password")
	login(t, srv, "alice", "old-password", nil)
}

// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3accountdeactivate
func TestDeactivate(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	phone := login(t, srv, "alice", "password1", map[string]any{"refresh_token": true})
	bob := registerUser(t, srv, "bob", "password1")

	// A wrong password changes nothing.
	sess := wantFlows(t, post(t, srv, v3+"/account/deactivate", alice.AccessToken, map[string]any{}),
		"", "m.login.password")
	r := post(t, srv, v3+"/account/deactivate", alice.AccessToken, map[string]any{
		"auth": passwordAuth(sess, alice.UserID, "wrong"),
	})
	wantFlows(t, r, "M_FORBIDDEN", "m.login.password")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)

	r = withPasswordUIA(t, srv, http.MethodPost, v3+"/account/deactivate", alice.AccessToken, nil,
		alice.UserID, "password1").expect(t, http.StatusOK, "")
	// Tessera binds no 3PIDs, so there was nothing to unbind: the spec says
	// the result must then be "success".
	if got := r.str("id_server_unbind_result"); got != "success" {
		t.Fatalf("id_server_unbind_result = %q, want success: %s", got, r.Raw)
	}

	tokenDead(t, srv, alice.AccessToken, false)
	tokenDead(t, srv, phone.AccessToken, false)
	post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": phone.RefreshToken}).
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	loginRaw(t, srv, "alice", "password1", nil).expect(t, http.StatusForbidden, "M_USER_DEACTIVATED")
	// The name is never handed out again.
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusBadRequest, "M_USER_IN_USE")
	post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1"}).
		expect(t, http.StatusBadRequest, "M_USER_IN_USE")
	// The profile is gone.
	get(t, srv, v3+"/profile/"+alice.UserID, "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, v3+"/profile/"+alice.UserID+"/displayname", "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	// Bob is unaffected.
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)
	get(t, srv, v3+"/profile/"+bob.UserID, "").expect(t, http.StatusOK, "")
}

func TestDeactivateErase(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	put(t, srv, v3+"/profile/"+alice.UserID+"/displayname", alice.AccessToken,
		map[string]any{"displayname": "Alice"}).expect(t, http.StatusOK, "")
	withPasswordUIA(t, srv, http.MethodPost, v3+"/account/deactivate", alice.AccessToken,
		map[string]any{"erase": true}, alice.UserID, "password1").expect(t, http.StatusOK, "")
	get(t, srv, v3+"/profile/"+alice.UserID, "").expect(t, http.StatusNotFound, "M_NOT_FOUND")
	loginRaw(t, srv, "alice", "password1", nil).expect(t, http.StatusForbidden, "M_USER_DEACTIVATED")
	post(t, srv, v3+"/account/deactivate", alice.AccessToken, map[string]any{"erase": "yes"}).
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

// Tessera does not support third-party identifiers.
// https://spec.matrix.org/v1.19/client-server-api/#adding-account-administrative-contact-information
func TestThreePIDs(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")

	r := get(t, srv, v3+"/account/3pid", alice.AccessToken).expect(t, http.StatusOK, "")
	if list, ok := r.Body["threepids"].([]any); !ok || len(list) != 0 {
		t.Fatalf("threepids = %s, want an empty list", r.Raw)
	}
	get(t, srv, v3+"/account/3pid", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

	email := map[string]any{"client_secret": "secret", "email": "alice@example.org", "send_attempt": 1}
	cases := []struct {
		name, path, token string
		body              map[string]any
		status            int
		errcode           string
	}{
		{"add", "/account/3pid/add", alice.AccessToken, map[string]any{"client_secret": "s", "sid": "1"},
			http.StatusForbidden, "M_THREEPID_DENIED"},
		{"bind", "/account/3pid/bind", alice.AccessToken, map[string]any{"client_secret": "s", "sid": "1",
			"id_server": "id.example.org", "id_access_token": "x"}, http.StatusForbidden, "M_THREEPID_DENIED"},
		{"register email", "/register/email/requestToken", "", email, http.StatusForbidden, "M_THREEPID_DENIED"},
		{"register msisdn", "/register/msisdn/requestToken", "", map[string]any{"client_secret": "s",
			"country": "GB", "phone_number": "07700900001", "send_attempt": 1}, http.StatusForbidden, "M_THREEPID_DENIED"},
		{"password email", "/account/password/email/requestToken", "", email, http.StatusForbidden, "M_THREEPID_DENIED"},
		{"account email", "/account/3pid/email/requestToken", alice.AccessToken, email,
			http.StatusForbidden, "M_THREEPID_DENIED"},
		{"delete", "/account/3pid/delete", alice.AccessToken, map[string]any{"medium": "email",
			"address": "alice@example.org"}, http.StatusBadRequest, "M_THREEPID_NOT_FOUND"},
		{"unbind", "/account/3pid/unbind", alice.AccessToken, map[string]any{"medium": "email",
			"address": "alice@example.org"}, http.StatusBadRequest, "M_THREEPID_NOT_FOUND"},
		{"add without token", "/account/3pid/add", "", map[string]any{"client_secret": "s", "sid": "1"},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			post(t, srv, v3+tc.path, tc.token, tc.body).expect(t, tc.status, tc.errcode)
		})
	}
}

// TestUIARetryAfterCompletion: retrying a completed UIA session must not run
// the operation again; the spec allows the 401 that lists the completed
// stages.
func TestUIARetryAfterCompletion(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	c := srv.Register("retry", "correct horse")
	call := func(b map[string]any) (int, map[string]any) {
		raw, _ := json.Marshal(b)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/_matrix/client/v3/account/password", bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	body := map[string]any{"new_password": "battery staple", "logout_devices": false}
	_, challenge := call(body)
	body["auth"] = map[string]any{
		"type": "m.login.password", "session": challenge["session"], "password": "correct horse",
		"identifier": map[string]string{"type": "m.id.user", "user": "retry"},
	}
	if status, out := call(body); status != 200 {
		t.Fatalf("completing UIA: %d %v", status, out)
	}
	status, out := call(body)
	if status != 401 {
		t.Fatalf("retry: status %d (%v), want 401", status, out)
	}
	if _, ok := out["errcode"]; ok {
		t.Fatalf("retry answer has an errcode: %v", out)
	}
	if c, _ := out["completed"].([]any); len(c) != 1 || c[0] != "m.login.password" {
		t.Fatalf("retry answer does not list the completed stage: %v", out)
	}
}
