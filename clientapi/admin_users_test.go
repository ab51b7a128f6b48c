package clientapi_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/tessera-hs/tessera/internal/testserver"
)

const (
	adminV1 = "/_synapse/admin/v1"
	adminV2 = "/_synapse/admin/v2"
)

// adminClient is mautrix-go's Synapse admin client for a server admin.
func adminClient(srv *testserver.Server, reg *mautrix.RespRegister) *synapseadmin.Client {
	return &synapseadmin.Client{Client: srv.Client(reg.UserID, reg.AccessToken)}
}

// TestAdminRefusesNonAdmins: every admin route answers 401 without a token
// and 403 M_FORBIDDEN to a user who is not a server admin, before it looks
// at the request.
func TestAdminRefusesNonAdmins(t *testing.T) {
	srv := testserver.Start(t)
	alice := srv.Register("alice", "alice-password")
	u := url.PathEscape(string(alice.UserID))
	room := url.PathEscape("!room:tessera.test")
	routes := []struct{ method, path string }{
		{http.MethodGet, adminV1 + "/server_version"},
		{http.MethodGet, adminV2 + "/users"},
		{http.MethodGet, adminV2 + "/users/" + u},
		{http.MethodPut, adminV2 + "/users/" + u},
		{http.MethodPost, adminV1 + "/deactivate/" + u},
		{http.MethodPost, adminV1 + "/reset_password/" + u},
		{http.MethodGet, adminV1 + "/whois/" + u},
		{http.MethodGet, adminV1 + "/users/" + u + "/joined_rooms"},
		{http.MethodGet, adminV1 + "/users/" + u + "/accountdata"},
		{http.MethodGet, adminV1 + "/users/" + u + "/admin"},
		{http.MethodPut, adminV1 + "/users/" + u + "/admin"},
		{http.MethodGet, adminV1 + "/username_available?username=x"},
		{http.MethodGet, adminV2 + "/users/" + u + "/devices"},
		{http.MethodGet, adminV2 + "/users/" + u + "/devices/D"},
		{http.MethodDelete, adminV2 + "/users/" + u + "/devices/D"},
		{http.MethodPost, adminV2 + "/users/" + u + "/devices"},
		{http.MethodPut, adminV2 + "/users/" + u + "/devices/D"},
		{http.MethodPost, adminV2 + "/users/" + u + "/delete_devices"},
		{http.MethodGet, adminV1 + "/rooms"},
		{http.MethodGet, adminV1 + "/rooms/" + room},
		{http.MethodGet, adminV1 + "/rooms/" + room + "/members"},
		{http.MethodGet, adminV1 + "/rooms/" + room + "/state"},
		{http.MethodGet, adminV1 + "/rooms/" + room + "/messages"},
		{http.MethodGet, adminV1 + "/rooms/" + room + "/block"},
		{http.MethodPut, adminV1 + "/rooms/" + room + "/block"},
		{http.MethodPost, adminV1 + "/rooms/" + room + "/make_room_admin"},
		{http.MethodGet, adminV1 + "/rooms/" + room + "/forward_extremities"},
		{http.MethodDelete, adminV1 + "/rooms/" + room + "/forward_extremities"},
		{http.MethodGet, adminV1 + "/federation/destinations/x.test/rooms"},
		{http.MethodPost, adminV1 + "/join/" + room},
		{http.MethodDelete, adminV2 + "/rooms/" + room},
		{http.MethodGet, adminV2 + "/rooms/" + room + "/delete_status"},
		{http.MethodGet, adminV2 + "/rooms/delete_status/x"},
		{http.MethodDelete, adminV1 + "/rooms/" + room},
		{http.MethodGet, adminV1 + "/users/" + u + "/media"},
		{http.MethodDelete, adminV1 + "/users/" + u + "/media"},
		{http.MethodPost, adminV1 + "/media/delete?before_ts=1"},
		{http.MethodPost, adminV1 + "/media/tessera.test/delete?before_ts=1"},
		{http.MethodDelete, adminV1 + "/media/tessera.test/abc"},
		{http.MethodGet, adminV1 + "/statistics/users/media"},
		{http.MethodGet, adminV1 + "/statistics/database/rooms"},
		{http.MethodGet, adminV1 + "/registration_tokens"},
		{http.MethodPost, adminV1 + "/registration_tokens/new"},
		{http.MethodGet, adminV1 + "/registration_tokens/abc"},
		{http.MethodPut, adminV1 + "/registration_tokens/abc"},
		{http.MethodDelete, adminV1 + "/registration_tokens/abc"},
		{http.MethodGet, adminV1 + "/federation/destinations"},
		{http.MethodGet, adminV1 + "/federation/destinations/x.test"},
		{http.MethodPost, adminV1 + "/federation/destinations/x.test/reset_connection"},
		{http.MethodGet, adminV1 + "/event_reports"},
		{http.MethodGet, adminV1 + "/event_reports/1"},
		{http.MethodDelete, adminV1 + "/event_reports/1"},
		{http.MethodPost, adminV1 + "/send_server_notice"},
		{http.MethodPost, adminV1 + "/users/" + u + "/shadow_ban"},
		{http.MethodDelete, adminV1 + "/users/" + u + "/shadow_ban"},
		{http.MethodPut, adminV1 + "/suspend/" + u},
		{http.MethodGet, adminV1 + "/users/" + u + "/override_ratelimit"},
		{http.MethodPost, adminV1 + "/users/" + u + "/override_ratelimit"},
		{http.MethodDelete, adminV1 + "/users/" + u + "/override_ratelimit"},
	}
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			do(t, srv, req{Method: rt.method, Path: rt.path, Body: map[string]any{}}).
				expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")
			do(t, srv, req{Method: rt.method, Path: rt.path, Token: alice.AccessToken, Body: map[string]any{}}).
				expect(t, http.StatusForbidden, "M_FORBIDDEN")
		})
	}
}

