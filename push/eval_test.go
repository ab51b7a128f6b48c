package push

import (
	"encoding/json"
	"testing"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// evalEvent is the event most cases evaluate against.
const evalEvent = `{
	"type": "m.room.message",
	"sender": "@bob:example.org",
	"room_id": "!room:example.org",
	"content": {
		"msgtype": "m.text",
		"body": "Hello Alice, an exciting triple-whammy! @room",
		"topic": "Lunch plans",
		"m.federate": true,
		"count": 3,
		"nothing": null,
		"nested": {"deeper": {"value": "found"}},
		"m.mentions": {"user_ids": ["@alice:example.org", 7, {"x": 1}], "room": true},
		"list": ["a", true, null, 5],
		"back\\slash": "bs",
		"obj": {"a": 1}
	}
}`

func cond(t *testing.T, raw string) *condition {
	t.Helper()
	return parseCondition(json.RawMessage(raw))
}

func TestConditions(t *testing.T) {
	ev, err := DecodeEvent([]byte(evalEvent))
	if err != nil {
		t.Fatal(err)
	}
	levels := func(key string) int64 {
		if key == "room" {
			return 50
		}
		return 100
	}
	ec := &EvalContext{Event: ev, RoomID: "!room:example.org", Sender: "@bob:example.org",
		DisplayName: "Alice", MemberCount: 2, SenderLevel: 50, NotificationLevel: levels}
	for _, tc := range []struct {
		name, cond string
		want       bool
	}{
		// event_match: whole value, case-insensitive, globs.
		{"match type", `{"kind":"event_match","key":"type","pattern":"m.room.message"}`, true},
		{"match type glob", `{"kind":"event_match","key":"type","pattern":"m.room.*"}`, true},
		{"match is whole value", `{"kind":"event_match","key":"type","pattern":"m.room"}`, false},
		{"match literal case-insensitive", `{"kind":"event_match","key":"type","pattern":"M.Room.MESSAGE"}`, true},
		{"match literal is not a prefix", `{"kind":"event_match","key":"type","pattern":"m.room.message.x"}`, false},
		{"match case-insensitive", `{"kind":"event_match","key":"content.topic","pattern":"LUNC?*"}`, true},
		{"question mark needs a character", `{"kind":"event_match","key":"content.topic","pattern":"Lunch plans?"}`, false},
		{"match sender", `{"kind":"event_match","key":"sender","pattern":"@bob:example.org"}`, true},
		{"match room_id", `{"kind":"event_match","key":"room_id","pattern":"!room:*"}`, true},
		{"match nested", `{"kind":"event_match","key":"content.nested.deeper.value","pattern":"found"}`, true},
		{"match absent", `{"kind":"event_match","key":"content.missing","pattern":"*"}`, false},
		{"match non-string", `{"kind":"event_match","key":"content.count","pattern":"*"}`, false},
		{"match null", `{"kind":"event_match","key":"content.nothing","pattern":"*"}`, false},
		{"match no state_key", `{"kind":"event_match","key":"state_key","pattern":""}`, false},
		{"match without pattern", `{"kind":"event_match","key":"type"}`, false},
		{"match regexp characters are literal", `{"kind":"event_match","key":"type","pattern":"m.room.messag."}`, false},
		// content.body matches words.
		{"body word", `{"kind":"event_match","key":"content.body","pattern":"alice"}`, true},
		{"body not a word part", `{"kind":"event_match","key":"content.body","pattern":"ali"}`, false},
		{"body across words", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, true},
		{"body @room", `{"kind":"event_match","key":"content.body","pattern":"@room"}`, true},
		{"body hyphen separates", `{"kind":"event_match","key":"content.body","pattern":"triple"}`, true},
		// event_property_is: exact, no casts.
		{"is true", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, true},
		{"is not the string", `{"kind":"event_property_is","key":"content.m\\.federate","value":"true"}`, false},
		{"is not 1", `{"kind":"event_property_is","key":"content.m\\.federate","value":1}`, false},
		{"is integer", `{"kind":"event_property_is","key":"content.count","value":3}`, true},
		{"is other integer", `{"kind":"event_property_is","key":"content.count","value":4}`, false},
		{"is null", `{"kind":"event_property_is","key":"content.nothing","value":null}`, true},
		{"absent is not null", `{"kind":"event_property_is","key":"content.missing","value":null}`, false},
		{"is string", `{"kind":"event_property_is","key":"content.msgtype","value":"m.text"}`, true},
		{"is case-sensitive", `{"kind":"event_property_is","key":"content.msgtype","value":"M.TEXT"}`, false},
		{"is compound", `{"kind":"event_property_is","key":"content.obj","value":"x"}`, false},
		{"is without value", `{"kind":"event_property_is","key":"content.count"}`, false},
		{"is escaped dots", `{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true}`, true},
		{"unescaped dot is a step", `{"kind":"event_property_is","key":"content.m.mentions.room","value":true}`, false},
		{"escaped backslash", `{"kind":"event_property_is","key":"content.back\\\\slash","value":"bs"}`, true},
		// event_property_contains.
		{"contains user", `{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@alice:example.org"}`, true},
		{"contains other user", `{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@carol:example.org"}`, false},
		{"contains partial", `{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":":example.org"}`, false},
		{"contains integer", `{"kind":"event_property_contains","key":"content.list","value":5}`, true},
		{"contains bool", `{"kind":"event_property_contains","key":"content.list","value":true}`, true},
		{"contains null", `{"kind":"event_property_contains","key":"content.list","value":null}`, true},
		{"contains non-array", `{"kind":"event_property_contains","key":"content.msgtype","value":"m.text"}`, false},
		{"contains absent", `{"kind":"event_property_contains","key":"content.missing","value":"a"}`, false},
		// contains_display_name.
		{"display name", `{"kind":"contains_display_name"}`, true},
		// room_member_count.
		{"count ==", `{"kind":"room_member_count","is":"2"}`, true},
		{"count explicit ==", `{"kind":"room_member_count","is":"==2"}`, true},
		{"count other", `{"kind":"room_member_count","is":"3"}`, false},
		{"count <", `{"kind":"room_member_count","is":"<3"}`, true},
		{"count < equal", `{"kind":"room_member_count","is":"<2"}`, false},
		{"count <=", `{"kind":"room_member_count","is":"<=2"}`, true},
		{"count >", `{"kind":"room_member_count","is":">1"}`, true},
		{"count >=", `{"kind":"room_member_count","is":">=3"}`, false},
		{"count malformed", `{"kind":"room_member_count","is":"two"}`, false},
		{"count missing", `{"kind":"room_member_count"}`, false},
		// sender_notification_permission.
		{"permission room", `{"kind":"sender_notification_permission","key":"room"}`, true},
		{"permission higher key", `{"kind":"sender_notification_permission","key":"other"}`, false},
		{"permission no key", `{"kind":"sender_notification_permission"}`, false},
		// Unknown kinds never match.
		{"unknown kind", `{"kind":"org.example.always"}`, false},
		{"related_event_match is not in v1.19", `{"kind":"related_event_match","key":"sender","pattern":"*"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cond(t, tc.cond).matches(ec); got != tc.want {
				t.Fatalf("%s: got %v, want %v", tc.cond, got, tc.want)
			}
		})
	}
}

func TestDisplayNameCondition(t *testing.T) {
	c := cond(t, `{"kind":"contains_display_name"}`)
	for _, tc := range []struct {
		name, body string
		want       bool
	}{
		{"Alice", "hi Alice!", true},
		{"Alice", "hi alice", true},
		{"Alice", "Alicea", false},
		{"Alice", "Alice", true},
		{"Al.ice", "Al.ice?", true},
		{"Al.ice", "Alxice", false},
		{"", "anything", false},
		{"Alice", "", false},
	} {
		ev, _ := DecodeEvent([]byte(`{"type":"m.room.message","content":{"body":` + quote(tc.body) + `}}`))
		if got := c.matches(&EvalContext{Event: ev, DisplayName: tc.name}); got != tc.want {
			t.Errorf("name %q body %q: got %v, want %v", tc.name, tc.body, got, tc.want)
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestSplitPath(t *testing.T) {
	for in, want := range map[string][]string{
		"content.body":                 {"content", "body"},
		`content.m\.relates_to.rel`:    {"content", "m.relates_to", "rel"},
		`content.a\\.b`:                {"content", `a\`, "b"},
		`content.a\b`:                  {"content", `a\b`},
		"type":                         {"type"},
		`content.m\.mentions.user_ids`: {"content", "m.mentions", "user_ids"},
	} {
		got := splitPath(in)
		if len(got) != len(want) {
			t.Errorf("%q: %q, want %q", in, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%q: %q, want %q", in, got, want)
			}
		}
	}
}

func TestActionsOutcome(t *testing.T) {
	for _, tc := range []struct {
		actions           string
		notify, highlight bool
	}{
		{`[]`, false, false},
		{`["notify"]`, true, false},
		{`["notify",{"set_tweak":"highlight"}]`, true, true},
		{`["notify",{"set_tweak":"highlight","value":false}]`, true, false},
		{`["notify",{"set_tweak":"highlight","value":true}]`, true, true},
		{`[{"set_tweak":"sound","value":"default"}]`, false, false},
		{`["dont_notify"]`, false, false},
	} {
		var a []json.RawMessage
		if err := json.Unmarshal([]byte(tc.actions), &a); err != nil {
			t.Fatal(err)
		}
		o := ActionsOutcome(a)
		if o.Notify != tc.notify || o.Highlight != tc.highlight {
			t.Errorf("%s: %+v, want notify %v highlight %v", tc.actions, o, tc.notify, tc.highlight)
		}
	}
}

// TestDefaultRules evaluates whole events against the default ruleset of
// @alice:example.org, whose display name is "Alice Liddell".
func TestDefaultRules(t *testing.T) {
	rs := NewRuleset(DefaultRules("@alice:example.org"))
	for _, tc := range []struct {
		name, event string
		members     int
		senderLevel int64
		wantRule    string
		notify      bool
		highlight   bool
	}{
		{"message in a group", `{"type":"m.room.message","content":{"msgtype":"m.text","body":"hi"}}`, 5, 0,
			".m.rule.message", true, false},
		{"message in a DM", `{"type":"m.room.message","content":{"msgtype":"m.text","body":"hi"}}`, 2, 0,
			".m.rule.room_one_to_one", true, false},
		{"notice", `{"type":"m.room.message","content":{"msgtype":"m.notice","body":"hi alice"}}`, 2, 0,
			".m.rule.suppress_notices", false, false},
		{"user mention", `{"type":"m.room.message","content":{"body":"hey","m.mentions":{"user_ids":["@alice:example.org"]}}}`, 5, 0,
			".m.rule.is_user_mention", true, true},
		{"other user mention skips legacy rules", `{"type":"m.room.message","content":{"body":"hey alice, Alice Liddell","m.mentions":{"user_ids":["@bob:example.org"]}}}`, 5, 0,
			".m.rule.message", true, false},
		{"display name", `{"type":"m.room.message","content":{"body":"hey Alice Liddell!"}}`, 5, 0,
			".m.rule.contains_display_name", true, true},
		{"user name", `{"type":"m.room.message","content":{"body":"ping ALICE please"}}`, 5, 0,
			".m.rule.contains_user_name", true, true},
		{"room mention by a moderator", `{"type":"m.room.message","content":{"body":"all","m.mentions":{"room":true}}}`, 5, 50,
			".m.rule.is_room_mention", true, true},
		{"room mention by a user", `{"type":"m.room.message","content":{"body":"all","m.mentions":{"room":true}}}`, 5, 0,
			".m.rule.message", true, false},
		{"legacy @room", `{"type":"m.room.message","content":{"body":"@room look"}}`, 5, 100,
			".m.rule.roomnotif", true, true},
		{"invite for me", `{"type":"m.room.member","state_key":"@alice:example.org","content":{"membership":"invite"}}`, 5, 0,
			".m.rule.invite_for_me", true, false},
		{"other member event", `{"type":"m.room.member","state_key":"@carol:example.org","content":{"membership":"join"}}`, 5, 0,
			".m.rule.member_event", false, false},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","content":{"replacement_room":"!new:x"}}`, 5, 0,
			".m.rule.tombstone", true, true},
		{"tombstone-typed message without state key", `{"type":"m.room.tombstone","content":{}}`, 5, 0, "", false, false},
		{"reaction", `{"type":"m.reaction","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$x","key":"alice"}}}`, 2, 0,
			".m.rule.reaction", false, false},
		{"server acl", `{"type":"m.room.server_acl","state_key":"","content":{}}`, 2, 0,
			".m.rule.room.server_acl", false, false},
		{"edit", `{"type":"m.room.message","content":{"body":"* alice","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}}`, 2, 0,
			".m.rule.suppress_edits", false, false},
		{"call", `{"type":"m.call.invite","content":{}}`, 5, 0, ".m.rule.call", true, false},
		{"rtc ring", `{"type":"org.matrix.msc4075.rtc.notification","content":{"notification_type":"ring"}}`, 2, 0,
			".org.matrix.msc4075.rule.rtc.notification", true, false},
		{"rtc ring, stable type", `{"type":"m.rtc.notification","content":{"notification_type":"ring"}}`, 2, 0,
			".org.matrix.msc4075.rule.rtc.notification", true, false},
		{"rtc group notification", `{"type":"org.matrix.msc4075.rtc.notification","content":{"notification_type":"notification"}}`,
			3, 0, "", false, false},
		{"encrypted DM", `{"type":"m.room.encrypted","content":{}}`, 2, 0, ".m.rule.encrypted_room_one_to_one", true, false},
		{"encrypted group", `{"type":"m.room.encrypted","content":{}}`, 3, 0, ".m.rule.encrypted", true, false},
		{"state event", `{"type":"m.room.topic","state_key":"","content":{"topic":"x"}}`, 3, 0, "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := DecodeEvent([]byte(tc.event))
			if err != nil {
				t.Fatal(err)
			}
			ev["room_id"], ev["sender"] = "!room:example.org", "@bob:example.org"
			ec := &EvalContext{Event: ev, RoomID: "!room:example.org", Sender: "@bob:example.org",
				DisplayName: "Alice Liddell", MemberCount: tc.members, SenderLevel: tc.senderLevel,
				NotificationLevel: func(string) int64 { return 50 }}
			r := rs.Match(ec)
			got := ""
			var o Outcome
			if r != nil {
				got, o = r.RuleID, ActionsOutcome(r.Actions)
			}
			if got != tc.wantRule || o.Notify != tc.notify || o.Highlight != tc.highlight {
				t.Fatalf("rule %q %+v, want %q notify %v highlight %v", got, o, tc.wantRule, tc.notify, tc.highlight)
			}
		})
	}
}

