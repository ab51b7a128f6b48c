package clientapi_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
)

// TestCapabilitiesRoomVersionStability: only the versions the spec defines
// are "stable"; an MSC version gomatrixserverlib flags as stable is not.
// https://spec.matrix.org/v1.19/client-server-api/#mroom_versions-capability
func TestCapabilitiesRoomVersionStability(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	r := get(t, srv, v3+"/capabilities", alice.AccessToken).expect(t, http.StatusOK, "")
	available, ok := rmField(r.Body, "capabilities", "m.room_versions", "available").(map[string]any)
	if !ok {
		t.Fatalf("no m.room_versions.available: %s", r.Raw)
	}
	specStable := map[string]bool{}
	for v := 1; v <= 12; v++ {
		specStable[strconv.Itoa(v)] = true
		if available[strconv.Itoa(v)] != "stable" {
			t.Errorf("room version %d = %v, want stable", v, available[strconv.Itoa(v)])
		}
	}
	for v, stability := range available {
		if !specStable[v] && stability != "unstable" {
			t.Errorf("room version %q is %v; only spec'd versions may be stable", v, stability)
		}
	}
	if d := rmField(r.Body, "capabilities", "m.room_versions", "default"); available[d.(string)] != "stable" {
		t.Errorf("default room version %v is not a stable one", d)
	}

	// Every version listed can be created; anything else cannot, and an
	// empty version is not "the default".
	for v := range available {
		room := rmCreate(t, srv, alice, map[string]any{"room_version": v})
		if got := rmField(rmStateEvent(t, srv, alice, room, "m.room.create", ""), "content", "room_version"); got != v {
			t.Errorf("created room_version %v, want %s", got, v)
		}
	}
	for _, v := range []string{"", "org.matrix.msc4014", "org.matrix.msc4242.12", "13"} {
		post(t, srv, v3+"/createRoom", alice.AccessToken, map[string]any{"room_version": v}).
			expect(t, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	}
	room := rmCreate(t, srv, alice, map[string]any{})
	post(t, srv, rmRoom(room, "upgrade"), alice.AccessToken, map[string]any{"new_version": "org.matrix.msc4242.12"}).
		expect(t, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
}

// TestCreateRoomTopicContentBlock: createRoom's topic gives m.room.topic
// both the plain topic and m.topic, a TopicContentBlock object.
// https://spec.matrix.org/v1.19/client-server-api/#mroomtopic
func TestCreateRoomTopicContentBlock(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	room := rmCreate(t, srv, alice, map[string]any{"topic": "Lunch plans", "preset": "public_chat", "visibility": "public"})
	c := rmGetState(t, srv, alice, room, "m.room.topic", "").expect(t, http.StatusOK, "")
	if c.str("topic") != "Lunch plans" {
		t.Errorf("topic = %s", c.Raw)
	}
	text, ok := rmField(c.Body, "m.topic", "m.text").([]any)
	if !ok || len(text) != 1 {
		t.Fatalf("m.topic.m.text missing: %s", c.Raw)
	}
	if rep, _ := text[0].(map[string]any); rep["body"] != "Lunch plans" || rep["mimetype"] != "text/plain" {
		t.Errorf("m.topic.m.text[0] = %v", text[0])
	}
	// The directory reads the topic back from the block.
	r := get(t, srv, v3+"/publicRooms", alice.AccessToken).expect(t, http.StatusOK, "")
	chunk, _ := r.Body["chunk"].([]any)
	if len(chunk) != 1 || rmField(chunk[0], "topic") != "Lunch plans" {
		t.Errorf("publicRooms topic: %s", r.Raw)
	}
}

// TestJoinedMembersProfile: joined_members shows each member's
// display_name and avatar_url.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3roomsroomidjoined_members
func TestJoinedMembersProfile(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	put(t, srv, v3+"/profile/"+bob.UserID+"/displayname", bob.AccessToken, map[string]any{"displayname": "Bobby"}).expect(t, 200, "")
	put(t, srv, v3+"/profile/"+bob.UserID+"/avatar_url", bob.AccessToken, map[string]any{"avatar_url": "mxc://tessera.test/bob"}).expect(t, 200, "")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	rmJoin(t, srv, bob, room).expect(t, 200, "")
	r := get(t, srv, rmRoom(room, "joined_members"), alice.AccessToken).expect(t, http.StatusOK, "")
	if got := rmField(r.Body, "joined", bob.UserID, "avatar_url"); got != "mxc://tessera.test/bob" {
		t.Errorf("bob avatar_url = %v: %s", got, r.Raw)
	}
	if got := rmField(r.Body, "joined", bob.UserID, "display_name"); got != "Bobby" {
		t.Errorf("bob display_name = %v: %s", got, r.Raw)
	}
	// A later avatar change reaches the room too.
	put(t, srv, v3+"/profile/"+bob.UserID+"/avatar_url", bob.AccessToken, map[string]any{"avatar_url": "mxc://tessera.test/bob2"}).expect(t, 200, "")
	r = get(t, srv, rmRoom(room, "joined_members"), alice.AccessToken).expect(t, http.StatusOK, "")
	if got := rmField(r.Body, "joined", bob.UserID, "avatar_url"); got != "mxc://tessera.test/bob2" {
		t.Errorf("bob avatar_url after change = %v: %s", got, r.Raw)
	}
}

// TestJoinKeepsExtraContent: a join (by /join or by PUT state) keeps the
// client's reason and custom keys on the m.room.member event.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3joinroomidoralias
func TestJoinKeepsExtraContent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	bob := rmUser(t, srv, "bob")
	carol := rmUser(t, srv, "carol")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})

	post(t, srv, v3+"/join/"+room, bob.AccessToken, map[string]any{"reason": "hello", "org.example.custom": "x"}).expect(t, 200, "")
	c := rmGetState(t, srv, alice, room, "m.room.member", bob.UserID).expect(t, 200, "")
	if c.str("membership") != "join" || c.str("reason") != "hello" || c.str("org.example.custom") != "x" {
		t.Errorf("bob's join content = %s", c.Raw)
	}

	rmPutState(t, srv, carol, room, "m.room.member", carol.UserID,
		map[string]any{"membership": "join", "displayname": "Caz", "reason": "r", "org.example.custom": "y"}).expect(t, 200, "")
	c = rmGetState(t, srv, alice, room, "m.room.member", carol.UserID).expect(t, 200, "")
	if c.str("membership") != "join" || c.str("displayname") != "Caz" || c.str("reason") != "r" || c.str("org.example.custom") != "y" {
		t.Errorf("carol's join content = %s", c.Raw)
	}
}

