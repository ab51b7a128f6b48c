package push

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// The push rule evaluator.
// https://spec.matrix.org/v1.19/client-server-api/#conditions-1
//
// mautrix-go has an evaluator too, but a server needs the spec's exact
// semantics where it is lenient: event_match must match the whole value
// (not any substring) and never a non-string value, and
// event_property_is compares integers exactly rather than as floats.

// EvalContext is what evaluating one event for one user needs.
type EvalContext struct {
	// Event is the event's JSON, decoded with json.Number for numbers.
	Event map[string]any
	// RoomID and Sender are the event's.
	RoomID, Sender string
	// DisplayName is the rule owner's display name in the room ("" if
	// none).
	DisplayName string
	// MemberCount is the number of joined members of the room.
	MemberCount int
	// SenderLevel is the sender's power level, and NotificationLevel the
	// level the power levels require for a notification key ("room").
	SenderLevel       int64
	NotificationLevel func(key string) int64
}

// DecodeEvent decodes event JSON for evaluation.
func DecodeEvent(raw []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// legacyMentionRules are the rules that "should only be enabled if the
// event does not have an m.mentions property" (since v1.7).
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.roomnotif":             true,
	".m.rule.contains_user_name":    true,
}

// Match returns the first enabled rule that matches, in the spec's order
// of kinds and the ruleset's order within each; nil if none does.
func (rs *Ruleset) Match(ec *EvalContext) *Rule {
	for _, rules := range [][]*Rule{rs.Override, rs.Content, rs.PostContent, rs.Room, rs.Sender, rs.Underride} {
		for _, r := range rules {
			if r.matches(ec) {
				return r
			}
		}
	}
	return nil
}

func (r *Rule) matches(ec *EvalContext) bool {
	if !r.Enabled {
		return false
	}
	if r.Default && legacyMentionRules[r.RuleID] {
		if content, ok := ec.Event["content"].(map[string]any); ok {
			if _, has := content["m.mentions"]; has {
				return false
			}
		}
	}
	switch r.Kind {
	case KindOverride, KindPostContent, KindUnderride:
		if len(r.conds) != len(r.Conditions) {
			return false // not compiled: see NewRuleset
		}
		for _, c := range r.conds {
			if !c.matches(ec) {
				return false
			}
		}
		return true
	case KindContent:
		if r.pattern == nil {
			return false
		}
		body, ok := lookup(ec.Event, []string{"content", "body"})
		s, isString := body.(string)
		return ok && isString && r.pattern.MatchString(s)
	case KindRoom:
		return r.RuleID == ec.RoomID
	case KindSender:
		return r.RuleID == ec.Sender
	}
	return false
}

// Outcome is what a rule's actions mean for counting.
type Outcome struct {
	Notify, Highlight bool
}

// ActionsOutcome reads actions: notify when they contain "notify",
// highlight when they set the highlight tweak to true ("If a highlight
// tweak is given with no value, its value is defined to be true").
func ActionsOutcome(actions []json.RawMessage) Outcome {
	var o Outcome
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			if s == "notify" {
				o.Notify = true
			}
			continue
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak != "highlight" {
			continue
		}
		v := bytes.TrimSpace(t.Value)
		if len(v) == 0 || bytes.Equal(v, []byte("true")) {
			o.Highlight = true
		}
	}
	return o
}

// condition is a parsed push condition. A condition this server cannot
// evaluate (unknown kind, missing parameter) has ok false and never
// matches: "Unrecognised conditions MUST NOT match any events".
type condition struct {
	ok      bool
	kind    string
	path    []string
	pattern matcher
	value   any
	cmp     string // room_member_count operator
	count   int
	key     string // sender_notification_permission
}

var memberCountRe = regexp.MustCompile(`^(==|<|>|>=|<=)?([0-9]+)$`)