// TestAdminUsers covers the user admin API: list with its filters and
// paging, details, create and modify, the admin flag, reset password,
// devices, whois, joined rooms, account data, deactivation with erase.
func TestAdminUsers(t *testing.T) {
	srv := testserver.Start(t)
	logs := &captureHook{}
	srv.Log.AddHook(logs)
	srv.Log.SetLevel(logrus.InfoLevel)
	root := registerAdmin(t, srv)
	ac := adminClient(srv, root)
	alice := srv.Register("alice", "alice-password")
	srv.Register("bob", "bob-password")
	tok := root.AccessToken

	t.Run("server version", func(t *testing.T) {
		r := get(t, srv, adminV1+"/server_version", tok).expect(t, http.StatusOK, "")
		if r.str("server_version") == "" {
			t.Fatalf("no server_version: %s", r.Raw)
		}
	})

	t.Run("list", func(t *testing.T) {
		r := get(t, srv, adminV2+"/users?limit=2", tok).expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(3) || r.str("next_token") != "2" {
			t.Fatalf("first page: %s", r.Raw)
		}
		users := r.Body["users"].([]any)
		first := users[0].(map[string]any)
		if len(users) != 2 || first["name"] != string(alice.UserID) || first["admin"] != false ||
			first["displayname"] != "alice" || first["deactivated"] != false || first["is_guest"] != false {
			t.Fatalf("users: %s", r.Raw)
		}
		r = get(t, srv, adminV2+"/users?from=2&limit=2", tok).expect(t, http.StatusOK, "")
		if _, more := r.Body["next_token"]; more || len(r.Body["users"].([]any)) != 1 {
			t.Fatalf("last page: %s", r.Raw)
		}
		r = get(t, srv, adminV2+"/users?admins=true", tok).expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(1) {
			t.Fatalf("admins: %s", r.Raw)
		}
		r = get(t, srv, adminV2+"/users?name=BO", tok).expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(1) || r.Body["users"].([]any)[0].(map[string]any)["name"] != "@bob:tessera.test" {
			t.Fatalf("name filter: %s", r.Raw)
		}
		r = get(t, srv, adminV2+"/users?order_by=name&dir=b", tok).expect(t, http.StatusOK, "")
		if r.Body["users"].([]any)[0].(map[string]any)["name"] != string(root.UserID) {
			t.Fatalf("dir=b: %s", r.Raw)
		}
		get(t, srv, adminV2+"/users?order_by=nope", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, adminV2+"/users?limit=-1", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		get(t, srv, adminV2+"/users?guests=maybe", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("details", func(t *testing.T) {
		info, err := ac.GetUserInfo(ctx, alice.UserID)
		must(t, err, "get user")
		if info.DisplayName != "alice" || info.Admin || info.Deactivated {
			t.Fatalf("user info: %+v", info)
		}
		get(t, srv, adminV2+"/users/@nobody:tessera.test", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		get(t, srv, adminV2+"/users/@x:elsewhere.test", tok).expect(t, http.StatusBadRequest, "M_UNKNOWN")
		get(t, srv, adminV2+"/users/notauser", tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("create and modify", func(t *testing.T) {
		r := put(t, srv, adminV2+"/users/@carol:tessera.test", tok, map[string]any{
			"password": "carol-password", "displayname": "Carol", "admin": false,
		}).expect(t, http.StatusCreated, "")
		if r.str("name") != "@carol:tessera.test" || r.str("displayname") != "Carol" {
			t.Fatalf("created: %s", r.Raw)
		}
		carol := srv.Client("", "")
		_, err := carol.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"}, Password: "carol-password", StoreCredentials: true})
		must(t, err, "carol logs in")
		r = put(t, srv, adminV2+"/users/@carol:tessera.test", tok, map[string]any{"displayname": "Carol C", "admin": true}).
			expect(t, http.StatusOK, "")
		if r.str("displayname") != "Carol C" || r.Body["admin"] != true {
			t.Fatalf("modified: %s", r.Raw)
		}
		// Carol is an admin now, on the token she already had.
		get(t, srv, adminV1+"/server_version", carol.AccessToken).expect(t, http.StatusOK, "")
		put(t, srv, adminV2+"/users/@carol:tessera.test", tok, "{").expect(t, http.StatusBadRequest, "M_NOT_JSON")
		put(t, srv, adminV2+"/users/@Bad%20Name:tessera.test", tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_INVALID_USERNAME")
		r = get(t, srv, adminV1+"/users/@carol:tessera.test/admin", tok).expect(t, http.StatusOK, "")
		if r.Body["admin"] != true {
			t.Fatalf("admin flag: %s", r.Raw)
		}
		put(t, srv, adminV1+"/users/@carol:tessera.test/admin", tok, map[string]any{"admin": false}).expect(t, http.StatusOK, "")
		get(t, srv, adminV1+"/server_version", carol.AccessToken).expect(t, http.StatusForbidden, "M_FORBIDDEN")
		put(t, srv, adminV1+"/users/"+string(root.UserID)+"/admin", tok, map[string]any{"admin": false}).
			expect(t, http.StatusBadRequest, "M_UNKNOWN")
		put(t, srv, adminV1+"/users/@carol:tessera.test/admin", tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	})

	t.Run("username available", func(t *testing.T) {
		resp, err := ac.UsernameAvailable(ctx, "dave")
		must(t, err, "username available")
		if !resp.Available {
			t.Fatal("dave is not available")
		}
		get(t, srv, adminV1+"/username_available?username=alice", tok).expect(t, http.StatusBadRequest, "M_USER_IN_USE")
		get(t, srv, adminV1+"/username_available", tok).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	})

	t.Run("devices and whois", func(t *testing.T) {
		devs, err := ac.ListDevices(ctx, alice.UserID)
		must(t, err, "list devices")
		if devs.Total != 1 || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != alice.DeviceID {
			t.Fatalf("devices: %+v", devs)
		}
		r := get(t, srv, adminV2+"/users/"+string(alice.UserID)+"/devices/"+string(alice.DeviceID), tok).expect(t, http.StatusOK, "")
		if r.str("device_id") != string(alice.DeviceID) || r.str("user_id") != string(alice.UserID) {
			t.Fatalf("device: %s", r.Raw)
		}
		get(t, srv, adminV2+"/users/"+string(alice.UserID)+"/devices/NOPE", tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		r = get(t, srv, adminV1+"/whois/"+string(alice.UserID), tok).expect(t, http.StatusOK, "")
		sessions := r.Body["devices"].(map[string]any)[""].(map[string]any)["sessions"].([]any)
		if r.str("user_id") != string(alice.UserID) || len(sessions[0].(map[string]any)["connections"].([]any)) != 1 {
			t.Fatalf("whois: %s", r.Raw)
		}
		// A second login, then its deletion by the admin.
		other := srv.Client("", "")
		_, err = other.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "alice-password", StoreCredentials: true})
		must(t, err, "second login")
		del(t, srv, adminV2+"/users/"+string(alice.UserID)+"/devices/"+string(other.DeviceID), tok, nil).expect(t, http.StatusOK, "")
		_, err = other.Whoami(ctx)
		wantErr(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		post(t, srv, adminV2+"/users/"+string(alice.UserID)+"/delete_devices", tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		devices := adminV2 + "/users/" + string(alice.UserID) + "/devices"
		post(t, srv, devices, tok, map[string]any{"device_id": "BRIDGE"}).expect(t, http.StatusCreated, "")
		post(t, srv, devices, tok, map[string]any{"device_id": "BRIDGE"}).expect(t, http.StatusOK, "")
		post(t, srv, devices, tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		put(t, srv, devices+"/BRIDGE", tok, map[string]any{"display_name": "Bridge"}).expect(t, http.StatusOK, "")
		put(t, srv, devices+"/NOPE", tok, map[string]any{"display_name": "x"}).expect(t, http.StatusNotFound, "M_NOT_FOUND")
		r = get(t, srv, devices+"/BRIDGE", tok).expect(t, http.StatusOK, "")
		if r.str("display_name") != "Bridge" {
			t.Fatalf("created device: %s", r.Raw)
		}
	})

	t.Run("joined rooms and account data", func(t *testing.T) {
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		must(t, err, "create room")
		must(t, alice.SetAccountData(ctx, "org.example.prefs", map[string]any{"theme": "dark"}), "account data")
		must(t, alice.SetRoomAccountData(ctx, room.RoomID, "org.example.room", map[string]any{"pinned": true}), "room account data")
		r := get(t, srv, adminV1+"/users/"+string(alice.UserID)+"/joined_rooms", tok).expect(t, http.StatusOK, "")
		if r.Body["total"] != float64(1) || r.Body["joined_rooms"].([]any)[0] != string(room.RoomID) {
			t.Fatalf("joined rooms: %s", r.Raw)
		}
		r = get(t, srv, adminV1+"/users/"+string(alice.UserID)+"/accountdata", tok).expect(t, http.StatusOK, "")
		data := r.Body["account_data"].(map[string]any)
		global := data["global"].(map[string]any)
		rooms := data["rooms"].(map[string]any)
		if global["org.example.prefs"].(map[string]any)["theme"] != "dark" ||
			rooms[string(room.RoomID)].(map[string]any)["org.example.room"].(map[string]any)["pinned"] != true {
			t.Fatalf("account data: %s", r.Raw)
		}
	})

	t.Run("reset password", func(t *testing.T) {
		must(t, ac.ResetPassword(ctx, synapseadmin.ReqResetPassword{UserID: alice.UserID, NewPassword: "new-alice-password", LogoutDevices: true}), "reset")
		_, err := alice.Whoami(ctx)
		wantErr(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		c := srv.Client("", "")
		_, err = c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "new-alice-password", StoreCredentials: true})
		must(t, err, "log in with the new password")
		post(t, srv, adminV1+"/reset_password/"+string(alice.UserID), tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
		post(t, srv, adminV1+"/reset_password/@nobody:tessera.test", tok, map[string]any{"new_password": "x-password-1"}).
			expect(t, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("deactivate with erase", func(t *testing.T) {
		bob := srv.UserID("bob")
		r := post(t, srv, adminV1+"/deactivate/"+string(bob), tok, map[string]any{"erase": true}).expect(t, http.StatusOK, "")
		if r.str("id_server_unbind_result") != "success" {
			t.Fatalf("deactivate: %s", r.Raw)
		}
		r = get(t, srv, adminV2+"/users/"+string(bob), tok).expect(t, http.StatusOK, "")
		if r.Body["deactivated"] != true || r.Body["erased"] != true || r.Body["displayname"] != nil {
			t.Fatalf("after deactivation: %s", r.Raw)
		}
		r = get(t, srv, adminV2+"/users", tok).expect(t, http.StatusOK, "")
		for _, u := range r.Body["users"].([]any) {
			if u.(map[string]any)["name"] == string(bob) {
				t.Fatalf("deactivated user listed by default: %s", r.Raw)
			}
		}
		r = get(t, srv, adminV2+"/users?deactivated=true", tok).expect(t, http.StatusOK, "")
		if !strings.Contains(string(r.Raw), string(bob)) {
			t.Fatalf("deactivated=true leaves bob out: %s", r.Raw)
		}
		// Reactivation needs a password, and gives a working account.
		put(t, srv, adminV2+"/users/"+string(bob), tok, map[string]any{"deactivated": false}).expect(t, http.StatusBadRequest, "M_UNKNOWN")
		put(t, srv, adminV2+"/users/"+string(bob), tok, map[string]any{"deactivated": false, "password": "bob-again-1"}).
			expect(t, http.StatusOK, "")
		c := srv.Client("", "")
		_, err := c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}, Password: "bob-again-1", StoreCredentials: true})
		must(t, err, "reactivated bob logs in")
	})

	t.Run("audit log", func(t *testing.T) {
		out := logs.String()
		for _, want := range []string{"create_user", "reset_password", "deactivate_user", "delete_devices", "set_admin"} {
			if !strings.Contains(out, "action="+want) || !strings.Contains(out, "admin=\""+string(root.UserID)+"\"") {
				t.Errorf("no audit line for %s in:\n%s", want, out)
			}
		}
		if strings.Contains(out, "new-alice-password") || strings.Contains(out, "carol-password") {
			t.Error("a password was logged")
		}
	})
}

// captureHook keeps the admin domain's audit lines.
type captureHook struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (h *captureHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *captureHook) Fire(e *logrus.Entry) error {
	if e.Message != "admin action" {
		return nil
	}
	line, err := (&logrus.TextFormatter{DisableTimestamp: true}).Format(e)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Write(line)
	return nil
}

func (h *captureHook) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.buf.String()
}
