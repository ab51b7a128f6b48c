package clientapi_test

// The application service client API, continued: the ping, network room
// lists, third-party lookups, devices, timestamps, and a bridge built on
// mautrix-go's appservice package. The services are in appservice_test.go.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func TestAppServicePing(t *testing.T) {
	srv, f := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	ping := func(id, token string, body any) resp {
		return post(t, srv, "/_matrix/client/v1/appservice/"+id+"/ping", token, body)
	}
	cases := []struct {
		name, id, token string
		status          int
		errcode         string
	}{
		{"itself", "bridge", bridgeToken, 200, ""},
		{"another service", "e2b", bridgeToken, 403, "M_FORBIDDEN"},
		{"an ordinary user", "bridge", alice.AccessToken, 403, "M_FORBIDDEN"},
		{"no url", "e2b", e2bToken, 400, "M_URL_NOT_SET"},
		{"the service fails", "broken", brokenToken, 502, "M_BAD_STATUS"},
		{"the service is down", "down", downToken, 502, "M_CONNECTION_FAILED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ping(c.id, c.token, map[string]any{"transaction_id": "txn-" + c.id}).expect(t, c.status, c.errcode)
			switch c.errcode {
			case "":
				if _, ok := r.Body["duration_ms"].(float64); !ok {
					t.Fatalf("no duration_ms: %s", r.Raw)
				}
				want := `hs-token-bridge POST /_matrix/app/v1/ping {"transaction_id":"txn-bridge"}`
				if got := f.seen(); len(got) == 0 || got[len(got)-1] != want {
					t.Fatalf("the service saw %q, want last %q", got, want)
				}
			case "M_BAD_STATUS":
				if r.Body["status"] != float64(500) || !strings.Contains(fmt.Sprint(r.Body["body"]), "broken") {
					t.Fatalf("M_BAD_STATUS without the service's status and body: %s", r.Raw)
				}
			}
		})
	}
	t.Run("no transaction_id", func(t *testing.T) {
		ping("bridge", bridgeToken, map[string]any{}).expect(t, http.StatusOK, "")
	})
}

