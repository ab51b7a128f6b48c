package clientapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/tessera-hs/tessera/internal/config"
	"github.com/tessera-hs/tessera/internal/testserver"
)

// Everything the account API stores survives a restart.
func TestPersistenceAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, withTokens(
		config.RegistrationToken{Token: "once", UsesAllowed: 1},
		config.RegistrationToken{Token: "many"},
	))

	// Registration with the one-use token.
	sess := wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": "alice", "password": "password1"}),
		"", "m.login.registration_token")
	alice := sessionOf(t, post(t, srv, v3+"/register", "", map[string]any{
		"username": "alice", "password": "password1", "device_id": "DESK", "initial_device_display_name": "Desk",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "once", "session": sess},
	}).expect(t, http.StatusOK, ""))
	phone := login(t, srv, "alice", "password1", map[string]any{"refresh_token": true, "device_id": "PHONE"})
	put(t, srv, v3+"/devices/PHONE", alice.AccessToken, map[string]any{"display_name": "Phone"}).
		expect(t, http.StatusOK, "")
	withPasswordUIA(t, srv, http.MethodPost, v3+"/account/password", alice.AccessToken,
		map[string]any{"new_password": "password2", "logout_devices": false}, alice.UserID, "password1").
		expect(t, http.StatusOK, "")
	put(t, srv, profilePath(alice.UserID, "displayname"), alice.AccessToken, map[string]any{"displayname": "Alice"}).
		expect(t, http.StatusOK, "")
	put(t, srv, profilePath(alice.UserID, "avatar_url"), alice.AccessToken, map[string]any{"avatar_url": "mxc://tessera.test/av"}).
		expect(t, http.StatusOK, "")
	put(t, srv, profilePath(alice.UserID, "com.example.pets"), alice.AccessToken,
		map[string]any{"com.example.pets": []string{"cat", "dog"}}).expect(t, http.StatusOK, "")
	const filter = `{"room":{"timeline":{"limit":20}},"org.example.extra":true}`
	fid := post(t, srv, filterPath(alice.UserID), alice.AccessToken, filter).expect(t, http.StatusOK, "").str("filter_id")

	// A deactivated account.
	sess = wantFlows(t, post(t, srv, v3+"/register", "", map[string]any{"username": "mallory", "password": "password1"}),
		"", "m.login.registration_token")
	mallory := sessionOf(t, post(t, srv, v3+"/register", "", map[string]any{
		"username": "mallory", "password": "password1",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "many", "session": sess},
	}).expect(t, http.StatusOK, ""))
	withPasswordUIA(t, srv, http.MethodPost, v3+"/account/deactivate", mallory.AccessToken, nil, mallory.UserID, "password1").
		expect(t, http.StatusOK, "")

	srv.Restart()

	// Old tokens work; so does the refresh token.
	w := whoami(t, srv, alice.AccessToken).expect(t, http.StatusOK, "")
	if w.str("device_id") != "DESK" {
		t.Fatalf("whoami after restart = %s", w.Raw)
	}
	tokenWorks(t, srv, phone.AccessToken, alice.UserID)
	r := post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": phone.RefreshToken}).expect(t, http.StatusOK, "")
	tokenWorks(t, srv, r.str("access_token"), alice.UserID)

	// Devices and their names.
	if got := deviceIDs(t, srv, alice.AccessToken); !slices.Equal(got, []string{"DESK", "PHONE"}) {
		t.Fatalf("devices after restart = %v", got)
	}
	for dev, name := range map[string]string{"DESK": "Desk", "PHONE": "Phone"} {
		d := get(t, srv, v3+"/devices/"+dev, alice.AccessToken).expect(t, http.StatusOK, "")
		if d.str("display_name") != name {
			t.Errorf("device %s display_name = %q, want %q", dev, d.str("display_name"), name)
		}
	}

	// The profile.
	p := get(t, srv, profilePath(alice.UserID), "").expect(t, http.StatusOK, "")
	got, _ := json.Marshal(p.Body)
	if want := `{"avatar_url":"mxc://tessera.test/av","com.example.pets":["cat","dog"],"displayname":"Alice"}`; string(got) != want {
		t.Fatalf("profile after restart = %s, want %s", got, want)
	}

	// The filter, byte for byte.
	f := get(t, srv, filterPath(alice.UserID, fid), alice.AccessToken).expect(t, http.StatusOK, "")
	var compact bytes.Buffer
	_ = json.Compact(&compact, f.Raw)
	if compact.String() != filter {
		t.Fatalf("filter after restart = %s, want %s", compact.String(), filter)
	}

	// The password change, the deactivation and the spent token.
	loginRaw(t, srv, "alice", "password1", nil).expect(t, http.StatusForbidden, "M_FORBIDDEN")
	login(t, srv, "alice", "password2", nil)
	loginRaw(t, srv, "mallory", "password1", nil).expect(t, http.StatusForbidden, "M_USER_DEACTIVATED")
	get(t, srv, v3+"/register/available?username=mallory", "").expect(t, http.StatusBadRequest, "M_USER_IN_USE")
	v := get(t, srv, "/_matrix/client/v1/register/m.login.registration_token/validity?token=once", "").
		expect(t, http.StatusOK, "")
	if valid, _ := v.boolean("valid"); valid {
		t.Fatal("spent registration token is valid again after restart")
	}
	get(t, srv, v3+"/register/available?username=alice", "").expect(t, http.StatusBadRequest, "M_USER_IN_USE")
}

// A restart with a client still holding a mautrix session.
func TestPersistenceMautrixClient(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	c := srv.Register("bob", "password1")
	must(t, c.SetDisplayName(ctx, "Bobby"), "set displayname")
	srv.Restart()
	who, err := c.Whoami(ctx)
	must(t, err, "whoami after restart")
	if who.UserID != srv.UserID("bob") || who.DeviceID != c.DeviceID {
		t.Fatalf("whoami = %+v", who)
	}
	name, err := c.GetOwnDisplayName(ctx)
	must(t, err, "displayname after restart")
	if name.DisplayName != "Bobby" {
		t.Fatalf("displayname = %q", name.DisplayName)
	}
}
