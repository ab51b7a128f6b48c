package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	deepObj := func(n int) string { return strings.Repeat(`{"a":`, n-1) + "{}" + strings.Repeat("}", n-1) }
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"object", `{"a": [1, -2.5e+3, true, false, null, "x"], "b": {}}`, true},
		{"white space around", " \n\t{}\r\n ", true},
		{"scalar", `"just a string"`, true},
		{"utf-8 text", `{"body": "héllo 🐈 世界"}`, true},
		{"escapes", `{"a": "\" \\ \/ \b \f \n \r \t \u00e9"}`, true},
		{"surrogate pair", `{"a": "\ud83d\udc08"}`, true},
		{"depth 100", deep(100), true},
		{"object depth 100", deepObj(100), true},
		{"depth 101", deep(101), false},
		{"object depth 101", deepObj(101), false},
		{"depth 10000", deep(10000), false},
		{"invalid utf-8 in value", "{\"body\": \"\xff\xfe\"}", false},
		{"invalid utf-8 in key", "{\"\xc3\": 1}", false},
		{"overlong encoding", "{\"a\": \"\xc0\xaf\"}", false},
		{"utf-16 surrogate as utf-8", "{\"a\": \"\xed\xa0\x80\"}", false},
		{"lone high surrogate", `{"a": "\ud800"}`, false},
		{"lone high surrogate at end", `"\ud800`, false},
		{"high then non-low", `{"a": "\ud800\u0041"}`, false},
		{"lone low surrogate", `{"a": "\udc00"}`, false},
		{"reversed pair", `{"a": "\udc08\ud83d"}`, false},
		{"bad escape", `{"a": "\x"}`, false},
		{"short \\u", `{"a": "\u12"}`, false},
		{"control character", "{\"a\": \"\x01\"}", false},
		{"trailing comma", `{"a": 1,}`, false},
		{"two values", `{} {}`, false},
		{"empty", ``, false},
		{"leading zero", `[01]`, false},
		{"bare minus", `[-]`, false},
		{"missing exponent", `[1e]`, false},
		{"unterminated", `{"a": "b`, false},
		{"unclosed", `{"a": [1, 2}`, false},
		{"bad literal", `[nul]`, false},
		{"non-string key", `{1: 2}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate([]byte(tt.in), MaxDepth)
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestTooDeepIsMarked(t *testing.T) {
	err := Validate([]byte(strings.Repeat("[", 200)), MaxDepth)
	if !errors.Is(err, ErrTooDeep) {
		t.Fatalf("got %v, want ErrTooDeep", err)
	}
	if err := Validate([]byte("[\xff]"), MaxDepth); errors.Is(err, ErrTooDeep) {
		t.Fatalf("invalid UTF-8 reported as too deep: %v", err)
	}
}

// FuzzValidate: on input that is UTF-8 without surrogate escapes and not
// deep, Validate agrees with encoding/json.Valid.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{`{}`, `[1,2]`, `{"a":"\u00e9"}`, `"x`, `[-0.5e10]`, `{"a":{"b":[null]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Validate(b, 1000) == nil
		want := json.Valid(b)
		if got && !want {
			t.Fatalf("Validate accepts what json.Valid refuses: %q", b)
		}
		if want && !got && utf8.Valid(b) && !bytes.Contains(b, []byte(`\u`)) && !bytes.Contains(b, []byte(`\U`)) {
			t.Fatalf("Validate refuses valid JSON: %q", b)
		}
	})
}

// event64K is a message event of about 64 KiB: the largest a Matrix event
// may be.
func event64K() []byte {
	var b bytes.Buffer
	b.WriteString(`{"type":"m.room.message","room_id":"!r:example.org","sender":"@a:example.org","content":{"msgtype":"m.text","body":"`)
	for b.Len() < 64<<10-200 {
		b.WriteString(`héllo wörld 🐈 \"quoted\" \u00e9 and some plain ascii text `)
	}
	b.WriteString(`","m.mentions":{"user_ids":["@b:example.org"]}},"origin_server_ts":1700000000000,"depth":12,"prev_events":["$x"],"auth_events":["$y","$z"]}`)
	return b.Bytes()
}

func BenchmarkValidate64K(b *testing.B) {
	ev := event64K()
	if err := Validate(ev, MaxDepth); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		_ = Validate(ev, MaxDepth)
	}
}

func BenchmarkEncodingJSONValid64K(b *testing.B) {
	ev := event64K()
	if !json.Valid(ev) {
		b.Fatal("invalid")
	}
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		_ = json.Valid(ev)
	}
}