func TestAppServiceRoomDirectory(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	room := post(t, srv, v3+"/createRoom", bridgeToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")
	mainRoom := post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat", "visibility": "public"}).
		expect(t, http.StatusOK, "").str("room_id")
	list := func(network, token, visibility string) resp {
		return put(t, srv, v3+"/directory/list/appservice/"+network+"/"+url.PathEscape(room), token,
			map[string]any{"visibility": visibility})
	}
	list("chatnet", alice.AccessToken, "public").expect(t, http.StatusForbidden, "M_FORBIDDEN")
	list("chatnet", bridgeToken, "hidden").expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	list("chatnet", bridgeToken, "public").expect(t, http.StatusOK, "")

	rooms := func(body map[string]any) []string {
		r := post(t, srv, v3+"/publicRooms", alice.AccessToken, body).expect(t, http.StatusOK, "")
		var out []string
		for _, c := range r.Body["chunk"].([]any) {
			out = append(out, c.(map[string]any)["room_id"].(string))
		}
		return sorted(out...)
	}
	cases := []struct {
		name string
		body map[string]any
		want []string
	}{
		{"the server's directory", map[string]any{}, []string{mainRoom}},
		{"the network by instance_id", map[string]any{"third_party_instance_id": "bridge|chatnet"}, []string{room}},
		{"the network by network id", map[string]any{"third_party_instance_id": "chatnet"}, []string{room}},
		{"another network", map[string]any{"third_party_instance_id": "bridge|othernet"}, nil},
		{"another service's network", map[string]any{"third_party_instance_id": "e2b|chatnet"}, nil},
		{"all networks", map[string]any{"include_all_networks": true}, sorted(room, mainRoom)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := rooms(c.body); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("rooms = %v, want %v", got, c.want)
			}
		})
	}
	t.Run("both", func(t *testing.T) {
		post(t, srv, v3+"/publicRooms", alice.AccessToken, map[string]any{"include_all_networks": true, "third_party_instance_id": "chatnet"}).
			expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("private again", func(t *testing.T) {
		list("chatnet", bridgeToken, "private").expect(t, http.StatusOK, "")
		if got := rooms(map[string]any{"third_party_instance_id": "chatnet"}); len(got) != 0 {
			t.Fatalf("rooms = %v after private", got)
		}
	})
}

func TestAppServiceThirdParty(t *testing.T) {
	srv, f := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	tok := alice.AccessToken
	cases := []struct {
		name, path string
		status     int
		errcode    string
		want       string // a substring of the answer
	}{
		{"protocols", "/thirdparty/protocols", 200, "", `"instance_id":"bridge|chatnet"`},
		{"protocol", "/thirdparty/protocol/chat", 200, "", `"location_fields":["channel"]`},
		{"unknown protocol", "/thirdparty/protocol/irc", 404, "M_NOT_FOUND", ""},
		{"location", "/thirdparty/location/chat?channel=general", 200, "", `"alias":"#_bridge_general:tessera.test"`},
		{"user", "/thirdparty/user/chat?nick=bob", 200, "", `"userid":"@_bridge_bob:tessera.test"`},
		{"location of an unknown protocol", "/thirdparty/location/irc?channel=x", 404, "M_NOT_FOUND", ""},
		{"reverse location", "/thirdparty/location?alias=" + url.QueryEscape("#_bridge_x:tessera.test"), 200, "", `"channel":"x"`},
		{"reverse user, none", "/thirdparty/user?userid=" + url.QueryEscape("@_bridge_x:tessera.test"), 404, "M_NOT_FOUND", ""},
		{"reverse without its parameter", "/thirdparty/location", 400, "M_MISSING_PARAM", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := get(t, srv, v3+c.path, tok)
			if c.status != http.StatusOK || strings.HasPrefix(c.path, "/thirdparty/proto") {
				r.expect(t, c.status, c.errcode)
			} else if r.Status != http.StatusOK || !strings.HasPrefix(string(r.Raw), "[") {
				t.Fatalf("status %d, want 200 and a list: %s", r.Status, r.Raw)
			}
			if c.want != "" && !strings.Contains(string(r.Raw), c.want) {
				t.Fatalf("answer %s lacks %s", r.Raw, c.want)
			}
		})
	}
	// The lookups reached the services with their hs_token and the
	// client's query, and the broken service's 500s were left out.
	var sawQuery, sawBroken bool
	for _, s := range f.seen() {
		sawQuery = sawQuery || strings.HasPrefix(s, "hs-token-bridge GET /_matrix/app/v1/thirdparty/location/chat?channel=general")
		sawBroken = sawBroken || strings.HasPrefix(s, "hs-token-broken GET /_matrix/app/v1/thirdparty/protocol/chat")
	}
	if !sawQuery || !sawBroken {
		t.Fatalf("requests to the services: %q", f.seen())
	}
	var protocols map[string]map[string]any
	if err := json.Unmarshal(get(t, srv, v3+"/thirdparty/protocols", tok).Raw, &protocols); err != nil || len(protocols) != 1 {
		t.Fatalf("protocols = %v (%v)", protocols, err)
	}
	if n := len(protocols["chat"]["instances"].([]any)); n != 1 {
		t.Fatalf("%d instances, want the bridge's 1", n)
	}
}

