package clientapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// https://spec.matrix.org/v1.19/client-server-api/#device-management

func TestDevicesListAndGet(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	phone := login(t, srv, "alice", "password1", map[string]any{"device_id": "PHONE", "initial_device_display_name": "Phone"})
	bob := registerUser(t, srv, "bob", "password1")

	if got := deviceIDs(t, srv, alice.AccessToken); !slices.Equal(got, sorted(alice.DeviceID, "PHONE")) {
		t.Fatalf("devices = %v", got)
	}
	if got := deviceIDs(t, srv, bob.AccessToken); !slices.Equal(got, []string{bob.DeviceID}) {
		t.Fatalf("bob's devices = %v", got)
	}

	c := client(srv, alice)
	info, err := c.GetDeviceInfo(ctx, "PHONE")
	must(t, err, "get device")
	if info.DeviceID != "PHONE" || info.DisplayName != "Phone" || info.LastSeenIP != "127.0.0.1" || info.LastSeenTS <= 0 {
		t.Fatalf("device = %+v", info)
	}
	list, err := c.GetDevicesInfo(ctx)
	must(t, err, "list devices")
	if len(list.Devices) != 2 {
		t.Fatalf("devices = %+v", list)
	}

	// Unknown devices, and other users' devices, are not found.
	_, err = c.GetDeviceInfo(ctx, "NOSUCHDEVICE")
	wantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, v3+"/devices/"+bob.DeviceID, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, v3+"/devices/"+phone.DeviceID, bob.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, v3+"/devices", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

func TestDeviceRename(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	bob := registerUser(t, srv, "bob", "password1")
	c := client(srv, alice)

	must(t, c.SetDeviceInfo(ctx, id.DeviceID(alice.DeviceID), &mautrix.ReqDeviceInfo{DisplayName: "Desk"}), "rename")
	d := get(t, srv, v3+"/devices/"+alice.DeviceID, alice.AccessToken).expect(t, http.StatusOK, "")
	if d.str("display_name") != "Desk" {
		t.Fatalf("display_name = %q", d.str("display_name"))
	}
	// No display_name: nothing changes.
	put(t, srv, v3+"/devices/"+alice.DeviceID, alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	d = get(t, srv, v3+"/devices/"+alice.DeviceID, alice.AccessToken).expect(t, http.StatusOK, "")
	if d.str("display_name") != "Desk" {
		t.Fatalf("display_name after empty update = %q", d.str("display_name"))
	}

	cases := []struct {
		name, device, token string
		body                any
		status              int
		errcode             string
	}{
		{"unknown device", "NOSUCHDEVICE", alice.AccessToken, map[string]any{"display_name": "x"},
			http.StatusNotFound, "M_NOT_FOUND"},
		{"unknown device, empty body", "NOSUCHDEVICE", alice.AccessToken, map[string]any{},
			http.StatusNotFound, "M_NOT_FOUND"},
		{"another user's device", bob.DeviceID, alice.AccessToken, map[string]any{"display_name": "mine now"},
			http.StatusNotFound, "M_NOT_FOUND"},
		{"name not a string", alice.DeviceID, alice.AccessToken, map[string]any{"display_name": 5},
			http.StatusBadRequest, "M_BAD_JSON"},
		{"name too long", alice.DeviceID, alice.AccessToken, map[string]any{"display_name": strings.Repeat("x", 101)},
			http.StatusBadRequest, "M_INVALID_PARAM"},
		{"no token", alice.DeviceID, "", map[string]any{"display_name": "x"},
			http.StatusUnauthorized, "M_MISSING_TOKEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			put(t, srv, v3+"/devices/"+tc.device, tc.token, tc.body).expect(t, tc.status, tc.errcode)
		})
	}
	d = get(t, srv, v3+"/devices/"+bob.DeviceID, bob.AccessToken).expect(t, http.StatusOK, "")
	if d.str("display_name") == "mine now" {
		t.Fatal("alice renamed bob's device")
	}
}

func TestDeleteDevice(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	phone := login(t, srv, "alice", "password1", map[string]any{"refresh_token": true})
	bob := registerUser(t, srv, "bob", "password1")
	path := v3 + "/devices/" + phone.DeviceID

	// The challenge, then a wrong password.
	sess := wantFlows(t, del(t, srv, path, alice.AccessToken, map[string]any{}), "", "m.login.password")
	r := del(t, srv, path, alice.AccessToken, map[string]any{"auth": passwordAuth(sess, alice.UserID, "wrong")})
	wantFlows(t, r, "M_FORBIDDEN", "m.login.password")
	// A DELETE without a body gets the challenge too.
	wantFlows(t, do(t, srv, req{Method: http.MethodDelete, Path: path, Token: alice.AccessToken}), "", "m.login.password")
	tokenWorks(t, srv, phone.AccessToken, alice.UserID)

	del(t, srv, path, alice.AccessToken, map[string]any{"auth": passwordAuth(sess, alice.UserID, "password1")}).
		expect(t, http.StatusOK, "")
	tokenDead(t, srv, phone.AccessToken, false)
	post(t, srv, v3+"/refresh", "", map[string]any{"refresh_token": phone.RefreshToken}).
		expect(t, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	get(t, srv, path, alice.AccessToken).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)

	// Deleting a device that is already gone succeeds ("or had been removed
	// previously"), after authentication.
	withPasswordUIA(t, srv, http.MethodDelete, path, alice.AccessToken, nil, alice.UserID, "password1").
		expect(t, http.StatusOK, "")
	// Naming another user's device deletes nothing of theirs.
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/"+bob.DeviceID, alice.AccessToken, nil,
		alice.UserID, "password1").expect(t, http.StatusOK, "")
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)

	// With mautrix: a UIA response, then the password.
	tablet := login(t, srv, "alice", "password1", nil)
	c := client(srv, alice)
	err := c.DeleteDevice(ctx, id.DeviceID(tablet.DeviceID), &mautrix.ReqDeleteDevice[any]{})
	wantErr(t, err, http.StatusUnauthorized, "")
	sess = wantFlows(t, del(t, srv, v3+"/devices/"+tablet.DeviceID, alice.AccessToken, map[string]any{}),
		"", "m.login.password")
	must(t, c.DeleteDevice(ctx, id.DeviceID(tablet.DeviceID), &mautrix.ReqDeleteDevice[any]{
		Auth: passwordAuth(sess, alice.UserID, "password1"),
	}), "delete device")
	tokenDead(t, srv, tablet.AccessToken, false)
}