// TestInvalidIDsRefused: endpoints that take a user ID, room ID or alias
// answer 400 M_INVALID_PARAM for one that is not valid, before looking
// anything up.
func TestInvalidIDsRefused(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	room := rmCreate(t, srv, alice, map[string]any{"preset": "public_chat"})
	badUsers := []string{"not-a-user", "@nodomain", "@:tessera.test", "@alice:", "alice:tessera.test", "@al ice:tessera.test"}
	for _, op := range []string{"invite", "kick", "ban", "unban"} {
		for _, u := range badUsers {
			t.Run(op+" "+u, func(t *testing.T) {
				rmOp(t, srv, alice, room, op, map[string]any{"user_id": u}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
			})
		}
		t.Run(op+" not a string", func(t *testing.T) {
			rmOp(t, srv, alice, room, op, map[string]any{"user_id": 5}).expect(t, http.StatusBadRequest, "M_BAD_JSON")
		})
	}
	for _, tt := range []struct{ name, method, path string }{
		{"join bad target", http.MethodPost, v3 + "/join/nothing"},
		{"join bad alias", http.MethodPost, v3 + "/join/%23nodomain"},
		{"knock bad target", http.MethodPost, v3 + "/knock/nothing"},
		{"room op bad room", http.MethodPost, v3 + "/rooms/nothing/invite"},
		{"alias bad", http.MethodGet, v3 + "/directory/room/%23nodomain"},
		{"profile bad user", http.MethodGet, v3 + "/profile/nobody"},
		{"summary bad target", http.MethodGet, "/_matrix/client/v1/room_summary/nothing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			do(t, srv, req{Method: tt.method, Path: tt.path, Token: alice.AccessToken, Body: map[string]any{"user_id": "@bob:tessera.test"}}).
				expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		})
	}
	put(t, srv, v3+"/directory/room/%23good:tessera.test", alice.AccessToken, map[string]any{"room_id": "nothing"}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

// pushRulesFromSync returns the global ruleset of m.push_rules in a sync
// response's account data, nil if there is none.
func pushRulesFromSync(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	events, _ := rmField(body, "account_data", "events").([]any)
	for _, ev := range events {
		if rmField(ev, "type") == "m.push_rules" {
			g, _ := rmField(ev, "content", "global").(map[string]any)
			return g
		}
	}
	return nil
}

func findRule(ruleset map[string]any, kind, id string) map[string]any {
	rules, _ := ruleset[kind].([]any)
	for _, r := range rules {
		if m, _ := r.(map[string]any); m["rule_id"] == id {
			return m
		}
	}
	return nil
}

// TestPushRulesInInitialSync: a new user's first sync carries m.push_rules
// with the server-default rules, every kind present (postcontent too).
// https://spec.matrix.org/v1.19/client-server-api/#push-rules-events
func TestPushRulesInInitialSync(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	r := get(t, srv, v3+"/sync", alice.AccessToken).expect(t, http.StatusOK, "")
	g := pushRulesFromSync(t, r.Body)
	if g == nil {
		t.Fatalf("no m.push_rules in the initial sync: %s", r.Raw)
	}
	for _, kind := range []string{"override", "content", "postcontent", "room", "sender", "underride"} {
		if _, ok := g[kind].([]any); !ok {
			t.Errorf("m.push_rules global has no %s list", kind)
		}
	}
	master := findRule(g, "override", ".m.rule.master")
	if master == nil || master["enabled"] != false || master["default"] != true {
		t.Errorf(".m.rule.master = %v", master)
	}
	if msg := findRule(g, "underride", ".m.rule.message"); msg == nil || len(msg["actions"].([]any)) != 1 {
		t.Errorf(".m.rule.message = %v", msg)
	}
	if user := findRule(g, "content", ".m.rule.contains_user_name"); user == nil || user["pattern"] != "alice" {
		t.Errorf(".m.rule.contains_user_name = %v", user)
	}
}

// TestPushRuleActionsRoundTrip: a rule of every kind keeps its actions
// through PUT, GET, /actions, /enabled and m.push_rules.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid
func TestPushRuleActionsRoundTrip(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	room := rmCreate(t, srv, alice, nil)
	actions := []any{"notify", map[string]any{"set_tweak": "sound", "value": "bell"}, map[string]any{"set_tweak": "highlight", "value": false}}
	cond := []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": "cake"}}
	for _, tt := range []struct {
		kind, id string
		body     map[string]any
	}{
		{"override", "ov", map[string]any{"actions": actions, "conditions": cond}},
		{"content", "ct", map[string]any{"actions": actions, "pattern": "cake"}},
		{"postcontent", "pc", map[string]any{"actions": actions, "conditions": cond}},
		{"room", room, map[string]any{"actions": actions}},
		{"sender", "@bob:tessera.test", map[string]any{"actions": actions}},
		{"underride", "un", map[string]any{"actions": actions, "conditions": cond}},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			path := v3 + "/pushrules/global/" + tt.kind + "/" + url.PathEscape(tt.id)
			put(t, srv, path, alice.AccessToken, tt.body).expect(t, http.StatusOK, "")
			check := func(when string, got any) {
				t.Helper()
				if !reflect.DeepEqual(got, actions) {
					t.Errorf("%s: actions = %v, want %v", when, got, actions)
				}
			}
			r := get(t, srv, path, alice.AccessToken).expect(t, http.StatusOK, "")
			check("GET rule", r.Body["actions"])
			if tt.kind == "override" || tt.kind == "postcontent" || tt.kind == "underride" {
				if !reflect.DeepEqual(r.Body["conditions"], cond) {
					t.Errorf("conditions = %v", r.Body["conditions"])
				}
			}
			put(t, srv, path+"/enabled", alice.AccessToken, map[string]any{"enabled": false}).expect(t, http.StatusOK, "")
			check("GET /actions after disabling", get(t, srv, path+"/actions", alice.AccessToken).expect(t, http.StatusOK, "").Body["actions"])
			s := get(t, srv, v3+"/sync", alice.AccessToken).expect(t, http.StatusOK, "")
			rule := findRule(pushRulesFromSync(t, s.Body), tt.kind, tt.id)
			if rule == nil || rule["enabled"] != false {
				t.Fatalf("m.push_rules %s rule = %v", tt.kind, rule)
			}
			check("m.push_rules", rule["actions"])
			all := get(t, srv, v3+"/pushrules/", alice.AccessToken).expect(t, http.StatusOK, "")
			check("GET /pushrules/", findRule(all.Body["global"].(map[string]any), tt.kind, tt.id)["actions"])
		})
	}
	// Changing a default rule's actions keeps them too.
	path := v3 + "/pushrules/global/underride/.m.rule.message/actions"
	put(t, srv, path, alice.AccessToken, map[string]any{"actions": actions}).expect(t, http.StatusOK, "")
	if got := get(t, srv, path, alice.AccessToken).expect(t, http.StatusOK, "").Body["actions"]; !reflect.DeepEqual(got, actions) {
		t.Errorf("default rule actions = %v", got)
	}
	put(t, srv, v3+"/pushrules/global/bogus/x", alice.AccessToken, map[string]any{"actions": actions}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
}

// TestKeysUploadSpecShapes: keys the spec lets go unsigned (a curve25519
// one-time or fallback key, as a string or a key object) are accepted;
// device_keys that break the DeviceKeys schema or name another user or
// device are 400 M_BAD_JSON.
// https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3keysupload
func TestKeysUploadSpecShapes(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := kxNewDevice(t, rmUser(t, srv, "alice"))
	r := alice.upload(t, srv, map[string]any{
		"device_keys":   alice.deviceKeys(t),
		"one_time_keys": map[string]any{"curve25519:AAAA": kxRandom(), "curve25519:AAAB": map[string]any{"key": kxRandom()}},
		"fallback_keys": map[string]any{"curve25519:AAAAAG": kxRandom()},
	}).expect(t, http.StatusOK, "")
	if got := kxCounts(t, r)["curve25519"]; got != 2 {
		t.Errorf("curve25519 count = %v, want 2: %s", got, r.Raw)
	}
	unsigned := alice.deviceKeys(t)
	delete(unsigned, "signatures")
	otherUser := alice.deviceKeys(t)
	otherUser["user_id"] = "@mallory:tessera.test"
	for name, body := range map[string]map[string]any{
		"no signatures":          {"device_keys": unsigned},
		"another user":           {"device_keys": otherUser},
		"keys not an object":     {"device_keys": map[string]any{"user_id": alice.UserID, "device_id": alice.DeviceID, "algorithms": []string{"x"}, "keys": "k"}},
		"device_keys not object": {"device_keys": "nope"},
		"one_time_keys array":    {"one_time_keys": []string{"a"}},
	} {
		t.Run(name, func(t *testing.T) {
			alice.upload(t, srv, body).expect(t, http.StatusBadRequest, "M_BAD_JSON")
		})
	}
}

// TestFilterLimitZeroAndInvalidFilters: a timeline limit of 0 is a valid
// filter (no timeline events, the state still there); invalid filters are
// refused when stored and when passed inline to /sync and /messages.
// https://spec.matrix.org/v1.19/client-server-api/#filtering
func TestFilterLimitZeroAndInvalidFilters(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := rmUser(t, srv, "alice")
	room := rmCreate(t, srv, alice, map[string]any{"name": "zero"})
	rmSend(t, srv, alice, room, "one")
	rmSend(t, srv, alice, room, "two")

	zero := `{"room":{"timeline":{"limit":0}}}`
	fid := post(t, srv, v3+"/user/"+url.PathEscape(alice.UserID)+"/filter", alice.AccessToken, zero).expect(t, http.StatusOK, "").str("filter_id")
	for name, filter := range map[string]string{"stored": fid, "inline": zero} {
		t.Run("limit 0 "+name, func(t *testing.T) {
			r := get(t, srv, v3+"/sync?filter="+url.QueryEscape(filter), alice.AccessToken).expect(t, http.StatusOK, "")
			evs, ok := rmField(r.Body, "rooms", "join", room, "timeline", "events").([]any)
			if !ok || len(evs) != 0 {
				t.Errorf("timeline events = %v, want none: %s", evs, r.Raw)
			}
			if rmField(r.Body, "rooms", "join", room, "timeline", "limited") != true {
				t.Errorf("timeline not limited: %s", r.Raw)
			}
			state, _ := rmField(r.Body, "rooms", "join", room, "state", "events").([]any)
			if len(state) == 0 {
				t.Errorf("no state with a limit-0 timeline: %s", r.Raw)
			}
		})
	}

	for _, bad := range []string{`{"room":{"timeline":{"limit":-1}}}`, `{"room":{"timeline":{"types":"m.room.message"}}}`, `{"event_format":"xml"}`} {
		t.Run("bad "+bad, func(t *testing.T) {
			post(t, srv, v3+"/user/"+url.PathEscape(alice.UserID)+"/filter", alice.AccessToken, bad).expect(t, http.StatusBadRequest, "M_BAD_JSON")
			get(t, srv, v3+"/sync?filter="+url.QueryEscape(bad), alice.AccessToken).expect(t, http.StatusBadRequest, "M_BAD_JSON")
		})
	}
	for _, bad := range []string{`{"limit":-1}`, `{"types":"m.room.message"}`, `{`, `[]`} {
		t.Run("bad messages "+bad, func(t *testing.T) {
			rmMessages(t, srv, alice, room, url.Values{"dir": {"b"}, "filter": {bad}}).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
		})
	}
	rmMessages(t, srv, alice, room, url.Values{"dir": {"b"}, "filter": {`{"limit":0}`}}).expect(t, http.StatusOK, "")
}

// TestDeleteDeviceOfAnotherUser: UIA with another user's credentials is a
// failed stage (401 M_FORBIDDEN with the flows again), completing another
// user's UIA session is 403 M_FORBIDDEN, and neither deletes anything; a
// device ID that is not the requester's is left alone.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3devicesdeviceid
func TestDeleteDeviceOfAnotherUser(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", "alicepass1")
	bob := registerUser(t, srv, "bob", "bobpass123")

	// Alice authenticates as Bob (his password) to delete her device.
	r := withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/"+alice.DeviceID, alice.AccessToken, nil, bob.UserID, "bobpass123")
	wantFlows(t, r, "M_FORBIDDEN", "m.login.password")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)

	// Bob completes a UIA session Alice started for her device.
	first := do(t, srv, req{Method: http.MethodDelete, Path: v3 + "/devices/" + alice.DeviceID, Token: alice.AccessToken, Body: map[string]any{}})
	sess := wantFlows(t, first, "", "m.login.password")
	do(t, srv, req{Method: http.MethodDelete, Path: v3 + "/devices/" + alice.DeviceID, Token: bob.AccessToken,
		Body: map[string]any{"auth": passwordAuth(sess, bob.UserID, "bobpass123")}}).
		expect(t, http.StatusForbidden, "M_FORBIDDEN")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)

	// Bob deleting Alice's device ID through his own UIA removes nothing
	// of hers.
	withPasswordUIA(t, srv, http.MethodDelete, v3+"/devices/"+alice.DeviceID, bob.AccessToken, nil, bob.UserID, "bobpass123")
	tokenWorks(t, srv, alice.AccessToken, alice.UserID)
	tokenWorks(t, srv, bob.AccessToken, bob.UserID)
}