func TestAppServiceDevicesMSC4190(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, e2bToken, "e2b_p")
	asReg(t, srv, bridgeToken, "_bridge_p")
	as := q("@e2b_p:tessera.test")
	dev := func(id string) string { return v3 + "/devices/" + id + as }
	steps := []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"create", http.MethodPut, dev("DEV1"), e2bToken, map[string]any{"display_name": "bridge device"}, 201, ""},
		{"exists", http.MethodPut, dev("DEV1"), e2bToken, map[string]any{}, 200, ""},
		{"second", http.MethodPut, dev("DEV2"), e2bToken, map[string]any{}, 201, ""},
		{"use it", http.MethodGet, v3 + "/account/whoami" + as + "&device_id=DEV1", e2bToken, nil, 200, ""},
		{"listed", http.MethodGet, dev("DEV1"), e2bToken, nil, 200, ""},
		{"delete without UIA", http.MethodDelete, dev("DEV1"), e2bToken, map[string]any{}, 200, ""},
		{"gone", http.MethodGet, v3 + "/account/whoami" + as + "&device_id=DEV1", e2bToken, nil, 400, "M_UNKNOWN_DEVICE"},
		{"delete_devices without UIA", http.MethodPost, v3 + "/delete_devices" + as, e2bToken, map[string]any{"devices": []string{"DEV2"}}, 200, ""},
		{"any service (spec v1.17)", http.MethodPut, v3 + "/devices/NEW" + q("@_bridge_p:tessera.test"), bridgeToken, map[string]any{}, 201, ""},
		{"ordinary users only rename", http.MethodPut, v3 + "/devices/NEW", alice.AccessToken, map[string]any{}, 404, "M_NOT_FOUND"},
		{"ordinary users still need UIA", http.MethodDelete, v3 + "/devices/" + alice.DeviceID, alice.AccessToken, map[string]any{}, 401, ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			do(t, srv, req{Method: s.method, Path: s.path, Token: s.token, Body: s.body}).expect(t, s.status, s.errcode)
		})
	}
	// Cross-signing keys are replaced without UIA too (MSC4190).
	t.Run("cross-signing keys", func(t *testing.T) {
		for range 2 {
			cs := kxNewCrossSigning(t, "@e2b_p:tessera.test")
			post(t, srv, kxCSPath+as, e2bToken, cs.body(t)).expect(t, http.StatusOK, "")
		}
		// Ordinary users still need UIA.
		for i := range 2 {
			r := post(t, srv, kxCSPath, alice.AccessToken, kxNewCrossSigning(t, alice.UserID).body(t))
			if want := []int{200, 401}[i]; r.Status != want {
				t.Fatalf("upload %d by alice: %d, want %d: %s", i, r.Status, want, r.Raw)
			}
		}
	})
}

