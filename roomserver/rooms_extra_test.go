package roomserver

import (
	"encoding/base64"
	"reflect"
	"testing"
)

// Unit tests of the pure helpers behind the directory and room upgrades;
// the endpoints themselves are tested end to end in clientapi.

func TestDirectoryTokenRoundTrip(t *testing.T) {
	for _, tok := range []directoryToken{
		{key: directoryKey{3, "!abc:tessera.test"}},
		{backwards: true, key: directoryKey{0, "!x:y:z"}},
		{key: directoryKey{12, "!AbC-_d"}}, // a v12 room ID
	} {
		got, err := parseDirectoryToken(tok.String())
		if err != nil || got != tok {
			t.Errorf("round trip of %+v: %+v, %v", tok, got, err)
		}
	}
	for _, bad := range []string{"", "!!!", "eA", rxToken("x1:!a"), rxToken("f"), rxToken("f-1:!a"), rxToken("fone:!a"), rxToken("f1")} {
		if _, err := parseDirectoryToken(bad); err == nil {
			t.Errorf("parseDirectoryToken(%q) accepted", bad)
		}
	}
}

// rxToken encodes raw token content, to make malformed tokens.
func rxToken(raw string) string { return base64.RawURLEncoding.EncodeToString([]byte(raw)) }

func TestDirectoryOrder(t *testing.T) {
	a := directoryKey{5, "!b"}
	b := directoryKey{5, "!c"}
	c := directoryKey{2, "!a"}
	if !a.before(b) || !b.before(c) || c.before(a) || a.before(a) {
		t.Error("order must be most members first, then room ID")
	}
}

func TestMatchRoomType(t *testing.T) {
	space := "m.space"
	cases := []struct {
		types    []*string
		roomType string
		want     bool
	}{
		{nil, "", true},
		{nil, "m.space", true},
		{[]*string{nil}, "", true},
		{[]*string{nil}, "m.space", false},
		{[]*string{&space}, "m.space", true},
		{[]*string{&space}, "", false},
		{[]*string{nil, &space}, "org.example.other", false},
	}
	for _, c := range cases {
		if got := matchRoomType(c.types, c.roomType); got != c.want {
			t.Errorf("matchRoomType(%v, %q) = %v", c.types, c.roomType, got)
		}
	}
}

func TestNormalizePowerLevels(t *testing.T) {
	// Room versions before 10 allow levels as strings; the copy must have
	// integers, and drops what is not a level.
	got := normalizePowerLevels([]byte(`{"ban":"50","kick":50,"users":{"@a:x":"100","@b:x":20,"@c:x":true},
		"events":{"m.room.name":" 60 "},"notifications":{"room":"40"},"historical":100,"odd":"high","list":[1]}`))
	want := map[string]any{
		"ban": int64(50), "kick": int64(50), "historical": int64(100),
		"users":         map[string]any{"@a:x": int64(100), "@b:x": int64(20)},
		"events":        map[string]any{"m.room.name": int64(60)},
		"notifications": map[string]any{"room": int64(40)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("normalizePowerLevels = %#v\nwant %#v", got, want)
	}
}

func TestTopLevel(t *testing.T) {
	pl := map[string]any{"ban": int64(50), "users": map[string]any{"@a:x": int64(150)},
		"events": map[string]any{"m.room.tombstone": int64(120)}, "notifications": map[string]any{"room": int64(900)}}
	if got := topLevel(pl); got != 150 {
		t.Errorf("topLevel = %d, want 150 (notification levels do not count)", got)
	}
	if got := topLevel(map[string]any{}); got != 100 {
		t.Errorf("topLevel of nothing = %d, want 100", got)
	}
}
