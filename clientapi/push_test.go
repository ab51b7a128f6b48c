package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tessera-hs/tessera/internal/testserver"
	"github.com/tessera-hs/tessera/push"
)

// Tests for push rules, unread notification counts, /notifications and
// pushers.
// https://spec.matrix.org/v1.19/client-server-api/#push-notifications

const psPassword = "password1"

// psRulePath is the path of a push rule (and of its enabled or actions
// sub-resource).
func psRulePath(kind, ruleID string, sub ...string) string {
	return adPath(append([]string{"pushrules", "global", kind, ruleID}, sub...)...)
}

// psRules returns the global ruleset of a user, decoded.
func psRules(t testing.TB, srv *testserver.Server, s session) map[string][]map[string]any {
	t.Helper()
	r := get(t, srv, v3+"/pushrules/", s.AccessToken).expect(t, http.StatusOK, "")
	var body struct {
		Global map[string][]map[string]any `json:"global"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatalf("decode /pushrules/: %v; body %s", err, r.Raw)
	}
	return body.Global
}

// psIDs lists the rule IDs of one kind.
func psIDs(rules []map[string]any) []string {
	ids := []string{}
	for _, r := range rules {
		id, _ := r["rule_id"].(string)
		ids = append(ids, id)
	}
	return ids
}

// The server-default rules, in the order the spec lists them.
// https://spec.matrix.org/v1.19/client-server-api/#predefined-rules
var (
	psDefaultOverride = []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me",
		".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.contains_display_name",
		".m.rule.is_room_mention", ".m.rule.roomnotif", ".m.rule.tombstone", ".m.rule.reaction",
		".m.rule.room.server_acl", ".m.rule.suppress_edits"}
	psDefaultContent   = []string{".m.rule.contains_user_name"}
	psDefaultUnderride = []string{".m.rule.call", ".org.matrix.msc4075.rule.rtc.notification", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
		".m.rule.message", ".m.rule.encrypted"}
)

func psWantIDs(t testing.TB, kind string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s rules:\n got %q\nwant %q", kind, got, want)
	}
}

func TestPushRulesDefaults(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)

	// m.push_rules is written when the rules are first read (or changed):
	// checked below.
	global := psRules(t, srv, alice)
	psWantIDs(t, "override", psIDs(global["override"]), psDefaultOverride)
	psWantIDs(t, "content", psIDs(global["content"]), psDefaultContent)
	psWantIDs(t, "underride", psIDs(global["underride"]), psDefaultUnderride)
	psWantIDs(t, "room", psIDs(global["room"]), []string{})
	psWantIDs(t, "sender", psIDs(global["sender"]), []string{})
	for kind, rules := range global {
		for _, r := range rules {
			if r["default"] != true {
				t.Errorf("%s rule %v is not marked default", kind, r["rule_id"])
			}
			if _, ok := r["actions"].([]any); !ok {
				t.Errorf("%s rule %v has no actions array", kind, r["rule_id"])
			}
			_, hasConds := r["conditions"]
			if (kind == "override" || kind == "underride") != hasConds {
				t.Errorf("%s rule %v: conditions present = %v", kind, r["rule_id"], hasConds)
			}
		}
	}
	if global["override"][0]["enabled"] != false {
		t.Errorf(".m.rule.master must be disabled by default: %v", global["override"][0])
	}
	if global["content"][0]["pattern"] != "alice" {
		t.Errorf(".m.rule.contains_user_name pattern = %v, want the localpart", global["content"][0]["pattern"])
	}
	// The placeholders carry the user's ID.
	r := get(t, srv, psRulePath("override", ".m.rule.is_user_mention"), alice.AccessToken).expect(t, http.StatusOK, "")
	jsonEqual(t, r, `{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,
		"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"`+alice.UserID+`"}],
		"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`)
	r = get(t, srv, psRulePath("override", ".m.rule.tombstone"), alice.AccessToken).expect(t, http.StatusOK, "")
	jsonEqual(t, r, `{"rule_id":".m.rule.tombstone","default":true,"enabled":true,
		"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},
			{"kind":"event_match","key":"state_key","pattern":""}],
		"actions":["notify",{"set_tweak":"highlight"}]}`)

	// /pushrules/global/ is the same ruleset without the wrapper.
	r = get(t, srv, v3+"/pushrules/global/", alice.AccessToken).expect(t, http.StatusOK, "")
	var direct map[string][]map[string]any
	if err := json.Unmarshal(r.Raw, &direct); err != nil {
		t.Fatal(err)
	}
	psWantIDs(t, "override via /global/", psIDs(direct["override"]), psDefaultOverride)

	// A client library reads the ruleset.
	rs, err := client(srv, alice).GetPushRules(ctx)
	must(t, err, "mautrix GetPushRules")
	if len(rs.Override) != len(psDefaultOverride) || len(rs.Underride) != len(psDefaultUnderride) {
		t.Fatalf("mautrix read %d override and %d underride rules", len(rs.Override), len(rs.Underride))
	}

	// The rules are also the m.push_rules account data, in the initial
	// sync and readable through the account data API, but not writable
	// through it.
	content := psSyncPushRules(t, srv, alice, "")
	if content == nil {
		t.Fatal("initial sync has no m.push_rules account data")
	}
	var ad struct {
		Global map[string][]map[string]any `json:"global"`
	}
	if err := json.Unmarshal(content, &ad); err != nil {
		t.Fatal(err)
	}
	psWantIDs(t, "m.push_rules override", psIDs(ad.Global["override"]), psDefaultOverride)
	get(t, srv, globalDataPath(alice.UserID, "m.push_rules"), alice.AccessToken).expect(t, http.StatusOK, "")
	put(t, srv, globalDataPath(alice.UserID, "m.push_rules"), alice.AccessToken, map[string]any{}).
		expect(t, http.StatusMethodNotAllowed, "M_BAD_JSON")

	// Authentication is required.
	get(t, srv, v3+"/pushrules/", "").expect(t, http.StatusUnauthorized, "M_MISSING_TOKEN")

}

func psSync(t testing.TB, srv *testserver.Server, s session, since string, timeout time.Duration) resp {
	t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
		q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	path := v3 + "/sync"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return get(t, srv, path, s.AccessToken).expect(t, http.StatusOK, "")
}

// psSyncPushRules returns the content of m.push_rules in a sync's global
// account data, nil if absent.
func psSyncPushRules(t testing.TB, srv *testserver.Server, s session, since string) json.RawMessage {
	t.Helper()
	r := psSync(t, srv, s, since, 10*time.Second)
	var body struct {
		AccountData struct {
			Events []struct {
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			} `json:"events"`
		} `json:"account_data"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	for _, ev := range body.AccountData.Events {
		if ev.Type == "m.push_rules" {
			return ev.Content
		}
	}
	return nil
}

func TestPushRulesEdit(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)
	tok := alice.AccessToken
	userOverrides := func() []string {
		t.Helper()
		ids := psIDs(psRules(t, srv, alice)["override"])
		if ids[0] != ".m.rule.master" {
			t.Fatalf("master rule is not first: %q", ids)
		}
		var out []string
		for _, id := range ids[1:] {
			if strings.HasPrefix(id, ".") {
				break
			}
			out = append(out, id)
		}
		return out
	}
	rule := func(pattern string) map[string]any {
		return map[string]any{
			"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": pattern}},
			"actions":    []any{"notify", map[string]any{"set_tweak": "sound", "value": "bing"}},
		}
	}
	since := psSync(t, srv, alice, "", 0).str("next_batch")

	// A new rule is created enabled, as the most important user rule, and
	// comes after the master rule but before the other default rules.
	put(t, srv, psRulePath("override", "a"), tok, rule("cake")).expect(t, http.StatusOK, "")
	r := get(t, srv, psRulePath("override", "a"), tok).expect(t, http.StatusOK, "")
	jsonEqual(t, r, `{"rule_id":"a","default":false,"enabled":true,
		"conditions":[{"kind":"event_match","key":"content.body","pattern":"cake"}],
		"actions":["notify",{"set_tweak":"sound","value":"bing"}]}`)

	// The change reaches the user's other devices as m.push_rules.
	content := psSyncPushRules(t, srv, alice, since)
	if !strings.Contains(string(content), `"rule_id":"a"`) {
		t.Fatalf("m.push_rules after adding a rule: %s", content)
	}

	put(t, srv, psRulePath("override", "b"), tok, rule("b")).expect(t, http.StatusOK, "")
	psWantIDs(t, "override", userOverrides(), []string{"b", "a"})
	put(t, srv, psRulePath("override", "c")+"?after=b", tok, rule("c")).expect(t, http.StatusOK, "")
	psWantIDs(t, "override", userOverrides(), []string{"b", "c", "a"})
	put(t, srv, psRulePath("override", "d")+"?before=a", tok, rule("d")).expect(t, http.StatusOK, "")
	psWantIDs(t, "override", userOverrides(), []string{"b", "c", "d", "a"})
	// With both, before wins.
	put(t, srv, psRulePath("override", "e")+"?before=b&after=a", tok, rule("e")).expect(t, http.StatusOK, "")
	psWantIDs(t, "override", userOverrides(), []string{"e", "b", "c", "d", "a"})
	// Updating a rule keeps its place unless it is moved.
	put(t, srv, psRulePath("override", "c"), tok, rule("c2")).expect(t, http.StatusOK, "")
	psWantIDs(t, "override", userOverrides(), []string{"e", "b", "c", "d", "a"})
	put(t, srv, psRulePath("override", "e")+"?after=a", tok, rule("e")).expect(t, http.StatusOK, "")
	psWantIDs(t, "override", userOverrides(), []string{"b", "c", "d", "a", "e"})

	// Refusals.
	put(t, srv, psRulePath("override", "x")+"?before=nope", tok, rule("x")).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	put(t, srv, psRulePath("override", "x")+"?after=.m.rule.master", tok, rule("x")).expect(t, http.StatusBadRequest, "M_UNKNOWN")
	put(t, srv, psRulePath("override", ".m.rule.mine"), tok, rule("x")).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, psRulePath("override", ".m.rule.message"), tok, rule("x")).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, psRulePath("override", "sl/ash"), tok, rule("x")).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, psRulePath("override", `back\slash`), tok, rule("x")).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, psRulePath("bogus", "x"), tok, rule("x")).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, psRulePath("override", "x"), tok, map[string]any{"conditions": []any{}}).
		expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, psRulePath("override", "x"), tok, map[string]any{"actions": "notify"}).
		expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, psRulePath("override", "x"), tok, map[string]any{"actions": []any{"shout"}}).
		expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	put(t, srv, psRulePath("override", "x"), tok, map[string]any{"actions": []any{}, "conditions": []any{"x"}}).
		expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, psRulePath("override", "x"), tok, "{not json").expect(t, http.StatusBadRequest, "M_NOT_JSON")
	put(t, srv, psRulePath("content", "x"), tok, map[string]any{"actions": []any{"notify"}}).
		expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	get(t, srv, psRulePath("override", "x"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, psRulePath("bogus", "x"), tok).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, adPath("pushrules", "device", "override", "x"), tok).expect(t, http.StatusNotFound, "M_UNRECOGNIZED")

	// Content, room and sender rules.
	put(t, srv, psRulePath("content", "cake"), tok, map[string]any{"pattern": "cake*lie", "actions": []any{"notify"}}).
		expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("content", "cake"), tok).expect(t, http.StatusOK, ""),
		`{"rule_id":"cake","default":false,"enabled":true,"pattern":"cake*lie","actions":["notify"]}`)
	psWantIDs(t, "content", psIDs(psRules(t, srv, alice)["content"]), []string{"cake", ".m.rule.contains_user_name"})
	put(t, srv, psRulePath("room", "!dj234r78wl45Gh4D:tessera.test"), tok, map[string]any{"actions": []any{}}).
		expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("room", "!dj234r78wl45Gh4D:tessera.test"), tok).expect(t, http.StatusOK, ""),
		`{"rule_id":"!dj234r78wl45Gh4D:tessera.test","default":false,"enabled":true,"actions":[]}`)
	put(t, srv, psRulePath("sender", "@spambot:tessera.test"), tok, map[string]any{"actions": []any{"dont_notify"}}).
		expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("sender", "@spambot:tessera.test", "actions"), tok).expect(t, http.StatusOK, ""),
		`{"actions":[]}`)

	// enabled, for user and default rules.
	jsonEqual(t, get(t, srv, psRulePath("override", "a", "enabled"), tok).expect(t, http.StatusOK, ""), `{"enabled":true}`)
	put(t, srv, psRulePath("override", "a", "enabled"), tok, map[string]any{"enabled": false}).expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("override", "a", "enabled"), tok).expect(t, http.StatusOK, ""), `{"enabled":false}`)
	// An update leaves a rule disabled.
	put(t, srv, psRulePath("override", "a"), tok, rule("cake")).expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("override", "a", "enabled"), tok).expect(t, http.StatusOK, ""), `{"enabled":false}`)
	put(t, srv, psRulePath("override", ".m.rule.master", "enabled"), tok, map[string]any{"enabled": true}).
		expect(t, http.StatusOK, "")
	if got := psRules(t, srv, alice)["override"][0]; got["rule_id"] != ".m.rule.master" || got["enabled"] != true {
		t.Fatalf("master rule after enabling: %v", got)
	}
	put(t, srv, psRulePath("override", "a", "enabled"), tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")
	put(t, srv, psRulePath("override", "a", "enabled"), tok, map[string]any{"enabled": "yes"}).
		expect(t, http.StatusBadRequest, "M_BAD_JSON")
	put(t, srv, psRulePath("override", "nope", "enabled"), tok, map[string]any{"enabled": true}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
	put(t, srv, psRulePath("override", ".m.rule.nope", "enabled"), tok, map[string]any{"enabled": true}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
	get(t, srv, psRulePath("override", "nope", "enabled"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")

	// actions, for default and user rules.
	jsonEqual(t, get(t, srv, psRulePath("underride", ".m.rule.message", "actions"), tok).expect(t, http.StatusOK, ""),
		`{"actions":["notify"]}`)
	put(t, srv, psRulePath("underride", ".m.rule.message", "actions"), tok,
		map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "bing"}}}).
		expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("underride", ".m.rule.message"), tok).expect(t, http.StatusOK, ""),
		`{"rule_id":".m.rule.message","default":true,"enabled":true,
		"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.message"}],
		"actions":["notify",{"set_tweak":"sound","value":"bing"}]}`)
	put(t, srv, psRulePath("override", "b", "actions"), tok, map[string]any{"actions": []any{}}).expect(t, http.StatusOK, "")
	jsonEqual(t, get(t, srv, psRulePath("override", "b"), tok).expect(t, http.StatusOK, ""),
		`{"rule_id":"b","default":false,"enabled":true,
		"conditions":[{"kind":"event_match","key":"content.body","pattern":"b"}],"actions":[]}`)
	put(t, srv, psRulePath("override", "nope", "actions"), tok, map[string]any{"actions": []any{}}).
		expect(t, http.StatusNotFound, "M_NOT_FOUND")
	put(t, srv, psRulePath("override", "b", "actions"), tok, map[string]any{}).expect(t, http.StatusBadRequest, "M_MISSING_PARAM")

	// Deleting.
	del(t, srv, psRulePath("override", "a"), tok, nil).expect(t, http.StatusOK, "")
	get(t, srv, psRulePath("override", "a"), tok).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, psRulePath("override", "a"), tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	del(t, srv, psRulePath("underride", ".m.rule.message"), tok, nil).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	del(t, srv, psRulePath("underride", ".m.rule.nope"), tok, nil).expect(t, http.StatusNotFound, "M_NOT_FOUND")
	psWantIDs(t, "override", userOverrides(), []string{"b", "c", "d", "e"})

	// The rules survive a restart.
	srv.Restart()
	psWantIDs(t, "override after restart", userOverrides(), []string{"b", "c", "d", "e"})
	jsonEqual(t, get(t, srv, psRulePath("override", ".m.rule.master", "enabled"), tok).expect(t, http.StatusOK, ""),
		`{"enabled":true}`)
}

// psCounts reads a joined room's unread_notifications from an initial
// sync.
func psCounts(t testing.TB, srv *testserver.Server, s session, roomID string) (notify, highlight int) {
	t.Helper()
	r := psSync(t, srv, s, "", 0)
	return psRoomCounts(t, r, roomID)
}

func psRoomCounts(t testing.TB, r resp, roomID string) (notify, highlight int) {
	t.Helper()
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Unread map[string]int `json:"unread_notifications"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	jr, ok := body.Rooms.Join[roomID]
	if !ok {
		t.Fatalf("room %s not in the sync response", roomID)
	}
	n, ok1 := jr.Unread["notification_count"]
	h, ok2 := jr.Unread["highlight_count"]
	if !ok1 || !ok2 {
		t.Fatalf("unread_notifications of %s: %v", roomID, jr.Unread)
	}
	return n, h
}

func psWantCounts(t testing.TB, srv *testserver.Server, s session, roomID string, notify, highlight int) {
	t.Helper()
	n, h := psCounts(t, srv, s, roomID)
	if n != notify || h != highlight {
		t.Fatalf("counts in %s: notification_count %d highlight_count %d, want %d and %d", roomID, n, h, notify, highlight)
	}
}

// psThreadCounts reads a joined room's counts from an initial sync whose
// filter asks for per-thread counts: the main timeline's, and each
// thread's (nil when unread_thread_notifications is absent).
func psThreadCounts(t testing.TB, srv *testserver.Server, s session, roomID string) (push.Counts, map[string]push.Counts) {
	t.Helper()
	filter := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
	r := get(t, srv, v3+"/sync?filter="+filter, s.AccessToken).expect(t, http.StatusOK, "")
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Unread  *push.Counts           `json:"unread_notifications"`
				Threads map[string]push.Counts `json:"unread_thread_notifications"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil {
		t.Fatal(err)
	}
	jr, ok := body.Rooms.Join[roomID]
	if !ok || jr.Unread == nil {
		t.Fatalf("room %s (or its unread_notifications) not in the sync response", roomID)
	}
	return *jr.Unread, jr.Threads
}

var psTxn atomic.Int64

// psSend sends an event and returns its ID.
func psSend(t testing.TB, srv *testserver.Server, s session, roomID, typ string, content map[string]any) string {
	t.Helper()
	txn := "pstxn" + strconv.FormatInt(psTxn.Add(1), 10)
	return put(t, srv, adPath("rooms", roomID, "send", typ, txn), s.AccessToken, content).
		expect(t, http.StatusOK, "").str("event_id")
}

func psText(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

func psReceipt(t testing.TB, srv *testserver.Server, s session, roomID, typ, eventID string, body map[string]any) {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	post(t, srv, adPath("rooms", roomID, "receipt", typ, eventID), s.AccessToken, body).expect(t, http.StatusOK, "")
}

func TestUnreadCounts(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	carol := registerUser(t, srv, "carol", psPassword)
	// Bob's display name differs from his user name, so the two legacy
	// mention rules can be told apart.
	put(t, srv, adPath("profile", bob.UserID, "displayname"), bob.AccessToken, map[string]any{"displayname": "Robert Paulson"}).
		expect(t, http.StatusOK, "")

	group := adCreateRoom(t, srv, alice, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, bob, group)
	adJoin(t, srv, carol, group)
	dm := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}})
	adJoin(t, srv, bob, dm)

	// Joining is no notification: member events are silent by default.
	psWantCounts(t, srv, bob, group, 0, 0)
	psWantCounts(t, srv, bob, dm, 0, 0)

	// A message in a group notifies; the sender's own count does not move.
	since := psSync(t, srv, bob, "", 0).str("next_batch")
	msg := psSend(t, srv, alice, group, "m.room.message", psText("hello all"))
	// The count comes in the same sync response as the event.
	r := psSync(t, srv, bob, since, 10*time.Second)
	if !strings.Contains(string(r.Raw), msg) {
		t.Fatalf("incremental sync lacks the message: %s", r.Raw)
	}
	if n, h := psRoomCounts(t, r, group); n != 1 || h != 0 {
		t.Fatalf("counts with the message: %d, %d; want 1, 0", n, h)
	}
	psWantCounts(t, srv, alice, group, 0, 0)

	// A mention through m.mentions highlights.
	psSend(t, srv, alice, group, "m.room.message", map[string]any{"msgtype": "m.text", "body": "look",
		"m.mentions": map[string]any{"user_ids": []string{bob.UserID}}})
	psWantCounts(t, srv, bob, group, 2, 1)
	psWantCounts(t, srv, carol, group, 2, 0)
	// So does his display name in the body of a message without
	// m.mentions (the legacy rule).
	psSend(t, srv, alice, group, "m.room.message", psText("hey Robert Paulson, look"))
	psWantCounts(t, srv, bob, group, 3, 2)
	// A notice does not notify.
	psSend(t, srv, alice, group, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "bot"})
	psWantCounts(t, srv, bob, group, 3, 2)

	// A direct message notifies (.m.rule.room_one_to_one).
	dmMsg := psSend(t, srv, alice, dm, "m.room.message", psText("psst"))
	psWantCounts(t, srv, bob, dm, 1, 0)

	// A muted room: an override rule for the room with no actions.
	put(t, srv, psRulePath("override", group), bob.AccessToken, map[string]any{
		"conditions": []any{map[string]any{"kind": "event_match", "key": "room_id", "pattern": group}},
		"actions":    []any{},
	}).expect(t, http.StatusOK, "")
	last := psSend(t, srv, alice, group, "m.room.message", psText("you will not hear this, Robert Paulson"))
	psWantCounts(t, srv, bob, group, 3, 2)
	psWantCounts(t, srv, carol, group, 4, 0)

	// Counts and notifications are kept in memory a moment before they are
	// written; a restart writes them, and they read the same from disk,
	// and then from disk and memory together.
	srv.Restart()
	psWantCounts(t, srv, bob, group, 3, 2)
	psWantCounts(t, srv, carol, group, 4, 0)
	psWantCounts(t, srv, bob, dm, 1, 0)

	// The notifications list, newest first: the four messages, and the
	// invite to the DM, read since bob joined (his own event).
	n := get(t, srv, v3+"/notifications", bob.AccessToken).expect(t, http.StatusOK, "")
	list := psNotifications(t, n)
	if len(list) != 5 {
		t.Fatalf("bob has %d notifications, want 5: %s", len(list), n.Raw)
	}
	if inv := list[4]; inv.Event["type"] != "m.room.member" || inv.RoomID != dm || !inv.Read {
		t.Fatalf("invite notification: %+v", inv)
	}
	if list[0].Event["event_id"] != dmMsg || list[0].RoomID != dm || list[0].Read {
		t.Fatalf("newest notification: %+v", list[0])
	}
	if _, hasRoomID := list[0].Event["room_id"]; hasRoomID {
		t.Errorf("notification event carries room_id: %v", list[0].Event)
	}
	if list[3].Event["event_id"] != msg || list[3].TS <= 0 || !slices.Equal(list[3].Actions, []any{"notify"}) {
		t.Fatalf("oldest notification: %+v", list[3])
	}
	highlights := psNotifications(t, get(t, srv, v3+"/notifications?only=highlight", bob.AccessToken).expect(t, http.StatusOK, ""))
	if len(highlights) != 2 {
		t.Fatalf("%d highlights, want 2", len(highlights))
	}
	// Paging.
	var paged []string
	from := ""
	for range 10 {
		path := v3 + "/notifications?limit=3"
		if from != "" {
			path += "&from=" + url.QueryEscape(from)
		}
		page := get(t, srv, path, bob.AccessToken).expect(t, http.StatusOK, "")
		for _, item := range psNotifications(t, page) {
			paged = append(paged, item.Event["event_id"].(string))
		}
		if from = page.str("next_token"); from == "" {
			break
		}
	}
	var all []string
	for _, item := range list {
		all = append(all, item.Event["event_id"].(string))
	}
	if !slices.Equal(paged, all) {
		t.Fatalf("paged notifications %q, want %q", paged, all)
	}
	get(t, srv, v3+"/notifications?limit=0", bob.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")
	get(t, srv, v3+"/notifications?from=x", bob.AccessToken).expect(t, http.StatusBadRequest, "M_INVALID_PARAM")

	// A read receipt resets the counts; the notifications stay, read.
	psReceipt(t, srv, bob, group, "m.read", last, nil)
	psWantCounts(t, srv, bob, group, 0, 0)
	psWantCounts(t, srv, bob, dm, 1, 0)
	list = psNotifications(t, get(t, srv, v3+"/notifications", bob.AccessToken).expect(t, http.StatusOK, ""))
	for _, item := range list {
		if want := item.RoomID == group || item.Event["type"] == "m.room.member"; item.Read != want {
			t.Errorf("notification %v in %s read = %v", item.Event["event_id"], item.RoomID, item.Read)
		}
	}
	// A private receipt counts too.
	psReceipt(t, srv, bob, dm, "m.read.private", dmMsg, nil)
	psWantCounts(t, srv, bob, dm, 0, 0)

	// Unmuted, the room notifies again.
	del(t, srv, psRulePath("override", group), bob.AccessToken, nil).expect(t, http.StatusOK, "")
	psSend(t, srv, alice, group, "m.room.message", psText("back"))
	psWantCounts(t, srv, bob, group, 1, 0)

	// A threaded receipt for the main timeline reads main-timeline events.
	main2 := psSend(t, srv, alice, group, "m.room.message", psText("again"))
	psWantCounts(t, srv, bob, group, 2, 0)
	psReceipt(t, srv, bob, group, "m.read", main2, map[string]any{"thread_id": "main"})
	psWantCounts(t, srv, bob, group, 0, 0)

	// A message in a thread counts until its thread is read.
	reply := psSend(t, srv, alice, group, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": main2}})
	psWantCounts(t, srv, bob, group, 1, 0)
	// With unread_thread_notifications the thread is counted apart from
	// the main timeline, keyed by its root.
	mainAgain := psSend(t, srv, alice, group, "m.room.message", psText("main again"))
	main3, threads := psThreadCounts(t, srv, bob, group)
	if main3 != (push.Counts{Notifications: 1}) || len(threads) != 1 || threads[main2] != (push.Counts{Notifications: 1}) {
		t.Fatalf("per-thread counts: main %+v, threads %+v; want 1 in main and 1 in %s", main3, threads, main2)
	}
	psWantCounts(t, srv, bob, group, 2, 0)
	// Reading the main timeline past the thread's reply leaves the thread
	// unread.
	psReceipt(t, srv, bob, group, "m.read", mainAgain, map[string]any{"thread_id": "main"})
	psWantCounts(t, srv, bob, group, 1, 0)
	psReceipt(t, srv, bob, group, "m.read", reply, map[string]any{"thread_id": main2})
	psWantCounts(t, srv, bob, group, 0, 0)
	// No thread with notifications: the object is omitted.
	if _, threads := psThreadCounts(t, srv, bob, group); threads != nil {
		t.Fatalf("unread_thread_notifications with nothing unread: %+v", threads)
	}

	// Sending a message marks what came before it as read.
	psSend(t, srv, alice, dm, "m.room.message", psText("are you there?"))
	psWantCounts(t, srv, bob, dm, 1, 0)
	psSend(t, srv, bob, dm, "m.room.message", psText("yes"))
	psWantCounts(t, srv, bob, dm, 0, 0)

	// An @room mention from someone allowed to make one highlights for
	// everyone; carol may not make one (power level 0 < 50).
	psSend(t, srv, alice, group, "m.room.message", map[string]any{"msgtype": "m.text", "body": "all",
		"m.mentions": map[string]any{"room": true}})
	psWantCounts(t, srv, bob, group, 1, 1)
	psSend(t, srv, carol, group, "m.room.message", map[string]any{"msgtype": "m.text", "body": "all",
		"m.mentions": map[string]any{"room": true}})
	psWantCounts(t, srv, bob, group, 2, 1)
}

// psNotification is one entry of /notifications.
type psNotification struct {
	Actions []any          `json:"actions"`
	Event   map[string]any `json:"event"`
	Read    bool           `json:"read"`
	RoomID  string         `json:"room_id"`
	TS      int64          `json:"ts"`
}

func psNotifications(t testing.TB, r resp) []psNotification {
	t.Helper()
	var body struct {
		Notifications *[]psNotification `json:"notifications"`
	}
	if err := json.Unmarshal(r.Raw, &body); err != nil || body.Notifications == nil {
		t.Fatalf("notifications response: %v %s", err, r.Raw)
	}
	return *body.Notifications
}

func TestInviteNotification(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	room := adCreateRoom(t, srv, alice, map[string]any{"preset": "private_chat"})
	post(t, srv, adPath("rooms", room, "invite"), alice.AccessToken, map[string]any{"user_id": bob.UserID}).
		expect(t, http.StatusOK, "")
	// The invite notifies bob (.m.rule.invite_for_me); it is listed once
	// he can see it, after joining.
	adJoin(t, srv, bob, room)
	list := psNotifications(t, get(t, srv, v3+"/notifications", bob.AccessToken).expect(t, http.StatusOK, ""))
	if len(list) != 1 || list[0].Event["type"] != "m.room.member" || list[0].Event["state_key"] != bob.UserID {
		t.Fatalf("notifications after an invite: %+v", list)
	}
}

func TestPushers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	pusher := func(pushkey string, extra map[string]any) map[string]any {
		p := map[string]any{
			"kind": "http", "app_id": "com.example.app.ios", "pushkey": pushkey,
			"app_display_name": "Mat Rix", "device_display_name": "iPhone 9", "profile_tag": "xxyyzz", "lang": "en",
			"data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"},
		}
		for k, v := range extra {
			if v == nil {
				delete(p, k)
			} else {
				p[k] = v
			}
		}
		return p
	}
	list := func(s session) []map[string]any {
		t.Helper()
		r := get(t, srv, v3+"/pushers", s.AccessToken).expect(t, http.StatusOK, "")
		var body struct {
			Pushers *[]map[string]any `json:"pushers"`
		}
		if err := json.Unmarshal(r.Raw, &body); err != nil || body.Pushers == nil {
			t.Fatalf("pushers response: %s", r.Raw)
		}
		return *body.Pushers
	}
	if got := list(alice); len(got) != 0 {
		t.Fatalf("pushers before any: %v", got)
	}
	post(t, srv, v3+"/pushers/set", alice.AccessToken, pusher("key1", nil)).expect(t, http.StatusOK, "")
	got := list(alice)
	if len(got) != 1 {
		t.Fatalf("pushers: %v", got)
	}
	b, _ := json.Marshal(got[0])
	jsonEqual(t, resp{Raw: b}, `{"pushkey":"key1","kind":"http","app_id":"com.example.app.ios","app_display_name":"Mat Rix",
		"device_display_name":"iPhone 9","profile_tag":"xxyyzz","lang":"en",
		"data":{"url":"https://push.example.org/_matrix/push/v1/notify","format":"event_id_only"}}`)

	// Setting it again updates it; another pushkey is another pusher.
	post(t, srv, v3+"/pushers/set", alice.AccessToken, pusher("key1", map[string]any{"device_display_name": "iPhone 10"})).
		expect(t, http.StatusOK, "")
	post(t, srv, v3+"/pushers/set", alice.AccessToken, pusher("key2", map[string]any{"profile_tag": nil})).
		expect(t, http.StatusOK, "")
	got = list(alice)
	if len(got) != 2 || got[0]["device_display_name"] != "iPhone 10" {
		t.Fatalf("pushers after update: %v", got)
	}
	if _, ok := got[1]["profile_tag"]; ok {
		t.Errorf("a pusher without profile_tag lists one: %v", got[1])
	}

	// Another user taking the same app ID and pushkey removes alice's,
	// unless append is set.
	post(t, srv, v3+"/pushers/set", bob.AccessToken, pusher("key2", map[string]any{"append": true})).expect(t, http.StatusOK, "")
	if len(list(alice)) != 2 || len(list(bob)) != 1 {
		t.Fatal("append removed another user's pusher")
	}
	post(t, srv, v3+"/pushers/set", bob.AccessToken, pusher("key1", nil)).expect(t, http.StatusOK, "")
	if got := list(alice); len(got) != 1 || got[0]["pushkey"] != "key2" {
		t.Fatalf("alice's pushers after bob took key1: %v", got)
	}

	// A null kind deletes.
	post(t, srv, v3+"/pushers/set", alice.AccessToken, map[string]any{"kind": nil, "app_id": "com.example.app.ios", "pushkey": "key2"}).
		expect(t, http.StatusOK, "")
	if got := list(alice); len(got) != 0 {
		t.Fatalf("pushers after deleting: %v", got)
	}

	// Logging a device out deletes the pushers it set, not the others'.
	phone := login(t, srv, "alice", psPassword, nil)
	post(t, srv, v3+"/pushers/set", phone.AccessToken, pusher("phonekey", nil)).expect(t, http.StatusOK, "")
	post(t, srv, v3+"/pushers/set", alice.AccessToken, pusher("mainkey", nil)).expect(t, http.StatusOK, "")
	post(t, srv, v3+"/logout", phone.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
	if got := list(alice); len(got) != 1 || got[0]["pushkey"] != "mainkey" {
		t.Fatalf("pushers after the phone logged out: %v", got)
	}
	post(t, srv, v3+"/pushers/set", alice.AccessToken, map[string]any{"kind": nil, "app_id": "com.example.app.ios", "pushkey": "mainkey"}).
		expect(t, http.StatusOK, "")

	// Refusals.
	for _, tc := range []struct {
		name    string
		body    any
		errcode string
	}{
		{"missing kind", pusher("k", map[string]any{"kind": nil}), "M_MISSING_PARAM"},
		{"missing pushkey", pusher("k", map[string]any{"pushkey": nil}), "M_MISSING_PARAM"},
		{"missing lang and data", pusher("k", map[string]any{"lang": nil, "data": nil}), "M_MISSING_PARAM"},
		{"missing url", pusher("k", map[string]any{"data": map[string]any{}}), "M_MISSING_PARAM"},
		{"wrong url path", pusher("k", map[string]any{"data": map[string]any{"url": "https://push.example.org/notify"}}), "M_INVALID_PARAM"},
		{"relative url", pusher("k", map[string]any{"data": map[string]any{"url": "/_matrix/push/v1/notify"}}), "M_INVALID_PARAM"},
		{"bad format", pusher("k", map[string]any{"data": map[string]any{
			"url": "https://push.example.org/_matrix/push/v1/notify", "format": "full"}}), "M_INVALID_PARAM"},
		{"unknown kind", pusher("k", map[string]any{"kind": "carrier-pigeon"}), "M_INVALID_PARAM"},
		{"email", pusher("k", map[string]any{"kind": "email", "app_id": "m.email"}), "M_INVALID_PARAM"},
		{"long pushkey", pusher(strings.Repeat("k", 513), nil), "M_INVALID_PARAM"},
		{"long app_id", pusher("k", map[string]any{"app_id": strings.Repeat("a", 65)}), "M_INVALID_PARAM"},
		{"data not an object", pusher("k", map[string]any{"data": "x"}), "M_BAD_JSON"},
		{"append not a boolean", pusher("k", map[string]any{"append": "yes"}), "M_BAD_JSON"},
		{"not json", "{", "M_NOT_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			post(t, srv, v3+"/pushers/set", alice.AccessToken, tc.body).expect(t, http.StatusBadRequest, tc.errcode)
		})
	}
	if got := list(alice); len(got) != 0 {
		t.Fatalf("a refused pusher was stored: %v", got)
	}
}

// TestPushContextFollowsMembers: evaluation follows the room's members
// as they join, rename and leave one event at a time (the context is
// carried from event to event, not read again): the member count of
// .m.rule.room_one_to_one and the display name of
// .m.rule.contains_display_name.
func TestPushContextFollowsMembers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t)
	alice := registerUser(t, srv, "alice", psPassword)
	bob := registerUser(t, srv, "bob", psPassword)
	carol := registerUser(t, srv, "carol", psPassword)
	room := adCreateRoom(t, srv, bob, map[string]any{"preset": "public_chat"})
	adJoin(t, srv, alice, room)
	// latest is the actions of alice's latest notification.
	latest := func(eventID string) []any {
		t.Helper()
		list := psNotifications(t, get(t, srv, v3+"/notifications", alice.AccessToken).expect(t, http.StatusOK, ""))
		if len(list) == 0 || list[0].Event["event_id"] != eventID {
			t.Fatalf("latest notification is not %s: %+v", eventID, list)
		}
		return list[0].Actions
	}
	sound := map[string]any{"set_tweak": "sound", "value": "default"}
	has := func(actions []any, want map[string]any) bool {
		for _, a := range actions {
			if reflect.DeepEqual(a, want) {
				return true
			}
		}
		return false
	}
	highlight := map[string]any{"set_tweak": "highlight"}
	steps := []struct {
		name          string
		before        func()
		body          string
		sound, highli bool
	}{
		{"two members: one to one", nil, "hello", true, false},
		{"a third joins", func() { adJoin(t, srv, carol, room) }, "hello all", false, false},
		{"alice renames", func() {
			put(t, srv, adPath("profile", alice.UserID, "displayname"), alice.AccessToken,
				map[string]any{"displayname": "Zed"}).expect(t, http.StatusOK, "")
		}, "ask Zed", true, true},
		{"carol leaves", func() {
			post(t, srv, adPath("rooms", room, "leave"), carol.AccessToken, map[string]any{}).expect(t, http.StatusOK, "")
		}, "just us", true, false},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		ev := psSend(t, srv, bob, room, "m.room.message", psText(st.body))
		a := latest(ev)
		if has(a, sound) != st.sound || (has(a, highlight) || has(a, map[string]any{"set_tweak": "highlight", "value": true})) != st.highli {
			t.Errorf("%s: actions %v, want sound %v, highlight %v", st.name, a, st.sound, st.highli)
		}
	}
}
