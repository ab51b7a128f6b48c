package calls

import (
	"net/http/httptest"
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
	// Canonical JSON does not escape HTML characters (encoding/json does
	// by default): ["<&>"] hashes as those three bytes.
	if hashStrings("<&>") != hashStrings("<&>") || hashStrings("<&>") == hashStrings(`\u003c\u0026\u003e`) {
		t.Error("HTML characters must not be escaped")
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