func parseCondition(raw json.RawMessage) *condition {
	var c struct {
		Kind    string          `json:"kind"`
		Key     *string         `json:"key"`
		Pattern *string         `json:"pattern"`
		Is      *string         `json:"is"`
		Value   json.RawMessage `json:"value"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return &condition{}
	}
	out := &condition{kind: c.Kind}
	switch c.Kind {
	case "event_match":
		if c.Key == nil || c.Pattern == nil {
			return out
		}
		out.path = splitPath(*c.Key)
		out.pattern = compileGlob(*c.Pattern, *c.Key == "content.body")
		out.ok = out.pattern != nil
	case "event_property_is", "event_property_contains":
		if c.Key == nil || c.Value == nil {
			return out
		}
		v, err := DecodeValue(c.Value)
		if err != nil {
			return out
		}
		out.path, out.value, out.ok = splitPath(*c.Key), v, true
	case "contains_display_name":
		out.ok = true
	case "room_member_count":
		if c.Is == nil {
			return out
		}
		m := memberCountRe.FindStringSubmatch(*c.Is)
		if m == nil {
			return out
		}
		n, err := strconv.Atoi(m[2])
		if err != nil {
			return out
		}
		out.cmp, out.count, out.ok = m[1], n, true
	case "sender_notification_permission":
		if c.Key == nil || *c.Key == "" {
			return out
		}
		out.key, out.ok = *c.Key, true
	}
	return out
}

// DecodeValue decodes a JSON value with json.Number for numbers.
func DecodeValue(raw json.RawMessage) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

func (c *condition) matches(ec *EvalContext) bool {
	if !c.ok {
		return false
	}
	switch c.kind {
	case "event_match":
		// "If the property ... is completely absent from the event, or
		// does not have a string value, then the condition will not
		// match, even if pattern is *."
		v, found := lookup(ec.Event, c.path)
		s, isString := v.(string)
		return found && isString && c.pattern.MatchString(s)
	case "event_property_is":
		v, found := lookup(ec.Event, c.path)
		return found && scalarEqual(v, c.value)
	case "event_property_contains":
		v, found := lookup(ec.Event, c.path)
		list, isList := v.([]any)
		if !found || !isList {
			return false
		}
		for _, item := range list {
			if scalarEqual(item, c.value) {
				return true
			}
		}
		return false
	case "contains_display_name":
		if ec.DisplayName == "" {
			return false
		}
		body, found := lookup(ec.Event, []string{"content", "body"})
		s, isString := body.(string)
		if !found || !isString {
			return false
		}
		m := compileLiteral(ec.DisplayName)
		return m != nil && m.MatchString(s)
	case "room_member_count":
		n := ec.MemberCount
		switch c.cmp {
		case "", "==":
			return n == c.count
		case "<":
			return n < c.count
		case ">":
			return n > c.count
		case "<=":
			return n <= c.count
		case ">=":
			return n >= c.count
		}
	case "sender_notification_permission":
		level := int64(50)
		if ec.NotificationLevel != nil {
			level = ec.NotificationLevel(c.key)
		}
		return ec.SenderLevel >= level
	}
	return false
}

// splitPath splits a dot-separated property path: a dot preceded by a
// backslash is part of the key, and a double backslash is one backslash.
// https://spec.matrix.org/v1.19/appendices/#dot-separated-property-paths
func splitPath(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\') {
			cur.WriteByte(key[i+1])
			i++
			continue
		}
		if c == '.' {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(parts, cur.String())
}

// lookup follows a path into the event; found is false if a step is
// missing or not an object.
func lookup(ev map[string]any, path []string) (any, bool) {
	var cur any = ev
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// scalarEqual compares two non-compound JSON values exactly: strings,
// booleans, null and integers (no casts between types). Compound values
// never match.
func scalarEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		xi, err1 := strconv.ParseInt(string(x), 10, 64)
		yi, err2 := strconv.ParseInt(string(y), 10, 64)
		return err1 == nil && err2 == nil && xi == yi
	}
	return false
}

// matcher matches strings against a compiled glob. A whole-value pattern
// without wildcards, the most common kind ("m.room.message"), is compared
// without a regular expression: EqualFold folds case as (?i) does.
type matcher = *globMatcher

type globMatcher struct {
	literal string // set for a whole-value pattern without * or ?
	exact   bool
	re      *regexp.Regexp
}

// MatchString reports whether s matches.
func (m *globMatcher) MatchString(s string) bool {
	if m.exact {
		return strings.EqualFold(s, m.literal)
	}
	return m.re.MatchString(s)
}

// wordBoundary is what may sit either side of a match on content.body: a
// word boundary is "the start or end of the value, or any character not
// in the sets [A-Z], [a-z], [0-9] or _".
const (
	wordStart = `(?:^|[^A-Za-z0-9_])`
	wordEnd   = `(?:[^A-Za-z0-9_]|$)`
)

// globCache holds compiled patterns; rules are compiled once per user
// load, display names once per distinct name.
var globCache = struct {
	sync.Mutex
	m map[string]*regexp.Regexp
}{m: map[string]*regexp.Regexp{}}

func cachedRegexp(key string, build func() string) *regexp.Regexp {
	globCache.Lock()
	re, ok := globCache.m[key]
	globCache.Unlock()
	if ok {
		return re
	}
	re, err := regexp.Compile(build())
	if err != nil {
		re = nil
	}
	globCache.Lock()
	if len(globCache.m) > 10000 {
		globCache.m = map[string]*regexp.Regexp{}
	}
	globCache.m[key] = re
	globCache.Unlock()
	return re
}

// compileGlob compiles a glob-style pattern, in which * matches zero or
// more characters and ? exactly one, case-insensitively. It must match the
// whole value, or with words any substring that starts and ends at a word
// boundary (how content.body and content rules match).
// https://spec.matrix.org/v1.19/appendices/#glob-style-matching
func compileGlob(pattern string, words bool) matcher {
	if !words && !strings.ContainsAny(pattern, "*?") {
		return &globMatcher{literal: pattern, exact: true}
	}
	key := "g0" + pattern
	if words {
		key = "g1" + pattern
	}
	return regexpMatcher(cachedRegexp(key, func() string {
		var b strings.Builder
		b.WriteString(`(?is)`)
		if words {
			b.WriteString(wordStart)
		} else {
			b.WriteString(`^`)
		}
		for _, r := range pattern {
			switch r {
			case '*':
				b.WriteString(`.*`)
			case '?':
				b.WriteString(`.`)
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		if words {
			b.WriteString(wordEnd)
		} else {
			b.WriteString(`$`)
		}
		return b.String()
	}))
}

// regexpMatcher wraps a compiled pattern; nil (a pattern that did not
// compile) stays nil, which never matches.
func regexpMatcher(re *regexp.Regexp) matcher {
	if re == nil {
		return nil
	}
	return &globMatcher{re: re}
}

// compileLiteral matches a literal string (a display name) between word
// boundaries, case-insensitively, as Synapse does for
// contains_display_name.
func compileLiteral(s string) matcher {
	return regexpMatcher(cachedRegexp("l"+s, func() string {
		return `(?is)` + wordStart + regexp.QuoteMeta(s) + wordEnd
	}))
}