// TestAppServiceMautrixIntent drives the server with mautrix-go's
// appservice package, as a bridge does: puppets registered by their
// intents join a room and send into it, and a real user sees them.
func TestAppServiceMautrixIntent(t *testing.T) {
	srv, f := startAS(t)
	alice := client(srv, registerUser(t, srv, "alice", "password-alice"))
	reg := &appservice.Registration{
		ID: "bridge", URL: f.srv.URL, AppToken: bridgeToken, ServerToken: "hs-token-bridge",
		SenderLocalpart: "bridgebot", RateLimited: new(bool), Protocols: []string{"chat"},
	}
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "tessera.test", HomeserverURL: srv.URL})
	must(t, err, "create the appservice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	must(t, err, "create room")
	roomID := created.RoomID

	bot := as.BotIntent()
	must(t, bot.EnsureRegistered(ctx), "bot registered")
	for _, name := range []string{"_bridge_alpha", "_bridge_beta"} {
		puppet := as.Intent(id.NewUserID(name, "tessera.test"))
		must(t, puppet.EnsureRegistered(ctx), "register "+name)
		must(t, puppet.SetDisplayName(ctx, "Puppet "+name), "display name")
		must(t, puppet.EnsureJoined(ctx, roomID), "join")
		_, err := puppet.SendText(ctx, roomID, "hello from "+name)
		must(t, err, "send")
	}
	// Registering again is no error for the intent (M_USER_IN_USE).
	again := as.Intent(id.NewUserID("_bridge_alpha", "tessera.test"))
	must(t, again.EnsureRegistered(ctx), "register again")

	msgs, err := alice.Messages(ctx, roomID, "", "", 'b', nil, 20)
	must(t, err, "messages")
	seen := map[string]string{}
	for _, ev := range msgs.Chunk {
		if ev.Type == event.EventMessage {
			seen[ev.Sender.String()], _ = ev.Content.Raw["body"].(string)
		}
	}
	for _, name := range []string{"_bridge_alpha", "_bridge_beta"} {
		if got := seen["@"+name+":tessera.test"]; got != "hello from "+name {
			t.Fatalf("alice sees %q from %s (all: %v)", got, name, seen)
		}
	}
	// mautrix bridges ping the server at start.
	pong, err := as.BotClient().AppservicePing(ctx, "bridge", "mautrix-txn")
	must(t, err, "ping")
	if pong.DurationMS < 0 {
		t.Fatalf("ping duration %d", pong.DurationMS)
	}

	// An MSC4190 bridge creates its puppet's device itself and acts as it.
	e2b, err := appservice.CreateFull(appservice.CreateOpts{Registration: &appservice.Registration{
		ID: "e2b", AppToken: e2bToken, ServerToken: "hs-token-e2b", SenderLocalpart: "e2bbot", MSC4190: true,
	}, HomeserverDomain: "tessera.test", HomeserverURL: srv.URL})
	must(t, err, "create the MSC4190 appservice")
	e2bPuppet := e2b.Intent(id.NewUserID("e2b_alpha", "tessera.test"))
	must(t, e2bPuppet.EnsureRegistered(ctx), "register the MSC4190 puppet")
	must(t, e2bPuppet.CreateDeviceMSC4190(ctx, "", "Bridge device"), "create a device")
	who, err := e2bPuppet.Whoami(ctx)
	must(t, err, "whoami as the device")
	if who.UserID != e2bPuppet.UserID || who.DeviceID == "" || who.DeviceID != e2bPuppet.DeviceID {
		t.Fatalf("whoami = %+v, want %s with device %s", who, e2bPuppet.UserID, e2bPuppet.DeviceID)
	}

	// A puppet outside the namespace is refused.
	outsider := as.Intent(id.NewUserID("notmine", "tessera.test"))
	err = outsider.EnsureRegistered(ctx)
	wantErr(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
}

// TestAppServiceTimestampMassaging: a service's ts sets origin_server_ts of
// the messages and state events it sends; anyone else's is ignored.
// https://spec.matrix.org/v1.19/application-service-api/#timestamp-massaging
func TestAppServiceTimestampMassaging(t *testing.T) {
	srv, _ := startAS(t)
	alice := registerUser(t, srv, "alice", "password-alice")
	asReg(t, srv, bridgeToken, "_bridge_p")
	puppet := q("@_bridge_p:tessera.test")
	room := post(t, srv, v3+"/createRoom"+puppet, bridgeToken, map[string]any{"preset": "public_chat"}).
		expect(t, http.StatusOK, "").str("room_id")
	post(t, srv, v3+"/join/"+url.PathEscape(room), alice.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	rp := v3 + "/rooms/" + url.PathEscape(room)
	cases := []struct {
		name, path, token string
		status            int
		errcode           string
		ts                float64 // 0: about now
	}{
		{"message", rp + "/send/m.room.message/t1" + puppet + "&ts=1000000", bridgeToken, 200, "", 1000000},
		{"state", rp + "/state/m.room.topic/" + puppet + "&ts=2000000", bridgeToken, 200, "", 2000000},
		{"state with a state key", rp + "/state/org.example.bridge/x" + puppet + "&ts=3000000", bridgeToken, 200, "", 3000000},
		{"zero", rp + "/send/m.room.message/t2" + puppet + "&ts=0", bridgeToken, 200, "", -1},
		{"not a number", rp + "/send/m.room.message/t3" + puppet + "&ts=soon", bridgeToken, 400, "M_INVALID_PARAM", 0},
		{"negative", rp + "/send/m.room.message/t4" + puppet + "&ts=-5", bridgeToken, 400, "M_INVALID_PARAM", 0},
		{"ordinary user", rp + "/send/m.room.message/t5?ts=1000000", alice.AccessToken, 200, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := put(t, srv, c.path, c.token, map[string]any{"msgtype": "m.text", "body": "hi", "topic": "t"}).expect(t, c.status, c.errcode)
			if c.status != 200 {
				return
			}
			ev := get(t, srv, rp+"/event/"+url.PathEscape(r.str("event_id")), alice.AccessToken).expect(t, http.StatusOK, "")
			got, _ := ev.Body["origin_server_ts"].(float64)
			switch {
			case c.ts > 0 && got != c.ts, c.ts < 0 && got != 0, c.ts == 0 && got < 1e12:
				t.Fatalf("origin_server_ts = %v, want %v (0: now)", got, c.ts)
			}
		})
	}
}