func TestRoomSenderAndDisabledRules(t *testing.T) {
	byKind := DefaultRules("@alice:example.org")
	byKind[KindRoom] = []*Rule{{RuleID: "!muted:example.org", Enabled: true, Actions: []json.RawMessage{}}}
	byKind[KindSender] = []*Rule{{RuleID: "@loud:example.org", Enabled: true,
		Actions: []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}}}
	rs := NewRuleset(byKind)
	msg := func(room, sender string) *EvalContext {
		ev, _ := DecodeEvent([]byte(`{"type":"m.room.message","content":{"body":"hi"}}`))
		return &EvalContext{Event: ev, RoomID: room, Sender: sender, MemberCount: 5}
	}
	if r := rs.Match(msg("!muted:example.org", "@bob:example.org")); r == nil || r.RuleID != "!muted:example.org" {
		t.Fatalf("room rule did not match: %+v", r)
	}
	if r := rs.Match(msg("!other:example.org", "@loud:example.org")); r == nil || !ActionsOutcome(r.Actions).Highlight {
		t.Fatalf("sender rule did not match: %+v", r)
	}
	// Enabling the master rule silences everything.
	rs.Override[0].Enabled = true
	if r := rs.Match(msg("!other:example.org", "@loud:example.org")); r == nil || r.RuleID != masterRuleID ||
		ActionsOutcome(r.Actions).Notify {
		t.Fatalf("master rule: %+v", r)
	}
	// A disabled rule never matches.
	rs.Override[0].Enabled = false
	for _, r := range rs.Underride {
		r.Enabled = false
	}
	if r := rs.Match(msg("!other:example.org", "@bob:example.org")); r != nil {
		t.Fatalf("disabled rules matched: %s", r.RuleID)
	}
}

