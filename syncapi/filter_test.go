package syncapi

import (
	"reflect"
	"testing"
)

// TestSplitFieldPath: the spec's dot-separated property paths: "\." is a
// literal dot, "\\" a literal backslash, any other backslash is itself.
// https://spec.matrix.org/v1.19/appendices/#dot-separated-property-paths
func TestSplitFieldPath(t *testing.T) {
	for path, want := range map[string][]string{
		"content.body":          {"content", "body"},
		`content.m\.relates_to`: {"content", "m.relates_to"},
		`a\\.b`:                 {`a\`, "b"},
		`a\\\.b`:                {`a\.b`},
		`a\b.c`:                 {`a\b`, "c"},
		`trailing\`:             {`trailing\`},
		"type":                  {"type"},
	} {
		if got := splitFieldPath(path); !reflect.DeepEqual(got, want) {
			t.Errorf("splitFieldPath(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestOnlyFields: only the named fields are kept; a path that leads
// nowhere, or through something that is not an object, adds nothing.
func TestOnlyFields(t *testing.T) {
	ev := map[string]any{
		"type":     "m.room.message",
		"sender":   "@a:x",
		"content":  map[string]any{"body": "hi", "a.b": 1.0, `c\d`: 2.0, "other": 3.0},
		"unsigned": map[string]any{"age": 5.0},
	}
	got := onlyFields(ev, [][]string{
		{"type"}, {"content", "body"}, {"content", "a.b"}, {"content", `c\d`},
		{"unsigned", "age", "deeper"}, {"no", "such"},
	})
	want := map[string]any{
		"type":    "m.room.message",
		"content": map[string]any{"body": "hi", "a.b": 1.0, `c\d`: 2.0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("onlyFields = %v, want %v", got, want)
	}
	// A path and a longer one below it: the whole object.
	got = onlyFields(ev, [][]string{{"content", "body"}, {"content"}})
	if !reflect.DeepEqual(got["content"], ev["content"]) {
		t.Fatalf("onlyFields with nested paths = %v", got)
	}
}