// TestFederationPathsOnClientListener: the client listener does not serve
// the federation API. Like a Synapse client-only listener it answers
// 404 M_UNRECOGNIZED for any method, and the server keys it does carry
// there answer 405 M_UNRECOGNIZED for a wrong method.
func TestFederationPathsOnClientListener(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Federation("127.0.0.1"))
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/_matrix/federation/v1/version", 404},
		{http.MethodPut, "/_matrix/federation/v1/send/txn1", 404},
		{http.MethodGet, "/_matrix/federation/v1/make_join/!r:x/@u:x", 404},
		{http.MethodPost, "/_matrix/federation/v1/user/keys/query", 404},
		{http.MethodGet, "/_matrix/federation/", 404},
		{http.MethodPost, "/_matrix/key/v2/server", 405},
		{http.MethodPost, "/_matrix/key/v2/query", 404},
		{http.MethodPost, "/_matrix/client/versions", 405},
		{http.MethodPut, "/_matrix/client/v3/sync", 405},
		{http.MethodGet, "/_matrix/client/v3/nothing", 404},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			do(t, srv, req{Method: tt.method, Path: tt.path, Body: map[string]any{}}).expect(t, tt.status, "M_UNRECOGNIZED")
		})
	}
	get(t, srv, "/_matrix/key/v2/server", "").expect(t, http.StatusOK, "")

	// The federation listener: client paths are unknown there, and a
	// federation path called with the wrong method is 405, as Synapse
	// answers.
	fc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/_matrix/client/versions", 404},
		{http.MethodGet, "/_matrix/federation/v1/nothing", 404},
		{http.MethodPost, "/_matrix/federation/v1/version", 405},
		{http.MethodDelete, "/_matrix/federation/v1/send/txn1", 405},
		{http.MethodPost, "/_matrix/key/v2/server", 405},
	} {
		t.Run("federation listener "+tt.method+" "+tt.path, func(t *testing.T) {
			rq, err := http.NewRequest(tt.method, srv.FederationURL+tt.path, strings.NewReader("{}"))
			must(t, err, "request")
			res, err := fc.Do(rq)
			must(t, err, tt.path)
			defer res.Body.Close()
			var body struct {
				Errcode string `json:"errcode"`
			}
			_ = json.NewDecoder(res.Body).Decode(&body)
			if res.StatusCode != tt.status || body.Errcode != "M_UNRECOGNIZED" {
				t.Errorf("%s %s = %d %s, want %d M_UNRECOGNIZED", tt.method, tt.path, res.StatusCode, body.Errcode, tt.status)
			}
		})
	}
}
