package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tessera-hs/tessera/internal/mxerr"
)

// Push rules: which events notify a user, and how.
// https://spec.matrix.org/v1.19/client-server-api/#push-rules

// The kinds of push rule, in the order they are checked. postcontent
// (MSC4306, thread subscriptions) sits between content and room and holds
// general-purpose rules with conditions, like override and underride.
const (
	KindOverride    = "override"
	KindContent     = "content"
	KindPostContent = "postcontent"
	KindRoom        = "room"
	KindSender      = "sender"
	KindUnderride   = "underride"
)

// Kinds lists the kinds in evaluation order.
var Kinds = []string{KindOverride, KindContent, KindPostContent, KindRoom, KindSender, KindUnderride}

// hasConditions reports whether rules of a kind carry a conditions list.
func hasConditions(kind string) bool {
	return kind == KindOverride || kind == KindPostContent || kind == KindUnderride
}

// ValidKind reports whether kind is one of the spec's rule kinds.
func ValidKind(kind string) bool {
	for _, k := range Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// checkKind refuses an unknown kind in a request path.
func checkKind(kind string) error {
	if !ValidKind(kind) {
		return mxerr.InvalidParam("Unknown push rule kind %q: must be one of %s", kind, strings.Join(Kinds, ", "))
	}
	return nil
}

// masterRuleID is the one server-default rule that outranks user rules.
const masterRuleID = ".m.rule.master"

// Rule is one push rule, as the API and the m.push_rules account data show
// it. Conditions are kept as the client wrote them (compacted), so that
// conditions this server does not know survive a round trip; they never
// match, as the spec requires.
// https://spec.matrix.org/v1.19/client-server-api/#push-rules
type Rule struct {
	Kind       string
	RuleID     string
	Default    bool
	Enabled    bool
	Actions    []json.RawMessage
	Conditions []json.RawMessage // override, postcontent and underride rules only
	Pattern    *string           // content rules only

	// conds are Conditions parsed for evaluation; pattern is Pattern
	// compiled (nil when it cannot match); outcome and actionsJSON are
	// what the actions mean and their JSON, worked out once.
	conds       []*condition
	pattern     matcher
	outcome     Outcome
	actionsJSON string
}

// MarshalJSON writes the spec's PushRule object.
func (r *Rule) MarshalJSON() ([]byte, error) {
	out := struct {
		RuleID     string             `json:"rule_id"`
		Default    bool               `json:"default"`
		Enabled    bool               `json:"enabled"`
		Actions    []json.RawMessage  `json:"actions"`
		Conditions *[]json.RawMessage `json:"conditions,omitempty"`
		Pattern    *string            `json:"pattern,omitempty"`
	}{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Actions: r.Actions, Pattern: r.Pattern}
	if out.Actions == nil {
		out.Actions = []json.RawMessage{}
	}
	if hasConditions(r.Kind) {
		conds := r.Conditions
		if conds == nil {
			conds = []json.RawMessage{}
		}
		out.Conditions = &conds
	}
	return json.Marshal(out)
}

// compile prepares a rule for evaluation.
func (r *Rule) compile() {
	r.conds = make([]*condition, len(r.Conditions))
	for i, c := range r.Conditions {
		r.conds[i] = parseCondition(c)
	}
	if r.Kind == KindContent && r.Pattern != nil {
		r.pattern = compileGlob(*r.Pattern, true)
	}
	r.outcome = ActionsOutcome(r.Actions)
	actions := r.Actions
	if actions == nil {
		actions = []json.RawMessage{}
	}
	b, _ := json.Marshal(actions)
	r.actionsJSON = string(b)
}

// Ruleset is a user's global ruleset: each kind's rules, most important
// first.
type Ruleset struct {
	Override, Content, PostContent, Room, Sender, Underride []*Rule
}

// MarshalJSON writes the spec's PushRuleset, every kind present.
func (rs *Ruleset) MarshalJSON() ([]byte, error) {
	nonNil := func(r []*Rule) []*Rule {
		if r == nil {
			return []*Rule{}
		}
		return r
	}
	return json.Marshal(map[string][]*Rule{
		KindOverride: nonNil(rs.Override), KindContent: nonNil(rs.Content), KindPostContent: nonNil(rs.PostContent),
		KindRoom: nonNil(rs.Room), KindSender: nonNil(rs.Sender), KindUnderride: nonNil(rs.Underride),
	})
}

// NewRuleset builds a ruleset from each kind's rules, most important
// first, and prepares it for evaluation.
func NewRuleset(byKind map[string][]*Rule) *Ruleset {
	rs := &Ruleset{Override: byKind[KindOverride], Content: byKind[KindContent], PostContent: byKind[KindPostContent],
		Room: byKind[KindRoom], Sender: byKind[KindSender], Underride: byKind[KindUnderride]}
	for _, k := range Kinds {
		for _, r := range rs.Kind(k) {
			r.Kind = k
			r.compile()
		}
	}
	return rs
}

// Kind returns the rules of one kind.
func (rs *Ruleset) Kind(kind string) []*Rule {
	switch kind {
	case KindOverride:
		return rs.Override
	case KindContent:
		return rs.Content
	case KindPostContent:
		return rs.PostContent
	case KindRoom:
		return rs.Room
	case KindSender:
		return rs.Sender
	case KindUnderride:
		return rs.Underride
	}
	return nil
}

// Find returns the rule of that kind and ID, or nil.
func (rs *Ruleset) Find(kind, ruleID string) *Rule {
	for _, r := range rs.Kind(kind) {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// defaultRulesJSON is the spec's list of server-default rules, verbatim,
// in order, with one more: MatrixRTC ring notifications (MSC4075's
// m.rtc.notification, sent as org.matrix.msc4075.rtc.notification by
// Element Call) ring like m.call.invite, so that phones ring for calls. USER_ID and LOCALPART stand for the owner's user ID and the
// local part of it.
// https://spec.matrix.org/v1.19/client-server-api/#predefined-rules
const defaultRulesJSON = `{
"override": [
	{"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
	{"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}],
	 "actions": []},
	{"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
	 "conditions": [
		{"key": "type", "kind": "event_match", "pattern": "m.room.member"},
		{"key": "content.membership", "kind": "event_match", "pattern": "invite"},
		{"key": "state_key", "kind": "event_match", "pattern": USER_ID}
	 ],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.member_event", "default": true, "enabled": true,
	 "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"}],
	 "actions": []},
	{"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": USER_ID}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.contains_display_name", "default": true, "enabled": true,
	 "conditions": [{"kind": "contains_display_name"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
		{"kind": "sender_notification_permission", "key": "room"}
	 ],
	 "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.roomnotif", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_match", "key": "content.body", "pattern": "@room"},
		{"kind": "sender_notification_permission", "key": "room"}
	 ],
	 "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
		{"kind": "event_match", "key": "state_key", "pattern": ""}
	 ],
	 "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.reaction", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}],
	 "actions": []},
	{"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
		{"kind": "event_match", "key": "state_key", "pattern": ""}
	 ],
	 "actions": []},
	{"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
	 "actions": []}
],
"content": [
	{"rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true,
	 "pattern": LOCALPART,
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]}
],
"postcontent": [],
"room": [],
"sender": [],
"underride": [
	{"rule_id": ".m.rule.call", "default": true, "enabled": true,
	 "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.call.invite"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
	{"rule_id": ".org.matrix.msc4075.rule.rtc.notification", "default": true, "enabled": true,
	 "conditions": [
		{"key": "type", "kind": "event_match", "pattern": "*.rtc.notification"},
		{"kind": "event_property_is", "key": "content.notification_type", "value": "ring"}
	 ],
	 "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
	{"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "room_member_count", "is": "2"},
		{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}
	 ],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "room_member_count", "is": "2"},
		{"kind": "event_match", "key": "type", "pattern": "m.room.message"}
	 ],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.message", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
	 "actions": ["notify"]},
	{"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
	 "actions": ["notify"]}
]
}`

// jsonRule is a rule as stored and as written in defaultRulesJSON.
type jsonRule struct {
	RuleID     string            `json:"rule_id,omitempty"`
	Default    bool              `json:"default,omitempty"`
	Enabled    *bool             `json:"enabled,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions []json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// DefaultRules returns the server-default rules of a user, by kind, in
// the spec's order.
func DefaultRules(userID string) map[string][]*Rule {
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	quote := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	text := strings.NewReplacer("USER_ID", quote(userID), "LOCALPART", quote(localpart)).Replace(defaultRulesJSON)
	var parsed map[string][]jsonRule
	if err := json.Unmarshal([]byte(text), &parsed); err != nil {
		panic(fmt.Sprintf("push: default rules do not parse: %v", err))
	}
	out := make(map[string][]*Rule, len(parsed))
	for kind, rules := range parsed {
		for _, jr := range rules {
			r := &Rule{Kind: kind, RuleID: jr.RuleID, Default: true, Enabled: jr.Enabled == nil || *jr.Enabled,
				Actions: compactAll(jr.Actions), Conditions: compactAll(jr.Conditions), Pattern: jr.Pattern}
			if r.Actions == nil {
				r.Actions = []json.RawMessage{}
			}
			if hasConditions(kind) && r.Conditions == nil {
				r.Conditions = []json.RawMessage{}
			}
			out[kind] = append(out[kind], r)
		}
	}
	return out
}

func compactAll(in []json.RawMessage) []json.RawMessage {
	if in == nil {
		return nil
	}
	out := make([]json.RawMessage, len(in))
	for i, raw := range in {
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			out[i] = raw
			continue
		}
		out[i] = b.Bytes()
	}
	return out
}

// isDefaultID reports whether a rule ID is reserved for server-default
// rules: "The rule_id for all server-default rules MUST start with a dot".
func isDefaultID(ruleID string) bool { return strings.HasPrefix(ruleID, ".") }

// parseActions validates a rule's actions: each a string ("notify") or an
// object with a set_tweak. The historical dont_notify and coalesce are
// stripped, as the spec asks ("Clients and homeservers MUST ignore these
// actions, for instance, by stripping them").
// https://spec.matrix.org/v1.19/client-server-api/#actions
func parseActions(raw json.RawMessage) ([]json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, mxerr.MissingParam("Missing 'actions'")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, mxerr.BadJSON("'actions' must be an array")
	}
	out := []json.RawMessage{}
	for _, a := range list {
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify":
				out = append(out, json.RawMessage(`"notify"`))
			case "dont_notify", "coalesce":
			default:
				return nil, mxerr.InvalidParam("Unrecognised action %q", s)
			}
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(a, &obj) != nil || obj == nil {
			return nil, mxerr.BadJSON("Each action must be a string or an object")
		}
		var tweak string
		if json.Unmarshal(obj["set_tweak"], &tweak) != nil || tweak == "" {
			return nil, mxerr.InvalidParam("An action object must have a 'set_tweak' string")
		}
		var b bytes.Buffer
		if err := json.Compact(&b, a); err != nil {
			return nil, mxerr.BadJSON("Invalid action")
		}
		out = append(out, b.Bytes())
	}
	return out, nil
}

// parseConditions validates the conditions of an override or underride
// rule: objects with a string kind. Kinds this server does not know are
// kept (they never match).
func parseConditions(raw json.RawMessage) ([]json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return []json.RawMessage{}, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, mxerr.BadJSON("'conditions' must be an array")
	}
	out := make([]json.RawMessage, 0, len(list))
	for _, c := range list {
		var obj map[string]json.RawMessage
		if json.Unmarshal(c, &obj) != nil || obj == nil {
			return nil, mxerr.BadJSON("Each condition must be an object")
		}
		var kind string
		if json.Unmarshal(obj["kind"], &kind) != nil || kind == "" {
			return nil, mxerr.InvalidParam("Each condition must have a 'kind' string")
		}
		var b bytes.Buffer
		if err := json.Compact(&b, c); err != nil {
			return nil, mxerr.BadJSON("Invalid condition")
		}
		out = append(out, b.Bytes())
	}
	return out, nil
}