func TestDefaultRuleOrder(t *testing.T) {
	d := DefaultRules("@al:example.org")
	want := map[string][]string{
		KindOverride: {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits"},
		KindContent: {".m.rule.contains_user_name"},
		KindUnderride: {".m.rule.call", ".org.matrix.msc4075.rule.rtc.notification", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
			".m.rule.message", ".m.rule.encrypted"},
	}
	for kind, ids := range want {
		if len(d[kind]) != len(ids) {
			t.Fatalf("%s: %d rules, want %d", kind, len(d[kind]), len(ids))
		}
		for i, id := range ids {
			if d[kind][i].RuleID != id || !d[kind][i].Default {
				t.Errorf("%s[%d] = %s, want %s", kind, i, d[kind][i].RuleID, id)
			}
		}
	}
	if p := d[KindContent][0].Pattern; p == nil || *p != "al" {
		t.Errorf("contains_user_name pattern = %v, want the localpart", p)
	}
	raw, _ := json.Marshal(d[KindOverride][2])
	if want := `{"rule_id":".m.rule.invite_for_me","default":true,"enabled":true,"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"key":"type","kind":"event_match","pattern":"m.room.member"},{"key":"content.membership","kind":"event_match","pattern":"invite"},{"key":"state_key","kind":"event_match","pattern":"@al:example.org"}]}`; string(raw) != want {
		t.Errorf("invite_for_me:\n got %s\nwant %s", raw, want)
	}
}

func TestParseActions(t *testing.T) {
	for _, tc := range []struct {
		in, want, errcode string
	}{
		{`["notify"]`, `["notify"]`, ""},
		{`["notify","dont_notify","coalesce"]`, `["notify"]`, ""},
		{`[{"set_tweak":"sound","value":"ding"}]`, `[{"set_tweak":"sound","value":"ding"}]`, ""},
		{`[]`, `[]`, ""},
		{`null`, ``, "M_MISSING_PARAM"},
		{`"notify"`, ``, "M_BAD_JSON"},
		{`["shout"]`, ``, "M_INVALID_PARAM"},
		{`[{"value":1}]`, ``, "M_INVALID_PARAM"},
		{`[3]`, ``, "M_BAD_JSON"},
	} {
		got, err := parseActions(json.RawMessage(tc.in))
		if tc.errcode != "" {
			if err == nil || !containsCode(err, tc.errcode) {
				t.Errorf("%s: err %v, want %s", tc.in, err, tc.errcode)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		b, _ := json.Marshal(got)
		if string(b) != tc.want {
			t.Errorf("%s: %s, want %s", tc.in, b, tc.want)
		}
	}
}

func containsCode(err error, code string) bool {
	me, ok := mxerr.As(err)
	return ok && me.Code == code
}
