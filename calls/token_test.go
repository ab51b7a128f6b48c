package calls

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"
)

// The test vectors of MSC4195's appendix ("Hash derivation test vectors").
func TestMSC4195Vectors(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"room name", RoomName("!roomid:example.com", "slot1234"), "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"},
		{"room name with random bits", hashStrings("!roomid:example.com", "slot123", "random123"), "IMeDd+K3MIqJTI20EXBIrepKkhhORvf3q8fx3rlrhTk"},
		{"participant identity", MemberIdentity("@alice:example.com", "memberABC"), "M3VnsLXrkbxIDINXO64u8PZzFyD9ZYFiQULR2dshWYs"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
	// Canonical JSON escapes only what it must: not HTML characters nor
	// U+2028 (encoding/json escapes both).
	for _, in := range []string{"!a<&>b:example.com", "!a\u2028b:example.com", "quote\"back\\slash"} {
		want := sha256.Sum256([]byte(`["` + strings.NewReplacer(`"`, `\"`, `\`, `\\`).Replace(in) + `"]`))
		if got := hashStrings(in); got != base64.RawStdEncoding.EncodeToString(want[:]) {
			t.Errorf("hash of %q is not that of its canonical JSON", in)
		}
	}
}

func TestOwnURL(t *testing.T) {
	client := httptest.NewRequest("POST", "http://hs.example:8008/_matrix/client/v1/rtc/livekit/get_token", nil)
	for _, tc := range []struct {
		name   string
		public string
		r      bool // a client request (else federation)
		url    string
		want   bool
	}{
		{"client, from Host", "", true, "ws://hs.example:8008/_tessera/livekit", true},
		{"client, other host", "", true, "ws://evil.example/_tessera/livekit", false},
		{"client, other path", "", true, "ws://hs.example:8008/livekit", false},
		{"public base URL", "https://matrix.example/", true, "wss://matrix.example/_tessera/livekit", true},
		{"public base URL, plain ws", "https://matrix.example", false, "ws://matrix.example/_tessera/livekit", false},
		{"federation, public base URL", "https://matrix.example", false, "wss://matrix.example/_tessera/livekit", true},
		{"federation, no base URL: our path", "", false, "wss://anything.example/_tessera/livekit/", true},
		{"federation, no base URL: other path", "", false, "wss://anything.example/livekit", false},
		{"federation, not a WebSocket URL", "", false, "https://anything.example/_tessera/livekit", false},
		{"federation, garbage", "", false, "::", false},
	} {
		s := &Service{PublicBaseURL: tc.public}
		r := client
		if !tc.r {
			r = nil
		}
		if got := s.OwnURL(tc.url, r); got != tc.want {
			t.Errorf("%s: OwnURL(%q) = %v, want %v", tc.name, tc.url, got, tc.want)
		}
	}
}