func TestDeleteDevices(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "password1")
	a := login(t, srv, "alice", "password1", nil)
	b := login(t, srv, "alice", "password1", nil)
	keep := login(t, srv, "alice", "password1", nil)
	bob := registerUser(t, srv, "bob", "password1")

	post(t, srv, v3+"/delete_devices", alice.AccessToken, map[string]any{}).
		expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	post(t, srv, v3+"/delete_devices", alice.AccessToken, map[string]any{"devices": "all"}).
		expect(t, http.StatusBadRequest, "M_BAD_JSON")

	// The requesting device may delete itself along with others; unknown IDs
	// and other users' devices are ignored.
	withPasswordUIA(t, srv, http.MethodPost, v3+"/delete_devices", alice.AccessToken, map[string]any{
		"devices": []string{a.DeviceID, b.DeviceID, alice.DeviceID, "NOSUCHDEVICE", bob.DeviceID},
	}, alice.UserID, "password1").expect(t, http.StatusOK, "")
	for _, s := range []session{alice, a, b} {
		tokenDead(t, srv, s.AccessToken, false)
	}
	if got := deviceIDs(t, srv, keep.AccessToken); !slices.Equal(got, []string{keep.DeviceID}) {
		t.Fatalf("devices = %v, want [%s]", got, keep.DeviceID)
	}
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)

	// With mautrix and an empty list: authenticated, nothing deleted.
	c := client(srv, keep)
	sess := wantFlows(t, post(t, srv, v3+"/delete_devices", keep.AccessToken, map[string]any{"devices": []string{}}),
		"", "m.login.password")
	must(t, c.DeleteDevices(ctx, &mautrix.ReqDeleteDevices[any]{
		Devices: []id.DeviceID{}, Auth: passwordAuth(sess, "alice", "password1"),
	}), "delete no devices")
	tokenWorks(t, srv, keep.AccessToken, keep.UserID)
}

func TestGuestDevices(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, guestsAllowed)
	g := sessionOf(t, post(t, srv, v3+"/register?kind=guest", "", map[string]any{}).expect(t, http.StatusOK, ""))
	if got := deviceIDs(t, srv, g.AccessToken); !slices.Equal(got, []string{g.DeviceID}) {
		t.Fatalf("guest devices = %v", got)
	}
	put(t, srv, v3+"/devices/"+g.DeviceID, g.AccessToken, map[string]any{"display_name": "Guest"}).
		expect(t, http.StatusOK, "")
	del(t, srv, v3+"/devices/"+g.DeviceID, g.AccessToken, map[string]any{}).
		expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	post(t, srv, v3+"/delete_devices", g.AccessToken, map[string]any{"devices": []string{}}).
		expect(t, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
}
